//! The command line of a service (or of its health check): built on
//! [`clean_command`], then, between fork and exec and in this order:
//!
//! 1. `setsid()`: a session and process group of its own, so that without
//!    cgroups the group can still be signalled as one;
//! 2. into its cgroup (`cgroup.procs` opened by PID1), before it drops root;
//! 3. supplementary groups, gid, uid;
//! 4. `chdir` to its working directory, as the user (like systemd).
//!
//! Every step there is one async-signal-safe system call on values
//! prepared before the fork.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::accounts::Credentials;
use crate::spawn::clean_command;

pub(crate) struct Launch<'a> {
    /// Program (absolute) and arguments.
    pub argv: &'a [String],
    pub environment: &'a BTreeMap<String, String>,
    pub working_directory: Option<&'a Path>,
    pub credentials: &'a Credentials,
    /// `$NOTIFY_SOCKET`.
    pub notify_socket: Option<&'a Path>,
    /// The cgroup's `cgroup.procs`, open for writing.
    pub cgroup_procs: Option<File>,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

pub(crate) fn command(l: Launch<'_>) -> io::Result<Command> {
    let Some(program) = l.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no program to run"));
    };
    let mut cmd = clean_command(program);
    cmd.args(l.argv.iter().skip(1)).stdin(Stdio::null()).stdout(l.stdout).stderr(l.stderr);
    let creds = l.credentials;
    if let Some(user) = &creds.user {
        cmd.env("USER", user).env("LOGNAME", user);
    }
    if let Some(home) = &creds.home {
        cmd.env("HOME", home);
    }
    cmd.envs(l.environment);
    if let Some(sock) = l.notify_socket {
        cmd.env("NOTIFY_SOCKET", sock);
    }
    let workdir = match l.working_directory {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("working_directory {} is not a directory", dir.display()),
                ));
            }
            Some(CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?)
        }
        None => None,
    };
    let change_identity = !creds.is_root();
    let (uid, gid) = (creds.uid, creds.gid);
    let groups: Option<Vec<libc::gid_t>> = creds.groups.clone();
    let procs = l.cgroup_procs;
    // SAFETY: the closure only makes async-signal-safe system calls on
    // values prepared before the fork, and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(f) = &procs {
                crate::cgroup::join_file_from_child(f)?;
            }
            if change_identity {
                if let Some(g) = &groups {
                    if libc::setgroups(g.len(), g.as_ptr()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(dir) = &workdir {
                if libc::chdir(dir.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    Ok(cmd)
}
