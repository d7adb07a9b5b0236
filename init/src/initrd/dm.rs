//! Device-mapper's control ioctls, the three stage 0 needs to create a
//! mapped device from a table: DM_DEV_CREATE, DM_TABLE_LOAD and
//! DM_DEV_SUSPEND without the suspend flag (a resume), as dm-init did in
//! the kernel and `dmsetup create` does (include/uapi/linux/dm-ioctl.h,
//! interface version 4).
//!
//! Written against the UAPI header rather than through the `devicemapper`
//! crate: that crate builds its bindings with bindgen (libclang and
//! libdevmapper's headers on the build host) and brings a logger and regex
//! into PID1's binary, for three fixed structs.
//!
//! The request buffers are built as plain bytes ([`request`]) so their
//! layout is unit-tested; only [`Control::call`] touches the kernel.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use berth_layout::cmdline::{DmDevice, DM_MAX_TYPE_NAME, DM_NAME_LEN, DM_UUID_LEN};

/// The control device (misc 10:236), created by devtmpfs.
pub const CONTROL: &str = "/dev/mapper/control";

/// `struct dm_ioctl`: 312 bytes, 8-aligned.
pub const DM_IOCTL_SIZE: usize = 312;
/// `struct dm_target_spec`: 40 bytes, then the NUL-terminated parameters.
const TARGET_SPEC_SIZE: usize = 40;
const DM_IOCTL_TYPE: u8 = 0xfd;
/// Interface version this code speaks; the kernel accepts any 4.x minor at
/// or below its own.
const VERSION: [u32; 3] = [4, 0, 0];

const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_PERSISTENT_DEV_FLAG: u32 = 1 << 3;

/// The commands used (the order of the kernel's command enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    DevCreate = 3,
    DevSuspend = 6,
    TableLoad = 9,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::DevCreate => "DM_DEV_CREATE",
            Command::DevSuspend => "DM_DEV_SUSPEND (resume)",
            Command::TableLoad => "DM_TABLE_LOAD",
        }
    }
}

/// Why a mapped device was not created: the command and the device.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("opening {CONTROL}: {0}")]
    Open(std::io::Error),
    #[error("{command} of device-mapper device {device:?}: {source}")]
    Ioctl { command: &'static str, device: String, source: std::io::Error },
}

/// `bytes` cut to at most `max` bytes (a C string field and its NUL).
fn at_most(bytes: &[u8], max: usize) -> &[u8] {
    bytes.get(..bytes.len().min(max)).unwrap_or_default()
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// The bytes of one request for `device`: a `struct dm_ioctl` and, for
/// [`Command::TableLoad`], one `struct dm_target_spec` with its parameters
/// per target, each padded to 8 bytes, `next` giving the offset from one
/// spec to the next. Fields past the parser's limits cannot occur:
/// [`berth_layout::cmdline::parse_dm_create`] refuses them.
pub fn request(command: Command, device: &DmDevice) -> Vec<u8> {
    let mut specs = Vec::new();
    if command == Command::TableLoad {
        for t in &device.targets {
            let mut spec = vec![0u8; TARGET_SPEC_SIZE];
            put(&mut spec, 0, &t.start.to_ne_bytes());
            put(&mut spec, 8, &t.length.to_ne_bytes());
            put(&mut spec, 24, at_most(t.target_type.as_bytes(), DM_MAX_TYPE_NAME - 1));
            spec.extend_from_slice(t.args.as_bytes());
            spec.push(0);
            spec.resize(spec.len().div_ceil(8) * 8, 0);
            let next = u32::try_from(spec.len()).unwrap_or(u32::MAX);
            put(&mut spec, 20, &next.to_ne_bytes());
            specs.extend_from_slice(&spec);
        }
    }
    let mut buf = vec![0u8; DM_IOCTL_SIZE];
    for (i, v) in VERSION.iter().enumerate() {
        put(&mut buf, i * 4, &v.to_ne_bytes());
    }
    let size = u32::try_from(DM_IOCTL_SIZE + specs.len()).unwrap_or(u32::MAX);
    put(&mut buf, 12, &size.to_ne_bytes()); // data_size
    put(&mut buf, 16, &(DM_IOCTL_SIZE as u32).to_ne_bytes()); // data_start
    let mut flags = 0;
    match command {
        Command::DevCreate => {
            if let Some(minor) = device.minor {
                flags |= DM_PERSISTENT_DEV_FLAG;
                // huge_encode_dev(MKDEV(0, minor)): the minor's low 8 bits
                // and its high bits above the major's 12.
                let dev = u64::from(minor & 0xff) | (u64::from(minor & !0xff) << 12);
                put(&mut buf, 40, &dev.to_ne_bytes());
            }
            put(&mut buf, 176, at_most(device.uuid.as_bytes(), DM_UUID_LEN - 1));
        }
        Command::TableLoad => {
            put(&mut buf, 20, &(device.targets.len() as u32).to_ne_bytes()); // target_count
            if device.read_only {
                flags |= DM_READONLY_FLAG;
            }
        }
        Command::DevSuspend => {}
    }
    put(&mut buf, 28, &flags.to_ne_bytes());
    put(&mut buf, 48, at_most(device.name.as_bytes(), DM_NAME_LEN - 1));
    buf.extend_from_slice(&specs);
    buf
}

/// The open control device.
pub struct Control(File);

impl Control {
    pub fn open() -> Result<Control, DmError> {
        File::options().read(true).write(true).open(Path::new(CONTROL)).map(Control).map_err(DmError::Open)
    }

    /// Creates `device`, loads its table and resumes it: afterwards it is
    /// a block device (`/dev/dm-N`).
    pub fn create(&self, device: &DmDevice) -> Result<(), DmError> {
        for command in [Command::DevCreate, Command::TableLoad, Command::DevSuspend] {
            self.call(command, device)?;
        }
        Ok(())
    }

    fn call(&self, command: Command, device: &DmDevice) -> Result<(), DmError> {
        let bytes = request(command, device);
        // The kernel reads the struct as u64-aligned memory.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            put(&mut b, 0, chunk);
            *w = u64::from_ne_bytes(b);
        }
        let request = nix::request_code_readwrite!(DM_IOCTL_TYPE, command as u8, DM_IOCTL_SIZE);
        // SAFETY: `words` is a live, 8-aligned buffer of data_size bytes as
        // the request's header says; the kernel writes back at most that.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, words.as_mut_ptr()) };
        if rc < 0 {
            return Err(DmError::Ioctl {
                command: command.name(),
                device: device.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_layout::cmdline::parse_dm_create;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn cstr(b: &[u8]) -> &str {
        std::str::from_utf8(&b[..b.iter().position(|c| *c == 0).unwrap()]).unwrap()
    }

    #[test]
    fn a_table_load_carries_each_target_after_the_header() {
        let d = parse_dm_create("root,,,ro,0 8 verity 1 PARTUUID=x PARTUUID=x 4096,8 16 linear /dev/vdb 0").unwrap();
        let b = request(Command::TableLoad, &d[0]);
        assert_eq!(u32_at(&b, 0), 4, "interface version 4");
        assert_eq!(u32_at(&b, 12) as usize, b.len(), "data_size covers the whole buffer");
        assert_eq!(u32_at(&b, 16) as usize, DM_IOCTL_SIZE, "the first spec follows the header");
        assert_eq!(u32_at(&b, 20), 2, "target_count");
        assert_eq!(u32_at(&b, 28), DM_READONLY_FLAG, "ro");
        assert_eq!(cstr(&b[48..]), "root");
        let first = DM_IOCTL_SIZE;
        assert_eq!((u64_at(&b, first), u64_at(&b, first + 8)), (0, 8));
        assert_eq!(cstr(&b[first + 24..]), "verity");
        assert_eq!(cstr(&b[first + 40..]), "1 PARTUUID=x PARTUUID=x 4096");
        let next = u32_at(&b, first + 20) as usize;
        assert_eq!(next % 8, 0, "specs are 8-aligned");
        let second = first + next;
        assert_eq!((u64_at(&b, second), u64_at(&b, second + 8)), (8, 16));
        assert_eq!(cstr(&b[second + 24..]), "linear");
        assert_eq!(cstr(&b[second + 40..]), "/dev/vdb 0");
        assert_eq!(b.len() % 8, 0);
    }

    #[test]
    fn create_names_the_device_and_pins_a_given_minor() {
        let d = parse_dm_create("data,UUID-1,300,rw,0 8 zero").unwrap();
        let b = request(Command::DevCreate, &d[0]);
        assert_eq!(b.len(), DM_IOCTL_SIZE);
        assert_eq!(u32_at(&b, 28), DM_PERSISTENT_DEV_FLAG);
        assert_eq!(u64_at(&b, 40), 44 | (256 << 12), "huge_encode_dev(0:300)");
        assert_eq!((cstr(&b[48..]), cstr(&b[176..])), ("data", "UUID-1"));
        let resume = request(Command::DevSuspend, &d[0]);
        assert_eq!((u32_at(&resume, 28), u32_at(&resume, 20)), (0, 0), "no suspend flag: a resume");
    }
}
