//! Units: the service manager's configuration, checked and ordered.
//!
//! Pure apart from reading directories: no process is started here. Its
//! own crate because two parts read unit files: PID1 (what it starts) and
//! user data (`berth-provision` checks a unit it is given before writing it).
//! PID1 links it, so it has PID1's no-panic lints.
//!
//! - [`format`](mod@format): the [`Unit`] one `NAME.toml` file describes.
//!   [`parse_unit`] reads one (or returns errors with file, line and key),
//!   in three steps: `document` (the text read once, every key's place
//!   kept), `shape` (tables, keys, types) and `check` (what the values mean,
//!   defaults).
//! - [`values`]: durations, sizes and signals as unit files write them.
//! - [`name`]: unit names and dependency relations, which errors name too.
//! - [`load`](mod@load): the unit directories -> [`Loaded`] (overrides, masks, every
//!   error collected).
//! - [`graph`]: [`Loaded`] -> [`Plan`]: what starts, in what order, what
//!   each unit waits for, what is left out and why.
//!
//! The supervisor's use:
//!
//! ```no_run
//! use berth_units::{self as unit, Gate, State};
//! let plan = unit::plan(unit::load_system());
//! for e in &plan.errors { eprintln!("{e}"); }
//! for (name, x) in &plan.excluded { eprintln!("{name}: not started: {}", x.reason); }
//! for (name, needs) in &plan.needs {
//!     if needs.gate(|_dep| State::Pending) == Gate::Start { /* start plan.units[name] */ }
//! }
//! ```
//!
//! The format is documented for people in `docs/units.md`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod check;
mod document;
pub mod error;
pub mod format;
pub mod graph;
pub mod load;
pub mod name;
mod shape;
pub mod values;

#[cfg(test)]
mod tests;

pub use check::parse_unit;
pub use error::{Cycle, CycleStep, ErrorKind, Location, UnitError};
pub use format::{
    Account, Conditions, Dependencies, Dependency, Health, HealthAction, HealthCheck, KillMode, Kind, Limit, Limits,
    PathCondition, Ready, Restart, RestartPolicy, Service, Unit,
};
pub use format::{ResourceLimit, Rlimit, DEFAULT_NOFILE, DEFAULT_STATE_DIRECTORY_MODE, STATE_ROOT};
pub use graph::{plan, Excluded, Exclusion, Gate, Needs, Plan, State};
pub use load::{load, load_system, Loaded, ETC_UNIT_DIR, IMAGE_UNIT_DIR, UNIT_DIRS};
pub use name::{Relation, UnitName};
pub use values::{parse_duration, parse_signal, parse_size};
