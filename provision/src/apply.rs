//! Applying a plan through [`crate::host::Host`], all or nothing.
