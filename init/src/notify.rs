//! The sd_notify protocol: a service tells its manager it is ready (and a
//! few other things) by sending a datagram such as `READY=1` to the
//! AF_UNIX socket named in `$NOTIFY_SOCKET`. containerd and etcd speak it.
//!
//! Each unit gets a socket of its own, `<dir>/<unit>.sock`: whatever
//! arrives on it comes from that unit's processes (or from whoever can open
//! the file, which is only root and the unit's user), so there is no need
//! for SO_PASSCRED and sender pids. A stale file from a previous run is
//! replaced; the file is removed when the [`NotifySocket`] is dropped.
//!
//! Of the protocol's variables Berth uses `READY=1`, `STATUS=`,
//! `STOPPING=1` and `MAINPID=` (recorded, see [`Message`]); the rest
//! (`WATCHDOG=1`, `RELOADING=1`, `ERRNO=`, file descriptor store, ...) is
//! read and ignored.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

/// Where PID1 puts the units' sockets.
pub const DEFAULT_DIR: &str = berth_layout::paths::NOTIFY_DIR;

/// The longest datagram read; a longer one is cut (systemd takes 4 KiB of
/// text plus descriptors).
pub const MAX_DATAGRAM: usize = 8 * 1024;

/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// One assignment of a notification datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `READY=1`: start-up is finished.
    Ready,
    /// `STOPPING=1`: the service is shutting down on its own.
    Stopping,
    /// `STATUS=...`: a line of free text for `berthctl status`.
    Status(String),
    /// `MAINPID=...`: the service says another process is its main one.
    MainPid(u32),
    /// `WATCHDOG=1`: a keep-alive ping.
    Watchdog,
    /// Anything else, kept as sent.
    Other(String),
}

/// Parses one datagram: newline-separated `VAR=VALUE` assignments. Empty
/// lines and text that is not UTF-8 are skipped.
pub fn parse(datagram: &[u8]) -> Vec<Message> {
    let text = String::from_utf8_lossy(datagram);
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some(("READY", "1")) => Message::Ready,
            Some(("STOPPING", "1")) => Message::Stopping,
            Some(("WATCHDOG", "1")) => Message::Watchdog,
            Some(("STATUS", s)) => Message::Status(s.to_owned()),
            Some(("MAINPID", p)) => match p.trim().parse::<u32>() {
                Ok(pid) if pid > 0 => Message::MainPid(pid),
                _ => Message::Other(l.to_owned()),
            },
            _ => Message::Other(l.to_owned()),
        })
        .collect()
}

/// The socket path of `unit` in `dir`: `<dir>/<unit>.sock`, or, when that
/// does not fit in `sun_path` (unit names may be 128 characters), the
/// name's start and a hash of all of it.
pub fn socket_path(dir: &Path, unit: &str) -> PathBuf {
    let plain = dir.join(format!("{unit}.sock"));
    if plain.as_os_str().len() <= MAX_SOCKET_PATH {
        return plain;
    }
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let hash = unit.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let prefix: String = unit.chars().take(16).collect();
    dir.join(format!("{prefix}-{hash:016x}.sock"))
}

/// A unit's notification socket, bound and listening.
#[derive(Debug)]
pub struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    /// Binds `<dir>/<unit>.sock` (replacing a stale file), readable and
    /// writable by root only; [`NotifySocket::allow`] opens it to the
    /// unit's user. Must be called inside a tokio runtime.
    pub fn bind(dir: &Path, unit: &str) -> io::Result<NotifySocket> {
        let path = socket_path(dir, unit);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: too long for a socket path", path.display()),
            ));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("removing stale {}: {e}", path.display()))),
        }
        let socket = UnixDatagram::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
        let out = NotifySocket { path, socket };
        std::fs::set_permissions(&out.path, std::fs::Permissions::from_mode(0o600))?;
        Ok(out)
    }

    /// Lets `uid` send to it: the unit's user, when it is not root.
    pub fn allow(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(&self.path, Some(uid), Some(gid))
    }

    /// The value of `$NOTIFY_SOCKET` for the unit.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next datagram and parses it. Cancel-safe.
    pub async fn recv(&self) -> io::Result<Vec<Message>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = self.socket.recv(&mut buf).await?;
        Ok(parse(buf.get(..n).unwrap_or_default()))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_newline_separated_assignments() {
        assert_eq!(parse(b"READY=1"), vec![Message::Ready]);
        assert_eq!(
            parse(b"READY=1\nSTATUS=Serving on :2379\nMAINPID=42\n"),
            vec![Message::Ready, Message::Status("Serving on :2379".into()), Message::MainPid(42)]
        );
        assert_eq!(parse(b"STOPPING=1\nWATCHDOG=1"), vec![Message::Stopping, Message::Watchdog]);
        assert_eq!(
            parse(b"READY=0\nMAINPID=x\nERRNO=2"),
            vec![
                Message::Other("READY=0".into()),
                Message::Other("MAINPID=x".into()),
                Message::Other("ERRNO=2".into())
            ]
        );
        assert_eq!(parse(b"\n\n"), vec![]);
    }

    #[test]
    fn long_unit_names_get_a_short_stable_path() {
        let dir = Path::new("/run/berth/notify");
        assert_eq!(socket_path(dir, "etcd"), Path::new("/run/berth/notify/etcd.sock"));
        let long = "a".repeat(128);
        let p = socket_path(dir, &long);
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH, "{}", p.display());
        assert_eq!(p, socket_path(dir, &long));
        assert_ne!(p, socket_path(dir, &"a".repeat(127)));
    }

    #[test]
    fn a_datagram_sent_to_the_path_is_received_and_the_file_replaced_and_removed() {
        let dir = std::env::temp_dir().join(format!("berth-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stale file where the socket goes.
        std::fs::write(dir.join("svc.sock"), b"stale").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sock = NotifySocket::bind(&dir, "svc").unwrap();
            let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
            sender.send_to(b"STATUS=starting", sock.path()).unwrap();
            sender.send_to(b"READY=1\nSTATUS=up", sock.path()).unwrap();
            assert_eq!(sock.recv().await.unwrap(), vec![Message::Status("starting".into())]);
            assert_eq!(sock.recv().await.unwrap(), vec![Message::Ready, Message::Status("up".into())]);
            let path = sock.path().to_owned();
            drop(sock);
            assert!(!path.exists());
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
