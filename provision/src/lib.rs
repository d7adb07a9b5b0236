//! User data: how a machine booted from the same image as a thousand others
//! becomes this one.
//!
//! The path of a document through this crate:
//!
//! 1. [`sources`]: found at boot, local sources first (QEMU `fw_cfg`, a
//!    NoCloud `CIDATA` volume), the EC2-style metadata service only when
//!    the machine's DMI says it is on such a cloud.
//! 2. [`tree`]: read into one tree of values that keep their line, by one
//!    of two syntax readers: [`yaml`] (`#cloud-config`) and [`toml_tree`]
//!    (Berth's native format, first line `#berth-config`).
//! 3. [`interpret`]: the tree becomes a [`model::Config`], or a list of
//!    errors; keys Berth does not implement become warnings. One
//!    interpreter for both formats, so both mean the same.
//! 4. [`plan`]: the config, what the machine has and what was applied
//!    before become a list of changes (pure).
//! 5. [`apply`]: the changes through the [`host::Host`] seam, all or
//!    nothing (previous contents kept until the end), and the
//!    [`record`] of what is in force.
//!
//! PID1 links this crate (it applies user data before the units start), so
//! it follows PID1's rule: no panicking shortcuts on what can fail.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod apply;
pub mod check;
pub mod diag;
pub mod generate;
pub mod host;
pub mod interpret;
pub mod machine;
pub mod model;
pub mod plan;
pub mod record;
pub mod sources;
pub mod toml_tree;
pub mod tree;
pub mod yaml;

#[cfg(test)]
mod testutil;

pub use check::{check, Checked, Document, Format, Rejected};
pub use diag::{Diagnostic, Place};
pub use model::Config;
