//! The boot's read-ahead: the programs of the daemons the boot waits
//! longest for ([`berth_layout::paths::BOOT_READAHEAD`], written by the
//! image build from the units: containerd's and etcd's, with the C
//! library) are read into the page cache by a thread at `SCHED_IDLE`
//! from PID1's first moment on.
//!
//! Why: early boot (PID1's mounts, `/var`, the wait for the storage
//! drivers' probing) leaves the vCPUs mostly idle, and the units' start
//! right after is CPU-bound: every page of containerd's and etcd's
//! programs is checked by dm-verity and decompressed as it is first read,
//! in kernel workers that run ahead of everything else. Read during the
//! idle part, that work is out of the daemons' way. The thread runs only
//! on an idle CPU, reads one [`STEP`] at a time and waits for it before
//! asking for the next, so at most one step of it is ever queued ahead of
//! a read on the boot's path (the earlier tries, all of both programs
//! asked for at once from stage 0, made the boot slower: README, "Steps
//! of point 2"). What it has not read when the units start it goes on
//! reading whenever a vCPU is idle; the daemons' own faults read the rest.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How much one step asks for: the root device's read-ahead window
/// (`ROOT_READ_AHEAD_KB`, set by stage 0), the most one `readahead(2)`
/// call reads at once.
const STEP: u64 = 4 << 20;

/// The paths of a read-ahead list's text: one absolute path a line;
/// blank lines and lines starting with `#` are skipped, as are relative
/// paths (the list names files of the root, by absolute path).
pub fn parse_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// Starts the read-ahead of the files `list` names on a thread of its
/// own, at `SCHED_IDLE`. A missing list (an image without one) does
/// nothing; a list that cannot be read, a file that cannot be, a policy
/// the kernel refuses and a thread that cannot start are logged, and the
/// boot goes on without it (it reads nothing the boot would not). When it
/// is done it logs how many files and bytes it read, and how long it took.
pub fn spawn(list: &Path) {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            crate::info!("readahead: {}: {e}", list.display());
            return;
        }
    };
    let paths = parse_list(&text);
    let started = std::thread::Builder::new().name("boot-readahead".into()).spawn(move || {
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's own policy (tid 0) from a valid struct.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } != 0 {
            crate::info!("readahead: SCHED_IDLE refused: {}; not reading ahead", std::io::Error::last_os_error());
            return;
        }
        let t = Instant::now();
        let (mut files, mut bytes) = (0, 0);
        for path in &paths {
            match read_into_cache(path) {
                Ok(n) => {
                    files += 1;
                    bytes += n;
                }
                Err(e) => crate::info!("readahead: {}: {e}", path.display()),
            }
        }
        crate::info!(
            "readahead: {files} of {} files, {:.1} MiB in {:.2} s",
            paths.len(),
            bytes as f64 / f64::from(1 << 20),
            t.elapsed().as_secs_f64()
        );
    });
    if let Err(e) = started {
        crate::info!("readahead: starting its thread: {e}");
    }
}

/// Reads `path` into the page cache, one [`STEP`] at a time: `readahead(2)`
/// asks for the step, and reading the step's last byte waits until it is
/// in. Returns the file's size in bytes.
///
/// Errors: opening the file or reading its bytes (`readahead(2)`'s own
/// errors only mean the step is read by the byte's read instead).
pub fn read_into_cache(path: &Path) -> std::io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut off = 0;
    let mut byte = [0u8; 1];
    while off < len {
        let n = STEP.min(len - off);
        let (Ok(at), Ok(count)) = (libc::off64_t::try_from(off), usize::try_from(n)) else { break };
        // SAFETY: readahead(2) on a descriptor this function owns; no memory crosses.
        unsafe { libc::readahead(file.as_raw_fd(), at, count) };
        file.read_at(&mut byte, off + n - 1)?;
        off += n;
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_absolute_paths_and_skips_comments_blanks_and_relative_lines() {
        let text = "# header\n/usr/bin/etcd\n\n  /usr/bin/containerd  \nusr/bin/relative\n#/usr/bin/commented\n";
        assert_eq!(parse_list(text), [PathBuf::from("/usr/bin/etcd"), PathBuf::from("/usr/bin/containerd")]);
    }

    #[test]
    fn a_file_is_read_in_steps_to_its_end() {
        let path = std::env::temp_dir().join(format!("berth-readahead-{}", std::process::id()));
        let len = STEP + STEP / 2 + 7;
        std::fs::write(&path, vec![1u8; usize::try_from(len).unwrap()]).unwrap();
        assert_eq!(read_into_cache(&path).unwrap(), len);
        std::fs::remove_file(&path).unwrap();
        assert!(read_into_cache(&path).is_err());
    }
}
