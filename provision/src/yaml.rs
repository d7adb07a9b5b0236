//! `#cloud-config` YAML -> [`crate::tree::Node`].
