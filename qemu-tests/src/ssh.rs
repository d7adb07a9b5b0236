//! A real SSH client (Debian's OpenSSH) into a guest through a host port
//! forward ([`crate::VmConfig`]'s network): keys made per test, logins
//! retried while the guest's listener comes up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::vm::Vm;

/// A free TCP port on the host's 127.0.0.1 (for a `hostfwd`).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Other(format!("a free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Other(format!("a free port: {e}")))?.port())
}

/// An ed25519 key pair made with OpenSSH's ssh-keygen.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The private key file.
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public: String,
}

impl KeyPair {
    /// Makes `dir/NAME` and `dir/NAME.pub` (replacing them).
    pub fn new(dir: &Path, name: &str) -> Result<KeyPair> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Other(format!("creating {}: {e}", dir.display())))?;
        let private = dir.join(name);
        let _ = std::fs::remove_file(&private);
        let _ = std::fs::remove_file(private.with_extension("pub"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("berth-test-{name}"), "-f"])
            .arg(&private)
            .status()
            .map_err(|e| Error::Other(format!("running ssh-keygen (openssh-client): {e}")))?;
        if !st.success() {
            return Err(Error::Other(format!("ssh-keygen: {st}")));
        }
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .map_err(|e| Error::Other(format!("reading the public key: {e}")))?;
        Ok(KeyPair { private, public: public.trim().to_string() })
    }
}

/// The OpenSSH client as `user` to the guest behind `port`, with `key`,
/// non-interactive, never asking about host keys.
pub fn ssh(port: u16, key: &Path, user: &str) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i").arg(key).args(["-p", &port.to_string()]);
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "ConnectTimeout=20",
        "LogLevel=ERROR",
        "ServerAliveInterval=5",
    ] {
        c.args(["-o", o]);
    }
    c.arg(format!("{user}@127.0.0.1"));
    c
}

/// Logs in as `user` and runs `cmd`, retrying for up to `limit` while
/// the login fails (the listener may still be coming up); the command's
/// stdout once a login ran it with exit 0.
pub fn ssh_run(vm: &Vm, port: u16, key: &Path, user: &str, cmd: &str, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let out = ssh(port, key, user)
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Other(format!("running ssh: {e}")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "no SSH login as {user} running {cmd:?} within {limit:?}: {}\nstdout: {}\nstderr: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                vm.paths().context()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
