//! The files of one VM in its working directory, and what they tell when
//! something went wrong.

use std::path::{Path, PathBuf};

use crate::console;

/// Lines of console shown in errors.
const TAIL_LINES: usize = 40;

/// The files of one VM, all in its working directory.
#[derive(Clone, Debug)]
pub struct VmPaths {
    pub dir: PathBuf,
    /// The VM's disk: a qcow2 overlay on the base image.
    pub overlay: PathBuf,
    /// The VM's copy of OVMF's variable store.
    pub vars: PathBuf,
    /// Everything the serial console printed, across restarts.
    pub console: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
    /// Everything the admin console sent back.
    pub admin_log: PathBuf,
    pub admin_sock: PathBuf,
    pub qmp_sock: PathBuf,
}

impl VmPaths {
    /// The files of a VM working in `dir`.
    pub(crate) fn in_dir(dir: &Path) -> VmPaths {
        VmPaths {
            dir: dir.to_path_buf(),
            overlay: dir.join("overlay.qcow2"),
            vars: dir.join("vars.fd"),
            console: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            admin_log: dir.join("admin.log"),
            admin_sock: dir.join("admin.sock"),
            qmp_sock: dir.join("qmp.sock"),
        }
    }

    /// The console so far (lossy UTF-8; empty before QEMU wrote anything).
    pub fn console_text(&self) -> String {
        std::fs::read(&self.console).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The end of the console (and of QEMU's log, if it said anything), for
    /// error messages.
    pub fn context(&self) -> String {
        let mut s = format!(
            "--- last {TAIL_LINES} console lines ({}) ---\n{}",
            self.console.display(),
            console::tail(&strip_ansi(&self.console_text()), TAIL_LINES)
        );
        let qemu = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        if !qemu.trim().is_empty() {
            s.push_str(&format!("\n--- QEMU's log ({}) ---\n{}", self.qemu_log.display(), console::tail(&qemu, 10)));
        }
        s
    }
}

/// Removes terminal escape sequences (the firmware paints its screen with
/// them), so error messages stay readable.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_and_carriage_returns_are_stripped() {
        assert_eq!(strip_ansi("\x1b[2J\x1b[01;01HShell> \x1b[0m\r\nok"), "Shell> \nok");
    }
}
