//! The ACPI power button, read from its evdev device.
//!
//! The kernel reports the button as an input device, not as a signal to
//! PID1; without a reader, pressing it (or `system_powerdown` in QEMU) does
//! nothing. There may be two such devices (the fixed-feature LNXPWRBN and a
//! PNP0C0C device), and either may be the one that fires, so all are watched.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

pub const SYS_CLASS_INPUT: &str = "/sys/class/input";
pub const DEV_INPUT: &str = "/dev/input";
/// What the ACPI button driver calls its devices.
pub const NAME: &str = "Power Button";

/// `struct input_event` on x86_64: a 16-byte timeval, then type, code, value.
pub const EVENT_SIZE: usize = 24;
pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    pub fn parse(b: &[u8]) -> Option<InputEvent> {
        let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
        let value = i32::from_le_bytes(b.get(20..24)?.try_into().ok()?);
        Some(InputEvent { kind: u16_at(16)?, code: u16_at(18)?, value })
    }

    /// A press (1), not a release (0) or autorepeat (2).
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// The event devices of every input device named "Power Button", found
/// under `class_input` (/sys/class/input) and named under `dev_input`.
pub fn find(class_input: &Path, dev_input: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(class_input) else {
        return Vec::new();
    };
    let mut inputs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("input")))
        .collect();
    inputs.sort();
    let mut out = Vec::new();
    for input in inputs {
        let name = std::fs::read_to_string(input.join("name")).unwrap_or_default();
        if name.trim() != NAME {
            continue;
        }
        let Ok(children) = std::fs::read_dir(&input) else {
            continue;
        };
        let mut events: Vec<String> = children
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("event"))
            .collect();
        events.sort();
        out.extend(events.into_iter().map(|e| dev_input.join(e)));
    }
    out
}

/// Reads events until the device goes away; calls `on_press` for each
/// power-button press. Returns the error that ended the stream.
pub fn scan(mut r: impl Read, mut on_press: impl FnMut()) -> io::Error {
    let mut buf = [0u8; EVENT_SIZE * 16];
    let mut filled = 0;
    loop {
        let Some(free) = buf.get_mut(filled..) else {
            filled = 0;
            continue;
        };
        match r.read(free) {
            Ok(0) => return io::Error::from(io::ErrorKind::UnexpectedEof),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        }
        let whole = filled - filled % EVENT_SIZE;
        let (events, _) = buf.split_at(whole);
        for chunk in events.chunks_exact(EVENT_SIZE) {
            if InputEvent::parse(chunk).is_some_and(|e| e.is_power_press()) {
                on_press();
            }
        }
        // evdev hands out whole events; keep a partial one just in case.
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
}

/// Watches each device from its own thread (evdev reads block) and sends
/// the device's path on `tx` at each press.
pub fn watch(devices: Vec<PathBuf>, tx: mpsc::Sender<PathBuf>) {
    for dev in devices {
        let file = match File::open(&dev) {
            Ok(f) => f,
            Err(e) => {
                crate::info!("power button: opening {}: {e}", dev.display());
                continue;
            }
        };
        let tx = tx.clone();
        let name = dev.clone();
        let spawned = std::thread::Builder::new().name("power-button".into()).spawn(move || {
            let err = scan(file, || {
                // A full queue already holds a press: nothing is lost.
                let _ = tx.try_send(name.clone());
            });
            crate::info!("power button: {} stopped: {err}", name.display());
        });
        match spawned {
            Ok(_) => crate::info!("power button: watching {}", dev.display()),
            Err(e) => crate::info!("power button: thread for {}: {e}", dev.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut b = vec![0xaa; 16];
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&code.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
        b
    }

    #[test]
    fn parses_input_event_layout() {
        let e = InputEvent::parse(&event(EV_KEY, KEY_POWER, 1)).unwrap();
        assert_eq!(e, InputEvent { kind: 1, code: 116, value: 1 });
        assert!(e.is_power_press());
        assert!(!InputEvent::parse(&event(EV_KEY, KEY_POWER, 0)).unwrap().is_power_press());
        assert!(!InputEvent::parse(&event(0, 0, 0)).unwrap().is_power_press());
        assert_eq!(InputEvent::parse(&[0; 23]), None);
    }

    /// Hands out the stream in pieces that split events.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(10);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn scan_counts_presses_not_releases_or_sync() {
        let mut stream = Vec::new();
        for e in [
            event(EV_KEY, KEY_POWER, 1),
            event(0, 0, 0),
            event(EV_KEY, KEY_POWER, 0),
            event(EV_KEY, 30, 1),
            event(EV_KEY, KEY_POWER, 1),
        ] {
            stream.extend(e);
        }
        let mut presses = 0;
        let err = scan(Trickle(Cursor::new(stream)), || presses += 1);
        assert_eq!(presses, 2);
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn finds_every_power_button_event_device() {
        let root = std::env::temp_dir().join(format!("berth-input-{}", std::process::id()));
        let class = root.join("class");
        for (input, name, event) in [
            ("input0", "Power Button\n", "event0"),
            ("input1", "AT Translated Set 2 keyboard\n", "event1"),
            ("input2", "Power Button\n", "event2"),
        ] {
            let d = class.join(input);
            std::fs::create_dir_all(d.join(event)).unwrap();
            std::fs::write(d.join("name"), name).unwrap();
        }
        let found = find(&class, Path::new("/dev/input"));
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, vec![PathBuf::from("/dev/input/event0"), PathBuf::from("/dev/input/event2")]);
    }
}
