use std::path::PathBuf;
use std::time::Duration;

/// What went wrong driving a VM. Errors about the guest carry the end of
/// the serial console (and of QEMU's own log), so a failing test shows
/// what the machine was doing. `Debug` shows the same text as `Display`,
/// so `.expect()` in a test prints the whole story.
#[derive(thiserror::Error)]
pub enum Error {
    /// `install` is the command line that installs what is missing.
    #[error("this host cannot run Berth VMs: missing {}\ninstall them with: {install}", .missing.join(", "))]
    HostMissing { missing: Vec<String>, install: &'static str },

    #[error("no image at {}: run `cargo run --release -p berth-image -- build`", .0.display())]
    NoImage(PathBuf),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}):\n{output}")]
    Command { command: String, status: String, output: String },

    #[error("timed out after {} s waiting for {what}\n{context}", .after.as_secs())]
    Timeout { what: String, after: Duration, context: String },

    #[error("QEMU exited ({status}) while waiting for {what}\n{context}")]
    Exited { what: String, status: String, context: String },

    #[error("the guest reached its emergency state while waiting for {what}: {line}\n{context}")]
    Emergency { what: String, line: String, context: String },

    #[error("the guest kernel panicked while waiting for {what}: {line}\n{context}")]
    KernelPanic { what: String, line: String, context: String },

    #[error("QMP: {0}")]
    Qmp(String),

    #[error("unexpected text: {0}")]
    Parse(String),

    #[error("{0}")]
    Other(String),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
