//! Tests of the unit format, loading and the dependency graph, with the
//! helpers they share.

mod format;
mod graph;
mod load;

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;

fn name(s: &str) -> UnitName {
    UnitName::new(s).unwrap()
}

fn names(v: &[&str]) -> Vec<UnitName> {
    v.iter().map(|s| name(s)).collect()
}

fn set(v: &[&str]) -> BTreeSet<UnitName> {
    v.iter().map(|s| name(s)).collect()
}

fn file_of(unit: &str) -> PathBuf {
    PathBuf::from(format!("/etc/berth/units/{unit}.toml"))
}

fn parse(unit: &str, text: &str) -> Result<Unit, Vec<UnitError>> {
    parse_unit(&name(unit), &file_of(unit), text)
}

fn parse_ok(unit: &str, text: &str) -> Unit {
    match parse(unit, text) {
        Ok(u) => u,
        Err(errors) => panic!("{unit}: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

/// The single error of a bad file.
fn parse_err(text: &str) -> UnitError {
    let errors = parse("x", text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

const MINIMAL: &str = "[service]\nexec = [\"/usr/bin/true\"]\n";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("berth-unit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        Scratch(dir)
    }

    fn write(&self, dir: &str, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(dir).join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self) -> Loaded {
        load(&[&self.0.join("usr"), &self.0.join("etc"), &self.0.join("missing")])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
