use std::io::{self, Cursor, Read};
use std::path::PathBuf;

use berth_layout::cmdline::{Verity, VERITY_BLOCK};
use ed25519_dalek::SigningKey;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-bundle-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn ring(keys: &[&SigningKey]) -> KeyRing {
    let mut ring = KeyRing::new();
    for k in keys {
        ring.add(k.verifying_key());
    }
    ring
}

/// Slot b's UKI in the test bundles (the tests read slot a's, `kernel`).
const UKI_B: &[u8] = b"slot b's UKI";

/// A root of 4 data blocks + superblock + 1 hash block, and a small UKI for slot a.
fn payloads() -> (Vec<u8>, Vec<u8>) {
    let root: Vec<u8> = (0..6 * VERITY_BLOCK).map(|i| (i % 251) as u8).collect();
    let kernel: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
    (root, kernel)
}

fn manifest(root: &[u8], kernel: &[u8]) -> Manifest {
    let (root_size, root_sha) = measure(root).unwrap();
    let (kernel_size, kernel_sha) = measure(kernel).unwrap();
    let (b_size, b_sha) = measure(UKI_B).unwrap();
    let verity = Verity { data_blocks: 4, hash_start_block: 5, root_hash: "ab".repeat(32), salt: "cd".repeat(32) };
    Manifest {
        format_version: FORMAT_VERSION,
        os_version: "0.2.0".into(),
        architecture: "x86_64".into(),
        min_from_version: "0.1.0".into(),
        payloads: vec![
            Payload {
                name: ROOT_PAYLOAD.into(),
                offset: 0,
                size: root_size,
                sha256: root_sha,
                verity: Some(VerityGeometry::from(&verity)),
            },
            Payload {
                name: UKI_PAYLOADS[0].into(),
                offset: root_size,
                size: kernel_size,
                sha256: kernel_sha,
                verity: None,
            },
            Payload {
                name: UKI_PAYLOADS[1].into(),
                offset: root_size + kernel_size,
                size: b_size,
                sha256: b_sha,
                verity: None,
            },
        ],
    }
}

fn build(signer: &SigningKey) -> (Manifest, Vec<u8>, Vec<u8>, Vec<u8>) {
    let (root, kernel) = payloads();
    let m = manifest(&root, &kernel);
    let mut out = Vec::new();
    sign(&m, &mut [&mut root.as_slice(), &mut kernel.as_slice(), &mut &UKI_B[..]], signer, &mut out).unwrap();
    (m, out, root, kernel)
}

/// Offset of the first payload byte in a bundle.
fn payload_start(bundle: &[u8]) -> usize {
    16 + u32::from_le_bytes(bundle[12..16].try_into().unwrap()) as usize + 96
}

fn read_all(bundle: &[u8], keys: &KeyRing) -> Result<(Manifest, Vec<u8>, Vec<u8>), BundleError> {
    let mut b = open(bundle, keys)?;
    let m = b.manifest().manifest().clone();
    let mut root = Vec::new();
    b.payload(ROOT_PAYLOAD)?.read_to_end(&mut root).map_err(unwrap_io)?;
    let mut kernel = Vec::new();
    b.payload(UKI_PAYLOADS[0])?.read_to_end(&mut kernel).map_err(unwrap_io)?;
    b.finish()?;
    Ok((m, root, kernel))
}

fn unwrap_io(e: io::Error) -> BundleError {
    *e.into_inner().unwrap().downcast::<BundleError>().unwrap()
}

#[test]
fn round_trip() {
    let k = key(1);
    let (m, bundle, root, kernel) = build(&k);
    assert_eq!(&bundle[..8], b"BERTHBDL");
    assert_eq!(bundle.len(), payload_start(&bundle) + root.len() + kernel.len() + UKI_B.len());
    let (m2, root2, kernel2) = read_all(&bundle, &ring(&[&k])).unwrap();
    assert_eq!((m2, root2, kernel2), (m.clone(), root, kernel));

    let opened = open(bundle.as_slice(), &ring(&[&k])).unwrap();
    assert_eq!(*opened.manifest().key_id(), key_id(&k.verifying_key()));
    let geometry = opened.manifest().payload(ROOT_PAYLOAD).unwrap().verity.as_ref().unwrap();
    assert_eq!(Verity::from(geometry).hash_start_block, 5);
}

#[test]
fn payload_reader_finish_and_skip() {
    let k = key(1);
    let (_, bundle, _, kernel) = build(&k);
    let keys = ring(&[&k]);
    // Skipping the root entirely and reading only the kernel works.
    let mut b = open(bundle.as_slice(), &keys).unwrap();
    let mut got = Vec::new();
    b.payload(UKI_PAYLOADS[0]).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, kernel);
    assert!(matches!(b.payload(ROOT_PAYLOAD), Err(BundleError::PayloadPassed { .. })));
    assert!(matches!(b.payload("initrd"), Err(BundleError::NoSuchPayload { .. })));
    b.finish().unwrap();
    // A partly read payload finishes and verifies.
    let mut b = open(bundle.as_slice(), &keys).unwrap();
    let mut p = b.payload(ROOT_PAYLOAD).unwrap();
    p.read_exact(&mut [0u8; 100]).unwrap();
    p.finish().unwrap();
}

#[test]
fn flipped_payload_byte_fails_its_sha256_at_the_end() {
    let k = key(1);
    let (_, mut bundle, root, _) = build(&k);
    let at = payload_start(&bundle) + root.len() / 2;
    bundle[at] ^= 0x01;
    let keys = ring(&[&k]);
    // The manifest is fine, the root payload is not.
    let mut b = open(bundle.as_slice(), &keys).unwrap();
    let mut sink = Vec::new();
    let err = b.payload(ROOT_PAYLOAD).unwrap().read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(sink.len(), root.len(), "the error comes at the end, after all bytes");
    match unwrap_io(err) {
        BundleError::PayloadDigest { name, .. } => assert_eq!(name, "root"),
        e => panic!("{e}"),
    }
    let mut b = open(bundle.as_slice(), &keys).unwrap();
    assert!(matches!(b.payload(ROOT_PAYLOAD).unwrap().finish(), Err(BundleError::PayloadDigest { .. })));
}

#[test]
fn flipped_manifest_byte_fails_the_signature() {
    let k = key(1);
    let (_, bundle, _, _) = build(&k);
    let len = payload_start(&bundle) - 96 - 16;
    for at in [16, 16 + len / 2, 16 + len - 1] {
        let mut bad = bundle.clone();
        bad[at] ^= 0x20;
        assert!(matches!(open(bad.as_slice(), &ring(&[&k])), Err(BundleError::BadSignature { .. })), "byte {at}");
    }
    // A flipped signature byte too.
    let mut bad = bundle.clone();
    bad[payload_start(&bundle) - 1] ^= 0x01;
    assert!(matches!(open(bad.as_slice(), &ring(&[&k])), Err(BundleError::BadSignature { .. })));
}

#[test]
fn unknown_key_is_refused() {
    let (_, bundle, _, _) = build(&key(1));
    let err = open(bundle.as_slice(), &ring(&[&key(2)])).err().unwrap();
    assert!(
        matches!(&err, BundleError::UnknownKey { key_id: id } if *id == key_id(&key(1).verifying_key()).to_string())
    );
    assert!(matches!(open(bundle.as_slice(), &KeyRing::new()), Err(BundleError::UnknownKey { .. })));
    // Claiming an accepted key's id does not help a signature by another key.
    let mut forged = bundle.clone();
    let id_at = payload_start(&bundle) - 96;
    forged[id_at..id_at + 32].copy_from_slice(&key_id(&key(2).verifying_key()).0);
    assert!(matches!(open(forged.as_slice(), &ring(&[&key(2)])), Err(BundleError::BadSignature { .. })));
}

#[test]
fn key_rotation_accepts_either_of_two_keys() {
    let (old, new) = (key(1), key(2));
    let keys = ring(&[&old, &new]);
    assert_eq!(keys.len(), 2);
    for signer in [&old, &new] {
        let (m, bundle, _, _) = build(signer);
        let (m2, _, _) = read_all(&bundle, &keys).unwrap();
        assert_eq!(m, m2);
    }
    // After the old key is retired, its bundles are refused.
    let (_, bundle, _, _) = build(&old);
    assert!(matches!(open(bundle.as_slice(), &ring(&[&new])), Err(BundleError::UnknownKey { .. })));
}

#[test]
fn truncated_bundles_are_errors_at_every_length() {
    let k = key(1);
    let (_, bundle, _, _) = build(&k);
    let keys = ring(&[&k]);
    let start = payload_start(&bundle);
    let cuts = (0..start + 2).chain([bundle.len() - 4097, bundle.len() - 1]);
    for cut in cuts {
        let err = read_all(&bundle[..cut], &keys).err().unwrap_or_else(|| panic!("cut at {cut} was accepted"));
        assert!(matches!(err, BundleError::Truncated { .. }), "cut at {cut}: {err}");
    }
    // And a byte too many is refused too.
    let mut long = bundle.clone();
    long.push(0);
    assert!(matches!(read_all(&long, &keys), Err(BundleError::TrailingData)));
}

/// A reader that hands out zeros forever, and fails the test if more than
/// `limit` bytes are asked for.
struct Endless {
    given: u64,
    limit: u64,
    prefix: Cursor<Vec<u8>>,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prefix.read(buf)?;
        let n = if n > 0 { n } else { buf.len() };
        self.given += n as u64;
        assert!(self.given <= self.limit, "read {} bytes from a hostile bundle", self.given);
        Ok(n)
    }
}

#[test]
fn oversized_or_zero_manifest_length_is_refused_before_reading_it() {
    for len in [0u32, MAX_MANIFEST_LEN + 1, u32::MAX] {
        let mut head = MAGIC.to_vec();
        head.extend(FORMAT_VERSION.to_le_bytes());
        head.extend(len.to_le_bytes());
        let r = Endless { given: 0, limit: 16, prefix: Cursor::new(head) };
        match open(r, &ring(&[&key(1)])) {
            Err(BundleError::ManifestLength { len: l, max }) => assert_eq!((l, max), (len, MAX_MANIFEST_LEN)),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
    }
}

#[test]
fn wrong_magic_and_format_version_are_errors() {
    let k = key(1);
    let (_, bundle, _, _) = build(&k);
    let mut bad = bundle.clone();
    bad[0] = b'X';
    assert!(matches!(open(bad.as_slice(), &ring(&[&k])), Err(BundleError::BadMagic { .. })));
    let mut bad = bundle.clone();
    // Format 1 (a bare kernel, no UKIs) and a later one are both refused.
    for other in [1u32, FORMAT_VERSION + 1] {
        bad[8..12].copy_from_slice(&other.to_le_bytes());
        let e = open(bad.as_slice(), &ring(&[&k]));
        assert!(matches!(e, Err(BundleError::UnsupportedFormat { found, .. }) if found == other), "{other}");
    }
    assert!(matches!(open(&b"BERTH"[..], &ring(&[&k])), Err(BundleError::Truncated { .. })));
}

/// A change that breaks a manifest.
type Change = fn(&mut Manifest);

/// Signs arbitrary manifest bytes, as a holder of an accepted key could.
fn sign_raw(manifest: &[u8], k: &SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut out = MAGIC.to_vec();
    out.extend(FORMAT_VERSION.to_le_bytes());
    out.extend((manifest.len() as u32).to_le_bytes());
    out.extend(manifest);
    out.extend(key_id(&k.verifying_key()).0);
    out.extend(k.sign(&[SIGNATURE_CONTEXT, manifest].concat()).to_bytes());
    out
}

#[test]
fn signed_but_malformed_manifests_are_refused() {
    let k = key(1);
    let keys = ring(&[&k]);
    let (root, kernel) = payloads();
    let good = manifest(&root, &kernel);
    assert!(matches!(open(sign_raw(b"not json", &k).as_slice(), &keys), Err(BundleError::ManifestParse(_))));

    let mut json: serde_json::Value = serde_json::to_value(&good).unwrap();
    json["surprise"] = 1.into();
    let bytes = serde_json::to_vec(&json).unwrap();
    assert!(matches!(open(sign_raw(&bytes, &k).as_slice(), &keys), Err(BundleError::ManifestParse(_))));

    let cases: Vec<(&str, Change)> = vec![
        ("format_version", |m| m.format_version = FORMAT_VERSION + 1),
        ("payloads", |m| {
            m.payloads.pop();
        }),
        ("payloads[1].offset", |m| m.payloads[1].offset += 1),
        ("payloads[1].name", |m| m.payloads[1].name = "root".into()),
        ("payloads[0].sha256", |m| m.payloads[0].sha256 = "AB".repeat(32)),
        ("payloads", |m| m.payloads[1].name = "initrd".into()),
        ("payloads.root.verity", |m| m.payloads[0].verity = None),
        ("payloads[0].verity.hash_start_block", |m| m.payloads[0].verity.as_mut().unwrap().hash_start_block = 6),
        ("os_version", |m| m.os_version.clear()),
    ];
    for (field, change) in cases {
        let mut m = good.clone();
        change(&mut m);
        let bytes = serde_json::to_vec(&m).unwrap();
        match open(sign_raw(&bytes, &k).as_slice(), &keys) {
            Err(BundleError::InvalidManifest { field: f, .. }) => assert_eq!(f, field),
            Err(BundleError::UnsupportedFormat { .. }) if field == "format_version" => {}
            Err(e) => panic!("{field}: {e}"),
            Ok(_) => panic!("{field}: accepted"),
        }
        // And sign() refuses to write such a manifest.
        assert!(
            sign(&m, &mut [&mut root.as_slice(), &mut kernel.as_slice(), &mut &UKI_B[..]], &k, &mut Vec::new())
                .is_err(),
            "{field}"
        );
    }
}

#[test]
fn sign_checks_the_payload_readers_against_the_manifest() {
    let k = key(1);
    let (root, kernel) = payloads();
    let m = manifest(&root, &kernel);
    let short = &kernel[..kernel.len() - 1];
    let err = sign(&m, &mut [&mut root.as_slice(), &mut &short[..], &mut &UKI_B[..]], &k, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, BundleError::PayloadSize { .. }), "{err}");
    let mut other = kernel.clone();
    other[0] ^= 1;
    let err =
        sign(&m, &mut [&mut root.as_slice(), &mut other.as_slice(), &mut &UKI_B[..]], &k, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, BundleError::PayloadDigest { .. }), "{err}");
    let err = sign(&m, &mut [&mut root.as_slice()], &k, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, BundleError::ManifestWrite(_)), "{err}");
}

#[test]
fn key_files_round_trip_and_a_directory_is_a_key_ring() {
    let dir = temp_dir("keys");
    let (a, b) = (generate_dev_keypair(), generate_dev_keypair());
    assert_ne!(a.to_bytes(), b.to_bytes());
    write_signing_key(&dir.join("signing.key"), &a).unwrap();
    assert!(write_signing_key(&dir.join("signing.key"), &a).is_err(), "an existing key is not overwritten");
    let loaded = load_signing_key(&dir.join("signing.key")).unwrap();
    assert_eq!(loaded.to_bytes(), a.to_bytes());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("signing.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let keys = dir.join("accepted");
    std::fs::create_dir(&keys).unwrap();
    assert!(matches!(KeyRing::load_dir(&keys), Err(KeyError::NoKeys { .. })));
    std::fs::write(keys.join("2026.pem"), public_key_pem(&a.verifying_key()).unwrap()).unwrap();
    std::fs::write(keys.join("2027.pem"), public_key_pem(&b.verifying_key()).unwrap()).unwrap();
    std::fs::write(keys.join("README"), "not a key, ignored").unwrap();
    let ring = KeyRing::load_dir(&keys).unwrap();
    assert_eq!(ring.len(), 2);
    assert!(ring.get(&key_id(&a.verifying_key())).is_some());

    std::fs::write(keys.join("dup.pem"), public_key_pem(&a.verifying_key()).unwrap()).unwrap();
    assert!(matches!(KeyRing::load_dir(&keys), Err(KeyError::Duplicate { .. })));
    std::fs::write(keys.join("dup.pem"), signing_key_pem(&b).unwrap()).unwrap();
    assert!(matches!(KeyRing::load_dir(&keys), Err(KeyError::Parse { .. })), "a private key is no public key");
    std::fs::remove_file(keys.join("dup.pem")).unwrap();

    // A bundle signed with the loaded key opens with the directory's ring.
    let (m, bundle, _, _) = build(&loaded);
    assert_eq!(read_all(&bundle, &KeyRing::load_dir(&keys).unwrap()).unwrap().0, m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn openssl_style_pem_parses() {
    // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` output (RFC 8410 test key).
    let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let dir = temp_dir("openssl");
    std::fs::write(dir.join("k"), private).unwrap();
    std::fs::write(dir.join("k.pub"), public).unwrap();
    let sk = load_signing_key(&dir.join("k")).unwrap();
    let pk = load_verifying_key(&dir.join("k.pub")).unwrap();
    assert_eq!(sk.verifying_key(), pk);
    std::fs::remove_dir_all(&dir).unwrap();
}
