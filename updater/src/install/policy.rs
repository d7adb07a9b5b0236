//! The refusals of an install, as a pure function of the verified
//! manifest and the [`InstallContext`]: checked after the bundle's
//! signature and manifest ([`crate::bundle::open`]) and before any byte is
//! written anywhere. Versions compare as semantic versions (semver.org).

use semver::Version;

use super::{InstallContext, InstallError};
use crate::bundle::Manifest;

fn parse(field: &'static str, version: &str) -> Result<Version, InstallError> {
    let v = Version::parse(version).map_err(|e| InstallError::BadVersion {
        field,
        version: version.to_string(),
        reason: e.to_string(),
    })?;
    if !v.build.is_empty() {
        // systemd boot counting puts `+<left>-<done>` in the entry's file
        // name: a version with `+` would make the blessed name ambiguous.
        return Err(InstallError::BadVersion {
            field,
            version: version.to_string(),
            reason: "build metadata (`+...`) cannot be in a boot entry name".to_string(),
        });
    }
    Ok(v)
}

/// Checks, in order: the architecture; the versions parse (semver, no
/// build metadata); the bundle's version is not the booted one; it did not
/// fail here (unless `force`); it is not older than the booted one (unless
/// `force`); its `min_from_version` is not above the booted version.
pub fn check(manifest: &Manifest, ctx: &InstallContext) -> Result<(), InstallError> {
    if manifest.architecture != ctx.architecture {
        return Err(InstallError::Architecture {
            version: manifest.os_version.clone(),
            bundle: manifest.architecture.clone(),
            machine: ctx.architecture.clone(),
        });
    }
    let new = parse("the bundle's os_version", &manifest.os_version)?;
    let booted = Version::parse(&ctx.booted_version).map_err(|e| InstallError::BadVersion {
        field: "the booted VERSION_ID",
        version: ctx.booted_version.clone(),
        reason: e.to_string(),
    })?;
    let min_from = Version::parse(&manifest.min_from_version).map_err(|e| InstallError::BadVersion {
        field: "the bundle's min_from_version",
        version: manifest.min_from_version.clone(),
        reason: e.to_string(),
    })?;
    if new == booted {
        return Err(InstallError::SameVersion { version: manifest.os_version.clone() });
    }
    let failed = ctx.failed_versions.iter().any(|f| Version::parse(f).map_or(*f == manifest.os_version, |f| f == new));
    if failed && !ctx.force {
        return Err(InstallError::FailedHere { version: manifest.os_version.clone() });
    }
    if new < booted && !ctx.force {
        return Err(InstallError::Downgrade {
            version: manifest.os_version.clone(),
            booted: ctx.booted_version.clone(),
        });
    }
    if min_from > booted {
        return Err(InstallError::BootedTooOld {
            version: manifest.os_version.clone(),
            min_from: manifest.min_from_version.clone(),
            booted: ctx.booted_version.clone(),
        });
    }
    Ok(())
}

/// Whether installing `version` over the booted `booted` is a (forced)
/// downgrade. systemd-boot sorts entries of one sort key by version, newest
/// first, so a staged older version would never be tried while the booted
/// newer entry is good: the install then marks the booted entry bad (`+0`),
/// which still boots as the last resort if the older version fails.
pub fn is_downgrade(version: &str, booted: &str) -> bool {
    matches!((Version::parse(version), Version::parse(booted)), (Ok(v), Ok(b)) if v < b)
}
