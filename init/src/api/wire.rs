//! The values on the wire: D-Bus structs (zvariant), one per status type.
//!
//! The status types themselves stay plain serde data: D-Bus has no
//! optional values nor enums with data, so `Option<Exit>` and `UnitState`
//! get a flat form here (the state by name, the exit as a kind and a
//! value). Converting back checks what it reads: a reply from a newer or
//! broken server is an error, not a guess.

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

use crate::journal::{Record, Stream, Timestamp};
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

/// [`Timeline`] on the wire: `(tta(stttas))`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WireTimeline {
    pub pid1_start_us: u64,
    pub ready_us: u64,
    pub units: Vec<WireEntry>,
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
        assert_eq!(WireTimeline::SIGNATURE.to_string(), "(tta(stttas))");
        assert_eq!(WireRecord::SIGNATURE.to_string(), "(xssb)");
        assert_eq!(crate::api::ReloadOutcome::SIGNATURE.to_string(), "(asasasas)");
    }
}
