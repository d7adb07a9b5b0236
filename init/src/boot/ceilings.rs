//! The system-wide ceilings on open files, raised once /proc is mounted,
//! as systemd raises them: the kernel's defaults (1048576 files per
//! process, a file table sized from RAM, PID1's own hard limit of 4096)
//! were made for desktops of long ago, and a container host's services
//! (containerd, etcd) need far more. What a unit gets is its own `nofile`
//! (or the default 1024:524288): raising the ceilings gives nothing to a
//! process by itself.

use std::path::Path;

use super::system::System;

/// `fs.nr_open`: the most open files one process may have; what
/// systemd hosts have (a `nofile = "infinity"` unit gets it).
pub const NR_OPEN: u64 = 1_073_741_816;
/// `fs.file-max`: open files of the whole system; the largest value
/// (LONG_MAX), as systemd sets it: memory (and the cgroups' limits) bound
/// the file table, not a count picked at boot.
pub const FILE_MAX: u64 = i64::MAX.unsigned_abs();

/// Raises `fs.nr_open`, `fs.file-max`, then PID1's own hard RLIMIT_NOFILE
/// to `fs.nr_open` (its soft limit, and so what the admin shell and the
/// boot tools inherit, stays). Never fails the boot: returns what could
/// not be done, to be logged.
pub fn raise(sys: &mut dyn System) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in [("fs/nr_open", NR_OPEN), ("fs/file-max", FILE_MAX)] {
        if let Err(e) = sys.write_sysctl(key, &value.to_string()) {
            problems.push(format!("setting {} to {value}: {e}", key.replace('/', ".")));
        }
    }
    // What the kernel took (the old value if the write failed).
    let nr_open = sys
        .read_file(Path::new("/proc/sys/fs/nr_open"))
        .ok()
        .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok());
    let Some(nr_open) = nr_open else {
        problems.push("reading fs.nr_open: no number there; PID1's limit of open files stays".to_owned());
        return problems;
    };
    match sys.nofile_limit() {
        Ok((soft, hard)) if hard < nr_open => {
            if let Err(e) = sys.set_nofile_limit(soft, nr_open) {
                problems.push(format!("raising PID1's hard limit of open files from {hard} to {nr_open}: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("reading PID1's limit of open files: {e}")),
    }
    problems
}
