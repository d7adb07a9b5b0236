//! `berth-wait-online`: exits 0 once the machine has an IPv4 default route
//! (see the library); 1 with the reason on stderr if it cannot tell.
//!
//! `berth-wait-online --link NAME -- PROGRAM [ARG...]` waits instead for
//! the network interface NAME to exist, then execs PROGRAM with its
//! arguments (the `network` unit: dhcpcd for eth0, whenever eth0 comes).
//! The two forms are parsed by hand: a parser library would add more to
//! the root slot than these lines.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Wanted {
    DefaultRoute,
    Link { name: String, then: Vec<OsString> },
}

/// The command line's arguments after the program name. Errors: a usage
/// message.
fn parse(args: Vec<OsString>) -> Result<Wanted, String> {
    let usage = "usage: berth-wait-online [--link NAME -- PROGRAM [ARG...]]";
    let mut args = args.into_iter();
    let Some(first) = args.next() else { return Ok(Wanted::DefaultRoute) };
    if first != "--link" {
        return Err(format!("unknown argument {first:?}; {usage}"));
    }
    let name = args.next().and_then(|n| n.into_string().ok()).ok_or(usage)?;
    // As the kernel's dev_valid_name: at most IFNAMSIZ - 1 bytes, not "."
    // or "..", no '/', ':' or white space (and so no path under sysfs).
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        return Err(format!("{name:?} is not an interface name; {usage}"));
    }
    if args.next().is_some_and(|a| a != "--") {
        return Err(usage.to_string());
    }
    let then: Vec<OsString> = args.collect();
    if then.is_empty() {
        return Err(format!("no program to run once {name} exists; {usage}"));
    }
    Ok(Wanted::Link { name, then })
}

fn main() -> ExitCode {
    let wanted = match parse(std::env::args_os().skip(1).collect()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("berth-wait-online: {e}");
            return ExitCode::from(2);
        }
    };
    let waited = match &wanted {
        Wanted::DefaultRoute => berth_wait_online::wait_for_default_route(),
        Wanted::Link { name, .. } => {
            let present = std::path::Path::new("/sys/class/net").join(name).exists();
            if !present {
                eprintln!("berth-wait-online: waiting for network interface {name} to appear");
            }
            berth_wait_online::wait_for_link(name).inspect(|()| {
                if !present {
                    eprintln!("berth-wait-online: {name} appeared");
                }
            })
        }
    };
    if let Err(e) = waited {
        eprintln!("berth-wait-online: {e}");
        return ExitCode::FAILURE;
    }
    let Wanted::Link { then, .. } = wanted else { return ExitCode::SUCCESS };
    let err = std::process::Command::new(&then[0]).args(&then[1..]).exec();
    eprintln!("berth-wait-online: running {}: {err}", then[0].to_string_lossy());
    // As a shell says it: 127 not found, 126 found but not runnable.
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_two_forms_and_what_is_refused() {
        assert_eq!(parse(args(&[])), Ok(Wanted::DefaultRoute));
        assert_eq!(
            parse(args(&["--link", "eth0", "--", "/usr/sbin/dhcpcd", "eth0"])),
            Ok(Wanted::Link { name: "eth0".into(), then: args(&["/usr/sbin/dhcpcd", "eth0"]) })
        );
        for bad in [
            &["--lnk", "eth0"][..],
            &["--link"],
            &["--link", "eth0"],
            &["--link", "eth0", "--"],
            &["--link", "eth0", "dhcpcd"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
        for name in ["../x", ".", "..", "a-name-of-16-byt", "eth0:1", "eth 0", ""] {
            let err = parse(args(&["--link", name, "--", "true"])).unwrap_err();
            assert!(err.contains("not an interface name"), "{name:?}: {err}");
        }
        assert!(parse(args(&["--link", "a-name-of-15-by", "--", "true"])).is_ok());
    }
}
