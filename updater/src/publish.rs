//! The update source: a directory any static HTTP server can serve, as
//! `berth-image publish` writes it and `berthctl update check` and the
//! automatic mode read it.
//!
//! # Files
//!
//! - `metadata.json` ([`METADATA_FILE`]): UTF-8 JSON, a [`Metadata`]:
//!
//!   ```json
//!   {
//!     "format_version": 1,
//!     "generated": "2026-01-10T12:00:00Z",
//!     "expires": "2026-02-09T12:00:00Z",
//!     "releases": [
//!       { "version": "0.2.0", "bundle": "berth-0.2.0.bundle", "size": 65253376,
//!         "sha256": "9f…", "architecture": "x86_64", "min_from_version": "0.1.0" }
//!     ]
//!   }
//!   ```
//!
//!   Times are RFC 3339 in UTC (as `humantime` writes them). `bundle` is a
//!   file name in the same directory; `size` and `sha256` are those of the
//!   whole bundle file.
//! - `metadata.json.sig` ([`SIGNATURE_FILE`]): one line of text,
//!   `<key id> <signature>\n`: the signer's [`KeyId`] (sha256 of its raw
//!   ed25519 public key) and the 64-byte ed25519 signature, both lowercase
//!   hex. The signature is over [`SIGNATURE_CONTEXT`] followed by the bytes
//!   of `metadata.json` exactly as served (no canonical JSON needed), with
//!   the same keys as bundles ([`crate::bundle::KeyRing`]); the context keeps
//!   a bundle manifest's signature from passing as metadata's and back.
//! - the bundles themselves ([`crate::bundle`]), each verified again on its
//!   own when it is installed.
//!
//! The metadata expires: [`verify`] refuses it after `expires`, naming the
//! date, so a mirror that stopped being updated is noticed instead of
//! silently offering old versions forever.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use ed25519_dalek::{Signature, Signer, SigningKey};
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::bundle::{key_id, KeyId, KeyRing};

/// The metadata's file name in the published directory.
pub const METADATA_FILE: &str = "metadata.json";
/// The signature's file name in the published directory.
pub const SIGNATURE_FILE: &str = "metadata.json.sig";
/// The metadata format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// What the signature covers before the metadata bytes (domain separation).
pub const SIGNATURE_CONTEXT: &[u8] = b"berth-update-metadata-v1\0";
/// The largest `metadata.json` a reader should fetch (4 MiB: some ten thousand releases).
pub const MAX_METADATA_LEN: u64 = 4 << 20;
/// The largest `metadata.json.sig` a reader should fetch.
pub const MAX_SIGNATURE_LEN: u64 = 1024;

/// Why metadata could not be written, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `metadata.json.sig` is not `<64 hex> <128 hex>`.
    #[error("{SIGNATURE_FILE} is malformed: {0}")]
    MalformedSignature(String),
    /// No accepted key has the signature's key id.
    #[error("the update metadata is signed with key {key_id}, which is not an accepted key")]
    UnknownKey { key_id: String },
    /// The signature does not match the metadata bytes for that key.
    #[error("the update metadata's signature does not verify with key {key_id}")]
    BadSignature { key_id: String },
    /// The metadata is signed but is not JSON of the expected shape.
    #[error("{METADATA_FILE} does not parse: {0}")]
    Parse(#[source] serde_json::Error),
    /// The metadata parses but a field is wrong (`field` is a path like `releases[1].version`).
    #[error("{METADATA_FILE}: {field} is invalid: {reason}")]
    Invalid { field: String, reason: String },
    /// The metadata is past its expiry date: the source is stale.
    #[error("the update metadata expired on {expires} (generated {generated}): the update source is stale, its publisher must run `berth-image publish` again")]
    Expired { expires: String, generated: String },
    /// The metadata cannot be serialized.
    #[error("the update metadata cannot be written: {0}")]
    Write(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PublishError {
    PublishError::Invalid { field: field.into(), reason: reason.into() }
}

/// RFC 3339 timestamps in UTC, whole seconds (`2026-01-10T12:00:00Z`).
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

/// `t` without its fraction of a second.
fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

fn show(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The signed list of releases in a published directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// When it was written and signed.
    #[serde(with = "rfc3339")]
    pub generated: SystemTime,
    /// After this, [`verify`] refuses it.
    #[serde(with = "rfc3339")]
    pub expires: SystemTime,
    /// One record per version, in any order; versions are unique.
    pub releases: Vec<Release>,
}

/// One published version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The OS version (semver), as in the bundle's manifest.
    pub version: String,
    /// The bundle's file name in the published directory (no `/`).
    pub bundle: String,
    /// The bundle file's length in bytes.
    pub size: u64,
    /// sha256 of the whole bundle file, 64 lowercase hex digits.
    pub sha256: String,
    /// As in the bundle's manifest (`x86_64`).
    pub architecture: String,
    /// The oldest booted version the bundle may update (semver).
    pub min_from_version: String,
}

impl Metadata {
    /// Metadata listing `releases`, generated at `now`, expiring `valid_for`
    /// later; both in whole seconds, as the file stores them.
    pub fn new(releases: Vec<Release>, now: SystemTime, valid_for: Duration) -> Metadata {
        let now = whole_seconds(now);
        let valid_for = Duration::from_secs(valid_for.as_secs());
        // An absurd validity is capped rather than overflowing the clock.
        let expires = now
            .checked_add(valid_for)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now);
        Metadata { format_version: FORMAT_VERSION, generated: now, expires, releases }
    }

    /// Checks what parsing cannot: the format version, semver versions
    /// (unique), plain bundle file names, hex digests, a non-empty
    /// architecture, and `generated` not after `expires`.
    pub fn validate(&self) -> Result<(), PublishError> {
        if self.format_version != FORMAT_VERSION {
            return Err(invalid(
                "format_version",
                format!("is {}, this updater reads {FORMAT_VERSION}", self.format_version),
            ));
        }
        if self.generated > self.expires {
            return Err(invalid("expires", "is before generated"));
        }
        let mut seen = HashSet::new();
        for (i, r) in self.releases.iter().enumerate() {
            let at = |f: &str| format!("releases[{i}].{f}");
            let v = Version::parse(&r.version).map_err(|e| invalid(at("version"), e.to_string()))?;
            if !seen.insert(v) {
                return Err(invalid(at("version"), format!("{} is listed twice", r.version)));
            }
            Version::parse(&r.min_from_version).map_err(|e| invalid(at("min_from_version"), e.to_string()))?;
            let plain = !r.bundle.is_empty()
                && r.bundle != "."
                && r.bundle != ".."
                && r.bundle.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
            if !plain {
                return Err(invalid(at("bundle"), "must be a plain file name ([A-Za-z0-9._+-])"));
            }
            if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(invalid(at("sha256"), "must be 64 lowercase hex digits"));
            }
            if r.architecture.is_empty() || !r.architecture.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(at("architecture"), "must be printable ASCII"));
            }
        }
        Ok(())
    }

    /// The release to install on a machine running `booted_version` on
    /// `arch`: the newest version above the booted one for this
    /// architecture whose `min_from_version` is at or below the booted one,
    /// never one of `failed_here` (versions that rolled back on this
    /// machine). `None` when there is none, or when `booted_version` is not
    /// semver. Versions compare by semver precedence.
    pub fn candidate<S: AsRef<str>>(&self, booted_version: &str, arch: &str, failed_here: &[S]) -> Option<&Release> {
        let booted = Version::parse(booted_version).ok()?;
        let failed: Vec<Version> = failed_here.iter().filter_map(|f| Version::parse(f.as_ref()).ok()).collect();
        self.releases
            .iter()
            .filter(|r| r.architecture == arch)
            .filter_map(|r| {
                let v = Version::parse(&r.version).ok()?;
                let min = Version::parse(&r.min_from_version).ok()?;
                let failed = failed.contains(&v) || failed_here.iter().any(|f| f.as_ref() == r.version);
                (v > booted && min <= booted && !failed).then_some((v, r))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, r)| r)
    }

    /// The releases sorted by version, newest first (for listing).
    /// The versions published for `arch` above `booted` that failed here
    /// (so [`Metadata::candidate`] passes them over), newest first.
    pub fn failed_here<S: AsRef<str>>(&self, booted: &str, arch: &str, failed_here: &[S]) -> Vec<&Release> {
        let Ok(booted) = Version::parse(booted) else { return Vec::new() };
        self.sorted()
            .into_iter()
            .filter(|r| r.architecture == arch)
            .filter(|r| Version::parse(&r.version).is_ok_and(|v| v > booted))
            .filter(|r| failed_here.iter().any(|f| f.as_ref() == r.version))
            .collect()
    }

    pub fn sorted(&self) -> Vec<&Release> {
        let mut v: Vec<_> = self.releases.iter().map(|r| (Version::parse(&r.version).ok(), r)).collect();
        v.sort_by(|a, b| b.0.cmp(&a.0));
        v.into_iter().map(|(_, r)| r).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        *o = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn signed_message(json: &[u8]) -> Vec<u8> {
    [SIGNATURE_CONTEXT, json].concat()
}

/// Writes `metadata` (validated first) as pretty JSON and signs it with
/// `key`: the bytes of [`METADATA_FILE`] and of [`SIGNATURE_FILE`].
pub fn sign(metadata: &Metadata, key: &SigningKey) -> Result<(Vec<u8>, Vec<u8>), PublishError> {
    metadata.validate()?;
    let mut json = serde_json::to_vec_pretty(metadata).map_err(|e| PublishError::Write(e.to_string()))?;
    json.push(b'\n');
    let signature = key.sign(&signed_message(&json));
    let sig = format!("{} {}\n", key_id(&key.verifying_key()), hex(&signature.to_bytes()));
    Ok((json, sig.into_bytes()))
}

/// Checks published metadata and returns it: the signature file's shape
/// ([`PublishError::MalformedSignature`]), its key among `keys`
/// ([`PublishError::UnknownKey`]), the signature over the exact `json`
/// bytes ([`PublishError::BadSignature`], strict ed25519), then the JSON
/// ([`PublishError::Parse`], [`PublishError::Invalid`]) and last the expiry
/// against `now` ([`PublishError::Expired`], naming the date).
pub fn verify(json: &[u8], sig: &[u8], keys: &KeyRing, now: SystemTime) -> Result<Metadata, PublishError> {
    let malformed = |why: &str| PublishError::MalformedSignature(why.to_string());
    let text = std::str::from_utf8(sig).map_err(|_| malformed("not UTF-8"))?;
    let mut words = text.split_whitespace();
    let (Some(id), Some(signature), None) = (words.next(), words.next(), words.next()) else {
        return Err(malformed("expected `<key id> <signature>`"));
    };
    let id = KeyId(unhex::<32>(id).ok_or_else(|| malformed("the key id is not 64 lowercase hex digits"))?);
    let signature = Signature::from_bytes(
        &unhex::<64>(signature).ok_or_else(|| malformed("the signature is not 128 lowercase hex digits"))?,
    );
    let key = keys.get(&id).ok_or_else(|| PublishError::UnknownKey { key_id: id.to_string() })?;
    key.verify_strict(&signed_message(json), &signature)
        .map_err(|_| PublishError::BadSignature { key_id: id.to_string() })?;
    let metadata: Metadata = serde_json::from_slice(json).map_err(PublishError::Parse)?;
    metadata.validate()?;
    if now > metadata.expires {
        return Err(PublishError::Expired { expires: show(metadata.expires), generated: show(metadata.generated) });
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn ring(keys: &[&SigningKey]) -> KeyRing {
        let mut r = KeyRing::new();
        for k in keys {
            r.add(k.verifying_key());
        }
        r
    }

    fn release(version: &str, arch: &str, min_from: &str) -> Release {
        Release {
            version: version.into(),
            bundle: format!("berth-{version}.bundle"),
            size: 1000,
            sha256: "ab".repeat(32),
            architecture: arch.into(),
            min_from_version: min_from.into(),
        }
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn metadata(releases: Vec<Release>) -> Metadata {
        Metadata::new(releases, at("2026-01-10T12:00:00Z"), Duration::from_secs(30 * 86_400))
    }

    #[test]
    fn signed_metadata_round_trips_with_rfc3339_times() {
        let k = key(1);
        let m = metadata(vec![release("0.2.0", "x86_64", "0.1.0")]);
        let (json, sig) = sign(&m, &k).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"generated\": \"2026-01-10T12:00:00Z\""), "{text}");
        assert!(text.contains("\"expires\": \"2026-02-09T12:00:00Z\""), "{text}");
        let sig_text = String::from_utf8(sig.clone()).unwrap();
        assert!(sig_text.starts_with(&key_id(&k.verifying_key()).to_string()), "{sig_text}");
        let back = verify(&json, &sig, &ring(&[&k]), at("2026-01-11T00:00:00Z")).unwrap();
        assert_eq!(back, m);
        // Times are whole seconds, so what is written reads back equal.
        let now = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        let m = Metadata::new(vec![], now, Duration::from_millis(86_400_500));
        let (json, sig) = sign(&m, &k).unwrap();
        assert_eq!(verify(&json, &sig, &ring(&[&k]), now).unwrap(), m);
    }

    #[test]
    fn a_changed_byte_or_signature_is_a_bad_signature() {
        let k = key(1);
        let (json, sig) = sign(&metadata(vec![release("0.2.0", "x86_64", "0.1.0")]), &k).unwrap();
        let now = at("2026-01-11T00:00:00Z");
        let mut bad = json.clone();
        let i = text_index(&bad, "0.2.0");
        bad[i + 2] = b'9'; // 0.2.0 -> 0.9.0
        assert!(matches!(verify(&bad, &sig, &ring(&[&k]), now), Err(PublishError::BadSignature { .. })));
        let mut bad_sig = sig.clone();
        let last = bad_sig.len() - 2;
        bad_sig[last] = if bad_sig[last] == b'0' { b'1' } else { b'0' };
        assert!(matches!(verify(&json, &bad_sig, &ring(&[&k]), now), Err(PublishError::BadSignature { .. })));
        // A bundle manifest signature by the same key over the same bytes does not pass.
        let other = k.sign(&[crate::bundle::SIGNATURE_CONTEXT, json.as_slice()].concat());
        let forged = format!("{} {}\n", key_id(&k.verifying_key()), hex(&other.to_bytes()));
        assert!(matches!(verify(&json, forged.as_bytes(), &ring(&[&k]), now), Err(PublishError::BadSignature { .. })));
        for junk in ["", "abc", "zz zz", &format!("{} {} extra", "0".repeat(64), "0".repeat(128))] {
            assert!(
                matches!(verify(&json, junk.as_bytes(), &ring(&[&k]), now), Err(PublishError::MalformedSignature(_))),
                "{junk:?}"
            );
        }
    }

    fn text_index(hay: &[u8], needle: &str) -> usize {
        hay.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap()
    }

    #[test]
    fn an_unknown_key_is_named() {
        let (json, sig) = sign(&metadata(vec![]), &key(1)).unwrap();
        match verify(&json, &sig, &ring(&[&key(2)]), at("2026-01-11T00:00:00Z")) {
            Err(PublishError::UnknownKey { key_id: id }) => {
                assert_eq!(id, key_id(&key(1).verifying_key()).to_string())
            }
            other => panic!("{other:?}"),
        }
        // Rotation: a ring with the old and the new key accepts either.
        let both = ring(&[&key(1), &key(2)]);
        for k in [key(1), key(2)] {
            let (json, sig) = sign(&metadata(vec![]), &k).unwrap();
            verify(&json, &sig, &both, at("2026-01-11T00:00:00Z")).unwrap();
        }
    }

    #[test]
    fn expired_metadata_names_its_expiry_date() {
        let k = key(1);
        let (json, sig) = sign(&metadata(vec![]), &k).unwrap();
        verify(&json, &sig, &ring(&[&k]), at("2026-02-09T12:00:00Z")).unwrap();
        let err = verify(&json, &sig, &ring(&[&k]), at("2026-02-09T12:00:01Z")).unwrap_err();
        assert!(matches!(err, PublishError::Expired { .. }));
        let msg = err.to_string();
        assert!(msg.contains("expired on 2026-02-09T12:00:00Z") && msg.contains("stale"), "{msg}");
    }

    #[test]
    fn invalid_records_are_refused_when_signing_and_verifying() {
        let k = key(1);
        type Change = fn(&mut Release);
        let cases: [(&str, Change); 5] = [
            ("version", |r| r.version = "two".into()),
            ("min_from_version", |r| r.min_from_version = "".into()),
            ("bundle", |r| r.bundle = "../etc/passwd".into()),
            ("sha256", |r| r.sha256 = "AB".repeat(32)),
            ("architecture", |r| r.architecture = "".into()),
        ];
        for (field, change) in cases {
            let mut r = release("0.2.0", "x86_64", "0.1.0");
            change(&mut r);
            match sign(&metadata(vec![r]), &k) {
                Err(PublishError::Invalid { field: f, .. }) => assert_eq!(f, format!("releases[0].{field}")),
                other => panic!("{field}: {other:?}"),
            }
        }
        let twice = metadata(vec![release("0.2.0", "x86_64", "0.1.0"), release("0.2.0", "aarch64", "0.1.0")]);
        assert!(matches!(sign(&twice, &k), Err(PublishError::Invalid { .. })));
        // Signed but not the expected shape.
        let json = b"{\"format_version\": 1}".to_vec();
        let s = k.sign(&signed_message(&json));
        let sig = format!("{} {}", key_id(&k.verifying_key()), hex(&s.to_bytes()));
        assert!(matches!(verify(&json, sig.as_bytes(), &ring(&[&k]), SystemTime::now()), Err(PublishError::Parse(_))));
    }

    #[test]
    fn candidate_is_the_newest_allowed_version_that_did_not_fail_here() {
        let m = metadata(vec![
            release("0.1.0", "x86_64", "0.1.0"),
            release("0.2.0", "x86_64", "0.1.0"),
            release("0.10.0", "x86_64", "0.1.0"),
            release("0.11.0", "aarch64", "0.1.0"),
            release("0.12.0", "x86_64", "0.5.0"),
            release("0.3.0-rc.1", "x86_64", "0.1.0"),
        ]);
        let none: &[&str] = &[];
        // Semver order, not string order: 0.10.0 > 0.2.0; other arch and a
        // minimum above the booted version are skipped.
        assert_eq!(m.candidate("0.1.0", "x86_64", none).unwrap().version, "0.10.0");
        assert_eq!(m.candidate("0.1.0", "aarch64", none).unwrap().version, "0.11.0");
        // A version that rolled back here is never offered again.
        assert_eq!(m.candidate("0.1.0", "x86_64", &["0.10.0"]).unwrap().version, "0.3.0-rc.1");
        assert_eq!(
            m.candidate("0.1.0", "x86_64", &["0.10.0".to_string(), "0.3.0-rc.1".into()]).unwrap().version,
            "0.2.0"
        );
        // Once at 0.5.0, 0.12.0's minimum is met.
        assert_eq!(m.candidate("0.5.0", "x86_64", none).unwrap().version, "0.12.0");
        // Nothing newer, or an unreadable booted version: nothing.
        assert_eq!(m.candidate("0.12.0", "x86_64", none), None);
        assert_eq!(m.candidate("dev", "x86_64", none), None);
        assert_eq!(m.candidate("0.1.0", "riscv64", none), None);
        // What was passed over because it failed here, newest first.
        let failed = ["0.10.0", "0.2.0", "0.1.0", "0.11.0"];
        let over: Vec<_> = m.failed_here("0.1.0", "x86_64", &failed).iter().map(|r| r.version.as_str()).collect();
        assert_eq!(over, ["0.10.0", "0.2.0"]);
    }

    #[test]
    fn sorted_lists_newest_first() {
        let m = metadata(vec![release("0.2.0", "x86_64", "0.1.0"), release("0.10.0", "x86_64", "0.1.0")]);
        let v: Vec<_> = m.sorted().iter().map(|r| r.version.as_str()).collect();
        assert_eq!(v, ["0.10.0", "0.2.0"]);
    }
}
