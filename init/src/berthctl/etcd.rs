//! `berthctl status`'s etcd section: the cluster's membership and each
//! member's health, as etcd's own client sees them (`etcdctl member list
//! -w json` and `etcdctl endpoint health --cluster -w json`, run with a
//! short timeout against the client URL of the etcd unit's health check).
//! berthctl holds no etcd client of its own: etcdctl is in the image.
//!
//! A single-node machine shows one member, `berth`, healthy.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Where etcdctl is in the image.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
/// How long each etcdctl run may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(4);

/// One member, as `member list -w json` gives it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Member {
    #[serde(rename = "ID")]
    pub id: u64,
    /// Empty for a member added but not started yet.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

/// One endpoint, as `endpoint health --cluster -w json` gives it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub health: bool,
    /// How long the check took (`"4.9ms"`, etcdctl's Go duration).
    #[serde(default)]
    pub took: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// Why part of the section could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdStatusError {
    /// etcdctl could not be run.
    #[error("{program}: {why}")]
    Run { program: String, why: String },
    /// etcdctl ran out of time and was killed.
    #[error("`etcdctl {what}` gave no answer within {}", humantime::format_duration(*timeout))]
    Timeout { what: String, timeout: Duration },
    /// etcdctl failed with no answer (etcd unreachable): its last line.
    #[error("`etcdctl {what}`: {why}")]
    Failed { what: String, why: String },
    /// Its answer is not the JSON etcdctl prints.
    #[error("`etcdctl {what}` answered something else than its JSON: {why}")]
    BadJson { what: String, why: String },
    /// The etcd unit cannot be read.
    #[error("{}: {why}", path.display())]
    Unit { path: PathBuf, why: String },
}

/// The members in `member list -w json`.
pub fn parse_members(json: &str) -> Result<Vec<Member>, EtcdStatusError> {
    serde_json::from_str::<MemberList>(json)
        .map(|l| l.members)
        .map_err(|e| EtcdStatusError::BadJson { what: "member list".into(), why: e.to_string() })
}

/// The endpoints in `endpoint health --cluster -w json`.
pub fn parse_health(json: &str) -> Result<Vec<EndpointHealth>, EtcdStatusError> {
    serde_json::from_str(json)
        .map_err(|e| EtcdStatusError::BadJson { what: "endpoint health".into(), why: e.to_string() })
}

/// Whether etcd runs here and where to ask it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdUnit {
    /// Masked (an empty /etc/berth/units/etcd.toml: `units.disable`).
    Disabled,
    /// No etcd unit at all (not a Berth image).
    Missing,
    /// Ask this client URL (the one its health check asks).
    At(String),
}

/// The client URL to ask, from the etcd unit in force (`etc`, else
/// `image`): its health check's `--endpoints` (the provisioned unit's
/// check asks a URL etcd listens on), else its first
/// `--listen-client-urls`, else `http://127.0.0.1:2379`.
pub fn unit_client_url(etc: &Path, image: &Path) -> Result<EtcdUnit, EtcdStatusError> {
    let (path, text) = match std::fs::read_to_string(etc) {
        Ok(t) => (etc, t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read_to_string(image) {
            Ok(t) => (image, t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EtcdUnit::Missing),
            Err(e) => return Err(EtcdStatusError::Unit { path: image.into(), why: e.to_string() }),
        },
        Err(e) => return Err(EtcdStatusError::Unit { path: etc.into(), why: e.to_string() }),
    };
    if text.trim().is_empty() {
        return Ok(EtcdUnit::Disabled);
    }
    let unit: toml::Table =
        toml::from_str(&text).map_err(|e| EtcdStatusError::Unit { path: path.into(), why: e.message().to_string() })?;
    let argv = |v: Option<&toml::Value>| -> Vec<String> {
        v.and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let after = |argv: &[String], flag: &str| -> Option<String> {
        let i = argv.iter().position(|a| a == flag)?;
        argv.get(i + 1).map(|s| s.split(',').next().unwrap_or(s).to_string())
    };
    let check = argv(unit.get("health").and_then(|h| h.get("check")).and_then(|c| c.get("command")));
    let exec = argv(unit.get("service").and_then(|s| s.get("exec")));
    let url = after(&check, "--endpoints")
        .or_else(|| after(&exec, "--listen-client-urls"))
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    Ok(EtcdUnit::At(url.replace("://0.0.0.0:", "://127.0.0.1:")))
}

/// Runs `etcdctl --endpoints URL ARGS -w json` (killed after `timeout`):
/// its standard output when it printed something (etcdctl prints the
/// health of every endpoint and exits 1 when one is unhealthy), else the
/// error.
pub fn etcdctl(program: &Path, url: &str, args: &[&str], timeout: Duration) -> Result<String, EtcdStatusError> {
    let what = args.join(" ");
    let secs = timeout.as_secs().max(2);
    let mut child = Command::new(program)
        .args(["--endpoints", url, "--dial-timeout", &format!("{}s", secs - 1), "--command-timeout"])
        .arg(format!("{}s", secs - 1))
        .args(args)
        .args(["-w", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EtcdStatusError::Run { program: program.display().to_string(), why: e.to_string() })?;
    // Read both pipes on their own threads so a full pipe never blocks it.
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = pipe(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EtcdStatusError::Timeout { what, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(EtcdStatusError::Run { program: program.display().to_string(), why: e.to_string() }),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !stdout.trim().is_empty() {
        return Ok(stdout);
    }
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let why = last.strip_prefix("Error: ").unwrap_or(last);
    let why = if why.is_empty() { format!("exited with {status} and printed nothing") } else { why.to_string() };
    Err(EtcdStatusError::Failed { what, why })
}

/// The section, from what etcdctl answered (pure: tested with recorded
/// answers).
pub fn render(
    url: &str,
    members: &Result<Vec<Member>, EtcdStatusError>,
    health: &Result<Vec<EndpointHealth>, EtcdStatusError>,
) -> String {
    let mut out = String::new();
    let members = match members {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(out, "\netcd: NOT ANSWERING at {url}: {e}");
            return out;
        }
    };
    let healthy = |m: &Member| -> Option<&EndpointHealth> {
        health.as_ref().ok()?.iter().find(|h| m.client_urls.iter().any(|u| u == &h.endpoint))
    };
    let count = members.iter().filter(|m| healthy(m).is_some_and(|h| h.health)).count();
    let plural = if members.len() == 1 { "" } else { "s" };
    let summary = match health {
        Ok(_) => format!("{} member{plural}, {count} healthy", members.len()),
        Err(e) => format!("{} member{plural}, health unknown ({e})", members.len()),
    };
    let _ = writeln!(out, "\netcd: {summary} (asked {url})");
    let width = members.iter().map(|m| m.name.len()).max().unwrap_or(0).max(4);
    for m in members {
        let name = if m.name.is_empty() { "(not started)" } else { m.name.as_str() };
        let state = match healthy(m) {
            _ if m.client_urls.is_empty() => "no client URL yet".to_string(),
            Some(h) if h.health => format!("healthy ({})", h.took),
            Some(h) => format!("UNHEALTHY: {}", h.error.as_deref().unwrap_or("no answer")),
            None if health.is_ok() => "UNHEALTHY: not in the health answer".to_string(),
            None => "health unknown".to_string(),
        };
        let learner = if m.is_learner { " learner" } else { "" };
        let _ = writeln!(
            out,
            "  {name:<width$}  {state}{learner}; client {}; peer {}",
            join(&m.client_urls),
            join(&m.peer_urls)
        );
    }
    out
}

fn join(urls: &[String]) -> String {
    if urls.is_empty() {
        "-".into()
    } else {
        urls.join(",")
    }
}

/// The whole section: the unit's client URL (`etc` over `image`), both
/// etcdctl questions asked at once (each within `timeout`), rendered.
pub fn section(etc: &Path, image: &Path, program: &Path, timeout: Duration) -> String {
    let url = match unit_client_url(etc, image) {
        Ok(EtcdUnit::At(url)) => url,
        Ok(EtcdUnit::Disabled) => return format!("\netcd: disabled ({} is empty: masked)\n", etc.display()),
        Ok(EtcdUnit::Missing) => return "\netcd: no etcd unit\n".into(),
        Err(e) => return format!("\netcd: {e}\n"),
    };
    let (p, u) = (program.to_path_buf(), url.clone());
    let members =
        std::thread::spawn(move || etcdctl(&p, &u, &["member", "list"], timeout).and_then(|json| parse_members(&json)));
    let health = etcdctl(program, &url, &["endpoint", "health", "--cluster"], timeout).and_then(|j| parse_health(&j));
    let members = members.join().unwrap_or_else(|_| {
        Err(EtcdStatusError::Run { program: program.display().to_string(), why: "the thread asking it failed".into() })
    });
    render(&url, &members, &health)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from a real etcd 3.4.23 cluster of three members on the
    // loopback (etcdctl 3.4.23), healthy, then with b2 killed.
    const MEMBERS_3: &str = r#"{"header":{"cluster_id":8570459336700167655,"member_id":8645782499530242234,"raft_term":2},"members":[{"ID":3542974012341521924,"name":"b3","peerURLs":["http://127.0.0.1:23803"],"clientURLs":["http://127.0.0.1:23793"]},{"ID":8645782499530242234,"name":"b1","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:23791"]},{"ID":11539305337000706507,"name":"b2","peerURLs":["http://127.0.0.1:23802"],"clientURLs":["http://127.0.0.1:23792"]}]}"#;
    const HEALTH_3: &str = r#"[{"endpoint":"http://127.0.0.1:23793","health":true,"took":"3.600986ms"},{"endpoint":"http://127.0.0.1:23792","health":true,"took":"4.747849ms"},{"endpoint":"http://127.0.0.1:23791","health":true,"took":"4.92362ms"}]"#;
    const HEALTH_B2_DOWN: &str = r#"[{"endpoint":"http://127.0.0.1:23791","health":true,"took":"5.546215ms"},{"endpoint":"http://127.0.0.1:23793","health":true,"took":"6.899303ms"},{"endpoint":"http://127.0.0.1:23792","health":false,"took":"3.002861127s","error":"context deadline exceeded"}]"#;

    #[test]
    fn three_healthy_members_each_with_its_urls() {
        let text = render("http://127.0.0.1:23791", &parse_members(MEMBERS_3), &parse_health(HEALTH_3));
        assert!(text.starts_with("\netcd: 3 members, 3 healthy (asked http://127.0.0.1:23791)\n"), "{text}");
        assert!(
            text.contains("  b1    healthy (4.92362ms); client http://127.0.0.1:23791; peer http://127.0.0.1:23801\n"),
            "{text}"
        );
        let m = parse_members(MEMBERS_3).unwrap();
        assert_eq!(m.iter().map(|m| m.id).max(), Some(11_539_305_337_000_706_507), "a u64 member id");
    }

    #[test]
    fn a_member_that_is_down_is_loud_and_the_others_stay_healthy() {
        let text = render("http://127.0.0.1:23791", &parse_members(MEMBERS_3), &parse_health(HEALTH_B2_DOWN));
        assert!(text.contains("etcd: 3 members, 2 healthy"), "{text}");
        assert!(text.contains("  b2    UNHEALTHY: context deadline exceeded; client http://127.0.0.1:23792"), "{text}");
        assert!(text.contains("  b3    healthy (6.899303ms)"), "{text}");
    }

    #[test]
    fn etcd_not_answering_says_where_it_was_asked_and_why() {
        let e = EtcdStatusError::Failed { what: "member list".into(), why: "context deadline exceeded".into() };
        let text = render("http://127.0.0.1:2379", &Err(e.clone()), &Err(e));
        assert_eq!(
            text,
            "\netcd: NOT ANSWERING at http://127.0.0.1:2379: `etcdctl member list`: context deadline exceeded\n"
        );
    }

    #[test]
    fn a_member_added_but_not_started_has_no_name_and_no_client_url() {
        let json = r#"{"members":[{"ID":1,"name":"b1","peerURLs":["http://a:2380"],"clientURLs":["http://a:2379"]},{"ID":2,"peerURLs":["http://b:2380"],"isLearner":true}]}"#;
        let health = r#"[{"endpoint":"http://a:2379","health":true,"took":"1ms"}]"#;
        let text = render("http://a:2379", &parse_members(json), &parse_health(health));
        assert!(text.contains("2 members, 1 healthy"), "{text}");
        assert!(text.contains("(not started)  no client URL yet learner; client -; peer http://b:2380"), "{text}");
    }

    #[test]
    fn the_url_comes_from_the_unit_in_force() {
        let dir = std::env::temp_dir().join(format!("berthctl-etcd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (etc, image) = (dir.join("etc.toml"), dir.join("image.toml"));
        let image_unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../image-build/rootfs/usr/lib/berth/units/etcd.toml");
        std::fs::copy(image_unit, &image).unwrap();
        let _ = std::fs::remove_file(&etc);
        assert_eq!(unit_client_url(&etc, &image).unwrap(), EtcdUnit::At("http://127.0.0.1:2379".into()));
        std::fs::write(
            &etc,
            "[service]\nexec = [\"/usr/bin/etcd\", \"--listen-client-urls\", \"http://192.0.2.11:2379\"]\n\
             [health]\ncheck = { command = [\"/usr/bin/etcdctl\", \"--endpoints\", \"http://192.0.2.11:2379\", \"endpoint\", \"health\"] }\n",
        )
        .unwrap();
        assert_eq!(unit_client_url(&etc, &image).unwrap(), EtcdUnit::At("http://192.0.2.11:2379".into()));
        std::fs::write(&etc, "").unwrap();
        assert_eq!(unit_client_url(&etc, &image).unwrap(), EtcdUnit::Disabled);
        let text = section(&etc, &image, Path::new(ETCDCTL), TIMEOUT);
        assert_eq!(text, format!("\netcd: disabled ({} is empty: masked)\n", etc.display()));
        std::fs::remove_file(&image).unwrap();
        std::fs::remove_file(&etc).unwrap();
        assert_eq!(unit_client_url(&etc, &image).unwrap(), EtcdUnit::Missing);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
