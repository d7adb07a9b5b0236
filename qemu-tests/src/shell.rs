//! The admin shell PID1 runs on the virtio console (/dev/hvc0), driven over
//! QEMU's `admin.sock`.
//!
//! Each command is framed by markers the harness can find in the terminal
//! stream:
//!
//! ```text
//! printf '%s\n' "__B_""BEGIN_7"; ( CMD ) </dev/null 2>&1; printf '__B_''END_7_%d\n' $?
//! ```
//!
//! The marker literals are split in the typed line, so the terminal's echo
//! of what was typed can never look like a marker; the id differs per
//! command, so late output of an earlier (timed out) command is never taken
//! for a later one's.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};

/// What a command printed (stdout and stderr, in order, `\r` removed) and
/// its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub output: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// The output without its trailing newline(s).
    pub fn trimmed(&self) -> &str {
        self.output.trim_end_matches('\n')
    }
}

/// The longest command [`crate::Vm::sh`] accepts: busybox's line editor takes
/// lines of up to 1024 bytes (a terminal in canonical mode, 4095), and the
/// frame adds about 100.
pub const MAX_COMMAND: usize = 900;

pub(crate) fn frame(id: u64, cmd: &str) -> String {
    format!("printf '%s\\n' \"__B_\"\"BEGIN_{id}\"; ( {cmd}\n) </dev/null 2>&1; printf '__B_''END_{id}_%d\\n' $?\n")
}

/// A line that switches the terminal's echo off and quiets the prompts,
/// then prints the sync marker for `id`.
pub(crate) fn sync_line(id: u64) -> String {
    format!("stty -echo 2>/dev/null; PS1=''; PS2=''; printf '%s\\n' \"__B_\"\"SYNC_{id}\"\n")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the sync marker for `id` is in `buf`; returns the end of it.
pub(crate) fn parse_sync(buf: &[u8], id: u64) -> Option<usize> {
    let m = format!("__B_SYNC_{id}\n");
    find(buf, m.as_bytes()).map(|i| i + m.len())
}

/// The reply to command `id` in `buf` (with `\r` already removed), and the
/// end of it.
pub(crate) fn parse_reply(buf: &[u8], id: u64) -> Option<(Output, usize)> {
    let begin = format!("__B_BEGIN_{id}\n");
    let end = format!("__B_END_{id}_");
    let b = find(buf, begin.as_bytes())? + begin.len();
    let e = b + find(&buf[b..], end.as_bytes())?;
    let digits_at = e + end.len();
    let nl = digits_at + buf[digits_at..].iter().position(|c| *c == b'\n')?;
    let status = std::str::from_utf8(&buf[digits_at..nl]).ok()?.trim().parse().ok()?;
    Some((Output { status, output: String::from_utf8_lossy(&buf[b..e]).into_owned() }, nl + 1))
}

/// The connection to the admin console.
pub(crate) struct AdminShell {
    stream: UnixStream,
    /// Received and not yet consumed, `\r` removed.
    buf: Vec<u8>,
    /// Everything received, for the record.
    log: std::fs::File,
    next_id: u64,
    /// The boot (number of ready lines seen) the shell was set up in.
    pub synced_for: Option<usize>,
    /// A command timed out: interrupt it before the next sync.
    interrupt: bool,
}

impl AdminShell {
    pub fn connect(sock: &Path, log: &Path) -> Result<AdminShell> {
        let stream =
            UnixStream::connect(sock).map_err(io(format!("connecting to the admin console {}", sock.display())))?;
        stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(io("setting a read timeout"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("opening {}", log.display())))?;
        Ok(AdminShell { stream, buf: Vec::new(), log, next_id: 1, synced_for: None, interrupt: false })
    }

    fn send(&mut self, text: &str) -> Result<()> {
        self.stream.write_all(text.as_bytes()).map_err(io("writing to the admin console"))
    }

    /// Reads what is there (waiting up to the socket's read timeout).
    fn pump(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Error::Other("the admin console closed its connection".into())),
            Ok(n) => {
                let _ = self.log.write_all(&chunk[..n]);
                self.buf.extend(chunk[..n].iter().copied().filter(|c| *c != b'\r'));
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::Io { what: "reading the admin console".into(), source: e }),
        }
    }

    /// Brings the shell to a known state: interrupts whatever runs, turns
    /// echo and prompts off, and waits for the sync marker. Retries every
    /// few seconds (input sent before the shell started is lost) until
    /// `deadline`. `alive` tells whether QEMU still runs.
    pub fn sync(&mut self, deadline: Instant, alive: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        loop {
            let id = self.next_id;
            self.next_id += 1;
            if std::mem::take(&mut self.interrupt) {
                // A command timed out and may still run: Ctrl-C, alone (the
                // terminal flushes its input on it). Only then: busybox's
                // line editor exits the shell on a Ctrl-C at the prompt.
                self.send("\x03")?;
                std::thread::sleep(Duration::from_millis(300));
            }
            self.send("\n")?;
            self.send(&sync_line(id))?;
            let retry_at = Instant::now() + Duration::from_secs(3);
            while Instant::now() < retry_at.min(deadline) {
                self.pump()?;
                if let Some(end) = parse_sync(&self.buf, id) {
                    self.buf.drain(..end);
                    return Ok(());
                }
                alive()?;
            }
            if Instant::now() >= deadline {
                return Err(Error::Other("the admin shell on /dev/hvc0 did not answer".into()));
            }
        }
    }

    /// Types `cmd` (framed) into the shell and returns its id, without
    /// waiting; the caller has synced.
    pub fn submit(&mut self, cmd: &str) -> Result<u64> {
        if cmd.len() > MAX_COMMAND {
            return Err(Error::Other(format!(
                "command of {} bytes is longer than the {MAX_COMMAND} the console takes",
                cmd.len()
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.send(&frame(id, cmd))?;
        Ok(id)
    }

    /// Runs `cmd`; the caller has synced. `None` when `deadline` passed.
    pub fn run(
        &mut self,
        cmd: &str,
        deadline: Instant,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Output>> {
        let id = self.submit(cmd)?;
        loop {
            if let Some((out, end)) = parse_reply(&self.buf, id) {
                self.buf.drain(..end);
                return Ok(Some(out));
            }
            if Instant::now() >= deadline {
                self.interrupt = true;
                self.synced_for = None;
                return Ok(None);
            }
            self.pump()?;
            if let Err(e) = alive() {
                self.synced_for = None;
                return Err(e);
            }
        }
    }

    /// The last bytes received, for error messages.
    pub fn recent(&self) -> String {
        let from = self.buf.len().saturating_sub(2000);
        String::from_utf8_lossy(&self.buf[from..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_line_never_contains_a_marker() {
        let f = frame(7, "echo hi");
        assert!(!f.contains("__B_BEGIN_7"), "{f}");
        assert!(!f.contains("__B_END_7_"), "{f}");
        assert!(f.ends_with('\n'));
        let s = sync_line(3);
        assert!(!s.contains("__B_SYNC_3"), "{s}");
        // Echoed back, the typed line must not parse as a reply.
        assert!(parse_reply(f.as_bytes(), 7).is_none());
        assert!(parse_sync(s.as_bytes(), 3).is_none());
    }

    #[test]
    fn a_reply_is_parsed_between_the_markers_even_with_echo() {
        let f = frame(7, "printf x; false");
        let stream = format!("{f}__B_BEGIN_7\nx__B_END_7_1\nnext");
        let (out, end) = parse_reply(stream.as_bytes(), 7).unwrap();
        assert_eq!(out, Output { status: 1, output: "x".into() });
        assert_eq!(&stream[end..], "next");
    }

    #[test]
    fn multi_line_output_and_status_are_kept() {
        let stream = "__B_BEGIN_2\na\nb\n__B_END_2_0\n";
        let (out, _) = parse_reply(stream.as_bytes(), 2).unwrap();
        assert_eq!(out.output, "a\nb\n");
        assert_eq!(out.trimmed(), "a\nb");
        assert!(out.success());
    }

    #[test]
    fn another_commands_reply_or_a_partial_one_is_not_taken() {
        assert!(parse_reply(b"__B_BEGIN_1\nx\n__B_END_1_0\n", 2).is_none());
        assert!(parse_reply(b"__B_BEGIN_2\nx\n__B_END_2_12", 2).is_none());
        let (out, _) = parse_reply(b"__B_BEGIN_2\n__B_END_2_127\n", 2).unwrap();
        assert_eq!(out.status, 127);
    }

    #[test]
    fn sync_marker_is_found() {
        assert_eq!(parse_sync(b"junk\n__B_SYNC_4\nrest", 4), Some(16));
        assert_eq!(parse_sync(b"__B_SYNC_4", 4), None);
    }
}
