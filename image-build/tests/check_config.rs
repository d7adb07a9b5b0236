//! `berth-image check-config` over cloud-init's own documentation examples
//! (the corpus `provision/tests/corpus.rs` reads through the library): the
//! command a user runs on the build host gives each user-data file the
//! outcome kept in `provision/tests/corpus/expected.toml`: exit 1 and the
//! error for a rejected file, exit 0 and every expected warning's key
//! named for an accepted one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_CLOUD_INIT_CORPUS") {
        return PathBuf::from(p);
    }
    let candidates = [workspace().join("../shared/corpus/cloud-init"), PathBuf::from("/work/shared/corpus/cloud-init")];
    candidates.iter().find(|c| c.join("examples").is_dir()).cloned().unwrap_or_else(|| {
        panic!("the cloud-init corpus is missing: set BERTH_CLOUD_INIT_CORPUS (tried {candidates:?})")
    })
}

/// Whether the corpus file is user data (not network config or meta-data).
fn is_user_data(rel: &str) -> bool {
    (rel.starts_with("examples/") && rel.ends_with(".txt"))
        || rel == "examples/seed/user-data"
        || (rel.starts_with("module-docs/") && rel.ends_with(".yaml"))
}

#[test]
fn check_config_gives_every_corpus_file_its_expected_outcome() {
    let expected: toml::Table = toml::from_str(
        &std::fs::read_to_string(workspace().join("provision/tests/corpus/expected.toml")).expect("expected.toml"),
    )
    .expect("expected.toml is TOML");
    let root = corpus();
    let mut checked = 0;
    for (rel, outcome) in expected.iter().filter(|(rel, _)| is_user_data(rel)) {
        let out = Command::new(env!("CARGO_BIN_EXE_berth-image"))
            .arg("check-config")
            .arg(root.join(rel))
            .output()
            .expect("running berth-image check-config");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if let Some(reason) = outcome.get("rejected").and_then(|r| r.as_str()) {
            assert_eq!(out.status.code(), Some(1), "{rel} is rejected:\n{text}");
            assert!(text.contains(reason), "{rel}: the error {reason:?} is printed:\n{text}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{rel} is accepted:\n{text}");
            let warned = outcome.get("warnings").and_then(|w| w.as_array()).cloned().unwrap_or_default();
            for key in warned.iter().filter_map(|k| k.as_str()) {
                assert!(text.contains(&format!("key {key}:")), "{rel}: a warning names {key}:\n{text}");
            }
            if warned.is_empty() {
                assert!(text.contains(" 0 warnings"), "{rel}: no warning expected:\n{text}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} user-data files in the corpus's expectations");
}
