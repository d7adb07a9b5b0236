//! The error of a failed file operation, shared by every step of the build:
//! it names the path (and, where the path alone does not say it, what was
//! being done) next to the OS error.

use std::fmt;
use std::path::{Path, PathBuf};

/// A file operation on `path` that failed with `source`.
#[derive(Debug, thiserror::Error)]
pub struct IoError {
    /// What was being done, as a verb phrase ("create", "read the fragment");
    /// `None` when the step's own error message says it.
    pub action: Option<&'static str>,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl fmt::Display for IoError {
    /// `PATH: ERROR`, or `cannot ACTION PATH: ERROR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(action) = self.action {
            write!(f, "cannot {action} ")?;
        }
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

/// For `map_err`: the error of an operation on `path`.
pub fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError { action: None, path: path.to_path_buf(), source }
}

/// For `map_err`: the error of `action` on `path`.
pub fn io_doing<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError { action: Some(action), path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_path_and_the_action() {
        let e = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let at = io_at(Path::new("/x/y"))(e()).to_string();
        assert!(at.starts_with("/x/y: ") && at.len() > "/x/y: ".len(), "{at}");
        let doing = io_doing("create", Path::new("/x/y"))(e()).to_string();
        assert_eq!(doing, format!("cannot create {at}"));
    }
}
