//! The record of what is in force: /var/lib/berth/provision.
