//! Units: the service manager's configuration, checked and ordered.
//!
//! Pure apart from reading directories: no process is started here.
//!
//! - [`format`]: one `NAME.toml` file -> a [`Unit`] (or errors with file,
//!   line and key).
//! - [`load`]: the unit directories -> [`Loaded`] (overrides, masks, every
//!   error collected).
//! - [`graph`]: [`Loaded`] -> [`Plan`]: what starts, in what order, what
//!   each unit waits for, what is left out and why.
//!
//! The supervisor's use:
//!
//! ```no_run
//! use berth_init::unit::{self, Gate, State};
//! let plan = unit::plan(unit::load_system());
//! for e in &plan.errors { eprintln!("{e}"); }
//! for (name, x) in &plan.excluded { eprintln!("{name}: not started: {}", x.reason); }
//! for (name, needs) in &plan.needs {
//!     if needs.gate(|_dep| State::Pending) == Gate::Start { /* start plan.units[name] */ }
//! }
//! ```
//!
//! The format is documented for people in `docs/units.md`.

pub mod error;
pub mod format;
pub mod graph;
pub mod load;
mod source;

#[cfg(test)]
mod tests;

pub use error::{Cycle, CycleStep, ErrorKind, Location, UnitError};
pub use format::{
    parse_duration, parse_signal, parse_size, parse_unit, Account, Conditions, Dependencies, Dependency, Health,
    HealthCheck, KillMode, Kind, Limit, Limits, PathCondition, Ready, Relation, Restart, RestartPolicy, Service, Unit,
    UnitName,
};
pub use graph::{plan, Excluded, Exclusion, Gate, Needs, Plan, State};
pub use load::{load, load_system, Loaded, ETC_UNIT_DIR, IMAGE_UNIT_DIR, UNIT_DIRS};
