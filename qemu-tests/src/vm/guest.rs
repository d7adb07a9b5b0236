//! What runs in the guest through the admin shell (busybox sh on
//! /dev/hvc0): commands with their exit status, files read and written,
//! the Secure Boot state, file system sizes.

use std::time::{Duration, Instant};

use berth_layout::console::SHUTDOWN_DONE;

use super::{poll_child, Vm, SECURE_BOOT_VAR, SH_TIMEOUT};
use crate::console;
use crate::error::{Error, Result};
use crate::shell::{AdminShell, Output};

impl Vm {
    /// Runs `cmd` in the admin shell (busybox sh on /dev/hvc0), stdin from
    /// /dev/null, stderr into the output; time limit [`SH_TIMEOUT`].
    pub fn sh(&mut self, cmd: &str) -> Result<Output> {
        self.sh_timeout(cmd, SH_TIMEOUT)
    }

    pub fn sh_timeout(&mut self, cmd: &str, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let what = format!("`{cmd}` in the admin shell");
        self.shell_ready(&what, deadline, timeout)?;
        let shutdowns = console::count_lines(&self.console_text(), SHUTDOWN_DONE);
        let Vm { shell, child, exited, paths, .. } = self;
        let shell = shell.as_mut().expect("connected by shell_ready");
        // Fails fast when QEMU exits or the guest shuts down (the shell is
        // gone then, and no answer will come).
        let mut last_look = Instant::now();
        let mut alive = || {
            if let Some(st) = poll_child(child, exited) {
                return Err(Error::Exited { what: what.clone(), status: st.to_string(), context: paths.context() });
            }
            if last_look.elapsed() >= Duration::from_millis(500) {
                last_look = Instant::now();
                if console::count_lines(&paths.console_text(), SHUTDOWN_DONE) > shutdowns {
                    return Err(Error::Other(format!(
                        "{what}: the guest shut down before the command finished\n{}",
                        paths.context()
                    )));
                }
            }
            Ok(())
        };
        match shell.run(cmd, deadline, &mut alive)? {
            Some(out) => Ok(out),
            None => Err(Error::Timeout {
                what,
                after: timeout,
                context: format!(
                    "--- admin console ({}) ---\n{}\n{}",
                    paths.admin_log.display(),
                    console::tail(&shell.recent(), 20),
                    paths.context()
                ),
            }),
        }
    }

    /// Types `cmd` into the admin shell and returns without waiting for it:
    /// for commands after which no answer comes (`kill -INT 1` reboots).
    pub fn sh_nowait(&mut self, cmd: &str) -> Result<()> {
        let what = format!("`{cmd}` in the admin shell");
        self.shell_ready(&what, Instant::now() + SH_TIMEOUT, SH_TIMEOUT)?;
        self.shell.as_mut().expect("connected by shell_ready").submit(cmd).map(drop)
    }

    /// Connects to the admin console and syncs with the shell of the
    /// current boot.
    fn shell_ready(&mut self, what: &str, deadline: Instant, timeout: Duration) -> Result<()> {
        if !self.is_running() {
            return Err(Error::Other(format!("{what}: QEMU is not running")));
        }
        if self.cfg.serial_to_stdio {
            return Err(Error::Other(format!("{what}: the admin console is on the terminal (serial_to_stdio)")));
        }
        if self.shell.is_none() {
            self.shell = Some(AdminShell::connect(&self.paths.admin_sock, &self.paths.admin_log)?);
        }
        let boot = self.ready_count();
        let Vm { shell, child, exited, paths, .. } = self;
        let shell = shell.as_mut().expect("connected above");
        if shell.synced_for == Some(boot) {
            return Ok(());
        }
        let mut alive = || match poll_child(child, exited) {
            Some(st) => Err(Error::Exited { what: what.to_string(), status: st.to_string(), context: paths.context() }),
            None => Ok(()),
        };
        match shell.sync(deadline, &mut alive) {
            Ok(()) => {
                shell.synced_for = Some(boot);
                Ok(())
            }
            Err(Error::Other(why)) => Err(Error::Timeout {
                what: format!("{what}: {why}"),
                after: timeout,
                context: format!(
                    "--- admin console ({}) ---\n{}\n{}",
                    paths.admin_log.display(),
                    console::tail(&shell.recent(), 10),
                    paths.context()
                ),
            }),
            Err(e) => Err(e),
        }
    }

    /// Runs `cmd` and returns (exit status, output); panics (naming the
    /// command and the console tail) when the shell itself fails. For tests.
    #[track_caller]
    pub fn sh_status(&mut self, cmd: &str) -> (i32, String) {
        match self.sh(cmd) {
            Ok(o) => (o.status, o.output),
            Err(e) => panic!("guest command `{cmd}`: {e}"),
        }
    }

    /// Runs `cmd` and returns its output; panics (naming the command, its
    /// status, output and the console tail) unless it exits 0. For tests.
    #[track_caller]
    pub fn sh_ok(&mut self, cmd: &str) -> String {
        let (status, out) = self.sh_status(cmd);
        if status != 0 {
            panic!("guest command `{cmd}` exited with status {status}:\n{out}\n{}", self.paths.context());
        }
        out
    }

    /// Writes `content` to the guest file `path` (its directory created)
    /// through the admin shell, base64-encoded so any text survives the
    /// trip (the guest has busybox `base64 -d`), in pieces that each fit a
    /// console command ([`crate::MAX_COMMAND`]), and reads it back; panics when
    /// either fails. For tests.
    #[track_caller]
    pub fn write_file(&mut self, path: &str, content: &str) {
        use base64::Engine;
        let dir = path.rsplit_once('/').map(|(d, _)| d).filter(|d| !d.is_empty()).unwrap_or("/");
        self.sh_ok(&format!("mkdir -p '{dir}' && : > '{path}'"));
        // 450 bytes are 600 base64 characters: with the command around
        // them, well inside the console's limit.
        for piece in content.as_bytes().chunks(450) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(piece);
            self.sh_ok(&format!("echo '{encoded}' | base64 -d >> '{path}'"));
        }
        let back = self.read_file(path).unwrap_or_else(|e| panic!("reading back {path}: {e}"));
        assert_eq!(back, content, "{path} in the guest does not hold what was written");
    }

    /// The guest's SecureBoot EFI variable, read through efivarfs
    /// ([`SECURE_BOOT_VAR`]): `Some(true)` when the firmware enforces
    /// Secure Boot, `None` when the variable cannot be read.
    pub fn secure_boot_enforced(&mut self) -> Option<bool> {
        let out = self.sh(&format!("od -An -tu1 {SECURE_BOOT_VAR}")).ok().filter(|o| o.success())?;
        // 4 bytes of attributes, then the value: 1 when enforced.
        out.output.split_whitespace().last().map(|b| b == "1")
    }

    /// A guest file's text, read with shell built-ins only (no `cat`
    /// needed in the image).
    pub fn read_file(&mut self, path: &str) -> Result<String> {
        let out =
            self.sh(&format!("while IFS= read -r l || [ -n \"$l\" ]; do printf '%s\\n' \"$l\"; done < '{path}'"))?;
        if out.success() {
            Ok(out.output)
        } else {
            Err(Error::Other(format!("reading {path} in the guest: {}", out.output.trim_end())))
        }
    }

    /// The names in a guest directory, with shell built-ins only.
    pub fn list_dir(&mut self, path: &str) -> Result<Vec<String>> {
        let out = self.sh(&format!(
            "cd '{path}' && for f in * .*; do [ -e \"$f\" ] && [ \"$f\" != . ] && [ \"$f\" != .. ] && printf '%s\\n' \"$f\"; done; true"
        ))?;
        if !out.success() {
            return Err(Error::Other(format!("listing {path} in the guest: {}", out.output.trim_end())));
        }
        Ok(out.output.lines().map(str::to_string).collect())
    }

    /// The size in KiB of the file system that holds `path` in the guest
    /// (the total column of `df -k`).
    pub fn df_kib(&mut self, path: &str) -> Result<u64> {
        let out = self.sh(&format!("df -k '{path}'"))?;
        let kib = out.output.lines().nth(1).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok());
        match kib {
            Some(kib) if out.success() => Ok(kib),
            _ => Err(Error::Parse(format!("`df -k {path}` in the guest said:\n{}", out.output.trim_end()))),
        }
    }
}
