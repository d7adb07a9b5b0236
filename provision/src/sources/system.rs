//! The probe's seam to the machine: sysfs and device reads, mounting a
//! seed, HTTP and sleeping. [`RealSystem`] is the machine's; host tests
//! fake it (a map of files, canned HTTP answers, a clock that does not
//! sleep).

use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{NextTimeout, TcpConnector};

/// An HTTP method the metadata service needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    /// With an empty body (IMDSv2's token request).
    Put,
}

/// One HTTP request, plain `http://` only (the metadata service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    /// Extra headers, name and value.
    pub headers: Vec<(String, String)>,
    /// The whole exchange (connect, send, receive the body) must end within it.
    pub timeout: Duration,
    /// Bodies longer than this many bytes are an error.
    pub limit: u64,
}

/// An HTTP answer: any status (a 404 is an answer, not an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What the probe needs from the machine. Paths are absolute, as on the
/// machine.
pub trait System {
    /// A file's bytes, at most `limit` of them (an error when it is
    /// longer); `Ok(None)` when it does not exist.
    fn read_file(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>>;
    /// The names in a directory, sorted; `Ok(None)` when it does not exist.
    fn list_dir(&self, path: &Path) -> io::Result<Option<Vec<String>>>;
    /// Up to `len` bytes of a file or block device from `offset` (fewer at
    /// its end).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Mounts `device` read-only (nosuid, nodev, noexec) at `target` as
    /// `fstype` (`vfat`, `iso9660`), making `target` first.
    fn mount_ro(&mut self, device: &Path, fstype: &str, target: &Path) -> io::Result<()>;
    /// Unmounts `target`.
    fn unmount(&mut self, target: &Path) -> io::Result<()>;
    /// One HTTP exchange. Errors: no connection, a timeout, a body over the limit.
    fn http(&mut self, request: &Request) -> io::Result<Response>;
    /// Waits between retries of the metadata service (never otherwise).
    fn sleep(&mut self, duration: Duration);
}

/// The machine itself: std files, mount(2), ureq.
#[derive(Debug, Default)]
pub struct RealSystem;

impl System for RealSystem {
    fn read_file(&self, path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::other(format!("longer than {limit} bytes")));
        }
        Ok(Some(bytes))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Option<Vec<String>>> {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in entries {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(Some(names))
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn mount_ro(&mut self, device: &Path, fstype: &str, target: &Path) -> io::Result<()> {
        use rustix::mount::MountFlags;
        std::fs::create_dir_all(target)?;
        let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        rustix::mount::mount(device, target, fstype, flags, None).map_err(io::Error::from)
    }

    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).map_err(io::Error::from)
    }

    fn http(&mut self, request: &Request) -> io::Result<Response> {
        if !request.url.starts_with("http://") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: only http:// is spoken", request.url),
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(request.timeout))
            // The metadata service is on the link: never through a proxy
            // from the environment, never redirected elsewhere.
            .proxy(None)
            .max_redirects(0)
            .build();
        // Plain TCP to an address, no more: ureq's default connector chain
        // and resolver link rustls, ring and glibc's getaddrinfo (NSS,
        // dlopen) into PID1, 1 MiB of its static binary that it never runs.
        let agent = ureq::Agent::with_parts(config, TcpConnector::default(), LiteralResolver);
        let result = match request.method {
            Method::Get => {
                let mut r = agent.get(&request.url);
                for (name, value) in &request.headers {
                    r = r.header(name, value);
                }
                r.call()
            }
            Method::Put => {
                let mut r = agent.put(&request.url);
                for (name, value) in &request.headers {
                    r = r.header(name, value);
                }
                r.send_empty()
            }
        };
        let mut response = result.map_err(http_error)?;
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(request.limit).read_to_vec().map_err(http_error)?;
        Ok(Response { status, body })
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Resolves a URL whose host is an IP address (the metadata service's
/// 169.254.169.254, a test server's 127.0.0.1), and nothing else: there is
/// no name service to ask before the network is up.
#[derive(Debug)]
struct LiteralResolver;

impl Resolver for LiteralResolver {
    fn resolve(&self, uri: &Uri, _: &ureq::config::Config, _: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or_else(|| ureq::Error::BadUri(format!("{uri}: no host")))?;
        // An IPv6 literal keeps its brackets in the URI.
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| ureq::Error::BadUri(format!("{uri}: the host must be an IP address")))?;
        let mut addrs = self.empty();
        addrs.push(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)));
        Ok(addrs)
    }
}

fn http_error(e: ureq::Error) -> io::Error {
    match e {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(t) => io::Error::new(io::ErrorKind::TimedOut, format!("timed out ({t})")),
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// One-connection HTTP server: returns the request head it saw.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            s.write_all(answer.as_bytes()).unwrap();
            head
        });
        (url, t)
    }

    fn request(method: Method, url: String) -> Request {
        Request {
            method,
            url,
            headers: vec![("X-aws-ec2-metadata-token".into(), "tok".into())],
            timeout: Duration::from_secs(5),
            limit: 100,
        }
    }

    #[test]
    fn real_http_sends_headers_and_reads_any_status() {
        let (url, t) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nnop");
        let r = RealSystem.http(&request(Method::Get, format!("{url}/latest/user-data"))).unwrap();
        assert_eq!(r, Response { status: 404, body: b"nop".to_vec() });
        let head = t.join().unwrap();
        assert!(head.starts_with("GET /latest/user-data HTTP/1.1"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-aws-ec2-metadata-token: tok"), "{head}");
    }

    #[test]
    fn real_http_put_and_the_body_limit() {
        let (url, t) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
        let r = RealSystem.http(&request(Method::Put, format!("{url}/latest/api/token"))).unwrap();
        assert_eq!(r.body, b"abc");
        assert!(t.join().unwrap().starts_with("PUT /latest/api/token"));
        let (url, _t) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 200\r\nConnection: close\r\n\r\n");
        let mut req = request(Method::Get, url);
        req.limit = 10;
        assert!(RealSystem.http(&req).is_err());
    }

    #[test]
    fn real_http_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut req = request(Method::Get, format!("http://{}/", l.local_addr().unwrap()));
        req.timeout = Duration::from_millis(300);
        let start = Instant::now();
        assert!(RealSystem.http(&req).is_err());
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn real_http_takes_ip_addresses_and_plain_http_only() {
        let (url, t) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let port = url.rsplit(':').next().unwrap().to_string();
        let r = RealSystem.http(&request(Method::Get, format!("{url}/x"))).unwrap();
        assert_eq!(r.body, b"ok");
        t.join().unwrap();
        // A name is refused before any lookup: there is no name service.
        let e = RealSystem.http(&request(Method::Get, format!("http://localhost:{port}/"))).unwrap_err();
        assert!(e.to_string().contains("IP address"), "{e}");
        let e = RealSystem.http(&request(Method::Get, "https://127.0.0.1/".to_string())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn real_files_and_devices() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        let sys = RealSystem;
        assert_eq!(sys.list_dir(dir.path()).unwrap(), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(sys.list_dir(&dir.path().join("none")).unwrap(), None);
        assert_eq!(sys.read_file(&dir.path().join("b"), 10).unwrap().as_deref(), Some(&b"0123456789"[..]));
        assert!(sys.read_file(&dir.path().join("b"), 9).is_err());
        assert_eq!(sys.read_file(&dir.path().join("none"), 9).unwrap(), None);
        assert_eq!(sys.read_at(&dir.path().join("b"), 8, 5).unwrap(), b"89");
    }
}
