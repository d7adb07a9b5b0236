//! The Secure Boot signing key: what signs systemd-boot and each slot's
//! UKI (`sbsign`, from sbsigntool).
//!
//! `--secure-boot-key KEY --secure-boot-cert CERT` (PEM private key and
//! X.509 certificate, the pair a user enrolls in their machines' `db`)
//! sign a release. Without them builds sign with a development pair made
//! once by `openssl req -x509` and kept, like the update signing key
//! ([`crate::keys`]), in the build cache: `$BERTH_CACHE/keys/secure-boot/`
//! (directory 0700, key 0600). Firmware with Secure Boot on refuses
//! binaries signed with it until its certificate is enrolled in `db`; with
//! Secure Boot off they boot as unsigned ones do.
//!
//! Signatures are reproducible: sbsign puts the signing time into its
//! PKCS#7 signature, so it runs under `faketime` with the clock stopped at
//! SOURCE_DATE_EPOCH ([`at_epoch`]); RSA PKCS#1 v1.5 then signs the same
//! digest with the same key to the same bytes.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};
use crate::error::{io_at, IoError};

/// Why no key could be had or a signature not made.
#[derive(Debug, thiserror::Error)]
pub enum SecureBootError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// openssl or sbsign failed.
    #[error(transparent)]
    Cmd(#[from] CmdError),
    /// Only one of the key and the certificate was given.
    #[error("--secure-boot-key and --secure-boot-cert go together (a PEM key and its X.509 certificate)")]
    HalfPair,
}

/// A private key and its certificate, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningPair {
    /// The PEM private key.
    pub key: PathBuf,
    /// The PEM X.509 certificate of the key.
    pub cert: PathBuf,
}

/// The development pair's directory inside the build cache.
pub fn dev_dir(cache: &Path) -> PathBuf {
    cache.join("keys").join("secure-boot")
}

/// The pair to sign with: the given one, else the cached development pair
/// (made on first use).
pub fn signing_pair(key: Option<&Path>, cert: Option<&Path>, cache: &Path) -> Result<SigningPair, SecureBootError> {
    match (key, cert) {
        (Some(key), Some(cert)) => return Ok(SigningPair { key: key.to_path_buf(), cert: cert.to_path_buf() }),
        (None, None) => {}
        _ => return Err(SecureBootError::HalfPair),
    }
    let dir = dev_dir(cache);
    let pair = SigningPair { key: dir.join("db.key"), cert: dir.join("db.crt") };
    if !pair.cert.exists() {
        let keys = dir.parent().unwrap_or(cache);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(keys).map_err(io_at(keys))?;
        // Made in a private directory and renamed into place as a whole,
        // so a build running meanwhile sees both files or neither.
        let tmp = keys.join(format!(".secure-boot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(io_at(&tmp))?;
        cmd::run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "36500"])
                .args(["-subj", "/CN=Berth development Secure Boot key (not for releases)/"])
                .arg("-keyout")
                .arg(tmp.join("db.key"))
                .arg("-out")
                .arg(tmp.join("db.crt")),
        )?;
        let key = tmp.join("db.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).map_err(io_at(&key))?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => eprintln!("build: made a development Secure Boot key, {} (kept for later builds)", dir.display()),
            // Another build made it meanwhile: use that one.
            Err(_) if pair.cert.exists() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io_at(&dir)(e).into()),
        }
    }
    Ok(pair)
}

/// `program` run by `faketime` (libfaketime) with the clock stopped at
/// `epoch` (UTC): tools that write the time into their output (objcopy's
/// PE timestamp, sbsign's signing time) then write the same bytes every time.
pub fn at_epoch(program: &str, epoch: u64) -> Command {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut c = Command::new("faketime");
    c.env("TZ", "UTC")
        .arg("-f")
        .arg(format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60))
        .arg(program);
    c
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Signs the EFI binary `input` into `output` (Authenticode, sbsign),
/// with the signing time at `epoch`.
pub fn sign(pair: &SigningPair, input: &Path, output: &Path, epoch: u64) -> Result<(), SecureBootError> {
    let _ = fs::remove_file(output);
    cmd::run(
        at_epoch("sbsign", epoch)
            .arg("--key")
            .arg(&pair.key)
            .arg("--cert")
            .arg(&pair.cert)
            .arg("--output")
            .arg(output)
            .arg(input),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_stopped_at_the_epoch_in_utc() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(1_735_689_600 / 86_400), (2025, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let c = at_epoch("sbsign", 1_735_689_600 + 3_723);
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-f", "2025-01-01 01:02:03", "sbsign"]);
    }

    #[test]
    fn the_dev_pair_is_made_once_and_a_given_pair_wins() {
        let cache = std::env::temp_dir().join(format!("berth-sb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&cache);
        let a = signing_pair(None, None, &cache).unwrap();
        assert_eq!(fs::metadata(&a.key).unwrap().permissions().mode() & 0o777, 0o600);
        let first = fs::read(&a.cert).unwrap();
        let b = signing_pair(None, None, &cache).unwrap();
        assert_eq!((a.clone(), first), (b, fs::read(&a.cert).unwrap()), "made once");
        let given = signing_pair(Some(Path::new("k")), Some(Path::new("c")), &cache).unwrap();
        assert_eq!(given, SigningPair { key: "k".into(), cert: "c".into() });
        assert!(matches!(signing_pair(Some(Path::new("k")), None, &cache), Err(SecureBootError::HalfPair)));
        fs::remove_dir_all(&cache).unwrap();
    }
}
