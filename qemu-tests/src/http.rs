//! HTTP on the host for guests: a real static file server (busybox
//! `httpd`, which answers `Range` requests with `206 Partial Content`) and a
//! proxy in front of it that drops connections part way, the way a flaky
//! network does, to prove that downloads resume.
//!
//! A guest on QEMU's user network reaches the host's loopback at
//! [`GUEST_HOST_ADDR`] (slirp's gateway), so both listen on 127.0.0.1 only
//! and no test traffic leaves the machine.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};

/// The host's loopback as a guest on QEMU's user network sees it.
pub const GUEST_HOST_ADDR: &str = "10.0.2.2";

/// The busybox binary of Debian's busybox-static package.
pub const BUSYBOX: &str = "/bin/busybox";

/// A free TCP port on 127.0.0.1 (bound, then released: another process
/// may take it in between, which on a test machine does not happen).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    Ok(l.local_addr().map_err(io("reading the bound port"))?.port())
}

/// `busybox httpd` serving a directory on 127.0.0.1; killed when dropped.
pub struct StaticServer {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl StaticServer {
    /// Serves `root` (its files, read at each request) on a free port;
    /// returns once the port answers.
    pub fn start(root: &Path) -> Result<StaticServer> {
        if !Path::new(BUSYBOX).is_file() {
            return Err(Error::HostMissing {
                missing: vec![format!("{BUSYBOX} (package busybox-static)")],
                install: "apt-get install busybox-static",
            });
        }
        let port = free_port()?;
        let child = Command::new(BUSYBOX)
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {BUSYBOX} httpd")))?;
        let server = StaticServer { child, port, root: root.to_path_buf() };
        wait_listening(port, Duration::from_secs(10))?;
        Ok(server)
    }

    /// The port on the host's 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The URL of `path` (relative to the root) as a guest reaches it.
    pub fn guest_url(&self, path: &str) -> String {
        format!("http://{GUEST_HOST_ADDR}:{}/{}", self.port, path.trim_start_matches('/'))
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(Error::Other(format!("nothing listens on 127.0.0.1:{port} after {timeout:?}")))
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`: it cuts each of the
/// first `cuts` connections once `after` bytes of the answer went through,
/// and passes the later ones whole. Stopped when dropped.
pub struct CuttingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicUsize>,
}

impl CuttingProxy {
    pub fn start(upstream: u16, cuts: usize, after: u64) -> Result<CuttingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding the proxy"))?;
        let port = listener.local_addr().map_err(io("reading the proxy's port"))?.port();
        listener.set_nonblocking(true).map_err(io("setting the proxy non-blocking"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicUsize::new(0));
        let (stop2, cut2) = (stop.clone(), cut.clone());
        thread::spawn(move || {
            let mut seen = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let limit = (seen < cuts).then_some(after);
                        seen += 1;
                        let cut = cut2.clone();
                        thread::spawn(move || relay(client, upstream, limit, &cut));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(CuttingProxy { port, stop, cut })
    }

    /// The port on the host's 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections were cut so far.
    pub fn cuts_made(&self) -> usize {
        self.cut.load(Ordering::Relaxed)
    }

    /// The URL of `path` on the upstream server, through the proxy, as a
    /// guest reaches it.
    pub fn guest_url(&self, path: &str) -> String {
        format!("http://{GUEST_HOST_ADDR}:{}/{}", self.port, path.trim_start_matches('/'))
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies the request up and the answer down; with `limit`, closes both
/// sides after that many answer bytes.
fn relay(mut client: TcpStream, upstream: u16, limit: Option<u64>, cut: &AtomicUsize) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let (Ok(mut client_r), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else { return };
    thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut server_w);
        let _ = server_w.shutdown(Shutdown::Write);
    });
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let allowed = match limit {
            Some(l) => (l.saturating_sub(sent) as usize).min(n),
            None => n,
        };
        if client.write_all(&buf[..allowed]).is_err() {
            break;
        }
        sent += allowed as u64;
        if allowed < n || limit.is_some_and(|l| sent >= l) {
            cut.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(port: u16, path: &str, range: Option<&str>) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        write!(s, "GET /{path} HTTP/1.0\r\nHost: x\r\n{range}\r\n").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    /// busybox httpd serves a file whole and in ranges; the proxy cuts the
    /// first answer short and passes the next one whole.
    #[test]
    fn static_server_ranges_and_a_cutting_proxy() {
        let dir = std::env::temp_dir().join(format!("berth-http-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.join("f.bin"), &body).unwrap();
        let server = StaticServer::start(&dir).unwrap();
        let whole = get(server.port(), "f.bin", None);
        assert!(whole.starts_with(b"HTTP/1.0 200") || whole.starts_with(b"HTTP/1.1 200"));
        assert!(whole.ends_with(&body));
        let part = get(server.port(), "f.bin", Some("bytes=100000-"));
        let head = String::from_utf8_lossy(&part[..200]).to_string();
        assert!(head.contains(" 206 "), "{head}");
        assert!(head.contains("Content-Range: bytes 100000-199999/200000"), "{head}");
        assert!(part.ends_with(&body[100_000..]));

        let proxy = CuttingProxy::start(server.port(), 1, 50_000).unwrap();
        let short = get(proxy.port(), "f.bin", None);
        assert_eq!(short.len(), 50_000);
        assert_eq!(proxy.cuts_made(), 1);
        let again = get(proxy.port(), "f.bin", None);
        assert!(again.ends_with(&body));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
