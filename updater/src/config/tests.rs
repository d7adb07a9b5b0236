use super::*;

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("berth-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }
    fn image(&self) -> PathBuf {
        self.dir.join("usr-updater.toml")
    }
    fn etc(&self) -> PathBuf {
        self.dir.join("etc-updater.toml")
    }
    fn write(&self, image: Option<&str>, etc: Option<&str>) -> &Self {
        for (path, text) in [(self.image(), image), (self.etc(), etc)] {
            let _ = std::fs::remove_file(&path);
            if let Some(text) = text {
                std::fs::write(path, text).unwrap();
            }
        }
        self
    }
    fn load(&self) -> Result<Config, ConfigError> {
        load(&self.image(), &self.etc())
    }
    /// The error of `etc` over an empty image file, as displayed.
    fn etc_error(&self, etc: &str) -> String {
        self.write(None, Some(etc)).load().unwrap_err().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const IMAGE: &str = r#"
[gate]
deadline = "5m"
retry = "2s"

[[gate.check]]
name = "containerd"
exec = ["/usr/bin/ctr", "version"]
timeout = "10s"

[[gate.check]]
name = "etcd"
exec = ["/usr/bin/etcdctl", "endpoint", "health"]

[auto]
enabled = false
interval = "1h"
reboot = "never"

[fetch]
retries = 5
"#;

#[test]
fn no_files_give_the_built_in_values() {
    let f = Files::new("none");
    let c = f.write(None, None).load().unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.gate.deadline, Duration::from_secs(300));
    assert_eq!(c.gate.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["containerd", "etcd"]);
    assert_eq!(c.auto.reboot, RebootPolicy::Never);
    assert_eq!(c.fetch.retries, 5);
}

#[test]
fn etc_wins_key_by_key_and_replaces_the_check_list() {
    let f = Files::new("merge");
    let etc = "[gate]\ndeadline = \"20s\"\n[auto]\nenabled = true\nsource = \"http://10.0.2.2/berth/\"\n";
    let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
    assert_eq!(c.gate.deadline, Duration::from_secs(20), "from /etc");
    assert_eq!(c.gate.retry, Duration::from_secs(2), "from the image");
    assert_eq!(c.gate.checks.len(), 2, "the image's list stays when /etc has none");
    assert_eq!(c.gate.checks[1].timeout, DEFAULT_CHECK_TIMEOUT, "timeout is optional");
    assert_eq!(c.gate.checks[1].exec, ["/usr/bin/etcdctl", "endpoint", "health"]);
    assert!(c.auto.enabled);
    assert_eq!(c.auto.source.as_deref(), Some("http://10.0.2.2/berth/"));
    assert_eq!(c.auto.interval, Duration::from_secs(3600));

    let etc = "[[gate.check]]\nname = \"ping\"\nexec = [\"/bin/true\"]\ntimeout = \"1s\"\n";
    let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
    let expected = Check { name: "ping".into(), exec: vec!["/bin/true".into()], timeout: Duration::from_secs(1) };
    assert_eq!(c.gate.checks, [expected], "an /etc list replaces the whole list");
    assert_eq!(c.gate.deadline, Duration::from_secs(300));
}

#[test]
fn window_policy_and_durations() {
    let f = Files::new("window");
    let etc = "[auto]\nreboot = \"window\"\nwindow = \"22:30-01:15\"\ninterval = \"1h 30m\"\n";
    let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
    assert_eq!(c.auto.reboot, RebootPolicy::Window);
    assert_eq!(c.auto.window, Window::new(22 * 60 + 30, 75));
    assert_eq!(c.auto.window.unwrap().to_string(), "22:30-01:15");
    assert_eq!(c.auto.interval, Duration::from_secs(5400));
}

#[test]
fn unknown_keys_name_file_line_and_key_path() {
    let f = Files::new("unknown");
    let e = f.etc_error("[gate]\ndeadline = \"1m\"\ndedline = \"2m\"\n");
    assert_eq!(e, format!("{}:3: key gate.dedline: unknown key", f.etc().display()));
    let e = f.etc_error("[gates]\n");
    assert_eq!(e, format!("{}:1: key gates: unknown key", f.etc().display()));
    let e = f.etc_error(
        "\n[[gate.check]]\nname = \"a\"\nexec = [\"/a\"]\n[[gate.check]]\nname = \"b\"\ncommand = [\"/b\"]\n",
    );
    assert_eq!(e, format!("{}:7: key gate.check[1].command: unknown key", f.etc().display()));
    let e = f.etc_error("auto.enable = true\n");
    assert_eq!(e, format!("{}:1: key auto.enable: unknown key", f.etc().display()));
}

#[test]
fn an_error_in_the_image_file_names_the_image_file() {
    let f = Files::new("imgerr");
    let e = f.write(Some("[fetch]\nretries = -1\n"), Some("[gate]\n")).load().unwrap_err();
    assert_eq!(e.file, f.image());
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("fetch.retries")));
    assert_eq!(e.kind, ConfigErrorKind::Invalid("-1 is not a count from 0 to 4294967295".into()));
}

#[test]
fn bad_durations_are_refused_with_the_reason() {
    let f = Files::new("duration");
    let e = f.etc_error("[gate]\ndeadline = \"5x\"\n");
    assert!(e.starts_with(&format!("{}:2: key gate.deadline: invalid duration \"5x\": ", f.etc().display())), "{e}");
    assert!(e.contains("unknown time unit \"x\""), "{e}");
    let e = f.etc_error("[gate]\nretry = \"10\"\n");
    assert!(e.contains("key gate.retry: invalid duration \"10\": a number needs a unit"), "{e}");
    let e = f.etc_error("[gate]\ndeadline = \"0s\"\n");
    assert!(e.contains("key gate.deadline: invalid duration \"0s\": must be above zero"), "{e}");
    let e = f.etc_error("[auto]\ninterval = \"1M\"\n");
    assert!(e.contains("key auto.interval: invalid duration \"1M\": months and years are not taken"), "{e}");
    let e = f.etc_error("[gate]\ndeadline = 300\n");
    assert!(e.ends_with(":2: key gate.deadline: expected a string, found integer 300"), "{e}");
}

#[test]
fn bad_windows_are_refused() {
    let f = Files::new("badwindow");
    for (window, why) in [
        ("2-4", "\"2\" is not a time HH:MM"),
        ("02:00", "no '-' between start and end"),
        ("02:00-24:00", "\"24:00\" is not a time HH:MM"),
        ("02:60-03:00", "\"02:60\" is not a time HH:MM"),
        ("03:00-03:00", "start and end are the same"),
    ] {
        let e = f.etc_error(&format!("[auto]\nwindow = \"{window}\"\n"));
        let expected = format!(
            "{}:2: key auto.window: invalid window \"{window}\": {why} (expected \"HH:MM-HH:MM\" in UTC, e.g. \"02:00-04:00\")",
            f.etc().display()
        );
        assert_eq!(e, expected);
    }
    let e = f.etc_error("[auto]\nreboot = \"window\"\n");
    assert_eq!(e, format!("{}:2: key auto.reboot: reboot = \"window\" needs auto.window", f.etc().display()));
}

#[test]
fn bad_reboot_policy_is_refused() {
    let f = Files::new("badreboot");
    let e = f.etc_error("[auto]\nreboot = \"nightly\"\n");
    let expected = "key auto.reboot: unknown reboot policy \"nightly\" (expected never, immediately or window)";
    assert_eq!(e, format!("{}:2: {expected}", f.etc().display()));
}

#[test]
fn bad_checks_and_bad_syntax() {
    let f = Files::new("badcheck");
    let e = f.etc_error("[[gate.check]]\nexec = [\"/bin/true\"]\n");
    assert!(e.ends_with(":1: key gate.check[0]: missing key name"), "{e}");
    let e = f.etc_error("[[gate.check]]\nname = \"a\"\nexec = [\"true\"]\n");
    assert!(e.contains(":3: key gate.check[0].exec: expected a non-empty array of strings"), "{e}");
    let e =
        f.etc_error("[[gate.check]]\nname = \"a\"\nexec = [\"/a\"]\n[[gate.check]]\nname = \"a\"\nexec = [\"/b\"]\n");
    assert!(e.ends_with(":5: key gate.check[1].name: a check named \"a\" is already in the list"), "{e}");
    let e = f.etc_error("[gate.check]\nname = \"a\"\n");
    assert!(e.contains(":1: key gate.check: expected an array of tables ([[gate.check]]), found a table"), "{e}");
    let e = f.etc_error("[auto]\nenabled = true\n");
    assert!(e.ends_with(":2: key auto.enabled: enabled = true needs auto.source"), "{e}");
    let e = f.etc_error("[gate]\ndeadline = \n");
    let err = f.write(None, Some("[gate]\ndeadline = \n")).load().unwrap_err();
    assert_eq!((err.line, err.key), (Some(2), None), "{e}");
    assert!(matches!(err.kind, ConfigErrorKind::Syntax(_)));
}

#[test]
fn fallback_uses_the_image_file_when_etc_is_bad() {
    let f = Files::new("fallback");
    f.write(Some("[gate]\ndeadline = \"7m\"\n"), Some("[gate]\ndeadline = \"soon\"\n"));
    let (c, errors) = load_or_fallback(&f.image(), &f.etc());
    assert_eq!(c.gate.deadline, Duration::from_secs(420));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, f.etc());

    f.write(Some("[gate]\ndeadline = \"never\"\n"), None);
    let (c, errors) = load_or_fallback(&f.image(), &f.etc());
    assert_eq!(c, Config::default());
    assert_eq!(errors.len(), 1, "the image's error once: {errors:?}");
}

#[test]
fn windows_open_and_wrap() {
    let w: Window = "22:00-02:00".parse().unwrap();
    assert!(w.contains_minute(23 * 60) && w.contains_minute(60) && !w.contains_minute(120) && !w.contains_minute(600));
    let at = |h: u64, m: u64| UNIX_EPOCH + Duration::from_secs(19_000 * 86_400 + h * 3600 + m * 60);
    assert_eq!(w.wait(at(23, 0)), Duration::ZERO);
    assert_eq!(w.wait(at(21, 30)), Duration::from_secs(30 * 60));
    assert_eq!(w.wait(at(2, 0)), Duration::from_secs(20 * 3600));
    let w: Window = "02:00-04:00".parse().unwrap();
    assert_eq!(w.wait(at(4, 0)), Duration::from_secs(22 * 3600));
    assert_eq!(w.wait(at(3, 59)), Duration::ZERO);
}

#[test]
fn reboot_lock_is_off_by_default_and_read_from_its_section() {
    let f = Files::new("rebootlock");
    let c = f.write(Some(IMAGE), None).load().unwrap();
    assert_eq!(c.reboot_lock.strategy, RebootStrategy::Off);
    assert_eq!((c.reboot_lock.max, c.reboot_lock.ttl), (1, Duration::from_secs(600)));
    assert_eq!(c.reboot_lock.endpoints, ["http://127.0.0.1:2379"]);
    let etc = "[reboot_lock]\nstrategy = \"etcd-lock\"\nmax = 2\nttl = \"15m\"\nendpoints = [\"http://192.0.2.11:2379\", \"http://192.0.2.12:2379\"]\n";
    let c = f.write(Some(IMAGE), Some(etc)).load().unwrap();
    assert_eq!(c.reboot_lock.strategy, RebootStrategy::EtcdLock);
    assert_eq!((c.reboot_lock.max, c.reboot_lock.ttl), (2, Duration::from_secs(900)));
    assert_eq!(c.reboot_lock.endpoints, ["http://192.0.2.11:2379", "http://192.0.2.12:2379"]);
}

#[test]
fn bad_reboot_lock_settings_name_file_line_and_key() {
    let f = Files::new("badrebootlock");
    let etc = f.etc().display().to_string();
    let e = f.etc_error("[reboot_lock]\nstrategy = \"locksmith\"\n");
    assert_eq!(
        e,
        format!("{etc}:2: key reboot_lock.strategy: unknown reboot strategy \"locksmith\" (expected off or etcd-lock)")
    );
    let e = f.etc_error("[reboot_lock]\n\nmax = 0\n");
    assert_eq!(e, format!("{etc}:3: key reboot_lock.max: 0 is not a count of hosts from 1 to 4294967295"));
    let e = f.etc_error("[reboot_lock]\nttl = \"500ms\"\n");
    assert_eq!(e, format!("{etc}:2: key reboot_lock.ttl: the lease TTL is whole seconds, at least 2s (etcd's leases)"));
    let e = f.etc_error("[reboot_lock]\nendpoints = [\"127.0.0.1:2379\"]\n");
    assert!(
        e.starts_with(&format!("{etc}:2: key reboot_lock.endpoints: expected a non-empty array of etcd client URLs")),
        "{e}"
    );
    let e = f.etc_error("[reboot_lock]\nmaximum = 2\n");
    assert_eq!(e, format!("{etc}:2: key reboot_lock.maximum: unknown key"));
}

/// `load` on another thread, which must answer within 2 s: PID1 reads
/// these files at boot, and nothing put in their place may hang it.
fn load_in_time(image: PathBuf, etc: PathBuf) -> Result<Config, ConfigError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load(&image, &etc));
    });
    rx.recv_timeout(Duration::from_secs(2)).expect("reading the updater config hung")
}

#[test]
fn a_fifo_is_an_error_not_a_hang_and_the_image_file_is_the_fallback() {
    let f = Files::new("fifo");
    f.write(Some(IMAGE), None);
    rustix::fs::mkfifoat(rustix::fs::CWD, f.etc(), rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    let e = load_in_time(f.image(), f.etc()).unwrap_err();
    assert_eq!(e.file, f.etc());
    assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
    let (config, errors) = load_or_fallback(&f.image(), &f.etc());
    assert_eq!(errors, vec![e]);
    assert_eq!(config.fetch.retries, 5);
}

#[test]
fn a_symlink_to_dev_zero_is_an_error() {
    let f = Files::new("zero");
    std::os::unix::fs::symlink("/dev/zero", f.etc()).unwrap();
    let e = load_in_time(f.image(), f.etc()).unwrap_err();
    assert_eq!(e.file, f.etc());
    assert!(e.to_string().contains("not a regular file (a character device)"), "{e}");
}

#[test]
fn a_symlink_to_dev_null_reads_as_empty() {
    let f = Files::new("null");
    f.write(Some(IMAGE), None);
    std::os::unix::fs::symlink("/dev/null", f.etc()).unwrap();
    let config = load_in_time(f.image(), f.etc()).unwrap();
    assert_eq!(config.fetch.retries, 5);
}

#[test]
fn an_oversize_file_is_refused() {
    let f = Files::new("huge");
    let limit = usize::try_from(read::MAX_CONFIG_FILE).unwrap();
    // Exactly the limit is read...
    f.write(None, Some(&format!("{}\n", "#".repeat(limit - 1))));
    assert!(f.load().is_ok());
    // ... one byte more is not.
    let e = f.etc_error(&"#".repeat(limit + 1));
    assert!(e.contains("more than the 1048576 allowed"), "{e}");
}
