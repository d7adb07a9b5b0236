//! cloud-init's own examples through Berth's reader: every file of the
//! corpus (see /work/shared/corpus/cloud-init/README.md) has its expected
//! outcome in `tests/corpus/expected.toml`:
//!
//! - `outcome = "applied"`: accepted with no warning;
//! - `warnings = ["key", ...]`: accepted, with a warning on exactly these
//!   keys (the Diagnostic's key path; order and repeats do not count);
//! - `rejected = "substring"`: refused, one error containing it.
//!
//! The corpus is found at `$BERTH_CLOUD_INIT_CORPUS`, else
//! `../shared/corpus/cloud-init` beside the workspace, else
//! `/work/shared/corpus/cloud-init`; the test fails without it. With
//! `BERTH_CORPUS_GENERATE=1` it writes the outcomes it sees to
//! `expected.toml` instead (then read them, and fix what is wrong).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_provision::interpret;

fn corpus() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_CLOUD_INIT_CORPUS") {
        return PathBuf::from(p);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [ws.join("../shared/corpus/cloud-init"), PathBuf::from("/work/shared/corpus/cloud-init")];
    for c in &candidates {
        if c.join("examples").is_dir() {
            return c.clone();
        }
    }
    panic!("the cloud-init corpus is missing: set BERTH_CLOUD_INIT_CORPUS (tried {candidates:?})");
}

#[derive(Clone, Copy)]
enum Kind {
    UserData,
    Network,
    MetaData,
}

/// Every file of the corpus that is a document, and how it is read.
fn files(root: &Path) -> Vec<(String, Kind)> {
    let mut out = Vec::new();
    let mut walk = vec![root.to_path_buf()];
    while let Some(d) = walk.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk.push(p);
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let kind = if rel.starts_with("examples/network-config-") && name.ends_with(".yaml") {
                Kind::Network
            } else if (rel.starts_with("examples/") && name.ends_with(".txt")) || rel == "examples/seed/user-data" {
                Kind::UserData
            } else if rel == "examples/seed/meta-data" {
                Kind::MetaData
            } else if rel.starts_with("module-docs/") && name.starts_with("example") && name.ends_with(".yaml") {
                Kind::UserData
            } else {
                continue;
            };
            out.push((rel, kind));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Applied,
    Warnings(Vec<String>),
    Rejected(Vec<String>),
}

fn keys(ds: &[berth_provision::Diagnostic]) -> Vec<String> {
    let mut k: Vec<String> = ds.iter().map(|d| d.place.key.clone()).collect();
    k.sort();
    k.dedup();
    k
}

fn run(root: &Path, rel: &str, kind: Kind) -> Outcome {
    let bytes = std::fs::read(root.join(rel)).unwrap();
    match kind {
        Kind::UserData => match berth_provision::check(rel, &bytes) {
            Ok(d) if d.warnings.is_empty() => Outcome::Applied,
            Ok(d) => Outcome::Warnings(keys(&d.warnings)),
            Err(r) => {
                assert!(!r.errors.is_empty(), "{rel}: rejected without an error");
                Outcome::Rejected(r.errors.iter().map(|e| e.to_string()).collect())
            }
        },
        Kind::Network => match interpret::network_config_checked(rel, &bytes) {
            Ok((_, w)) if w.is_empty() => Outcome::Applied,
            Ok((_, w)) => Outcome::Warnings(keys(&w)),
            Err(e) => Outcome::Rejected(e.iter().map(|e| e.to_string()).collect()),
        },
        Kind::MetaData => match interpret::meta_data(rel, &bytes) {
            Ok(_) => Outcome::Applied,
            Err(e) => Outcome::Rejected(vec![e.to_string()]),
        },
    }
}

const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/expected.toml");

#[test]
fn every_corpus_file_has_its_expected_outcome() {
    let root = corpus();
    let all = files(&root);
    assert!(all.len() >= 60, "the corpus looks incomplete: {} files", all.len());
    if std::env::var("BERTH_CORPUS_GENERATE").is_ok() {
        let mut out =
            String::from("# The outcome of every cloud-init corpus file (tests/corpus.rs); reviewed by hand.\n");
        for (rel, kind) in &all {
            out.push_str(&format!("\n[\"{rel}\"]\n"));
            match run(&root, rel, *kind) {
                Outcome::Applied => out.push_str("outcome = \"applied\"\n"),
                Outcome::Warnings(k) => out.push_str(&format!("warnings = {k:?}\n")),
                Outcome::Rejected(e) => {
                    for line in &e {
                        out.push_str(&format!("# {line}\n"));
                    }
                    let first = e.first().map(|s| s.rsplit(": ").next().unwrap_or(s).to_string()).unwrap_or_default();
                    out.push_str(&format!("rejected = {first:?}\n"));
                }
            }
        }
        std::fs::create_dir_all(Path::new(EXPECTED).parent().unwrap()).unwrap();
        std::fs::write(EXPECTED, out).unwrap();
        return;
    }
    let expected: BTreeMap<String, toml::Table> = toml::from_str(&std::fs::read_to_string(EXPECTED).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (rel, kind) in &all {
        let got = run(&root, rel, *kind);
        let Some(want) = expected.get(rel) else {
            failures.push(format!("{rel}: not in expected.toml (got {got:?})"));
            continue;
        };
        let ok = if let Some(r) = want.get("rejected").and_then(|v| v.as_str()) {
            matches!(&got, Outcome::Rejected(e) if e.iter().any(|e| e.contains(r)))
        } else if let Some(w) = want.get("warnings").and_then(|v| v.as_array()) {
            let w: Vec<String> = w.iter().filter_map(|v| v.as_str().map(String::from)).collect();
            got == Outcome::Warnings(w)
        } else {
            want.get("outcome").and_then(|v| v.as_str()) == Some("applied") && got == Outcome::Applied
        };
        if !ok {
            failures.push(format!("{rel}: expected {want:?}, got {got:?}"));
        }
    }
    for k in expected.keys() {
        if !all.iter().any(|(r, _)| r == k) {
            failures.push(format!("{k}: in expected.toml but not in the corpus"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// No file that uses a key Berth does not implement is accepted silently:
/// every top-level key of every accepted user-data document is either
/// implemented or warned about.
#[test]
fn no_unsupported_key_passes_silently() {
    const IMPLEMENTED: &[&str] = &[
        "hostname",
        "fqdn",
        "preserve_hostname",
        "users",
        "ssh_authorized_keys",
        "write_files",
        "bootcmd",
        "runcmd",
        "ntp",
        "timezone",
        "ssh_pwauth",
        "disable_root",
        "network",
        "berth",
    ];
    let root = corpus();
    for (rel, kind) in files(&root) {
        if !matches!(kind, Kind::UserData) {
            continue;
        }
        let bytes = std::fs::read(root.join(&rel)).unwrap();
        let Ok(doc) = berth_provision::check(&rel, &bytes) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let tree = berth_provision::yaml::read(&rel, &text).unwrap();
        let berth_provision::tree::Value::Map(top) = tree.value else { continue };
        for (k, _) in top {
            if !IMPLEMENTED.contains(&k.name.as_str()) {
                assert!(
                    doc.warnings.iter().any(|w| w.place.key == k.name && w.place.line == k.line),
                    "{rel}: key {} (line {}) accepted without a warning",
                    k.name,
                    k.line
                );
            }
        }
    }
}
