//! Runs Berth's user-data probe (`berth_provision::sources::probe`) and
//! prints what it found: built on the host, run INSIDE a guest (the image's
//! glibc is the host's Debian 12 one), by the `user_data_probe` example.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_provision::host::{Ran, Runner};

/// Runs a command, kills it at the timeout.
struct Plain;

impl Runner for Plain {
    fn run(&mut self, argv: &[String], timeout: Duration) -> std::io::Result<Ran> {
        let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("empty argv"))?;
        let mut child = Command::new(program).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut output = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut output);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut output);
        }
        Ok(Ran { code: status.and_then(|s| s.code()), output })
    }
}

fn main() {
    // Twice: the first pays for cold caches (the binary's pages, sysfs).
    let first = berth_provision::sources::probe(&mut Plain);
    println!("first_probe_time_ms {}", first.probe_time.as_millis());
    let p = berth_provision::sources::probe(&mut Plain);
    println!("probe_time_ms {}", p.probe_time.as_millis());
    for t in &p.tried {
        println!("tried {t}");
    }
    match &p.found {
        None => println!("found none"),
        Some(f) => {
            println!("found {:?} {}", f.kind, f.origin);
            let show = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            println!("user-data {:?}", show(&f.user_data));
            println!("meta-data {:?}", show(&f.meta_data));
            println!("network-config {:?}", show(&f.network_config));
        }
    }
}
