//! The EC2-style instance metadata service, IMDSv2: a session token by
//! `PUT /latest/api/token` (header `X-aws-ec2-metadata-token-ttl-seconds`),
//! then `GET /latest/user-data` (404: no user data),
//! `/latest/meta-data/instance-id` and `/latest/meta-data/local-hostname`
//! with the token in `X-aws-ec2-metadata-token`. A service that refuses
//! tokens (403, 404, 405 to the PUT) is asked without one (IMDSv1), as
//! cloud-init does.
//!
//! The machine needs an address first: an ephemeral IPv4 DHCP lease from
//! `dhcpcd --oneshot` (the network unit's dhcpcd takes the interface over
//! later). Every request has a short timeout and a bounded number of
//! attempts, so a machine that only looks like EC2 waits seconds, not
//! minutes.

use std::path::Path;
use std::time::Duration;

use super::system::{Method, Request, Response, System};
use super::{Found, Kind, MAX_DOCUMENT};
use crate::host::Runner;

/// The network interfaces.
pub const SYS_NET: &str = "/sys/class/net";
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

/// How the metadata service is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `http://169.254.169.254`
    pub base: String,
    /// The DHCP client.
    pub dhcpcd: String,
    /// How long dhcpcd may take for a lease (its `--timeout`, seconds).
    pub dhcp_timeout_secs: u32,
    /// Each HTTP exchange's bound.
    pub request_timeout: Duration,
    /// Attempts per request (transport errors and 5xx are retried).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub backoff: Duration,
    /// The token's lifetime asked for, seconds.
    pub token_ttl_secs: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            base: "http://169.254.169.254".to_string(),
            dhcpcd: "/usr/sbin/dhcpcd".to_string(),
            dhcp_timeout_secs: 10,
            request_timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(250),
            token_ttl_secs: 300,
        }
    }
}

/// The interface to bring up: `eth0` if the kernel has it, else the first
/// other than `lo` (in name order); `eth0` when sysfs says nothing.
pub fn interface(sys: &dyn System) -> String {
    let names = sys.list_dir(Path::new(SYS_NET)).ok().flatten().unwrap_or_default();
    if names.iter().any(|n| n == "eth0") {
        return "eth0".to_string();
    }
    names.into_iter().find(|n| n != "lo").unwrap_or_else(|| "eth0".to_string())
}

/// The dhcpcd command line of the ephemeral lease: IPv4 only, once, no
/// ARP probing of the offered address (it costs seconds), bounded.
pub fn dhcp_argv(options: &Options, interface: &str) -> Vec<String> {
    [
        options.dhcpcd.as_str(),
        "--oneshot",
        "--ipv4only",
        "--noarp",
        "--timeout",
        &options.dhcp_timeout_secs.to_string(),
        interface,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Brings up an address with dhcpcd; the text says how it went, for the
/// console (a failure does not stop the attempt: an address may exist).
pub fn lease(sys: &dyn System, runner: &mut dyn Runner, options: &Options) -> String {
    let iface = interface(sys);
    let argv = dhcp_argv(options, &iface);
    let bound = Duration::from_secs(u64::from(options.dhcp_timeout_secs) + 5);
    match runner.run(&argv, bound) {
        Ok(ran) if ran.success() => format!("dhcp {iface}: ok"),
        Ok(ran) => {
            let last = ran.output.lines().last().unwrap_or("").trim().to_string();
            format!("dhcp {iface}: exit {} {last}", ran.code.map_or("signal".to_string(), |c| c.to_string()))
        }
        Err(e) => format!("dhcp {iface}: {}: {e}", options.dhcpcd),
    }
}

/// One request with bounded retries: transport errors and 5xx answers are
/// tried again after a growing pause; any other answer is returned.
fn exchange(sys: &mut dyn System, options: &Options, request: &Request) -> Result<Response, String> {
    let mut pause = options.backoff;
    let mut last = String::new();
    for attempt in 1..=options.attempts.max(1) {
        if attempt > 1 {
            sys.sleep(pause);
            pause = pause.saturating_mul(2);
        }
        match sys.http(request) {
            Ok(r) if r.status >= 500 => last = format!("HTTP {}", r.status),
            Ok(r) => return Ok(r),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{} {}: {last} (after {} attempts)", method_name(request.method), request.url, options.attempts.max(1)))
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
    }
}

/// Asks the metadata service (the address must be up). `Ok(found)` with
/// the user data (`None` on 404) and meta-data made from its answers:
/// `instance-id: "..."` and `local-hostname: "..."` YAML (the values
/// JSON-quoted, which YAML reads as double-quoted scalars). Errors: no
/// answer, or no instance-id.
pub fn fetch(sys: &mut dyn System, options: &Options) -> Result<Found, String> {
    let base = options.base.trim_end_matches('/');
    let token_request = Request {
        method: Method::Put,
        url: format!("{base}/latest/api/token"),
        headers: vec![(TOKEN_TTL_HEADER.to_string(), options.token_ttl_secs.to_string())],
        timeout: options.request_timeout,
        limit: 4096,
    };
    let token = {
        let r = exchange(sys, options, &token_request)?;
        match r.status {
            200 => Some(String::from_utf8_lossy(&r.body).trim().to_string()),
            // No IMDSv2 here: ask without a token.
            403..=405 => None,
            s => return Err(format!("PUT {}: HTTP {s}", token_request.url)),
        }
    };
    let mut get = |path: &str, limit: u64| {
        let request = Request {
            method: Method::Get,
            url: format!("{base}/latest/{path}"),
            headers: token.iter().map(|t| (TOKEN_HEADER.to_string(), t.clone())).collect(),
            timeout: options.request_timeout,
            limit,
        };
        let r = exchange(sys, options, &request)?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            s => Err(format!("GET {}: HTTP {s}", request.url)),
        }
    };
    let user_data = get("user-data", MAX_DOCUMENT)?;
    let instance_id = get("meta-data/instance-id", 4096)?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("GET {base}/latest/meta-data/instance-id: no instance id"))?;
    let hostname = get("meta-data/local-hostname", 4096)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty());
    let mut meta = format!("instance-id: {}\n", quote(&instance_id));
    if let Some(h) = hostname {
        meta.push_str(&format!("local-hostname: {}\n", quote(&h)));
    }
    Ok(Found {
        kind: Kind::Imds,
        origin: format!("imds:{base}/latest/user-data"),
        user_data,
        meta_data: Some(meta.into_bytes()),
        network_config: None,
    })
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcpcd_is_bounded_and_ipv4_only() {
        let argv = dhcp_argv(&Options::default(), "eth0");
        assert_eq!(argv, ["/usr/sbin/dhcpcd", "--oneshot", "--ipv4only", "--noarp", "--timeout", "10", "eth0"]);
    }

    #[test]
    fn quoting_is_yaml() {
        assert_eq!(quote("i-0abc"), "\"i-0abc\"");
        assert_eq!(quote("a\"b: c"), "\"a\\\"b: c\"");
    }
}
