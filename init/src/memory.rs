//! PID1's resident memory: what PID1 asks of glibc's malloc and of the
//! kernel so that, once the machine is ready, it holds the pages it keeps
//! using and few others (issue 11: at most 3 MiB with every service
//! running; systemd holds about 11).

use std::io;

extern "C" {
    /// The executable's ELF header, the first byte of its first segment
    /// (defined by the linker, GNU ld and lld alike).
    static __ehdr_start: u8;
    /// The end of `.text`: with lld's layout the read-only segments
    /// (headers, rodata, unwind tables, code) all lie between
    /// `__ehdr_start` and here (linker).
    static etext: u8;
    /// The end of `.bss`, past the last byte of the last segment (linker).
    static _end: u8;
}

/// One malloc arena for all of PID1's threads (`mallopt(M_ARENA_MAX, 1)`).
/// glibc gives each thread that allocates an arena of its own, a heap of
/// 132 KiB whose touched pages stay resident; PID1's few threads allocate
/// little and seldom, so sharing one costs no time worth measuring. Call
/// it before other threads start. Returns whether glibc took the setting.
pub fn one_malloc_arena() -> bool {
    // SAFETY: mallopt only sets a malloc parameter; no pointer crosses.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
}

/// Lets go of what only the boot needed, as the kernel frees its `__init`
/// sections: called once, when the machine is ready.
///
/// - The heap's free pages go back to the kernel (`malloc_trim(0)`):
///   early boot's one-time allocations (unit files, user data, the
///   journal's backlog before /var).
/// - PID1's own code is read page by page from now on (`MADV_RANDOM` on
///   the executable) and the read-only pages it has are dropped
///   (`MADV_PAGEOUT`): they come back, one at a time, as they run again.
///   Without this nearly the whole binary stays resident (3.2 of 3.6 MiB
///   of text): every page fault read the root's read-ahead window around
///   itself (128 KiB when measured, 4 MiB since) and the kernel's
///   fault-around then mapped 64 KiB of what was cached, so the boot's code,
///   spread thinly over the binary, touched nearly every part of it. The
///   boot itself keeps the read-around: its code runs once, on the
///   critical path, where page-by-page reads took 340 major faults
///   instead of 79. The price is paid at power-off, whose code runs for
///   the first time since boot: 0.3 to 0.5 s more under TCG (reading the
///   whole binary back at once with `MADV_WILLNEED` when shutdown began
///   measured slower still).
///
/// Errors: madvise(2)'s, e.g. `EINVAL` from a kernel without
/// `MADV_PAGEOUT` (before 5.4); nothing is lost then but the saving.
pub fn release_boot_memory() -> io::Result<()> {
    // SAFETY: malloc_trim only releases free memory of malloc's own.
    unsafe { libc::malloc_trim(0) };
    let image = Image::own()?;
    // SAFETY: the range is this executable's own mapping; MADV_RANDOM only
    // changes how the kernel reads ahead into it, never what it holds.
    unsafe { rustix::mm::madvise(image.start as *mut _, image.all, rustix::mm::Advice::Random) }?;
    // SAFETY: as above; MADV_PAGEOUT drops clean pages of a read-only file
    // mapping, which the next access reads back unchanged.
    unsafe { rustix::mm::madvise(image.start as *mut _, image.read_only, rustix::mm::Advice::LinuxPageOut) }?;
    Ok(())
}

/// Where this executable is mapped: page-aligned start, and the lengths of
/// all its segments and of its read-only ones, in bytes.
struct Image {
    start: usize,
    all: usize,
    read_only: usize,
}

impl Image {
    fn own() -> io::Result<Image> {
        // From glibc (sysconf): rustix's page_size reads /proc/self/auxv
        // when its backend has no copy, and panics when /proc is missing.
        let page = match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 && (p & (p - 1)) == 0 => p as usize,
            _ => return Err(io::Error::other("sysconf(_SC_PAGESIZE) gave no power of two")),
        };
        let start = ((&raw const __ehdr_start) as usize) & !(page - 1);
        Ok(Image {
            start,
            all: ((&raw const _end) as usize).saturating_sub(start),
            read_only: ((&raw const etext) as usize).saturating_sub(start),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_memory_is_released_and_the_code_runs_on() {
        // The test binary's own mapping: its code is read back as it runs.
        release_boot_memory().unwrap();
        assert_eq!(std::hint::black_box(21) * 2, 42);
        assert!(one_malloc_arena());
    }
}
