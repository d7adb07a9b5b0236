//! The command line of a service (or of its health check): built on
//! [`clean_command`], then, between fork and exec and in this order:
//!
//! 1. `setsid()`: a session and process group of its own, so that without
//!    cgroups the group can still be signalled as one;
//! 2. into its cgroup (`cgroup.procs` opened by PID1), before it drops root;
//! 3. its resource limits (setrlimit), while it may still raise hard ones;
//! 4. supplementary groups, gid, uid;
//! 5. `chdir` to its working directory, as the user (like systemd).
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
use crate::unit::{Limit, Limits, Rlimit, DEFAULT_NOFILE, STATE_ROOT};

/// The most open files the kernel lets a process have.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";
/// What the kernel has when `/proc/sys/fs/nr_open` cannot be read.
const KERNEL_NR_OPEN: u64 = 1_048_576;

/// One setrlimit(2) call: resource and values.
pub(crate) type SetRlimit = (libc::__rlimit_resource_t, libc::rlimit);

/// The rlimits a unit's process starts with, as setrlimit(2) takes them:
/// those of its `[limits]`, and [`DEFAULT_NOFILE`] when it sets no
/// `nofile`. `nofile = "infinity"` is `nr_open` (the kernel refuses more;
/// systemd does the same), and a number above it is an error that says so.
/// `privileged`: hard limits may be raised (CAP_SYS_RESOURCE, which PID1
/// has); else the default's are capped at this process's own hard limits
/// (`own_hard` of a resource), and a unit's above them are an error.
pub(crate) fn rlimits(
    limits: &Limits,
    nr_open: u64,
    privileged: bool,
    own_hard: &dyn Fn(libc::__rlimit_resource_t) -> u64,
) -> Result<Vec<SetRlimit>, String> {
    let mut out = Vec::new();
    let value = |r: Rlimit, l: Limit| -> Result<libc::rlim_t, String> {
        match (r, l) {
            (Rlimit::Nofile, Limit::Max) => Ok(nr_open),
            (Rlimit::Nofile, Limit::Value(v)) if v > nr_open => {
                Err(format!("limits.nofile: {v} open files are more than the kernel allows (fs.nr_open = {nr_open})"))
            }
            (_, Limit::Max) => Ok(libc::RLIM_INFINITY),
            (_, Limit::Value(v)) => Ok(v),
        }
    };
    if !limits.rlimits.contains_key(&Rlimit::Nofile) {
        let (soft, hard) = match (DEFAULT_NOFILE.soft, DEFAULT_NOFILE.hard) {
            (Limit::Value(s), Limit::Value(h)) => (s, h),
            _ => (1024, 524_288),
        };
        let hard = if privileged { hard } else { hard.min(own_hard(libc::RLIMIT_NOFILE)) };
        let hard = hard.min(nr_open);
        out.push((Rlimit::Nofile.resource(), libc::rlimit { rlim_cur: soft.min(hard), rlim_max: hard }));
    }
    for (&r, l) in &limits.rlimits {
        let rlim = libc::rlimit { rlim_cur: value(r, l.soft)?, rlim_max: value(r, l.hard)? };
        let own = own_hard(r.resource());
        if !privileged && rlim.rlim_max > own {
            let show = |v: u64| if v == libc::RLIM_INFINITY { "infinity".to_owned() } else { v.to_string() };
            return Err(format!(
                "limits.{}: the hard limit {} is above the service manager's own ({}), and it may not raise it \
                 (no CAP_SYS_RESOURCE)",
                r.key(),
                show(rlim.rlim_max),
                show(own)
            ));
        }
        out.push((r.resource(), rlim));
    }
    Ok(out)
}

/// [`rlimits`] for this process, now.
fn rlimits_here(limits: &Limits) -> io::Result<Vec<SetRlimit>> {
    let nr_open = std::fs::read_to_string(NR_OPEN).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(KERNEL_NR_OPEN);
    let own_hard = |resource: libc::__rlimit_resource_t| {
        let mut own = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(resource, &mut own) } == 0 {
            own.rlim_max
        } else {
            0
        }
    };
    // CAP_SYS_RESOURCE (PID1 has it; a root in a container may not).
    let privileged = rustix::thread::capabilities(None)
        .is_ok_and(|c| c.effective.contains(rustix::thread::CapabilitySet::SYS_RESOURCE));
    rlimits(limits, nr_open, privileged, &own_hard).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

pub(crate) struct Launch<'a> {
    /// Program (absolute) and arguments.
    pub argv: &'a [String],
    pub environment: &'a BTreeMap<String, String>,
    pub working_directory: Option<&'a Path>,
    pub credentials: &'a Credentials,
    /// Its `state_directory` names, for `$STATE_DIRECTORY`.
    pub state_directory: &'a [String],
    /// `$NOTIFY_SOCKET`.
    pub notify_socket: Option<&'a Path>,
    /// The cgroup's `cgroup.procs`, open for writing.
    pub cgroup_procs: Option<File>,
    /// Its `[limits]`: the rlimits are set in the child.
    pub limits: &'a Limits,
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
    if let Some(dirs) = super::state_directory::environment_value(Path::new(STATE_ROOT), l.state_directory) {
        cmd.env("STATE_DIRECTORY", dirs);
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
    let rlimits = rlimits_here(l.limits)?;
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
            for (resource, rlim) in &rlimits {
                if libc::setrlimit(*resource, rlim) != 0 {
                    return Err(io::Error::last_os_error());
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::ResourceLimit;

    fn set(pairs: &[(Rlimit, Limit, Limit)]) -> Limits {
        let rlimits = pairs.iter().map(|&(r, soft, hard)| (r, ResourceLimit { soft, hard })).collect();
        Limits { rlimits, ..Limits::default() }
    }

    fn pairs(v: &[SetRlimit]) -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
        v.iter().map(|(r, l)| (*r, l.rlim_cur, l.rlim_max)).collect()
    }

    #[test]
    fn nofile_defaults_to_systemds_and_infinity_is_nr_open() {
        let own = |_| 4096;
        let none = rlimits(&Limits::default(), 1 << 20, true, &own).unwrap();
        assert_eq!(pairs(&none), [(libc::RLIMIT_NOFILE, 1024, 524_288)]);
        // Unprivileged: the default cannot raise the hard limit.
        let capped = rlimits(&Limits::default(), 1 << 20, false, &own).unwrap();
        assert_eq!(pairs(&capped), [(libc::RLIMIT_NOFILE, 1024, 4096)]);

        let (inf, v) = (Limit::Max, Limit::Value);
        let l = set(&[(Rlimit::Nofile, inf, inf), (Rlimit::Core, inf, inf), (Rlimit::Memlock, v(64 << 20), inf)]);
        assert_eq!(
            pairs(&rlimits(&l, 1_073_741_816, true, &own).unwrap()),
            [
                (libc::RLIMIT_NOFILE, 1_073_741_816, 1_073_741_816),
                (libc::RLIMIT_CORE, libc::RLIM_INFINITY, libc::RLIM_INFINITY),
                (libc::RLIMIT_MEMLOCK, 64 << 20, libc::RLIM_INFINITY),
            ]
        );
        let too_many = set(&[(Rlimit::Nofile, v(1024), v(2_000_000))]);
        assert_eq!(
            rlimits(&too_many, 1 << 20, true, &own).unwrap_err(),
            "limits.nofile: 2000000 open files are more than the kernel allows (fs.nr_open = 1048576)"
        );
        // Without CAP_SYS_RESOURCE a hard limit cannot go up: said before
        // the fork, rather than a bare EPERM from the child.
        let core = set(&[(Rlimit::Core, v(0), inf)]);
        assert_eq!(
            rlimits(&core, 1 << 20, false, &own).unwrap_err(),
            "limits.core: the hard limit infinity is above the service manager's own (4096), and it may not \
             raise it (no CAP_SYS_RESOURCE)"
        );
        assert!(rlimits(&core, 1 << 20, false, &|_| libc::RLIM_INFINITY).is_ok());
    }
}
