//! `/usr/lib/os-release` ([`crate::paths::OS_RELEASE`]), as the
//! freedesktop.org os-release specification describes it: the image's
//! identity, written by the build and read at run time.
//!
//! The booted OS version is its `VERSION_ID`, not [`crate::VERSION`]: the
//! build can name a version other than the workspace's (`berth-image build
//! --os-version`), and whatever compares versions at run time (the updater)
//! must see the one the image was built as.

/// The file's text for an image of OS version `version`.
pub fn render(version: &str) -> String {
    format!("NAME=Berth\nID=berth\nVERSION_ID={version}\nPRETTY_NAME=\"Berth {version}\"\n")
}

/// The value of `VERSION_ID=` in os-release text, unquoted (`"..."` or
/// `'...'`, with `\` escapes undone as the specification allows); `None`
/// if the key is missing or empty. Comments and other keys are skipped;
/// the last assignment wins, as in a shell.
pub fn version_id(text: &str) -> Option<String> {
    text.lines().filter_map(|l| l.trim().strip_prefix("VERSION_ID=")).map(unquote).next_back().filter(|v| !v.is_empty())
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = ['"', '\''].iter().find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q))).unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_version_reads_back() {
        assert_eq!(version_id(&render("0.2.0-rc.1")).as_deref(), Some("0.2.0-rc.1"));
    }

    #[test]
    fn quotes_comments_and_missing_keys() {
        assert_eq!(version_id("# c\nID=berth\nVERSION_ID=\"1.2.3\"\n").as_deref(), Some("1.2.3"));
        assert_eq!(version_id("VERSION_ID='1.2.3'").as_deref(), Some("1.2.3"));
        assert_eq!(version_id("  VERSION_ID=1.2\\.3  ").as_deref(), Some("1.2.3"));
        assert_eq!(version_id("VERSION_ID=1\nVERSION_ID=2\n").as_deref(), Some("2"));
        assert_eq!(version_id("ID=berth\nVERSION=\"1\"\n"), None);
        assert_eq!(version_id("VERSION_ID=\"\"\n"), None);
    }
}
