//! What PID1 calls: user data at boot, and `berthctl config` on a running
//! machine. Both go through [`crate::plan`] and [`crate::apply`] and keep
//! the [`crate::record`]; this module holds the decisions between them:
//! at boot here (a new instance or not, a changed document), on a running
//! machine in `change` (an apply, a trial and its revert).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::apply::{self, Applied};
use crate::diag::Diagnostic;
use crate::host::Host;
use crate::model::{Config, MetaData};
use crate::plan::{self, Facts, Plan, Previous, Scope};
use crate::record::{self, Docs, Record};
use crate::sources::Probed;

mod change;
pub use change::{change, confirm, revert, show, ChangeError, ChangeReport, InForce};

/// What the machine knows when it provisions at boot.
#[derive(Clone, Debug)]
pub struct BootFacts {
    /// /etc/machine-id: the instance-id when the source has no meta-data.
    pub machine_id: String,
    pub now: SystemTime,
}

/// What became of user data at this boot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// No source had user data, and none was ever applied.
    None,
    /// A new instance (or the first boot): the document was applied.
    Applied,
    /// Same instance, same document: the every-boot keys were re-applied.
    Unchanged,
    /// Same instance-id, a different document: not applied (the one in
    /// force stays), and the console says how to apply it.
    ChangedNotApplied,
    /// The document was invalid: nothing of it applied.
    Rejected,
    /// Applying failed half-way on the machine (I/O); everything it had
    /// changed was put back.
    Failed,
}

/// The state of provisioning for `berthctl status` and the console.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub outcome: Outcome,
    /// Where the document came from (`fw_cfg:opt/org.berth/user-data`, ...).
    pub source: Option<String>,
    pub instance_id: Option<String>,
    /// sha256 of the document in force.
    pub sha256: Option<String>,
    /// Time spent finding user data at this boot, in milliseconds.
    pub probe_ms: u64,
    /// Errors (rejected or failed) and warnings, each `SOURCE:LINE: key K: message`.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// A `config apply --try` waiting for `berthctl config confirm`:
    /// seconds since the epoch when it reverts.
    pub trial_until: Option<u64>,
}

/// What [`at_boot`] hands PID1.
#[derive(Clone, Debug)]
pub struct BootOutcome {
    pub status: Status,
    /// For the console, one fact per line (`user data: fw_cfg:... applied
    /// (instance i-1, 3 warnings) in 12 ms`, each error and warning).
    pub lines: Vec<String>,
    /// The hostname now set, when user data set one.
    pub hostname: Option<String>,
}

/// Applies user data at boot, before the units are loaded. Never fails:
/// every problem is in the outcome. A trial (`--try`) left pending by a
/// reboot is reverted first.
///
/// The instance is meta-data's `instance-id`, or the machine-id. A new
/// instance (or none recorded) gets the whole document; the same instance
/// with the same document (or no source this boot) gets the every-boot
/// keys again from the document in force; the same instance with a
/// different document gets nothing of it (the console says how to apply
/// it); an invalid document gets nothing (the one in force, if any, stays).
pub fn at_boot(host: &mut dyn Host, probed: Probed, facts: &BootFacts) -> BootOutcome {
    at_boot_with(&Readers::REAL, host, probed, facts)
}

/// The readers of the documents: [`crate::check::check`] and
/// [`crate::interpret`]'s, or fakes in tests.
pub(crate) struct Readers {
    pub check: fn(&str, &[u8]) -> crate::check::Checked,
    pub meta_data: fn(&str, &[u8]) -> Result<MetaData, Diagnostic>,
    pub network_config: fn(&str, &[u8]) -> Result<crate::model::Network, Vec<Diagnostic>>,
}

impl Readers {
    pub const REAL: Readers = Readers {
        check: crate::check::check,
        meta_data: crate::interpret::meta_data,
        network_config: crate::interpret::network_config,
    };
}

pub(crate) fn at_boot_with(r: &Readers, host: &mut dyn Host, probed: Probed, facts: &BootFacts) -> BootOutcome {
    let probe_ms = u64::try_from(probed.probe_time.as_millis()).unwrap_or(u64::MAX);
    let mut b = Boot {
        status: Status {
            outcome: Outcome::None,
            source: None,
            instance_id: None,
            sha256: None,
            probe_ms,
            errors: vec![],
            warnings: vec![],
            trial_until: None,
        },
        lines: vec![],
        hostname: None,
    };
    match apply::restore(host) {
        Ok(None) => {}
        Ok(Some(r)) => b.lines.push(match r.state {
            apply::State::Applying => format!(
                "user data: an apply was cut short (power loss or crash): {} paths put back as they were",
                r.paths.len()
            ),
            apply::State::Trial { .. } => format!(
                "user data: the configuration on trial was not confirmed before this boot: the last known good one is back ({} paths)",
                r.paths.len()
            ),
        }),
        Err(e) => b.error(format!("putting back an unfinished apply failed: {e}")),
    }
    let record = match record::load(&*host) {
        Ok(r) => r,
        Err(e) => {
            b.error(format!(
                "the record of what is in force is unreadable ({e}): the document found is applied as new"
            ));
            None
        }
    };
    let now = secs(facts.now);
    let tried = if probed.tried.is_empty() { String::new() } else { format!(" ({})", probed.tried.join("; ")) };
    let Some(found) = probed.found else {
        match record {
            None => {
                b.lines.push(format!("user data: none found in {probe_ms} ms{tried}"));
            }
            Some(rec) => {
                b.lines.push(format!(
                    "user data: none found in {probe_ms} ms{tried}; {} (instance {}) stays in force",
                    rec.source, rec.instance_id
                ));
                b.status.outcome = Outcome::Unchanged;
                b.every_boot(r, host, rec);
            }
        }
        return b.done();
    };
    let origin = found.origin.clone();
    b.status.source = Some(origin.clone());
    // The instance: meta-data's instance-id, or the machine.
    let meta = match &found.meta_data {
        None => Ok(MetaData::default()),
        Some(bytes) => (r.meta_data)(&meta_source(&origin), bytes),
    };
    let network = match &found.network_config {
        None => Ok(None),
        Some(bytes) => (r.network_config)(&network_source(&origin), bytes).map(Some),
    };
    let user_data = found.user_data.clone().unwrap_or_default();
    let sha = record::sha256_hex(&user_data);
    let checked = (r.check)(&origin, &user_data);
    let (meta, network, doc) = match (meta, network, checked) {
        (Ok(m), Ok(n), Ok(d)) => (m, n, d),
        (meta, network, checked) => {
            let mut errors = vec![];
            let mut warnings = vec![];
            if let Err(e) = meta {
                errors.push(e);
            }
            if let Err(mut e) = network {
                errors.append(&mut e);
            }
            if let Err(r) = checked {
                errors.extend(r.errors);
                warnings.extend(r.warnings);
            }
            b.status.outcome = Outcome::Rejected;
            b.lines.push(format!("user data: {origin} rejected ({} errors): nothing of it is applied", errors.len()));
            b.warnings(&warnings);
            b.diagnostics(&errors);
            if let Some(rec) = record {
                b.lines.push(format!("user data: {} (instance {}) stays in force", rec.source, rec.instance_id));
                b.every_boot(r, host, rec);
            } else {
                b.lines.push("user data: the machine comes up with its defaults".into());
            }
            return b.done();
        }
    };
    let instance_id = meta.instance_id.clone().unwrap_or_else(|| facts.machine_id.trim().to_string());
    b.status.instance_id = Some(instance_id.clone());
    let rec = match record {
        Some(rec) if rec.instance_id == instance_id => rec,
        previous => {
            // A new instance: the whole document.
            let keep = previous.clone();
            let mut config = doc.config.clone();
            if let Some(n) = network.clone() {
                config.network = Some(n);
            }
            let new = Record {
                source: origin.clone(),
                instance_id: instance_id.clone(),
                sha256: sha.clone(),
                applied_at: now,
                format: Some(doc.format),
                warnings: doc.warnings.iter().map(|d| d.to_string()).collect(),
                managed: vec![],
            };
            let docs =
                Docs { user_data, meta_data: found.meta_data.clone(), network_config: found.network_config.clone() };
            let job = Job {
                config: &config,
                local_hostname: meta.local_hostname.clone(),
                previous: Previous { managed: previous.map(|p| p.managed).unwrap_or_default() },
                scope: Scope { per_instance: true, bootcmd: true },
                record: (new, docs),
                trial_until: None,
            };
            let first = b.lines.len();
            b.warnings(&doc.warnings);
            match run(host, job) {
                Ok((plan, applied)) => {
                    b.status.outcome = Outcome::Applied;
                    b.status.sha256 = Some(sha);
                    b.lines.insert(
                        first,
                        format!(
                            "user data: {origin} applied (instance {instance_id}, {} warnings) in {probe_ms} ms{tried}",
                            doc.warnings.len() + plan.warnings.len()
                        ),
                    );
                    b.warnings(&plan.warnings);
                    b.applied(applied);
                }
                Err(f) => {
                    b.failed(&origin, f);
                    if let Some(prev) = keep {
                        b.lines
                            .push(format!("user data: {} (instance {}) stays in force", prev.source, prev.instance_id));
                        b.status.instance_id = Some(prev.instance_id.clone());
                        b.every_boot(r, host, prev);
                    }
                }
            }
            return b.done();
        }
    };
    if rec.sha256 == sha {
        b.status.outcome = Outcome::Unchanged;
        b.lines.push(format!(
            "user data: {origin} unchanged (instance {instance_id}), found in {probe_ms} ms{tried}: the every-boot settings are applied again"
        ));
    } else {
        b.status.outcome = Outcome::ChangedNotApplied;
        let short = |s: &str| s.chars().take(12).collect::<String>();
        b.lines.push(format!(
            "user data changed (sha {} -> {}) but instance-id {instance_id} is the same: not applied; apply it with `berthctl config apply FILE` or give a new instance-id",
            short(&rec.sha256),
            short(&sha)
        ));
    }
    b.every_boot(r, host, rec);
    b.done()
}

fn meta_source(origin: &str) -> String {
    sibling(origin, "meta-data")
}

fn network_source(origin: &str) -> String {
    sibling(origin, "network-config")
}

/// `nocloud:/dev/vdb:user-data` -> `nocloud:/dev/vdb:meta-data`, and the
/// same for fw_cfg and the metadata service's paths.
fn sibling(origin: &str, name: &str) -> String {
    match origin.rfind("user-data") {
        Some(i) => format!("{}{name}{}", origin.get(..i).unwrap_or_default(), origin.get(i + 9..).unwrap_or_default()),
        None => format!("{origin} ({name})"),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The boot's outcome as it is built.
struct Boot {
    status: Status,
    lines: Vec<String>,
    hostname: Option<String>,
}

impl Boot {
    fn error(&mut self, message: String) {
        self.lines.push(format!("user data: error: {message}"));
        self.status.errors.push(message);
    }

    fn diagnostics(&mut self, errors: &[Diagnostic]) {
        for e in errors {
            self.error(e.to_string());
        }
    }

    fn warnings(&mut self, warnings: &[Diagnostic]) {
        for w in warnings {
            self.lines.push(format!("user data: warning: {w}"));
            self.status.warnings.push(w.to_string());
        }
    }

    fn applied(&mut self, applied: Applied) {
        for l in &applied.lines {
            self.lines.push(format!("user data: {l}"));
        }
        for l in &applied.bootcmd {
            self.lines.push(format!("user data: {l}"));
        }
        if let Some(h) = applied.hostname {
            self.hostname = Some(h);
        }
    }

    fn failed(&mut self, origin: &str, f: Fail) {
        match f {
            Fail::Invalid(errors) => {
                self.status.outcome = Outcome::Rejected;
                self.lines.push(format!(
                    "user data: {origin} cannot apply on this machine ({} errors): nothing of it is applied",
                    errors.len()
                ));
                self.diagnostics(&errors);
            }
            Fail::Io(e) => {
                self.status.outcome = Outcome::Failed;
                self.lines.push(format!("user data: {origin}: applying failed: nothing of it is left applied"));
                self.error(e);
            }
        }
    }

    /// The every-boot keys of the document in force, again.
    fn every_boot(&mut self, r: &Readers, host: &mut dyn Host, rec: Record) {
        if self.status.instance_id.is_none() {
            self.status.instance_id = Some(rec.instance_id.clone());
        }
        if self.status.outcome != Outcome::Rejected && self.status.outcome != Outcome::ChangedNotApplied {
            self.status.source = Some(rec.source.clone());
        }
        self.status.sha256 = Some(rec.sha256.clone());
        let loaded = match load_in_force(r, &*host, &rec) {
            Ok(l) => l,
            Err(f) => {
                let what = format!("the document in force ({})", rec.source);
                self.lines.push(format!("user data: {what} cannot be applied again:"));
                match f {
                    Fail::Invalid(errors) => self.diagnostics(&errors),
                    Fail::Io(e) => self.error(e),
                }
                return;
            }
        };
        self.status.warnings.extend(rec.warnings.iter().cloned());
        let job = Job {
            config: &loaded.config,
            local_hostname: loaded.local_hostname,
            previous: Previous { managed: rec.managed.clone() },
            scope: Scope { per_instance: false, bootcmd: true },
            record: (rec.clone(), loaded.docs),
            trial_until: None,
        };
        match run(host, job) {
            Ok((_, applied)) => self.applied(applied),
            Err(Fail::Invalid(errors)) => {
                self.lines.push(format!("user data: the document in force ({}) cannot be applied again:", rec.source));
                self.diagnostics(&errors);
            }
            Err(Fail::Io(e)) => {
                self.lines.push(format!(
                    "user data: applying the document in force ({}) failed: nothing of it is left applied",
                    rec.source
                ));
                self.error(e);
            }
        }
    }

    fn done(self) -> BootOutcome {
        BootOutcome { status: self.status, lines: self.lines, hostname: self.hostname }
    }
}

/// Why a plan did not apply.
enum Fail {
    /// The document cannot apply on this machine (or is invalid).
    Invalid(Vec<Diagnostic>),
    /// I/O: what was changed was put back.
    Io(String),
}

/// One apply: the plan, and the record and documents that go with it.
struct Job<'a> {
    config: &'a Config,
    local_hostname: Option<String>,
    previous: Previous,
    scope: Scope,
    /// Written by the same apply (so reverted with it); `managed` is set
    /// from the plan.
    record: (Record, Docs),
    trial_until: Option<u64>,
}

fn run(host: &mut dyn Host, job: Job<'_>) -> Result<(Plan, Applied), Fail> {
    let (mut rec, docs) = job.record;
    let facts = Facts::gather(&*host, job.config, job.local_hostname, &rec.instance_id)
        .map_err(|e| Fail::Io(format!("reading the machine's state: {e}")))?;
    let plan = plan::plan(job.config, &facts, &job.previous, job.scope).map_err(Fail::Invalid)?;
    rec.managed = plan.managed.clone();
    let mut changes = plan.changes.clone();
    // The record before the hostname and bootcmd (which come last).
    let at = changes
        .iter()
        .position(|c| matches!(c, plan::Change::SetHostname(_) | plan::Change::Bootcmd(_)))
        .unwrap_or(changes.len());
    let tail = changes.split_off(at);
    changes.extend(record::changes(&rec, &docs));
    changes.extend(tail);
    let applied = apply::apply(host, &changes, job.trial_until).map_err(|e| Fail::Io(e.to_string()))?;
    Ok((plan, applied))
}

/// The document in force, read again.
struct Loaded {
    config: Config,
    local_hostname: Option<String>,
    docs: Docs,
}

fn load_in_force(r: &Readers, host: &dyn Host, rec: &Record) -> Result<Loaded, Fail> {
    let docs = record::docs(host).map_err(|e| Fail::Io(format!("reading the document in force: {e}")))?;
    let doc = (r.check)(&rec.source, &docs.user_data).map_err(|r| Fail::Invalid(r.errors))?;
    let mut config = doc.config;
    let mut local_hostname = None;
    if let Some(bytes) = &docs.meta_data {
        let md = (r.meta_data)(&meta_source(&rec.source), bytes).map_err(|e| Fail::Invalid(vec![e]))?;
        local_hostname = md.local_hostname;
    }
    if let Some(bytes) = &docs.network_config {
        config.network = Some((r.network_config)(&network_source(&rec.source), bytes).map_err(Fail::Invalid)?);
    }
    Ok(Loaded { config, local_hostname, docs })
}

#[cfg(test)]
mod tests;
