//! The binary container: writing ([`sign`]) and reading ([`open`]) it.
//! The byte layout is in the module doc of [`super`].

use std::io::{self, Read, Write};

use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::{
    key_id, BundleError, KeyId, KeyRing, Manifest, Payload, VerifiedManifest, FORMAT_VERSION, MAGIC, MAX_MANIFEST_LEN,
    SIGNATURE_CONTEXT,
};

const CHUNK: usize = 64 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNATURE_CONTEXT, manifest].concat()
}

/// Reads `reader` to its end: its length in bytes and its sha256 as
/// lowercase hex, for a [`Payload`]'s `size` and `sha256`.
pub fn measure(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok((len, hex(&hasher.finalize()))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        len += n as u64;
    }
}

/// Writes a bundle to `out`: the header, `manifest` as JSON, its key id and
/// signature by `key`, then each payload from `payloads` (one reader per
/// manifest payload, in the same order).
///
/// The manifest must pass [`Manifest::validate`] and its sizes and sha256s
/// must be those of the readers (see [`measure`]): a reader that gives
/// other bytes fails with [`BundleError::PayloadSize`] or
/// [`BundleError::PayloadDigest`], and what was written is then no bundle
/// (the caller removes it).
pub fn sign(
    manifest: &Manifest,
    payloads: &mut [&mut dyn Read],
    key: &SigningKey,
    out: &mut dyn Write,
) -> Result<(), BundleError> {
    manifest.validate()?;
    if payloads.len() != manifest.payloads.len() {
        return Err(BundleError::ManifestWrite(format!(
            "{} payload readers for {} payloads",
            payloads.len(),
            manifest.payloads.len()
        )));
    }
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| BundleError::ManifestWrite(e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l <= MAX_MANIFEST_LEN)
        .ok_or_else(|| BundleError::ManifestWrite(format!("{} bytes is above the limit", bytes.len())))?;
    let signature = key.sign(&signed_message(&bytes));

    let w = |part: &str, out: &mut dyn Write, b: &[u8]| out.write_all(b).map_err(|e| BundleError::io(part, e));
    w("header", out, &MAGIC)?;
    w("header", out, &FORMAT_VERSION.to_le_bytes())?;
    w("header", out, &len.to_le_bytes())?;
    w("manifest", out, &bytes)?;
    w("signature", out, &key_id(&key.verifying_key()).0)?;
    w("signature", out, &signature.to_bytes())?;

    let mut buf = vec![0u8; CHUNK];
    for (p, reader) in manifest.payloads.iter().zip(payloads.iter_mut()) {
        let part = format!("payload {:?}", p.name);
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::io(&part, e)),
            };
            done += n as u64;
            if done > p.size {
                return Err(BundleError::PayloadSize { name: p.name.clone(), expected: p.size, actual: done });
            }
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            w(&part, out, chunk)?;
        }
        if done != p.size {
            return Err(BundleError::PayloadSize { name: p.name.clone(), expected: p.size, actual: done });
        }
        let actual = hex(&hasher.finalize());
        if actual != p.sha256 {
            return Err(BundleError::PayloadDigest { name: p.name.clone(), expected: p.sha256.clone(), actual });
        }
    }
    out.flush().map_err(|e| BundleError::io("payloads", e))
}

/// Reads and verifies a bundle's header, signature and manifest from
/// `reader`, leaving it at the first payload byte.
///
/// In order: the magic ([`BundleError::BadMagic`]), the header's format
/// version ([`BundleError::UnsupportedFormat`]), the manifest length
/// (`1..=MAX_MANIFEST_LEN`, checked before allocating:
/// [`BundleError::ManifestLength`]), the manifest bytes, key id and
/// signature ([`BundleError::Truncated`] if the stream ends), the key id
/// among `keys` ([`BundleError::UnknownKey`]), the signature
/// ([`BundleError::BadSignature`], strict ed25519 verification); only then
/// is the manifest parsed ([`BundleError::ManifestParse`]) and validated
/// ([`BundleError::InvalidManifest`], and its format version must equal
/// the header's).
pub fn open<R: Read>(mut reader: R, keys: &KeyRing) -> Result<Bundle<R>, BundleError> {
    let (mut magic, mut version, mut len) = ([0u8; 8], [0u8; 4], [0u8; 4]);
    for field in [&mut magic[..], &mut version[..], &mut len[..]] {
        reader.read_exact(field).map_err(|e| BundleError::io("header", e))?;
    }
    if magic != MAGIC {
        return Err(BundleError::BadMagic { found: magic });
    }
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(BundleError::UnsupportedFormat { found: version, supported: FORMAT_VERSION });
    }
    let len = u32::from_le_bytes(len);
    if len == 0 || len > MAX_MANIFEST_LEN {
        return Err(BundleError::ManifestLength { len, max: MAX_MANIFEST_LEN });
    }
    let mut bytes = vec![0u8; len as usize];
    reader.read_exact(&mut bytes).map_err(|e| BundleError::io("manifest", e))?;
    let (mut id, mut signature) = ([0u8; 32], [0u8; 64]);
    for field in [&mut id[..], &mut signature[..]] {
        reader.read_exact(field).map_err(|e| BundleError::io("signature", e))?;
    }
    let id = KeyId(id);
    let signature = Signature::from_bytes(&signature);
    let key = keys.get(&id).ok_or_else(|| BundleError::UnknownKey { key_id: id.to_string() })?;
    key.verify_strict(&signed_message(&bytes), &signature)
        .map_err(|_| BundleError::BadSignature { key_id: id.to_string() })?;

    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(BundleError::ManifestParse)?;
    if manifest.format_version != version {
        return Err(BundleError::invalid(
            "format_version",
            format!("is {}, the header says {version}", manifest.format_version),
        ));
    }
    manifest.validate()?;
    Ok(Bundle { manifest: VerifiedManifest::new(manifest, id), reader, pos: 0 })
}

/// An opened bundle: its verified manifest, and the stream positioned in
/// its payloads. Payloads are read in stored order, each at most once.
pub struct Bundle<R> {
    manifest: VerifiedManifest,
    reader: R,
    /// Bytes of the payload area consumed so far.
    pos: u64,
}

impl<R: Read> Bundle<R> {
    /// The verified manifest.
    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// A reader of the payload `name`. Bytes of earlier payloads not read yet
    /// are skipped (read and dropped). Fails with
    /// [`BundleError::NoSuchPayload`], or [`BundleError::PayloadPassed`] if
    /// the stream is already past its start.
    pub fn payload(&mut self, name: &str) -> Result<PayloadReader<'_, R>, BundleError> {
        let payload = self
            .manifest
            .payload(name)
            .cloned()
            .ok_or_else(|| BundleError::NoSuchPayload { name: name.to_string() })?;
        if payload.offset < self.pos {
            return Err(BundleError::PayloadPassed { name: name.to_string() });
        }
        self.skip_to(payload.offset, &format!("payload before {name:?}"))?;
        let remaining = payload.size;
        Ok(PayloadReader { bundle: self, payload, remaining, hasher: Sha256::new(), verdict: None })
    }

    /// Checks that nothing follows the last payload (skipping what was not
    /// read): [`BundleError::Truncated`] or [`BundleError::TrailingData`].
    pub fn finish(mut self) -> Result<(), BundleError> {
        let end = self.manifest.payloads_len();
        self.skip_to(end, "payloads")?;
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(BundleError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::io("end", e)),
            }
        }
    }

    fn skip_to(&mut self, offset: u64, part: &str) -> Result<(), BundleError> {
        let want = offset - self.pos;
        let skipped =
            io::copy(&mut (&mut self.reader).take(want), &mut io::sink()).map_err(|e| BundleError::io(part, e))?;
        self.pos += skipped;
        if skipped < want {
            return Err(BundleError::Truncated { part: part.to_string() });
        }
        Ok(())
    }
}

/// One payload's bytes, hashed as they are read.
///
/// It gives exactly the payload's `size` bytes; the read that would return
/// end-of-file (`Ok(0)`) compares the sha256 instead and fails with an
/// `io::Error` of kind `InvalidData` wrapping [`BundleError::PayloadDigest`]
/// (and keeps failing) if it differs. A stream that ends early fails with
/// kind `UnexpectedEof` wrapping [`BundleError::Truncated`]. So a consumer
/// that reads to the end (`io::copy`, `read_to_end`) learns of a bad payload
/// at the end, and must not use its bytes before then. [`Self::finish`]
/// does the same and returns the [`BundleError`] itself.
pub struct PayloadReader<'a, R> {
    bundle: &'a mut Bundle<R>,
    payload: Payload,
    remaining: u64,
    hasher: Sha256,
    /// Set at the end: `Ok` or the digest found.
    verdict: Option<Result<(), String>>,
}

impl<R: Read> PayloadReader<'_, R> {
    /// The manifest's entry for this payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads the rest of the payload (dropping it) and checks its sha256.
    pub fn finish(mut self) -> Result<(), BundleError> {
        let part = format!("payload {:?}", self.payload.name);
        io::copy(&mut self, &mut io::sink()).map(|_| ()).map_err(|e| from_io(&part, e))
    }

    fn digest_error(&self, actual: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            BundleError::PayloadDigest {
                name: self.payload.name.clone(),
                expected: self.payload.sha256.clone(),
                actual: actual.to_string(),
            },
        )
    }
}

/// The [`BundleError`] inside an `io::Error` from a [`PayloadReader`], or a
/// new one for an error from below.
pub(crate) fn from_io(part: &str, e: io::Error) -> BundleError {
    if !e.get_ref().is_some_and(|inner| inner.is::<BundleError>()) {
        return BundleError::io(part, e);
    }
    match e.into_inner().map(|inner| inner.downcast::<BundleError>()) {
        Some(Ok(inner)) => *inner,
        Some(Err(other)) => BundleError::Io { part: part.to_string(), source: io::Error::other(other) },
        None => BundleError::Truncated { part: part.to_string() },
    }
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let verdict = self.verdict.get_or_insert_with(|| {
                let actual = hex(&self.hasher.clone().finalize());
                if actual == self.payload.sha256 {
                    Ok(())
                } else {
                    Err(actual)
                }
            });
            return match verdict.clone() {
                Ok(()) => Ok(0),
                Err(actual) => Err(self.digest_error(&actual)),
            };
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.bundle.reader.read(buf.get_mut(..want).unwrap_or_default())?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                BundleError::Truncated { part: format!("payload {:?}", self.payload.name) },
            ));
        }
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.remaining -= n as u64;
        self.bundle.pos += n as u64;
        Ok(n)
    }
}
