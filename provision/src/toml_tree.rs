//! Berth's native TOML -> [`crate::tree::Node`].
