//! Debian's archive as this build host's apt reaches it: the mirror URLs
//! read from the host's apt sources (a machine without deb.debian.org, or
//! behind a local mirror, builds from what it already uses), and the
//! sources.list of a Debian system built from them. The systemd peer of
//! `bench --peer` is debootstrapped from them, and erofs-utils' source
//! comes from them.
//!
//! Formats: the one-line `deb [options] URI SUITE COMPONENTS` of
//! sources.list(5) and the deb822 stanzas (`Types:`, `URIs:`, `Suites:`) of
//! sources.list.d/*.sources.

use std::path::PathBuf;

/// The Debian release of the build host and of the peer: the one Berth's
/// packages come from.
pub const SUITE: &str = "bookworm";

/// The apt sources of a Debian system (the peer): the suite, its updates and its security
/// archive (the pinned packages may come from either).
pub fn sources_list(mirror: &Mirrors) -> String {
    format!(
        "deb {m} {SUITE} main\ndeb {m} {SUITE}-updates main\ndeb {s} {SUITE}-security main\n",
        m = mirror.debian,
        s = mirror.security
    )
}

/// The Debian archive and its security archive, as the host's apt reaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub debian: String,
    pub security: String,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            debian: "http://deb.debian.org/debian".into(),
            security: "http://deb.debian.org/debian-security".into(),
        }
    }
}

/// Reads the mirror URLs out of apt source files (one-line `deb URI SUITE
/// COMPONENTS` lines and deb822 stanzas with `URIs:` and `Suites:`): the
/// URI that serves [`SUITE`] and the one that serves `SUITE-security`.
/// What is not found keeps the default (deb.debian.org).
pub fn mirrors_from_sources(texts: &[String]) -> Mirrors {
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for text in texts {
        // deb822: stanzas separated by blank lines.
        for stanza in text.split("\n\n") {
            let mut uris = Vec::new();
            let mut suites = Vec::new();
            let mut types_deb = true;
            for line in stanza.lines().map(str::trim) {
                if let Some(v) = line.strip_prefix("URIs:") {
                    uris.extend(v.split_whitespace().map(str::to_string));
                } else if let Some(v) = line.strip_prefix("Suites:") {
                    suites.extend(v.split_whitespace().map(str::to_string));
                } else if let Some(v) = line.strip_prefix("Types:") {
                    types_deb = v.split_whitespace().any(|t| t == "deb");
                } else if let Some(rest) = line.strip_prefix("deb ") {
                    // One-line form, options in brackets skipped.
                    let rest = match rest.trim_start().strip_prefix('[') {
                        Some(r) => r.split_once(']').map(|(_, r)| r).unwrap_or(""),
                        None => rest,
                    };
                    let mut words = rest.split_whitespace();
                    if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                        found.push((uri.to_string(), vec![suite.to_string()]));
                    }
                }
            }
            if types_deb {
                for uri in uris {
                    found.push((uri, suites.clone()));
                }
            }
        }
    }
    let pick = |suite: &str| {
        found
            .iter()
            .find(|(uri, suites)| suites.iter().any(|s| s == suite) && uri.starts_with("http"))
            .map(|(uri, _)| uri.trim_end_matches('/').to_string())
    };
    let d = Mirrors::default();
    Mirrors {
        debian: pick(SUITE).unwrap_or(d.debian),
        security: pick(&format!("{SUITE}-security")).unwrap_or(d.security),
    }
}

/// The host's apt sources (`/etc/apt/sources.list` and `sources.list.d/`).
pub(crate) fn host_mirrors() -> Mirrors {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
        .collect();
    files.sort();
    texts.extend(files.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    mirrors_from_sources(&texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot/x\nURIs: http://deb.example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.example.org/debian-security/\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirrors_from_sources(&[deb822.to_string()]),
            Mirrors {
                debian: "http://deb.example.org/debian".into(),
                security: "http://deb.example.org/debian-security".into()
            }
        );
        let one_line = "deb [signed-by=/k.gpg] http://m.example/debian bookworm main\ndeb https://other.example/apt cloud-sdk main\n";
        let m = mirrors_from_sources(&["# nothing\n".into(), one_line.into()]);
        assert_eq!(m.debian, "http://m.example/debian");
        assert_eq!(m.security, Mirrors::default().security);
        let src = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n";
        assert_eq!(mirrors_from_sources(&[src.into()]), Mirrors::default());
        assert!(sources_list(&m).starts_with("deb http://m.example/debian bookworm main\n"));
    }
}
