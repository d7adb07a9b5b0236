//! An EC2-style instance metadata service (IMDSv2) on the host's
//! 127.0.0.1, for a guest on [`crate::UserNet::imds_port`]'s network
//! (QEMU pipes the guest's 169.254.169.254:80 to it through `nc`).
//!
//! It answers as AWS does:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//!   (1 to 21600) gives a token; without the header: 400;
//! - `GET /latest/user-data` (404 when there is none),
//!   `/latest/meta-data/instance-id`, `/latest/meta-data/local-hostname`,
//!   `/latest/meta-data/` (the listing), each needing a valid token in
//!   `X-aws-ec2-metadata-token` (401 otherwise) unless tokens are optional
//!   ([`ImdsServer::set_tokens_required`]: IMDSv1 allowed).
//!
//! Every request is logged, so tests can assert that the guest asked for a
//! token and used it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

/// What the service serves; change it between boots with
/// [`ImdsServer::state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsData {
    /// `None`: `GET /latest/user-data` is 404, as on an instance without.
    pub user_data: Option<Vec<u8>>,
    pub instance_id: String,
    pub local_hostname: Option<String>,
    /// IMDSv2 only (the default): a GET without a valid token is 401.
    pub tokens_required: bool,
}

/// One request as the service saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    pub path: String,
    /// The `X-aws-ec2-metadata-token` header, if any.
    pub token: Option<String>,
    /// Whether that token is one this service issued.
    pub token_valid: bool,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug)]
struct State {
    data: ImdsData,
    tokens: Vec<String>,
    log: Vec<ImdsRequest>,
}

/// The service, on a free port of 127.0.0.1; stopped when dropped.
pub struct ImdsServer {
    server: Arc<tiny_http::Server>,
    state: Arc<Mutex<State>>,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

impl ImdsServer {
    /// Starts serving `user_data` (None: 404) and `instance_id`. Errors: no
    /// port, or no `nc` on the host (the guest could not reach it).
    pub fn start(user_data: Option<&[u8]>, instance_id: &str) -> Result<ImdsServer> {
        crate::host::require_program("nc", "netcat-openbsd")?;
        Self::start_without_nc_check(ImdsData {
            user_data: user_data.map(<[u8]>::to_vec),
            instance_id: instance_id.to_string(),
            local_hostname: None,
            tokens_required: true,
        })
    }

    fn start_without_nc_check(data: ImdsData) -> Result<ImdsServer> {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| Error::Other(format!("starting the metadata service on 127.0.0.1: {e}")))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| Error::Other("the metadata service has no TCP port".into()))?;
        let server = Arc::new(server);
        let state = Arc::new(Mutex::new(State { data, tokens: Vec::new(), log: Vec::new() }));
        let thread = {
            let (server, state) = (server.clone(), state.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    answer(&state, request);
                }
            })
        };
        Ok(ImdsServer { server, state, port, thread: Some(thread) })
    }

    /// The port on 127.0.0.1 (give it to [`crate::VmConfig::imds_port`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL on the host, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Changes what is served.
    pub fn set(&self, change: impl FnOnce(&mut ImdsData)) {
        change(&mut self.lock().data);
    }

    /// What is served now.
    pub fn data(&self) -> ImdsData {
        self.lock().data.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ImdsRequest> {
        self.lock().log.clone()
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> usize {
        self.lock().tokens.len()
    }

    /// The GETs of `path` that carried a token this service issued.
    pub fn gets_with_token(&self, path: &str) -> usize {
        self.lock().log.iter().filter(|r| r.method == "GET" && r.path == path && r.token_valid).count()
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn header(request: &tiny_http::Request, name: &str) -> Option<String> {
    request.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.to_string())
}

fn answer(state: &Mutex<State>, request: tiny_http::Request) {
    let method = request.method().as_str().to_string();
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let token = header(&request, TOKEN_HEADER);
    let (status, body) = {
        let mut s = lock(state);
        let token_valid = token.as_ref().is_some_and(|t| s.tokens.contains(t));
        let (status, body) = respond(&mut s, &method, &path, &request, token_valid);
        s.log.push(ImdsRequest { method, path, token, token_valid, status });
        (status, body)
    };
    let mut response = tiny_http::Response::from_data(body).with_status_code(status);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", "text/plain") {
        response = response.with_header(h);
    }
    let _ = request.respond(response);
}

fn respond(s: &mut State, method: &str, path: &str, request: &tiny_http::Request, token_valid: bool) -> (u16, Vec<u8>) {
    if path == "/latest/api/token" {
        if method != "PUT" {
            return (405, Vec::new());
        }
        let ttl = header(request, TOKEN_TTL_HEADER).and_then(|v| v.trim().parse::<u32>().ok());
        if !ttl.is_some_and(|t| (1..=21600).contains(&t)) {
            return (400, Vec::new());
        }
        let token = format!("berth-test-token-{}", s.tokens.len() + 1);
        s.tokens.push(token.clone());
        return (200, token.into_bytes());
    }
    if method != "GET" {
        return (405, Vec::new());
    }
    if s.data.tokens_required && !token_valid {
        return (401, Vec::new());
    }
    let text = |t: &str| (200, t.as_bytes().to_vec());
    match path {
        "/latest/user-data" => s.data.user_data.clone().map_or((404, Vec::new()), |u| (200, u)),
        "/latest/meta-data/instance-id" => text(&s.data.instance_id),
        "/latest/meta-data/local-hostname" => {
            s.data.local_hostname.as_deref().map_or((404, Vec::new()), |h| (200, h.as_bytes().to_vec()))
        }
        "/latest/meta-data" | "/latest/meta-data/" => {
            let mut listing = "instance-id\n".to_string();
            if s.data.local_hostname.is_some() {
                listing.push_str("local-hostname\n");
            }
            text(&listing)
        }
        _ => (404, Vec::new()),
    }
}

/// How long a test should give a guest's probe to reach the service.
pub const IMDS_PROBE_BOUND: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use berth_provision::sources::imds::{fetch, Options};
    use berth_provision::sources::system::RealSystem;

    fn options(server: &ImdsServer) -> Options {
        Options { base: server.url(), ..Options::default() }
    }

    fn server(user_data: Option<&[u8]>) -> ImdsServer {
        ImdsServer::start_without_nc_check(ImdsData {
            user_data: user_data.map(<[u8]>::to_vec),
            instance_id: "i-0abc".into(),
            local_hostname: Some("ip-1".into()),
            tokens_required: true,
        })
        .unwrap()
    }

    #[test]
    fn berths_probe_gets_a_token_and_uses_it() {
        let s = server(Some(b"#cloud-config\nhostname: a\n"));
        let found = fetch(&mut RealSystem, &options(&s)).unwrap();
        assert_eq!(found.user_data.as_deref(), Some(&b"#cloud-config\nhostname: a\n"[..]));
        assert_eq!(
            String::from_utf8(found.meta_data.unwrap()).unwrap(),
            "instance-id: \"i-0abc\"\nlocal-hostname: \"ip-1\"\n"
        );
        assert_eq!(s.tokens_issued(), 1);
        assert_eq!(s.gets_with_token("/latest/user-data"), 1);
        assert_eq!(s.gets_with_token("/latest/meta-data/instance-id"), 1);
        assert!(s.requests().iter().all(|r| r.status == 200), "{:?}", s.requests());
    }

    #[test]
    fn no_user_data_is_404_and_a_new_instance_id_is_served() {
        let s = server(None);
        let found = fetch(&mut RealSystem, &options(&s)).unwrap();
        assert_eq!(found.user_data, None);
        s.set(|d| d.instance_id = "i-new".into());
        let found = fetch(&mut RealSystem, &options(&s)).unwrap();
        assert!(String::from_utf8(found.meta_data.unwrap()).unwrap().contains("i-new"));
        assert!(s.requests().iter().any(|r| r.path == "/latest/user-data" && r.status == 404));
    }

    #[test]
    fn without_a_token_it_is_401_and_without_ttl_400() {
        let s = server(Some(b"x"));
        let req = |method, url: String, headers: Vec<(String, String)>| berth_provision::sources::system::Request {
            method,
            url,
            headers,
            timeout: Duration::from_secs(5),
            limit: 1000,
        };
        use berth_provision::sources::system::{Method, System};
        let r = RealSystem.http(&req(Method::Get, format!("{}/latest/user-data", s.url()), vec![])).unwrap();
        assert_eq!(r.status, 401);
        let r = RealSystem.http(&req(Method::Put, format!("{}/latest/api/token", s.url()), vec![])).unwrap();
        assert_eq!(r.status, 400);
        s.set(|d| d.tokens_required = false);
        let r = RealSystem.http(&req(Method::Get, format!("{}/latest/user-data", s.url()), vec![])).unwrap();
        assert_eq!((r.status, r.body), (200, b"x".to_vec()));
        assert_eq!(s.tokens_issued(), 0);
    }
}
