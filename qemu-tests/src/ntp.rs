//! A real NTP server on the host for guests: chronyd, the very binary the
//! image ships, taken from the image build's root tree and run with that
//! tree's own loader and libraries (so the host needs no chrony package),
//! serving the host's clock (`local stratum 8`, `-x`: it never sets the
//! host's clock).
//!
//! QEMU's user network sends a guest's UDP to [`GUEST_HOST_ADDR`] on to the
//! host's 127.0.0.1 at the same port, and an NTP client asks port 123: so
//! the server binds 127.0.0.1:123 (which takes root) and no test traffic
//! leaves the machine. One such server can run on the host at a time:
//! [`NtpServer::start`] first takes a lock file, waiting while another
//! test process (another session's suite) holds it.

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};
use crate::http::GUEST_HOST_ADDR;

/// NTP's port, on the host's 127.0.0.1.
pub const NTP_PORT: u16 = 123;

/// The stratum the server announces: above any real server a guest might
/// also know, and well below chrony's limit (16, unsynchronised).
pub const SERVER_STRATUM: u8 = 8;

/// How long [`NtpServer::start`] waits for another process's server to
/// finish with port 123 (a whole test VM's life, on a loaded machine).
const LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

/// The lock every [`NtpServer`] on this host holds while it runs.
fn lock_path() -> PathBuf {
    std::env::temp_dir().join("berth-qemu-ntp-server.lock")
}

/// Where the image build left the root tree it made the image of
/// (`image_dir()/work/root`).
pub fn image_root() -> PathBuf {
    crate::settings::image_dir().join("work").join("root")
}

/// chronyd serving the host's clock on 127.0.0.1:123; stopped (killed and
/// reaped) when dropped, which also releases the host-wide lock. Its log is
/// `dir/chronyd.log`.
pub struct NtpServer {
    child: Child,
    log: PathBuf,
    _lock: File,
}

impl NtpServer {
    /// Starts chronyd from [`image_root`] as a server, its files in `dir`,
    /// and returns once it answers an NTP request. Errors: no chronyd in
    /// the image's root tree (the image is not built, or predates chrony),
    /// another server holding the lock for [`LOCK_WAIT`], chronyd exiting
    /// (port 123 taken by something else, not root) or not answering.
    pub fn start(dir: &Path) -> Result<NtpServer> {
        Self::start_from(&image_root(), dir)
    }

    /// [`NtpServer::start`] with the chronyd of another root tree (one laid
    /// out as the image's: `usr/sbin/chronyd`, its loader in `usr/lib64`,
    /// its libraries in `usr/lib/x86_64-linux-gnu`).
    pub fn start_from(root: &Path, dir: &Path) -> Result<NtpServer> {
        let chronyd = root.join("usr/sbin/chronyd");
        let loader = root.join("usr/lib64/ld-linux-x86-64.so.2");
        if !chronyd.is_file() || !loader.is_file() {
            return Err(Error::Other(format!(
                "no chronyd (or no loader) in the image's root tree {}: build the image \
                 (`cargo run -p berth-image -- build`)",
                root.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock = take_lock(&lock_path(), LOCK_WAIT)?;
        let log = dir.join("chronyd.log");
        let out = File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io(format!("opening {}", log.display())))?;
        let child = Command::new(&loader)
            .arg("--library-path")
            .arg(root.join("usr/lib/x86_64-linux-gnu"))
            .arg(&chronyd)
            .args(server_args(dir))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", chronyd.display())))?;
        let mut server = NtpServer { child, log, _lock: lock };
        server.wait_answering(Duration::from_secs(15))?;
        Ok(server)
    }

    /// The server's address as a guest on QEMU's user network gives it
    /// (`ntp: {servers: [...]}`).
    pub fn guest_address(&self) -> &'static str {
        GUEST_HOST_ADDR
    }

    /// What chronyd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_answering(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(io("waiting for chronyd"))? {
                return Err(Error::Other(format!(
                    "the NTP server (chronyd) exited ({status}) before answering:\n{}",
                    self.log()
                )));
            }
            match query_stratum(("127.0.0.1", NTP_PORT), Duration::from_millis(500)) {
                Ok(s) if s == SERVER_STRATUM => return Ok(()),
                Ok(s) => last = format!("something else answers on 127.0.0.1:{NTP_PORT} (stratum {s})"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(Error::Other(format!(
            "the NTP server did not answer on 127.0.0.1:{NTP_PORT} within {} s ({last}):\n{}",
            limit.as_secs(),
            self.log()
        )))
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chronyd's arguments as a server of the host's clock on 127.0.0.1:123
/// only, its pid file in `dir`, no command socket or port (nothing else on
/// the host is touched), root kept (`-u root`: the host has no _chrony).
fn server_args(dir: &Path) -> Vec<String> {
    vec![
        "-x".into(),
        "-d".into(),
        "-u".into(),
        "root".into(),
        format!("local stratum {SERVER_STRATUM}"),
        "allow 127.0.0.1".into(),
        "bindaddress 127.0.0.1".into(),
        format!("port {NTP_PORT}"),
        "cmdport 0".into(),
        "bindcmdaddress /".into(),
        format!("pidfile {}", dir.join("chronyd.pid").display()),
    ]
}

/// Takes the host-wide lock at `path`, retrying for up to `limit`.
fn take_lock(path: &Path, limit: Duration) -> Result<File> {
    let file = File::create(path).map_err(io(format!("creating {}", path.display())))?;
    let deadline = Instant::now() + limit;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(1))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Other(format!(
                    "another NTP server of the tests held {} for {} s (port {NTP_PORT} serves one at a time)",
                    path.display(),
                    limit.as_secs()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(format!("locking {}", path.display()))(e)),
        }
    }
}

/// A client's request (RFC 5905): leap indicator 0, version 4, mode 3
/// (client); the rest may be zero.
pub fn client_request() -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 4 << 3 | 3;
    p
}

/// The stratum of a server's reply (mode 4) to [`client_request`], or
/// `None` when the bytes are not one.
pub fn reply_stratum(reply: &[u8]) -> Option<u8> {
    let (first, stratum) = (*reply.first()?, *reply.get(1)?);
    (reply.len() >= 48 && first & 0x7 == 4).then_some(stratum)
}

/// Sends one NTP request to `addr` and returns the stratum of the reply.
/// Errors: no reply within `timeout`, or one that is not an NTP server's.
pub fn query_stratum(addr: (&str, u16), timeout: Duration) -> Result<u8> {
    let what = format!("asking NTP at {}:{}", addr.0, addr.1);
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(io(what.clone()))?;
    socket.set_read_timeout(Some(timeout)).map_err(io(what.clone()))?;
    socket.send_to(&client_request(), addr).map_err(io(what.clone()))?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).map_err(io(what.clone()))?;
    let reply = buf.get(..n).unwrap_or_default();
    reply_stratum(reply).ok_or_else(|| Error::Parse(format!("{what}: not an NTP server's reply ({n} bytes)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_a_v4_client_packet_and_replies_are_read_by_mode() {
        let r = client_request();
        assert_eq!(r.len(), 48);
        assert_eq!(r[0], 0x23, "LI 0, VN 4, mode 3");
        let mut reply = [0u8; 48];
        reply[0] = 0x24; // VN 4, mode 4 (server)
        reply[1] = 8;
        assert_eq!(reply_stratum(&reply), Some(8));
        assert_eq!(reply_stratum(&r), None, "a client's packet is no reply");
        assert_eq!(reply_stratum(&reply[..47]), None, "too short");
        assert_eq!(reply_stratum(&[]), None);
    }

    #[test]
    fn the_server_listens_on_the_loopback_only_and_sets_no_clock() {
        let a = server_args(Path::new("/tmp/x"));
        for want in ["-x", "local stratum 8", "allow 127.0.0.1", "bindaddress 127.0.0.1", "port 123", "cmdport 0"] {
            assert!(a.iter().any(|s| s == want), "{want} in {a:?}");
        }
        assert!(a.contains(&"pidfile /tmp/x/chronyd.pid".to_string()));
    }

    #[test]
    fn the_lock_is_taken_once_and_waited_for() {
        let dir = std::env::temp_dir().join(format!("berth-ntp-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let held = take_lock(&path, Duration::from_secs(1)).unwrap();
        let e = take_lock(&path, Duration::from_millis(10)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("another NTP server"), "{e}");
        drop(held);
        assert!(take_lock(&path, Duration::from_secs(1)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
