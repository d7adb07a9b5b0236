//! The install engine: see the module documentation of [`super`].

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_layout::disk::{root_partition_uuid, Slot};
use sha2::{Digest, Sha256};

use super::target::{Target, TargetError};
use super::{policy, InstallContext, InstallError, Installed, Progress, Step};
use crate::boot_entry::{kernel_path, slot_of_entry, uki_path};
use crate::bundle::{self, uki_payload, Bundle, BundleError, KeyRing, Manifest, VerifiedManifest, ROOT_PAYLOAD};
use crate::state::{AbState, FileOp, ENTRIES_DIR, LOADER_BOOT_COUNT_PATH, LOADER_ENTRY_SELECTED};

/// Bytes per partition write and read-back read.
const CHUNK: usize = 1024 * 1024;

/// Loads the A/B state from a target: its entries, command line and
/// systemd-boot's EFI variables ([`AbState::load`]).
pub fn load_state(target: &mut impl Target) -> Result<AbState, InstallError> {
    let entries = target.entries()?;
    let cmdline = target.cmdline()?;
    let count = target.efi_var(LOADER_BOOT_COUNT_PATH)?;
    let selected = target.efi_var(LOADER_ENTRY_SELECTED)?;
    Ok(AbState::load(&entries, &cmdline, count.as_deref(), selected.as_deref())?)
}

/// Installs a bundle read once from `source` (a stream: a bad payload byte
/// is caught at the end of its payload; see the module documentation).
/// Steps, refusals and errors: see [`super`] and [`InstallError`].
pub fn install(
    source: impl Read,
    keys: &KeyRing,
    ctx: &InstallContext,
    state: AbState,
    target: &mut impl Target,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    let start = Instant::now();
    pause(ctx, Step::Verify);
    progress(Progress { step: Step::Verify, done: 0, total: 1 });
    let bundle = bundle::open(source, keys)?;
    policy::check(bundle.manifest(), ctx)?;
    progress(Progress { step: Step::Verify, done: 1, total: 1 });
    write(bundle, ctx, state, target, progress, start)
}

/// Installs a bundle file in two passes: every payload hash is verified
/// read-only first, so a bad byte is refused before anything is written;
/// then the file is read again and written (its manifest must not have
/// changed; payload hashes are checked again as they stream).
pub fn install_file(
    path: &Path,
    keys: &KeyRing,
    ctx: &InstallContext,
    state: AbState,
    target: &mut impl Target,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    let start = Instant::now();
    let open = || {
        File::open(path)
            .map(|f| BufReader::with_capacity(CHUNK, f))
            .map_err(|source| InstallError::Open { path: path.to_path_buf(), source })
    };
    pause(ctx, Step::Verify);
    let mut first = bundle::open(open()?, keys)?;
    let verified: VerifiedManifest = first.manifest().clone();
    policy::check(&verified, ctx)?;
    let total = verified.payloads_len();
    let mut done = 0u64;
    progress(Progress { step: Step::Verify, done, total });
    for p in verified.payloads.iter() {
        let mut reader = first.payload(&p.name)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    done += n as u64;
                    progress(Progress { step: Step::Verify, done, total });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(bundle_error(&p.name, e).into()),
            }
        }
    }
    first.finish()?;

    let second = bundle::open(open()?, keys)?;
    if *second.manifest() != verified {
        return Err(InstallError::SourceChanged { path: path.to_path_buf() });
    }
    write(second, ctx, state, target, progress, start)
}

/// Installs from `source`: a bundle file ([`install_file`], two passes) or
/// an `http://` / `https://` URL ([`crate::fetch::open`] with `retries`
/// resumes, then [`install`], one pass).
pub fn install_from(
    source: &str,
    retries: u32,
    keys: &KeyRing,
    ctx: &InstallContext,
    state: AbState,
    target: &mut impl Target,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    if crate::fetch::is_url(source) {
        let (reader, _len) = crate::fetch::open(source, retries)?;
        install(BufReader::with_capacity(CHUNK, reader), keys, ctx, state, target, progress)
    } else {
        install_file(Path::new(source), keys, ctx, state, target, progress)
    }
}

/// The `BundleError` inside an `io::Error` of a payload reader, or a new
/// one naming the payload.
fn bundle_error(payload: &str, e: io::Error) -> BundleError {
    bundle::from_io(&format!("payload {payload:?}"), e)
}

/// A target error whose source is a payload stream becomes the bundle's error.
fn from_target(payload: &str, e: TargetError) -> InstallError {
    match e {
        TargetError::Source { source, .. } => InstallError::Bundle(bundle_error(payload, source)),
        other => InstallError::Target(other),
    }
}

fn pause(ctx: &InstallContext, step: Step) {
    if ctx.pause_before == Some(step) && ctx.pause_percent.is_none() {
        eprintln!("berth-updater: paused before {step}");
        sleep_forever();
    }
}

/// The mid-stream pause: once `done` of `total` root bytes reach the
/// context's percentage.
fn pause_in_root(ctx: &InstallContext, done: u64, total: u64) {
    if let (Some(Step::WriteRoot), Some(p)) = (ctx.pause_before, ctx.pause_percent) {
        if done.saturating_mul(100) >= total.saturating_mul(u64::from(p)) {
            eprintln!("berth-updater: paused in write-root at {p}% ({done} of {total} bytes)");
            sleep_forever();
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry_path(file: &str) -> String {
    format!("{}/{file}", ENTRIES_DIR.trim_start_matches('/'))
}

/// The temporary name of the slot's new entry: not `*.conf`, so neither
/// systemd-boot nor [`AbState::load`] reads it.
fn entry_temp(slot: Slot) -> String {
    entry_path(&format!(".berth-{}.conf.tmp", slot.name()))
}

fn uki_temp(slot: Slot) -> String {
    format!("berth/{}/.berth.efi.tmp", slot.name())
}

/// After the refusals: checks the root fits, stages and applies the plan.
fn write<R: Read>(
    bundle: Bundle<R>,
    ctx: &InstallContext,
    mut state: AbState,
    target: &mut impl Target,
    progress: &mut dyn FnMut(Progress),
    start: Instant,
) -> Result<Installed, InstallError> {
    let manifest: Manifest = bundle.manifest().manifest().clone();
    let version = manifest.os_version.clone();
    let slot = state.booted().other();
    let root =
        manifest.payload(ROOT_PAYLOAD).ok_or_else(|| BundleError::NoSuchPayload { name: ROOT_PAYLOAD.into() })?;
    let capacity = target.partition_size(slot)?;
    if root.size > capacity {
        return Err(InstallError::PayloadTooLarge {
            version,
            payload: ROOT_PAYLOAD.into(),
            size: root.size,
            slot: slot.name(),
            capacity,
        });
    }
    let geometry = root.verity.as_ref().ok_or_else(|| BundleError::InvalidManifest {
        field: "payloads.root.verity".into(),
        reason: "missing".into(),
    })?;
    // The PARTUUID the slot's UKI boots from: named by the root it holds.
    let partuuid = root_partition_uuid(&geometry.root_hash, slot);
    state.stage(&version, slot)?;
    if super::policy::is_downgrade(&version, &ctx.booted_version) {
        state.mark_bad(state.booted())?;
    }
    let plan = state.plan();

    let mut step = Step::RemoveEntry;
    let mut bytes = 0u64;
    let mut bundle = Some(bundle);
    let result = (|| -> Result<String, InstallError> {
        let mut entry_file = String::new();
        for op in &plan {
            match op {
                FileOp::WritePayload { slot: s, .. } if *s == slot => {
                    let b = bundle.take().ok_or(BundleError::PayloadPassed { name: ROOT_PAYLOAD.into() })?;
                    bytes = write_payloads(b, &manifest, (slot, partuuid), ctx, target, progress, &mut step)?;
                }
                FileOp::Write { file, contents } => {
                    step = Step::WriteEntry;
                    pause(ctx, step);
                    progress(Progress { step, done: 0, total: 1 });
                    let temp = entry_temp(slot);
                    target.esp_write(&temp, &mut contents.as_bytes())?;
                    step = Step::RenameEntry;
                    pause(ctx, step);
                    target.esp_rename(&temp, &entry_path(file))?;
                    target.esp_sync()?;
                    progress(Progress { step, done: 1, total: 1 });
                    entry_file = file.clone();
                }
                FileOp::Remove { file } => {
                    step = Step::RemoveEntry;
                    pause(ctx, step);
                    progress(Progress { step, done: 0, total: 1 });
                    target.esp_remove(&entry_path(file))?;
                    target.esp_sync()?;
                    progress(Progress { step, done: 1, total: 1 });
                }
                other => apply_op(other, target).map_err(|e| InstallError::Target(e.into_target()))?,
            }
        }
        target.esp_release()?;
        Ok(entry_file)
    })();
    match result {
        Ok(entry_file) => {
            pause(ctx, Step::Done);
            progress(Progress { step: Step::Done, done: bytes, total: bytes });
            Ok(Installed { version, slot, entry_file, bytes, elapsed: start.elapsed() })
        }
        Err(e) => {
            let _ = target.esp_release();
            Err(InstallError::Stopped { version, slot: slot.name(), step, source: Box::new(e) })
        }
    }
}

/// Streams the payloads in their stored order: the root into the
/// partition (then sync, read-back, and the partition named `partuuid`),
/// the slot's UKI to the ESP (temporary name, then rename); other payloads
/// (the other slot's UKI) are read and verified only. Then checks nothing
/// follows them. Returns the bytes written.
fn write_payloads<R: Read>(
    mut bundle: Bundle<R>,
    manifest: &Manifest,
    (slot, partuuid): (Slot, berth_layout::Guid),
    ctx: &InstallContext,
    target: &mut impl Target,
    progress: &mut dyn FnMut(Progress),
    step: &mut Step,
) -> Result<u64, InstallError> {
    let mut bytes = 0u64;
    for p in &manifest.payloads {
        match p.name.as_str() {
            ROOT_PAYLOAD => {
                *step = Step::WriteRoot;
                pause(ctx, *step);
                let total = p.size;
                progress(Progress { step: *step, done: 0, total });
                let mut reader = bundle.payload(ROOT_PAYLOAD)?;
                let mut buf = vec![0u8; CHUNK];
                let mut done = 0u64;
                loop {
                    let n = fill(&mut reader, &mut buf).map_err(|e| bundle_error(ROOT_PAYLOAD, e))?;
                    if n == 0 {
                        break;
                    }
                    target.write_partition(slot, done, buf.get(..n).unwrap_or_default())?;
                    done += n as u64;
                    progress(Progress { step: *step, done, total });
                    pause_in_root(ctx, done, total);
                }
                target.sync_partition(slot)?;
                bytes += done;

                *step = Step::ReadBack;
                pause(ctx, *step);
                let mut hasher = Sha256::new();
                let mut at = 0u64;
                progress(Progress { step: *step, done: 0, total });
                while at < total {
                    let n = usize::try_from(total - at).unwrap_or(CHUNK).min(CHUNK);
                    let chunk = buf.get_mut(..n).unwrap_or_default();
                    target.read_partition(slot, at, chunk)?;
                    hasher.update(&*chunk);
                    at += n as u64;
                    progress(Progress { step: *step, done: at, total });
                }
                let actual = hex(&hasher.finalize());
                if actual != p.sha256 {
                    return Err(InstallError::ReadBack { slot: slot.name(), expected: p.sha256.clone(), actual });
                }

                // Before any entry boots the slot: its UKI's signed command
                // line finds the root by this PARTUUID.
                *step = Step::NamePartition;
                pause(ctx, *step);
                progress(Progress { step: *step, done: 0, total: 1 });
                target.set_partuuid(slot, partuuid)?;
                progress(Progress { step: *step, done: 1, total: 1 });
            }
            name if name == uki_payload(slot) => {
                *step = Step::WriteUki;
                pause(ctx, *step);
                let total = p.size;
                progress(Progress { step: *step, done: 0, total });
                let (uki, temp) = (uki_path(slot), uki_temp(slot));
                // The slot's old images are booted by nothing now (its entry
                // is gone): removing them first leaves room on the ESP (a
                // disk from before UKIs has a bare kernel there).
                target.esp_remove(&uki)?;
                target.esp_remove(&kernel_path(slot))?;
                let mut reader = Counting { inner: bundle.payload(name)?, done: 0, total, step: *step, progress };
                let n = target.esp_write(&temp, &mut reader).map_err(|e| from_target(name, e))?;
                bytes += n;
                *step = Step::RenameUki;
                pause(ctx, *step);
                target.esp_rename(&temp, &uki)?;
                target.esp_sync()?;
                progress(Progress { step: *step, done: 1, total: 1 });
            }
            other => bundle.payload(other)?.finish()?,
        }
    }
    // Only now is the bundle known whole (nothing after its payloads).
    bundle.finish()?;
    Ok(bytes)
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let rest = buf.get_mut(n..).unwrap_or_default();
        match reader.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reader that reports its progress.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    step: Step,
    progress: &'a mut dyn FnMut(Progress),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.done += n as u64;
            (self.progress)(Progress { step: self.step, done: self.done, total: self.total });
        }
        Ok(n)
    }
}

/// Why [`apply`] stopped; the operations before it are done.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{op}: {source}")]
    Target { op: String, source: TargetError },
    /// A [`FileOp::WritePayload`]: only [`install`] has the payload to write.
    #[error("{op}: a payload is written by an install, with its bundle")]
    NeedsBundle { op: String },
    /// After a rename and an ESP sync, the ESP does not show it.
    #[error("renamed {from} to {to} and synced the ESP, but reading it back finds {found}")]
    NotApplied { from: String, to: String, found: String },
}

impl ApplyError {
    fn into_target(self) -> TargetError {
        match self {
            ApplyError::Target { source, .. } => source,
            other => TargetError::NotFound(other.to_string()),
        }
    }
}

fn describe(op: &FileOp) -> String {
    match op {
        FileOp::Remove { file } => format!("removing entry {file}"),
        FileOp::Rename { from, to } => format!("renaming entry {from} to {to}"),
        FileOp::WritePayload { slot, version } => format!("writing {version} into slot {}", slot.name()),
        FileOp::Write { file, .. } => format!("writing entry {file}"),
    }
}

/// Applies one operation and syncs the ESP; a rename is read back.
fn apply_op(op: &FileOp, target: &mut impl Target) -> Result<(), ApplyError> {
    let err = |source| ApplyError::Target { op: describe(op), source };
    match op {
        FileOp::Remove { file } => target.esp_remove(&entry_path(file)).map_err(err)?,
        FileOp::Rename { from, to } => {
            target.esp_rename(&entry_path(from), &entry_path(to)).map_err(err)?;
            target.esp_sync().map_err(err)?;
            let (old, new) =
                (target.esp_exists(&entry_path(from)).map_err(err)?, target.esp_exists(&entry_path(to)).map_err(err)?);
            if old || !new {
                let found = match (old, new) {
                    (true, true) => "both names",
                    (true, false) => "only the old name",
                    _ => "neither name",
                };
                return Err(ApplyError::NotApplied { from: from.clone(), to: to.clone(), found: found.to_string() });
            }
            return Ok(());
        }
        FileOp::WritePayload { .. } => return Err(ApplyError::NeedsBundle { op: describe(op) }),
        FileOp::Write { file, contents } => {
            let slot = slot_of_entry(contents).unwrap_or(Slot::A);
            let temp = entry_temp(slot);
            target.esp_write(&temp, &mut contents.as_bytes()).map_err(err)?;
            target.esp_rename(&temp, &entry_path(file)).map_err(err)?;
        }
    }
    target.esp_sync().map_err(err)
}

/// Applies a plan without payloads ([`AbState::plan`] after
/// [`AbState::bless`], [`AbState::mark_bad`] or [`AbState::rollback`]) in
/// order, syncing the ESP after each operation and reading each rename
/// back; then releases the ESP. A plan with a
/// [`FileOp::WritePayload`] is refused before its first operation.
pub fn apply(plan: &[FileOp], target: &mut impl Target) -> Result<(), ApplyError> {
    if let Some(op) = plan.iter().find(|op| matches!(op, FileOp::WritePayload { .. })) {
        return Err(ApplyError::NeedsBundle { op: describe(op) });
    }
    let result = plan.iter().try_for_each(|op| apply_op(op, target));
    let released = target.esp_release().map_err(|source| ApplyError::Target { op: "releasing the ESP".into(), source });
    result.and(released)
}
