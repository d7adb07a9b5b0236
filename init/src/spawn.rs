//! Children start clean: none of PID1's signal state, none of its files.
//!
//! PID1 ignores SIGPIPE (the Rust runtime does) and has handlers installed;
//! an ignored signal stays ignored across exec, so a child would silently
//! inherit it. Descriptors PID1 opened without O_CLOEXEC would leak into
//! every service. Both are reset between fork and exec.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// PATH for everything PID1 starts.
pub const PATH: &str = "/usr/sbin:/usr/bin";

/// Highest signal number on Linux (`_NSIG - 1`).
const MAX_SIGNAL: libc::c_int = 64;

/// A command with an empty environment but PATH, run from `/`, with the
/// child's signals and descriptors reset before exec.
pub fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", PATH).current_dir("/");
    // SAFETY: reset_child only makes async-signal-safe system calls and
    // does not allocate, as required between fork and exec.
    unsafe { cmd.pre_exec(reset_child) };
    cmd
}

/// The kernel's `struct sigaction` on x86_64 (not glibc's).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Runs in the forked child, before exec.
fn reset_child() -> io::Result<()> {
    // SAFETY: sigemptyset/sigprocmask on a local set; signal() with
    // SIG_DFL; close_range/fcntl on descriptor numbers. All are
    // async-signal-safe system calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // The raw system call: glibc's sigaction refuses signals 32 and
        // 33 (its own), yet they can arrive ignored from PID1's parent.
        let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for sig in 1..=MAX_SIGNAL {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
        // Mark rather than close: std reports a failed exec through a
        // CLOEXEC pipe that must stay open until exec.
        if libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) != 0 {
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// The admin shell: a session leader with `tty` as its controlling
/// terminal and as stdin, stdout and stderr.
pub fn shell_command(shell: &str, tty: &File) -> io::Result<Command> {
    let mut cmd = clean_command(shell);
    // A login shell ("-sh") reads /etc/profile: the operator's PATH and prompt.
    cmd.arg0("-sh")
        .env("HOME", "/root")
        .env("TERM", "linux")
        .stdin(tty.try_clone()?)
        .stdout(tty.try_clone()?)
        .stderr(tty.try_clone()?);
    // SAFETY: setsid and ioctl are async-signal-safe; errors come from
    // errno without allocating.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // std has already put the tty on 0-2; 1 = take it even if
            // another session had it (an old shell's leftover).
            if libc::ioctl(0, libc::TIOCSCTTY, 1) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::tests::run_reaped;
    use crate::reaper::ExitStatus;
    use std::os::unix::io::AsRawFd;

    fn status_field(text: &str, key: &str) -> String {
        text.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().to_string()
    }

    #[test]
    fn children_get_no_ignored_signals_no_mask_and_no_inherited_fds() {
        let dir = std::env::temp_dir().join(format!("berth-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out_path = dir.join("out");
        // A descriptor without O_CLOEXEC, as a careless open would leave it.
        let leaked = File::open("/proc/self/status").unwrap();
        let dup = rustix::io::dup(&leaked).unwrap();
        assert!(dup.as_raw_fd() > 2);
        // SAFETY: ignoring a signal nothing in the tests uses.
        unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGUSR2, nix::sys::signal::SigHandler::SigIgn) }
            .unwrap();
        let mut cmd = clean_command("/bin/sh");
        cmd.args([
            "-c",
            "cat /proc/self/status; echo fds: $(ls /proc/self/fd | tr '\\n' ' '); echo env: $(env | sort | tr '\\n' ' ')",
        ])
        .stdout(File::create(&out_path).unwrap());
        let status = run_reaped(cmd).unwrap();
        drop(dup);
        assert_eq!(status, ExitStatus::Exited(0));
        let text = std::fs::read_to_string(&out_path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(status_field(&text, "SigIgn:"), "0000000000000000", "{text}");
        assert_eq!(status_field(&text, "SigBlk:"), "0000000000000000", "{text}");
        // cat's own status read plus 0-2; ls opens one for /proc/self/fd.
        let fds = status_field(&text, "fds:");
        assert_eq!(fds, "0 1 2 3", "only stdio is inherited: {text}");
        let env = status_field(&text, "env:");
        assert!(env.contains("PATH=/usr/sbin:/usr/bin"), "{env}");
        assert!(!env.contains("HOME="), "environment is cleared: {env}");
    }
}
