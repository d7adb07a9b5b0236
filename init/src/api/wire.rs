//! The values on the wire: D-Bus structs (zvariant), one per status type.
//!
//! The status types themselves stay plain serde data: D-Bus has no
//! optional values nor enums with data, so `Option<Exit>` and `UnitState`
//! get a flat form here (the state by name, the exit as a kind and a
//! value). Converting back checks what it reads: a reply from a newer or
//! broken server is an error, not a guess.

use berth_provision::machine::{InForce, Status};
use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

use crate::journal::{Record, Stream, Timestamp};
use crate::provision::{outcome_name, parse_outcome};
use crate::status::{Exit, Timeline, TimelineEntry, UnitState, UnitStatus};

/// [`UnitStatus`] on the wire: `(ssssutusit)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireStatus {
    pub name: String,
    pub description: String,
    /// [`UnitState::as_str`].
    pub state: String,
    pub reason: String,
    pub pid: u32,
    pub since_us: u64,
    pub restarts: u32,
    /// "" (none yet), "code" or "signal".
    pub exit_kind: String,
    pub exit_value: i32,
    pub ready_after_us: u64,
}

/// [`TimelineEntry`] on the wire: `(stttas)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireEntry {
    pub name: String,
    pub waited_from_us: u64,
    pub started_us: u64,
    pub ready_us: u64,
    pub waited_for: Vec<String>,
}

/// [`Timeline`] on the wire: `(tta(stttas)t)`: PID1's start, the ready
/// time (0 before), the units, stage 0's start (0 without one). The
/// updater's reader (`updater/src/daemon/real.rs`) must match it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireTimeline {
    pub pid1_start_us: u64,
    pub ready_us: u64,
    pub units: Vec<WireEntry>,
    pub initrd_start_us: u64,
}

/// A log [`Record`] on the wire: `(xssb)`: wall-clock microseconds since
/// the epoch, the stream name, the text, and whether it is a piece of a
/// line that goes on in the next record of the stream (the client joins
/// them, see [`crate::journal::Joiner`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireRecord {
    pub time_us: i64,
    pub stream: String,
    pub text: String,
    pub continued: bool,
}

/// Provisioning's [`Status`] on the wire: `(sssstasast)`; a missing
/// value is "" (0 for the trial).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireProvisioning {
    /// [`crate::provision::outcome_name`].
    pub outcome: String,
    pub source: String,
    pub instance_id: String,
    pub sha256: String,
    pub probe_ms: u64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Seconds since the epoch; 0: no trial.
    pub trial_until: u64,
}

/// `config show`'s [`InForce`] on the wire: `(bssstasst)`; `present`
/// false: no document was applied (the rest is empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireInForce {
    pub present: bool,
    pub source: String,
    pub instance_id: String,
    pub sha256: String,
    pub applied_at: u64,
    pub warnings: Vec<String>,
    pub text: String,
    /// Seconds since the epoch; 0: no trial.
    pub trial_until: u64,
}

/// A reply that does not read as what it should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad reply from berth-init: {0}")]
pub struct BadReply(pub String);

pub fn parse_state(s: &str) -> Option<UnitState> {
    UnitState::ALL.into_iter().find(|st| st.as_str() == s)
}

impl From<&UnitStatus> for WireStatus {
    fn from(s: &UnitStatus) -> WireStatus {
        let (exit_kind, exit_value) = match s.last_exit {
            None => ("", 0),
            Some(Exit::Code(c)) => ("code", c),
            Some(Exit::Signal(n)) => ("signal", n),
        };
        WireStatus {
            name: s.name.clone(),
            description: s.description.clone(),
            state: s.state.as_str().to_string(),
            reason: s.reason.clone(),
            pid: s.pid,
            since_us: s.since_us,
            restarts: s.restarts,
            exit_kind: exit_kind.to_string(),
            exit_value,
            ready_after_us: s.ready_after_us,
        }
    }
}

impl TryFrom<WireStatus> for UnitStatus {
    type Error = BadReply;

    fn try_from(w: WireStatus) -> Result<UnitStatus, BadReply> {
        let state = parse_state(&w.state).ok_or_else(|| BadReply(format!("unknown unit state {:?}", w.state)))?;
        let last_exit = match w.exit_kind.as_str() {
            "" => None,
            "code" => Some(Exit::Code(w.exit_value)),
            "signal" => Some(Exit::Signal(w.exit_value)),
            other => return Err(BadReply(format!("unknown exit kind {other:?}"))),
        };
        Ok(UnitStatus {
            name: w.name,
            description: w.description,
            state,
            reason: w.reason,
            pid: w.pid,
            since_us: w.since_us,
            restarts: w.restarts,
            last_exit,
            ready_after_us: w.ready_after_us,
        })
    }
}

impl From<&Timeline> for WireTimeline {
    fn from(t: &Timeline) -> WireTimeline {
        WireTimeline {
            initrd_start_us: t.initrd_start_us,
            pid1_start_us: t.pid1_start_us,
            ready_us: t.ready_us,
            units: t
                .units
                .iter()
                .map(|e| WireEntry {
                    name: e.name.clone(),
                    waited_from_us: e.waited_from_us,
                    started_us: e.started_us,
                    ready_us: e.ready_us,
                    waited_for: e.waited_for.clone(),
                })
                .collect(),
        }
    }
}

impl From<WireTimeline> for Timeline {
    fn from(w: WireTimeline) -> Timeline {
        Timeline {
            initrd_start_us: w.initrd_start_us,
            pid1_start_us: w.pid1_start_us,
            ready_us: w.ready_us,
            units: w
                .units
                .into_iter()
                .map(|e| TimelineEntry {
                    name: e.name,
                    waited_from_us: e.waited_from_us,
                    started_us: e.started_us,
                    ready_us: e.ready_us,
                    waited_for: e.waited_for,
                })
                .collect(),
        }
    }
}

impl From<&Record> for WireRecord {
    fn from(r: &Record) -> WireRecord {
        WireRecord {
            time_us: r.time.micros(),
            stream: r.stream.as_str().to_string(),
            text: r.text.clone(),
            continued: r.continued,
        }
    }
}

impl TryFrom<WireRecord> for Record {
    type Error = BadReply;

    fn try_from(w: WireRecord) -> Result<Record, BadReply> {
        let stream = Stream::parse(&w.stream).ok_or_else(|| BadReply(format!("unknown log stream {:?}", w.stream)))?;
        Ok(Record { time: Timestamp(w.time_us), stream, text: w.text, continued: w.continued })
    }
}

fn none_if_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn none_if_zero(t: u64) -> Option<u64> {
    (t != 0).then_some(t)
}

impl From<&Status> for WireProvisioning {
    fn from(s: &Status) -> WireProvisioning {
        WireProvisioning {
            outcome: outcome_name(&s.outcome).to_string(),
            source: s.source.clone().unwrap_or_default(),
            instance_id: s.instance_id.clone().unwrap_or_default(),
            sha256: s.sha256.clone().unwrap_or_default(),
            probe_ms: s.probe_ms,
            errors: s.errors.clone(),
            warnings: s.warnings.clone(),
            trial_until: s.trial_until.unwrap_or(0),
        }
    }
}

impl TryFrom<WireProvisioning> for Status {
    type Error = BadReply;

    fn try_from(w: WireProvisioning) -> Result<Status, BadReply> {
        let outcome = parse_outcome(&w.outcome)
            .ok_or_else(|| BadReply(format!("unknown provisioning outcome {:?}", w.outcome)))?;
        Ok(Status {
            outcome,
            source: none_if_empty(w.source),
            instance_id: none_if_empty(w.instance_id),
            sha256: none_if_empty(w.sha256),
            probe_ms: w.probe_ms,
            errors: w.errors,
            warnings: w.warnings,
            trial_until: none_if_zero(w.trial_until),
        })
    }
}

impl From<Option<&InForce>> for WireInForce {
    fn from(f: Option<&InForce>) -> WireInForce {
        match f {
            Some(f) => WireInForce {
                present: true,
                source: f.source.clone(),
                instance_id: f.instance_id.clone(),
                sha256: f.sha256.clone(),
                applied_at: f.applied_at,
                warnings: f.warnings.clone(),
                text: f.text.clone(),
                trial_until: f.trial_until.unwrap_or(0),
            },
            None => WireInForce {
                present: false,
                source: String::new(),
                instance_id: String::new(),
                sha256: String::new(),
                applied_at: 0,
                warnings: vec![],
                text: String::new(),
                trial_until: 0,
            },
        }
    }
}

impl From<WireInForce> for Option<InForce> {
    fn from(w: WireInForce) -> Option<InForce> {
        w.present.then(|| InForce {
            source: w.source,
            instance_id: w.instance_id,
            sha256: w.sha256,
            applied_at: w.applied_at,
            warnings: w.warnings,
            text: w.text,
            trial_until: none_if_zero(w.trial_until),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for last_exit in [None, Some(Exit::Code(3)), Some(Exit::Signal(9))] {
            let s = UnitStatus {
                description: "KV".into(),
                reason: "backoff 2s".into(),
                pid: 42,
                since_us: 7,
                restarts: 2,
                last_exit,
                ready_after_us: 1500,
                ..UnitStatus::new("etcd", UnitState::Restarting)
            };
            assert_eq!(UnitStatus::try_from(WireStatus::from(&s)), Ok(s));
        }
        let mut w = WireStatus::from(&UnitStatus::new("x", UnitState::Active));
        w.state = "exploded".into();
        assert!(UnitStatus::try_from(w).is_err());
    }

    #[test]
    fn records_and_pieces_round_trip() {
        for r in [
            Record::new(Timestamp(7), Stream::Stderr, "whole"),
            Record::piece(Timestamp(8), Stream::Stdout, "LAST-WORDS"),
        ] {
            assert_eq!(Record::try_from(WireRecord::from(&r)), Ok(r));
        }
        let mut w = WireRecord::from(&Record::new(Timestamp(1), Stream::Init, "x"));
        w.stream = "stdout+".into();
        assert!(Record::try_from(w).is_err(), "the mark is a field on the wire, not part of the name");
    }

    #[test]
    fn every_state_parses_back() {
        for st in UnitState::ALL {
            assert_eq!(parse_state(st.as_str()), Some(st));
        }
    }

    #[test]
    fn signatures_are_plain_dbus_structs() {
        assert_eq!(WireStatus::SIGNATURE.to_string(), "(ssssutusit)");
        assert_eq!(WireTimeline::SIGNATURE.to_string(), "(tta(stttas)t)");
        assert_eq!(WireRecord::SIGNATURE.to_string(), "(xssb)");
        assert_eq!(crate::api::ReloadOutcome::SIGNATURE.to_string(), "(asasasas)");
        assert_eq!(WireProvisioning::SIGNATURE.to_string(), "(sssstasast)");
        assert_eq!(WireInForce::SIGNATURE.to_string(), "(bssstasst)");
        assert_eq!(crate::api::ConfigReport::SIGNATURE.to_string(), "(asassastasasasas)");
    }

    #[test]
    fn provisioning_round_trips() {
        use berth_provision::machine::Outcome;
        let full = Status {
            outcome: Outcome::Rejected,
            source: Some("nocloud:/dev/vdb:user-data".into()),
            instance_id: Some("i-1".into()),
            sha256: Some("ab".repeat(32)),
            probe_ms: 12,
            errors: vec!["nocloud:/dev/vdb:user-data:3: key users: expected a list".into()],
            warnings: vec!["w".into()],
            trial_until: Some(1_795_910_399),
        };
        let empty = Status {
            outcome: Outcome::None,
            source: None,
            instance_id: None,
            sha256: None,
            probe_ms: 0,
            errors: vec![],
            warnings: vec![],
            trial_until: None,
        };
        for s in [full, empty] {
            assert_eq!(Status::try_from(WireProvisioning::from(&s)), Ok(s));
        }
        let mut w = WireProvisioning::from(&Status {
            outcome: Outcome::Applied,
            ..Status::try_from(WireProvisioning {
                outcome: "none".into(),
                source: String::new(),
                instance_id: String::new(),
                sha256: String::new(),
                probe_ms: 0,
                errors: vec![],
                warnings: vec![],
                trial_until: 0,
            })
            .unwrap()
        });
        assert_eq!(w.outcome, "applied");
        w.outcome = "half".into();
        assert!(Status::try_from(w).is_err());
    }

    #[test]
    fn in_force_round_trips() {
        let f = InForce {
            source: "/root/u.yaml".into(),
            instance_id: "i-1".into(),
            sha256: "00".repeat(32),
            applied_at: 1_795_910_399,
            warnings: vec!["w".into()],
            text: "#cloud-config\nhostname: a\n".into(),
            trial_until: Some(1_795_910_499),
        };
        assert_eq!(Option::<InForce>::from(WireInForce::from(Some(&f))), Some(f));
        assert_eq!(Option::<InForce>::from(WireInForce::from(None)), None);
    }
}
