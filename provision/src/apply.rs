//! Applying a plan through [`crate::host::Host`], all or nothing.
//!
//! Before the first change, the previous state of every path the plan
//! changes (its content, mode and owner, a symlink's target, or that it
//! was absent, its missing parent directories included) is written to a
//! backup set, [`BACKUP_DIR`]: one file per previous content and an index,
//! `index.json`, written last and atomically. Then the changes are made.
//! On an error everything is put back from the backup; on success the
//! index is removed (the commit), or with `--try` kept as the trial's
//! last known good. An index found at boot means the apply was cut
//! (power, crash) or a trial was not confirmed: [`restore`] puts it back.
//!
//! A change whose result is already there (same content, mode and
//! owner; same link target; a directory that exists) is not made, so
//! applying twice writes nothing the second time.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_layout::paths::PROVISION_DIR;
use serde::{Deserialize, Serialize};

use crate::host::{Existing, Host};
use crate::model::Command;
use crate::plan::{unit_of_path, Change};

/// The backup set of an apply in progress or a trial.
pub const BACKUP_DIR: &str = "/var/lib/berth/provision/backup";
/// Its index.
pub const BACKUP_INDEX: &str = "/var/lib/berth/provision/backup/index.json";
/// How long one bootcmd entry may run.
pub const BOOTCMD_TIMEOUT: Duration = Duration::from_secs(300);

/// What the backup set is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// An apply is under way: found at boot, it was cut and is undone.
    Applying,
    /// A `--try` waiting for `berthctl config confirm` until `until`
    /// (seconds since the epoch).
    Trial { until: u64 },
}

/// What a path was before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Was {
    Absent,
    /// A file; its content is `backup/BLOB`.
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        blob: String,
    },
    Symlink {
        target: PathBuf,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub was: Was,
}

/// `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub state: State,
    /// In the order they were first touched; put back in reverse.
    pub entries: Vec<Entry>,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// One line per change, for people.
    pub lines: Vec<String>,
    /// The paths changed.
    pub paths: Vec<String>,
    /// Units whose files (or settings) changed: PID1 restarts them.
    pub units_changed: Vec<String>,
    /// The hostname set, if the plan set one.
    pub hostname: Option<String>,
    /// What bootcmd printed and how each ended (problems, not errors).
    pub bootcmd: Vec<String>,
    /// bootcmd entries that failed.
    pub bootcmd_failed: usize,
}

/// Why an apply failed. Everything it changed was put back, unless
/// `restore_failed` says otherwise (the backup set then stays on disk and
/// is put back at the next boot).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}; {}", if let Some(r) = .restore_failed { format!("putting back what had changed failed too ({r}): it is put back at the next boot") } else { "everything it had changed was put back".to_string() })]
pub struct ApplyError {
    pub what: String,
    pub source: io::Error,
    pub restore_failed: Option<String>,
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ApplyError {
    let what = what.into();
    move |source| ApplyError { what, source, restore_failed: None }
}

/// The index of the backup set on disk, if any.
pub fn pending(host: &dyn Host) -> io::Result<Option<Index>> {
    match host.read(Path::new(BACKUP_INDEX))? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{BACKUP_INDEX}: {e}"))),
    }
}

fn blob_path(name: &str) -> PathBuf {
    Path::new(BACKUP_DIR).join(name)
}

/// Whether `change` would change anything.
fn needed(host: &dyn Host, change: &Change) -> io::Result<bool> {
    Ok(match change {
        Change::Write { path, content, mode, uid, gid } => {
            let p = Path::new(path);
            match host.inspect(p)? {
                Some(Existing::File { mode: m, uid: u, gid: g }) => {
                    (m, u, g) != (*mode & 0o7777, *uid, *gid) || !host.same_content(p, content)?
                }
                _ => true,
            }
        }
        Change::Remove { path } => host.inspect(Path::new(path))?.is_some(),
        Change::Mkdir { path, .. } => !matches!(host.inspect(Path::new(path))?, Some(Existing::Dir { .. })),
        Change::Symlink { target, path } => {
            host.inspect(Path::new(path))? != Some(Existing::Symlink { target: PathBuf::from(target) })
        }
        Change::SetHostname(_) | Change::Bootcmd(_) => false,
    })
}

fn change_path(change: &Change) -> Option<&str> {
    match change {
        Change::Write { path, .. }
        | Change::Remove { path }
        | Change::Mkdir { path, .. }
        | Change::Symlink { path, .. } => Some(path),
        Change::SetHostname(_) | Change::Bootcmd(_) => None,
    }
}

/// A file's previous content to keep: the blob's name in [`BACKUP_DIR`]
/// and the path it is copied from. Copied file to file, never read into
/// memory: what user data replaces may be of any size, and PID1 applies it.
struct Blob {
    name: String,
    from: String,
}

/// Records what `path` and its missing parents were, once.
fn remember(host: &dyn Host, path: &str, entries: &mut Vec<Entry>, blobs: &mut Vec<Blob>) -> io::Result<()> {
    // Missing parents, outermost first, so that putting back (in
    // reverse) removes the innermost first.
    let mut missing: Vec<String> = vec![];
    let mut p = Path::new(path).parent();
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() || dir == Path::new("/") || host.exists(dir) {
            break;
        }
        missing.push(dir.display().to_string());
        p = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        if !entries.iter().any(|e| e.path == dir) {
            entries.push(Entry { path: dir, was: Was::Absent });
        }
    }
    if entries.iter().any(|e| e.path == path) {
        return Ok(());
    }
    let was = match host.inspect(Path::new(path))? {
        None => Was::Absent,
        Some(Existing::Symlink { target }) => Was::Symlink { target },
        Some(Existing::Dir { mode, uid, gid }) => Was::Dir { mode, uid, gid },
        Some(Existing::File { mode, uid, gid }) => {
            let blob = blobs.len().to_string();
            blobs.push(Blob { name: blob.clone(), from: path.to_string() });
            Was::File { mode, uid, gid, blob }
        }
    };
    entries.push(Entry { path: path.to_string(), was });
    Ok(())
}

fn owner(uid: u32, gid: u32) -> String {
    let name = |id: u32| if id == 0 { "root".to_string() } else { id.to_string() };
    format!("{}:{}", name(uid), name(gid))
}

/// What a line about a change says of the path before it.
struct Before {
    /// Something was there.
    existed: bool,
    /// `/etc/hostname`'s text (the one file whose old content a line shows).
    hostname: Option<String>,
}

impl Before {
    fn of(host: &dyn Host, path: &str) -> Before {
        let hostname = (path == "/etc/hostname")
            .then(|| host.read(Path::new(path)).ok().flatten())
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string());
        Before { existed: host.exists(Path::new(path)), hostname }
    }
}

/// A line for people about one change made.
fn describe(change: &Change, before: &Before) -> Option<String> {
    Some(match change {
        Change::Write { path, content, .. } if path == "/etc/hostname" => {
            let old = before.hostname.as_deref().unwrap_or_default();
            let new = String::from_utf8_lossy(content).trim().to_string();
            format!("hostname: {} -> {new}", if old.is_empty() { "(none)" } else { old })
        }
        Change::Write { path, content, .. } if path.starts_with("/etc/berth/units/") => {
            let name = unit_of_path(path).unwrap_or_default();
            let what = if content.iter().all(|b| b.is_ascii_whitespace()) {
                "masked"
            } else if before.existed {
                "changed"
            } else {
                "added"
            };
            format!("unit {name}: {what} ({path})")
        }
        Change::Write { path, .. } if path.starts_with("/var/lib/berth/provision/") && !path.ends_with(".sh") => {
            return None
        }
        Change::Write { path, mode, uid, gid, .. } => format!("wrote {path} ({mode:04o} {})", owner(*uid, *gid)),
        Change::Remove { path } if path.starts_with("/etc/berth/units/") => {
            format!("unit {}: removed ({path})", unit_of_path(path).unwrap_or_default())
        }
        Change::Remove { path } if path.starts_with("/var/lib/berth/provision/") => return None,
        Change::Remove { path } => format!("removed {path}"),
        Change::Mkdir { path, mode, uid, gid } => format!("made directory {path} ({mode:04o} {})", owner(*uid, *gid)),
        Change::Symlink { target, path } => format!("linked {path} -> {target}"),
        Change::SetHostname(_) | Change::Bootcmd(_) => return None,
    })
}

fn make(host: &mut dyn Host, change: &Change) -> io::Result<()> {
    match change {
        Change::Write { path, content, mode, uid, gid } => {
            host.write_atomic(Path::new(path), content, *mode, *uid, *gid)
        }
        Change::Remove { path } => host.remove(Path::new(path)),
        Change::Mkdir { path, mode, uid, gid } => host.create_dir(Path::new(path), *mode, *uid, *gid),
        Change::Symlink { target, path } => host.symlink(Path::new(target), Path::new(path)),
        Change::SetHostname(name) => host.set_hostname(name),
        Change::Bootcmd(_) => Ok(()),
    }
}

/// Applies `changes` all or nothing. With `trial_until`, the backup set
/// is kept as the trial's (see [`restore`], [`discard`]). bootcmd entries
/// run last, after the commit: their failures are reported, not undone.
///
/// Errors: a backup set is already there (a trial pending, or one not
/// yet restored); a change failed (everything was put back).
pub fn apply(host: &mut dyn Host, changes: &[Change], trial_until: Option<u64>) -> Result<Applied, ApplyError> {
    if host.exists(Path::new(BACKUP_INDEX)) {
        return Err(ApplyError {
            what: format!("{BACKUP_INDEX} exists"),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "a trial is pending or an apply was not undone"),
            restore_failed: None,
        });
    }
    // The state directory is there before anything is remembered, so
    // that it is never among the directories an undo removes.
    if !host.exists(Path::new(PROVISION_DIR)) {
        host.create_dir(Path::new(PROVISION_DIR), 0o700, 0, 0).map_err(err(format!("make {PROVISION_DIR}")))?;
    }
    // What needs doing, and what it replaces.
    let mut todo: Vec<&Change> = vec![];
    let mut entries: Vec<Entry> = vec![];
    let mut blobs: Vec<Blob> = vec![];
    for c in changes {
        let Some(path) = change_path(c) else {
            todo.push(c);
            continue;
        };
        if needed(&*host, c).map_err(err(format!("inspect {path}")))? {
            remember(&*host, path, &mut entries, &mut blobs).map_err(err(format!("read {path}")))?;
            todo.push(c);
        }
    }
    let mut out = Applied::default();
    if entries.is_empty() && trial_until.is_none() {
        // Nothing to write: no backup needed.
        finish(host, &todo, &mut out);
        return Ok(out);
    }
    // The backup set: contents first, the index last (its presence says
    // the set is whole).
    let index = Index { state: State::Applying, entries };
    let saved = (|| {
        for b in &blobs {
            host.copy_atomic(Path::new(&b.from), &blob_path(&b.name), 0o600, 0, 0)?;
        }
        let json = serde_json::to_vec_pretty(&index).map_err(io::Error::other)?;
        host.write_atomic(Path::new(BACKUP_INDEX), &json, 0o600, 0, 0)
    })();
    if let Err(e) = saved {
        let _ = remove_set(host, blobs.len());
        return Err(ApplyError {
            what: format!("keep the previous contents in {BACKUP_DIR}"),
            source: e,
            restore_failed: None,
        });
    }
    for c in &todo {
        let path = change_path(c);
        let before = path.map(|p| Before::of(&*host, p));
        if let Err(e) = make(host, c) {
            let what = match c {
                Change::SetHostname(n) => format!("set the hostname {n}"),
                other => format!("{} {}", verb(other), change_path(other).unwrap_or_default()),
            };
            let restore_failed = restore_index(host, &index).err().map(|e| e.to_string());
            return Err(ApplyError { what, source: e, restore_failed });
        }
        if let (Some(p), Some(before)) = (path, &before) {
            out.paths.push(p.to_string());
            if let Some(line) = describe(c, before) {
                out.lines.push(line);
            }
        }
    }
    // The commit.
    let committed = match trial_until {
        None => remove_set(host, blobs.len()),
        Some(until) => {
            let trial = Index { state: State::Trial { until }, entries: index.entries.clone() };
            serde_json::to_vec_pretty(&trial)
                .map_err(io::Error::other)
                .and_then(|json| host.write_atomic(Path::new(BACKUP_INDEX), &json, 0o600, 0, 0))
        }
    };
    if let Err(e) = committed {
        let restore_failed = restore_index(host, &index).err().map(|e| e.to_string());
        return Err(ApplyError { what: format!("commit ({BACKUP_INDEX})"), source: e, restore_failed });
    }
    finish(host, &todo, &mut out);
    Ok(out)
}

fn verb(c: &Change) -> &'static str {
    match c {
        Change::Write { .. } => "write",
        Change::Remove { .. } => "remove",
        Change::Mkdir { .. } => "make directory",
        Change::Symlink { .. } => "link",
        Change::SetHostname(_) | Change::Bootcmd(_) => "",
    }
}

/// The units and hostname of what changed; the hostname set when there
/// are no file changes (every boot); bootcmd.
fn finish(host: &mut dyn Host, todo: &[&Change], out: &mut Applied) {
    let units: BTreeSet<String> = out.paths.iter().filter_map(|p| unit_of_path(p)).collect();
    out.units_changed = units.into_iter().collect();
    for c in todo {
        match c {
            Change::SetHostname(name) => {
                if out.paths.is_empty() {
                    // Not done above (no backup set): set it now; a
                    // failure is a line, the files are right.
                    if let Err(e) = host.set_hostname(name) {
                        out.lines.push(format!("hostname {name}: sethostname failed: {e}"));
                    }
                }
                out.hostname = Some(name.clone());
            }
            Change::Bootcmd(cmd) => {
                let argv = bootcmd_argv(cmd);
                match host.run(&argv, BOOTCMD_TIMEOUT) {
                    Ok(ran) if ran.success() => out.bootcmd.push(format!("bootcmd {}: ok", show(cmd))),
                    Ok(ran) => {
                        out.bootcmd_failed += 1;
                        let how =
                            ran.code.map_or("killed (timeout or signal)".to_string(), |c| format!("exit status {c}"));
                        let tail: String = ran
                            .output
                            .lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join(" | ");
                        out.bootcmd.push(format!("bootcmd {}: {how}: {tail}", show(cmd)));
                    }
                    Err(e) => {
                        out.bootcmd_failed += 1;
                        out.bootcmd.push(format!("bootcmd {}: could not start: {e}", show(cmd)));
                    }
                }
            }
            _ => {}
        }
    }
}

/// A bootcmd entry as argv: a string through `sh -c`, a list as is.
pub fn bootcmd_argv(cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Shell(s) => vec!["/usr/bin/sh".into(), "-c".into(), s.clone()],
        Command::Argv(v) => v.clone(),
    }
}

fn show(cmd: &Command) -> String {
    crate::generate::units::command_line(cmd)
}

/// Removes the backup set: the index first (the commit), then the
/// contents, then the directory.
fn remove_set(host: &mut dyn Host, blobs: usize) -> io::Result<()> {
    host.remove(Path::new(BACKUP_INDEX))?;
    for i in 0..blobs {
        let _ = host.remove(&blob_path(&i.to_string()));
    }
    let _ = host.remove(Path::new(BACKUP_DIR));
    Ok(())
}

/// Puts back every path of `index` (in reverse order), then removes the
/// set. Goes on past a failure and reports the first; the set then stays.
fn restore_index(host: &mut dyn Host, index: &Index) -> io::Result<Vec<String>> {
    let mut first_error: Option<io::Error> = None;
    let mut restored = vec![];
    let mut blobs = 0;
    for e in index.entries.iter().rev() {
        let p = Path::new(&e.path);
        let r = match &e.was {
            Was::Absent => host.remove(p),
            Was::Symlink { target } => host.symlink(target, p),
            Was::Dir { mode, uid, gid } => host.create_dir(p, *mode, *uid, *gid),
            Was::File { mode, uid, gid, blob } => {
                blobs += 1;
                host.copy_atomic(&blob_path(blob), p, *mode, *uid, *gid).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        io::Error::new(io::ErrorKind::NotFound, format!("{BACKUP_DIR}/{blob} is missing"))
                    } else {
                        e
                    }
                })
            }
        };
        match r {
            Ok(()) => restored.push(e.path.clone()),
            Err(err) => {
                if first_error.is_none() {
                    first_error = Some(io::Error::new(err.kind(), format!("{}: {err}", e.path)));
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    remove_set(host, blobs)?;
    Ok(restored)
}

/// What [`restore`] put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Why the set was there.
    pub state: State,
    pub paths: Vec<String>,
    pub units_changed: Vec<String>,
}

/// Puts back the backup set on disk, if any: an apply that was cut, or a
/// trial (not confirmed in time, or cut by a reboot). `Ok(None)`: there
/// was none.
pub fn restore(host: &mut dyn Host) -> io::Result<Option<Restored>> {
    let Some(index) = pending(&*host)? else { return Ok(None) };
    let paths = restore_index(host, &index)?;
    let units: BTreeSet<String> = paths.iter().filter_map(|p| unit_of_path(p)).collect();
    Ok(Some(Restored { state: index.state, paths, units_changed: units.into_iter().collect() }))
}

/// Confirms a trial: its backup set is dropped. `Ok(false)`: none.
pub fn discard(host: &mut dyn Host) -> io::Result<bool> {
    let Some(index) = pending(&*host)? else { return Ok(false) };
    let blobs = index.entries.iter().filter(|e| matches!(e.was, Was::File { .. })).count();
    remove_set(host, blobs)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
