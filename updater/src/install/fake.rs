//! A [`Target`] in a directory, for tests (here and in the daemon): each
//! root partition is a fixed-size file (`root-a.img`, `root-b.img`), the
//! ESP is the directory `esp/`, the EFI variables and the command line are
//! values. It refuses what the real target refuses (the booted slot,
//! writes outside a partition), records every operation in [`FakeTarget::log`],
//! and can be told to fail at an operation ([`FakeTarget::fail_at`]) or
//! to corrupt a partition write ([`FakeTarget::corrupt_next_write`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use berth_layout::disk::Slot;
use berth_layout::Guid;

use super::target::{copy_to, esp_components, read_entries, Target, TargetError};

/// An operation of the fake, to make it fail at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeOp {
    PartitionWrite,
    PartitionSync,
    PartitionRead,
    EspWrite,
    EspRename,
    EspRemove,
    EspSync,
    SetPartuuid,
}

/// See the module documentation.
#[derive(Debug)]
pub struct FakeTarget {
    dir: PathBuf,
    booted: Slot,
    size: u64,
    cmdline: String,
    vars: HashMap<String, Vec<u8>>,
    partuuids: HashMap<Slot, Guid>,
    fail: Option<(FakeOp, String)>,
    corrupt: bool,
    /// Every operation done, in order: `remove loader/entries/x.conf`,
    /// `write-partition b`, `sync-partition b`, `write berth/b/.linux.efi.tmp`,
    /// `rename a -> b`, `sync-esp`, ...; consecutive partition writes and
    /// reads are logged once.
    pub log: Vec<String>,
}

/// The PARTUUID of a slot's partition in a fake.
pub fn fake_partuuid(slot: Slot) -> Guid {
    Guid::derive(&format!("fake/{}", slot.label()))
}

impl FakeTarget {
    /// A fake disk in `dir` (created) booted from `booted`, with two root
    /// partitions of `partition_size` bytes (zeros, unless they exist
    /// already: a fake can be reopened over the same directory) and an
    /// empty ESP. The command line names the booted slot and its PARTUUID.
    pub fn new(dir: &Path, booted: Slot, partition_size: u64) -> io::Result<FakeTarget> {
        fs::create_dir_all(dir.join("esp/loader/entries"))?;
        for slot in [Slot::A, Slot::B] {
            let path = dir.join(format!("{}.img", slot.label()));
            let f = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            f.set_len(partition_size)?;
        }
        let booted_uuid = fake_partuuid(booted);
        Ok(FakeTarget {
            dir: dir.to_path_buf(),
            booted,
            size: partition_size,
            cmdline: format!("dm-mod.waitfor=PARTUUID={booted_uuid} root=/dev/dm-0 ro berth.slot={}", booted.name()),
            vars: HashMap::new(),
            partuuids: HashMap::new(),
            fail: None,
            corrupt: false,
            log: Vec::new(),
        })
    }

    /// The file that stands for `slot`'s root partition.
    pub fn partition_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("{}.img", slot.label()))
    }

    /// The directory that stands for the ESP.
    pub fn esp_dir(&self) -> PathBuf {
        self.dir.join("esp")
    }

    /// Sets an EFI variable (efivarfs bytes, with the 4 attribute bytes).
    pub fn set_efi_var(&mut self, name: &str, bytes: Vec<u8>) {
        self.vars.insert(name.to_string(), bytes);
    }

    /// Makes the next `op` whose path (or slot name) contains `matching`
    /// fail with an I/O error; one-shot.
    pub fn fail_at(&mut self, op: FakeOp, matching: &str) {
        self.fail = Some((op, matching.to_string()));
    }

    /// Flips one bit of the next partition write as it reaches the "disk",
    /// as a bad medium would.
    pub fn corrupt_next_write(&mut self) {
        self.corrupt = true;
    }

    fn check_fail(&mut self, op: FakeOp, path: &str) -> Result<(), TargetError> {
        if let Some((f, m)) = &self.fail {
            if *f == op && path.contains(m.as_str()) {
                self.fail = None;
                return Err(TargetError::io(
                    "fake",
                    path,
                    None,
                    io::Error::other(format!("injected failure at {op:?}")),
                ));
            }
        }
        Ok(())
    }

    fn note(&mut self, entry: String) {
        if self.log.last() != Some(&entry) || !entry.ends_with("-partition b") && !entry.ends_with("-partition a") {
            self.log.push(entry);
        }
    }

    fn esp_path(&self, path: &str) -> Result<PathBuf, TargetError> {
        let mut p = self.esp_dir();
        for c in esp_components(path)? {
            p.push(c);
        }
        Ok(p)
    }

    fn check_range(&self, slot: Slot, offset: u64, len: usize) -> Result<PathBuf, TargetError> {
        let path = self.partition_path(slot);
        let len = len as u64;
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(TargetError::OutOfRange { path, offset, len, size: self.size });
        }
        Ok(path)
    }
}

fn sync_dir(dir: &Path) -> Result<(), TargetError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| TargetError::io("syncing directory", dir, None, e))
}

impl Target for FakeTarget {
    fn cmdline(&mut self) -> Result<String, TargetError> {
        Ok(self.cmdline.clone())
    }

    fn partuuid(&mut self, slot: Slot) -> Result<Guid, TargetError> {
        Ok(self.partuuids.get(&slot).copied().unwrap_or_else(|| fake_partuuid(slot)))
    }

    fn set_partuuid(&mut self, slot: Slot, guid: Guid) -> Result<(), TargetError> {
        if slot == self.booted || guid == fake_partuuid(self.booted) {
            return Err(TargetError::BootedSlot { slot: slot.name() });
        }
        self.check_fail(FakeOp::SetPartuuid, slot.name())?;
        self.note(format!("set-partuuid {} {guid}", slot.name()));
        self.partuuids.insert(slot, guid);
        Ok(())
    }

    fn partition_size(&mut self, _slot: Slot) -> Result<u64, TargetError> {
        Ok(self.size)
    }

    fn write_partition(&mut self, slot: Slot, offset: u64, data: &[u8]) -> Result<(), TargetError> {
        if slot == self.booted {
            return Err(TargetError::BootedSlot { slot: slot.name() });
        }
        self.check_fail(FakeOp::PartitionWrite, slot.name())?;
        let path = self.check_range(slot, offset, data.len())?;
        self.note(format!("write-partition {}", slot.name()));
        let mut bytes = data.to_vec();
        if self.corrupt {
            if let Some(b) = bytes.first_mut() {
                *b ^= 1;
                self.corrupt = false;
            }
        }
        let io = |e| TargetError::io("writing", &path, Some(offset), e);
        let mut f = OpenOptions::new().write(true).open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.write_all(&bytes).map_err(io)
    }

    fn sync_partition(&mut self, slot: Slot) -> Result<(), TargetError> {
        self.check_fail(FakeOp::PartitionSync, slot.name())?;
        self.note(format!("sync-partition {}", slot.name()));
        let path = self.partition_path(slot);
        File::open(&path).and_then(|f| f.sync_all()).map_err(|e| TargetError::io("syncing", &path, None, e))
    }

    fn read_partition(&mut self, slot: Slot, offset: u64, buf: &mut [u8]) -> Result<(), TargetError> {
        self.check_fail(FakeOp::PartitionRead, slot.name())?;
        let path = self.check_range(slot, offset, buf.len())?;
        self.note(format!("read-partition {}", slot.name()));
        let io = |e| TargetError::io("reading", &path, Some(offset), e);
        let mut f = File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.read_exact(buf).map_err(io)
    }

    fn entries(&mut self) -> Result<Vec<(String, String)>, TargetError> {
        read_entries(&self.esp_dir().join("loader/entries"))
    }

    fn efi_var(&mut self, name: &str) -> Result<Option<Vec<u8>>, TargetError> {
        Ok(self.vars.get(name).cloned())
    }

    fn esp_exists(&mut self, path: &str) -> Result<bool, TargetError> {
        Ok(self.esp_path(path)?.exists())
    }

    fn esp_write(&mut self, path: &str, data: &mut dyn Read) -> Result<u64, TargetError> {
        let full = self.esp_path(path)?;
        self.check_fail(FakeOp::EspWrite, path)?;
        self.note(format!("write {}", path.trim_start_matches('/')));
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(|e| TargetError::io("creating", parent, None, e))?;
        }
        let mut f = File::create(&full).map_err(|e| TargetError::io("creating", &full, None, e))?;
        let n = copy_to(data, &mut f, path, &full)?;
        f.sync_all().map_err(|e| TargetError::io("syncing", &full, None, e))?;
        Ok(n)
    }

    fn esp_rename(&mut self, from: &str, to: &str) -> Result<(), TargetError> {
        let (src, dst) = (self.esp_path(from)?, self.esp_path(to)?);
        self.check_fail(FakeOp::EspRename, to)?;
        self.note(format!("rename {} -> {}", from.trim_start_matches('/'), to.trim_start_matches('/')));
        fs::rename(&src, &dst).map_err(|e| TargetError::io("renaming", &src, None, e))?;
        dst.parent().map_or(Ok(()), sync_dir)
    }

    fn esp_remove(&mut self, path: &str) -> Result<(), TargetError> {
        let full = self.esp_path(path)?;
        self.check_fail(FakeOp::EspRemove, path)?;
        self.note(format!("remove {}", path.trim_start_matches('/')));
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(TargetError::io("removing", &full, None, e)),
        }
        full.parent().map_or(Ok(()), sync_dir)
    }

    fn esp_sync(&mut self) -> Result<(), TargetError> {
        self.check_fail(FakeOp::EspSync, "esp")?;
        self.note("sync-esp".to_string());
        sync_dir(&self.esp_dir())
    }
}
