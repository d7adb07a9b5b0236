//! Running host tools: every failure names the command and shows its output.

use std::path::Path;
use std::process::{Command, Output, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("could not start `{cmd}`: {source} (is it installed? `berth-image deps` installs the host tools)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}):\n{tail}")]
    Failed { cmd: String, status: String, tail: String },
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `c`, capturing its output; an exit other than 0 is an error that
/// carries the last lines of stderr and stdout.
pub fn run(c: &mut Command) -> Result<Output, CmdError> {
    let cmd = describe(c);
    let out = c.stdin(Stdio::null()).output().map_err(|source| CmdError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        let mut t = tail(&out.stderr);
        if t.trim().is_empty() {
            t = tail(&out.stdout);
        }
        return Err(CmdError::Failed { cmd, status: out.status.to_string(), tail: t });
    }
    Ok(out)
}

/// Runs `c` with its output going to `log` (long builds: the kernel), and
/// on failure shows the log's tail.
pub fn run_logged(c: &mut Command, log: &Path) -> Result<(), CmdError> {
    let cmd = describe(c);
    let spawn_err = |source| CmdError::Spawn { cmd: cmd.clone(), source };
    let file = std::fs::File::create(log).map_err(spawn_err)?;
    let err_file = file.try_clone().map_err(spawn_err)?;
    let status = c.stdin(Stdio::null()).stdout(file).stderr(err_file).status().map_err(spawn_err)?;
    if !status.success() {
        let t = std::fs::read(log).map(|b| tail(&b)).unwrap_or_default();
        return Err(CmdError::Failed {
            cmd: format!("{cmd} (log: {})", log.display()),
            status: status.to_string(),
            tail: t,
        });
    }
    Ok(())
}

/// Standard output of a successful command, as text.
pub fn stdout(c: &mut Command) -> Result<String, CmdError> {
    Ok(String::from_utf8_lossy(&run(c)?.stdout).into_owned())
}
