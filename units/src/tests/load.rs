//! Loading unit directories: overrides, masks, bad files.

use std::path::PathBuf;

use crate::load::MAX_UNIT_FILE;

use super::*;

#[test]
fn unit_load_override_replaces_the_whole_file() {
    let s = Scratch::new("override");
    s.write(
        "usr",
        "etcd.toml",
        "description = \"image\"\n[service]\nexec = [\"/usr/bin/etcd\"]\n[limits]\npids_max = 10\n",
    );
    s.write("usr", "sshd.toml", MINIMAL);
    let etc = s.write("etc", "etcd.toml", "[service]\nexec = [\"/usr/local/bin/etcd\"]\n");
    s.write("etc", "router.toml", MINIMAL);
    let l = s.load();
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    assert_eq!(l.units.keys().cloned().collect::<Vec<_>>(), names(&["etcd", "router", "sshd"]));
    let etcd = &l.units[&name("etcd")];
    assert_eq!(etcd.file, etc);
    assert_eq!(etcd.service.exec, vec!["/usr/local/bin/etcd"]);
    // Not merged: the image's description and limits are gone.
    assert_eq!(etcd.description, "");
    assert_eq!(etcd.limits, Limits::default());
}

#[test]
fn unit_load_mask_by_empty_file_or_dev_null_symlink() {
    let s = Scratch::new("mask");
    s.write("usr", "sshd.toml", MINIMAL);
    s.write("usr", "getty.toml", MINIMAL);
    s.write("usr", "etcd.toml", MINIMAL);
    let empty = s.write("etc", "sshd.toml", "");
    let link = s.0.join("etc").join("getty.toml");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let l = s.load();
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    assert_eq!(l.units.keys().cloned().collect::<Vec<_>>(), names(&["etcd"]));
    assert_eq!(l.masked.get(&name("sshd")), Some(&empty));
    assert_eq!(l.masked.get(&name("getty")), Some(&link));
}

#[test]
fn unit_load_reports_bad_files_and_loads_the_rest() {
    let s = Scratch::new("bad");
    s.write("usr", "etcd.toml", MINIMAL);
    let bad = s.write("etc", "etcd.toml", "[service]\nexec = [\"/a\"]\nstop_timeout = \"soon\"\n");
    let bad_name = s.write("etc", "Router.toml", MINIMAL);
    let syntax = s.write("etc", "net.toml", "[service\n");
    s.write("etc", "ok.toml", MINIMAL);
    s.write("etc", "notes.txt", "not a unit");
    s.write("etc", ".hidden.toml", "garbage");
    std::fs::create_dir(s.0.join("etc/ok.toml.d")).unwrap();
    s.write("etc", "ok.toml.d/extra.toml", "garbage");
    let l = s.load();
    // The bad /etc file does not fall back to the image's.
    assert_eq!(l.units.keys().cloned().collect::<Vec<_>>(), names(&["ok"]));
    assert_eq!(l.invalid, set(&["etcd", "net"]));
    let found: Vec<(PathBuf, Option<usize>)> = l.errors.iter().map(|e| (e.at.file.clone(), e.at.line)).collect();
    assert_eq!(found, vec![(bad_name, None), (bad, Some(3)), (syntax, Some(1))]);
    assert!(l.errors[0].to_string().contains("invalid unit name \"Router\""), "{}", l.errors[0]);
}

#[test]
fn unit_load_refuses_huge_files() {
    let s = Scratch::new("huge");
    s.write("etc", "big.toml", &"#".repeat(2 << 20));
    let l = s.load();
    assert!(matches!(l.errors[0].kind, ErrorKind::TooLarge { .. }), "{:?}", l.errors);
    assert_eq!(l.invalid, set(&["big"]));
}

/// `s.load()` on another thread, which must answer within 2 s: a unit
/// directory must never hang PID1.
fn load_in_time(s: &Scratch) -> Loaded {
    let root = s.0.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load(&[&root.join("usr"), &root.join("etc")]));
    });
    rx.recv_timeout(std::time::Duration::from_secs(2)).expect("loading the unit directories hung")
}

#[test]
fn unit_load_fifo_is_an_error_not_a_hang() {
    let s = Scratch::new("fifo");
    s.write("usr", "x.toml", MINIMAL);
    s.write("etc", "ok.toml", MINIMAL);
    let fifo = s.0.join("etc").join("x.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let l = load_in_time(&s);
    assert_eq!(l.units.keys().cloned().collect::<Vec<_>>(), names(&["ok"]));
    assert_eq!(l.invalid, set(&["x"]));
    assert!(l.masked.is_empty(), "{:?}", l.masked);
    assert_eq!(l.errors.len(), 1, "{:?}", l.errors);
    assert_eq!(l.errors[0].at.file, fifo);
    let shown = l.errors[0].to_string();
    assert!(shown.contains("not a regular file (a FIFO)") && shown.contains("x.toml"), "{shown}");
}

#[test]
fn unit_load_symlink_to_dev_zero_is_an_error() {
    let s = Scratch::new("zero");
    s.write("etc", "ok.toml", MINIMAL);
    let link = s.0.join("etc").join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let l = load_in_time(&s);
    assert_eq!(l.units.keys().cloned().collect::<Vec<_>>(), names(&["ok"]));
    assert_eq!(l.invalid, set(&["zero"]));
    assert_eq!(l.errors.len(), 1, "{:?}", l.errors);
    assert_eq!(l.errors[0].at.file, link);
    let shown = l.errors[0].to_string();
    assert!(shown.contains("not a regular file (a character device)"), "{shown}");
}

#[test]
fn unit_load_socket_is_an_error() {
    let s = Scratch::new("socket");
    let path = s.0.join("etc").join("sock.toml");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let l = load_in_time(&s);
    assert_eq!(l.invalid, set(&["sock"]));
    assert!(l.errors[0].to_string().contains("not a regular file (a socket)"), "{:?}", l.errors);
}

#[test]
fn unit_load_dev_null_symlink_still_masks_in_time() {
    let s = Scratch::new("null");
    s.write("usr", "getty.toml", MINIMAL);
    let link = s.0.join("etc").join("getty.toml");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let l = load_in_time(&s);
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    assert!(l.units.is_empty());
    assert_eq!(l.masked.get(&name("getty")), Some(&link));
}

#[test]
fn unit_load_size_limit_is_exact() {
    let s = Scratch::new("limit");
    let limit = usize::try_from(MAX_UNIT_FILE).unwrap();
    // A valid unit padded with a comment to exactly the limit loads...
    let pad = limit - MINIMAL.len() - 1;
    s.write("etc", "fits.toml", &format!("{MINIMAL}{}\n", "#".repeat(pad)));
    // ... one byte more is too large.
    let big = s.write("etc", "big.toml", &format!("{MINIMAL}{}\n", "#".repeat(pad + 1)));
    let l = load_in_time(&s);
    assert_eq!(l.units.keys().cloned().collect::<Vec<_>>(), names(&["fits"]));
    assert_eq!(l.invalid, set(&["big"]));
    assert_eq!(l.errors.len(), 1, "{:?}", l.errors);
    assert_eq!(l.errors[0].at.file, big);
    assert_eq!(l.errors[0].kind, ErrorKind::TooLarge { size: MAX_UNIT_FILE + 1, limit: MAX_UNIT_FILE });
}
