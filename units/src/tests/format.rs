//! Reading one unit file: defaults, values, and every error with its line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;

#[test]
fn unit_minimal_file_gets_defaults() {
    let u = parse_ok("etcd", MINIMAL);
    assert_eq!(u.name, name("etcd"));
    assert_eq!(u.file, file_of("etcd"));
    assert_eq!(u.description, "");
    let s = &u.service;
    assert_eq!(s.exec, vec!["/usr/bin/true"]);
    assert!(s.environment.is_empty());
    assert_eq!((s.working_directory.clone(), s.user.clone(), s.group.clone()), (None, None, None));
    assert_eq!((s.state_directory.len(), s.state_directory_mode), (0, 0o755));
    assert_eq!(s.kind, Kind::LongRunning);
    assert_eq!(s.ready, Ready::Started);
    assert_eq!(s.start_timeout, Duration::from_secs(60));
    assert_eq!(s.stop_signal, Signal::SIGTERM);
    assert_eq!(s.exec_stop, None);
    assert_eq!(s.stop_timeout, Duration::from_secs(10));
    assert_eq!(s.kill_mode, KillMode::Group);
    assert_eq!(u.dependencies, Dependencies::default());
    assert_eq!(
        u.restart,
        Restart {
            policy: RestartPolicy::OnFailure,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            start_limit: 5,
            start_limit_interval: Duration::from_secs(60),
        }
    );
    assert_eq!(u.limits, Limits::default());
    assert!(u.limits.cgroup_settings().is_empty());
    assert_eq!(u.health, None);
    assert_eq!(u.conditions, Conditions::default());
}

#[test]
fn unit_oneshot_defaults_to_ready_on_exit_and_no_restart() {
    let u = parse_ok("setup", "[service]\nexec = [\"/bin/setup\"]\nkind = \"oneshot\"\n");
    assert_eq!(u.service.ready, Ready::Exit);
    assert_eq!(u.restart.policy, RestartPolicy::Never);
}

/// The TOML blocks of docs/units.md that are units.
fn doc_examples() -> Vec<String> {
    let doc = include_str!("../../../docs/units.md");
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(b), "```") => {
                out.push(std::mem::take(b));
                block = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn unit_every_example_in_the_docs_parses() {
    let examples = doc_examples();
    assert_eq!(examples.len(), 5);
    for text in &examples {
        parse_ok("example", text);
    }
}

#[test]
fn unit_the_full_example_sets_every_key() {
    let u = parse_ok("etcd", &doc_examples()[0]);
    assert_eq!(u.description, "etcd key-value store");
    let s = &u.service;
    assert_eq!(s.exec, vec!["/usr/bin/etcd", "--data-dir", "/var/lib/etcd"]);
    assert_eq!(s.environment.get("ETCD_NAME").map(String::as_str), Some("berth"));
    assert_eq!(s.working_directory, Some(PathBuf::from("/var/lib/etcd")));
    assert_eq!(s.user, Some(Account::Name("etcd".into())));
    assert_eq!(s.group, Some(Account::Name("etcd".into())));
    assert_eq!((s.state_directory.as_slice(), s.state_directory_mode), (["etcd".to_string()].as_slice(), 0o700));
    assert_eq!(s.ready, Ready::Notify);
    assert_eq!(s.start_timeout, Duration::from_secs(120));
    assert_eq!(s.stop_signal, Signal::SIGTERM);
    let exec_stop = s.exec_stop.as_deref().unwrap();
    assert_eq!(exec_stop, ["/usr/bin/sh", "-c", "echo stopping >> /var/lib/etcd/stops"]);
    assert!(!u.dependencies.required_for_ready);
    assert!(!u.dependencies.idle);
    let deps = |r: Relation| u.dependencies.get(r).iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    assert_eq!(deps(Relation::Requires), names(&["network"]));
    assert_eq!(deps(Relation::Wants), names(&["time-sync"]));
    assert_eq!(deps(Relation::After), names(&["network", "time-sync"]));
    let req = &u.dependencies.requires[0];
    assert_eq!(req.at.key.as_deref(), Some("dependencies.requires[0]"));
    assert!(req.at.line.is_some());
    assert_eq!(u.restart.policy, RestartPolicy::OnFailure);
    let rl = |soft, hard| ResourceLimit { soft, hard };
    let rlimits = [
        (Rlimit::Nofile, rl(Limit::Value(65536), Limit::Value(1 << 20))),
        (Rlimit::Nproc, rl(Limit::Max, Limit::Max)),
        (Rlimit::Core, rl(Limit::Max, Limit::Max)),
        (Rlimit::Memlock, rl(Limit::Value(64 << 20), Limit::Value(64 << 20))),
    ];
    assert_eq!(
        u.limits,
        Limits {
            memory_max: Some(Limit::Value(512 << 20)),
            cpu_weight: Some(100),
            pids_max: Some(Limit::Value(1024)),
            rlimits: rlimits.into_iter().collect(),
        }
    );
    assert_eq!(
        u.limits.cgroup_settings(),
        vec![("memory.max", "536870912".to_owned()), ("cpu.weight", "100".to_owned()), ("pids.max", "1024".to_owned())]
    );
    let h = u.health.clone().unwrap();
    assert_eq!(h.check, HealthCheck::Tcp("127.0.0.1:2379".parse().unwrap()));
    assert_eq!((h.interval, h.timeout, h.failures), (Duration::from_secs(10), Duration::from_secs(5), 3));
    assert_eq!(h.on_failure, HealthAction::Restart);
    assert_eq!(u.conditions.first_boot, Some(false));
    assert_eq!(
        u.conditions.path_exists,
        vec![PathCondition { path: "/etc/berth/etcd.conf.yml".into(), negate: false }]
    );

    let containerd = parse_ok("containerd", &doc_examples()[2]);
    assert_eq!(containerd.service.kill_mode, KillMode::Main);
    assert_eq!(containerd.restart.policy, RestartPolicy::Always);
    assert_eq!(containerd.limits.pids_max, Some(Limit::Max));
    assert_eq!(containerd.service.exec_stop.as_deref(), Some(&["/usr/lib/berth/stop-containers".to_owned()][..]));
    assert!(containerd.dependencies.required_for_ready);
    let etcd = parse_ok("etcd", &doc_examples()[1]);
    assert_eq!(etcd.health.map(|h| h.on_failure), Some(HealthAction::Degrade));
}

#[test]
fn unit_stop_command_readiness_and_health_action_are_checked() {
    let e = parse_err("[service]\nexec = [\"/bin/x\"]\nexec_stop = [\"stop\"]\n");
    assert_eq!(
        e.to_string(),
        "/etc/berth/units/x.toml:3: key service.exec_stop[0]: program \"stop\" is not an absolute path"
    );
    let e = parse_err("[service]\nexec = [\"/bin/x\"]\nexec_stop = []\n");
    assert!(e.to_string().contains("key service.exec_stop: must name a program"), "{e}");
    let e = parse_err(&format!("{MINIMAL}[dependencies]\nrequired_for_ready = \"yes\"\n"));
    assert!(e.to_string().contains(":4: key dependencies.required_for_ready: invalid type"), "{e}");
    let e = parse_err(&format!("{MINIMAL}[dependencies]\nidle = 1\n"));
    assert!(e.to_string().contains(":4: key dependencies.idle: invalid type"), "{e}");
    let e = parse_err(&format!("{MINIMAL}[health]\ncheck = {{ tcp = \"127.0.0.1:1\" }}\non_failure = \"ignore\"\n"));
    assert!(e.to_string().contains(":5: key health.on_failure: unknown variant `ignore`"), "{e}");
    let u = parse_ok("x", MINIMAL);
    assert_eq!((u.service.exec_stop, u.dependencies.required_for_ready, u.dependencies.idle), (None, false, false));
}

#[test]
fn unit_other_spellings_of_values() {
    let u = parse_ok(
        "x",
        r#"[service]
exec = ["/bin/x"]
user = 1000
group = "100"
ready = { tcp = "[::1]:22" }
stop_signal = "INT"
[limits]
memory_max = 1048576
pids_max = "max"
[health]
check = { command = ["/bin/check", "-q"] }
[conditions]
path_exists = ["/a", "!/b"]
"#,
    );
    assert_eq!(u.service.user, Some(Account::Id(1000)));
    assert_eq!(u.service.group, Some(Account::Id(100)));
    assert_eq!(u.service.ready, Ready::Tcp("[::1]:22".parse().unwrap()));
    assert_eq!(u.service.stop_signal, Signal::SIGINT);
    assert_eq!(u.limits.memory_max, Some(Limit::Value(1 << 20)));
    assert_eq!(u.limits.pids_max, Some(Limit::Max));
    assert_eq!(u.health.unwrap().check, HealthCheck::Command(vec!["/bin/check".into(), "-q".into()]));
    assert_eq!(
        u.conditions.path_exists,
        vec![PathCondition { path: "/a".into(), negate: false }, PathCondition { path: "/b".into(), negate: true }]
    );
}

#[test]
fn unit_durations_sizes_signals() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    // humantime also takes "10 sec", "1.5s" and "1m30s"; a bare number and
    // months or years are refused on top of what it refuses.
    for bad in ["", "10", "0", "s", "-1s", "10S", "99999999999999999999s", "1M"] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
    assert_eq!(parse_size("512M"), Some(512 << 20));
    assert_eq!(parse_size("1K"), Some(1024));
    assert_eq!(parse_size("2G"), Some(2 << 30));
    assert_eq!(parse_size("1T"), Some(1 << 40));
    assert_eq!(parse_size("1048576"), Some(1 << 20));
    for bad in ["", "M", "512MB", "5.5G", "-1", "512m", "99999999999T"] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
    assert_eq!(parse_signal("SIGKILL"), Some(Signal::SIGKILL));
    assert_eq!(parse_signal("HUP"), Some(Signal::SIGHUP));
    assert_eq!(parse_signal("SIGFOO"), None);
    assert_eq!(parse_signal("15"), None);
}

#[test]
fn unit_names() {
    for good in ["etcd", "0day", "getty@hvc0", "a.b_c-d"] {
        assert!(UnitName::new(good).is_ok(), "{good}");
    }
    for bad in ["", "Etcd", "-x", ".x", "a b", "a/b", "é", &"a".repeat(129)] {
        assert!(UnitName::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn unit_error_display_names_file_line_and_key() {
    let text = "[service]\nexec = [\"/usr/bin/etcd\"]\nstop_timeout = \"10\"\n";
    let e = parse_err(text);
    assert_eq!(
        e.to_string(),
        "/etc/berth/units/x.toml:3: key service.stop_timeout: invalid duration \"10\" (expected e.g. 500ms, 10s, 2m)"
    );
    assert_eq!(e.at.column, Some(1));
}

/// Every kind of bad input: (text, line, key, part of the message).
#[test]
fn unit_every_bad_input_names_its_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        // toml/serde errors
        ("[service]\nexec = [\"/a\"]\nstop_timout = \"1s\"\n", 3, "service.stop_timout", "unknown field `stop_timout`"),
        ("descripton = \"x\"\n[service]\nexec = [\"/a\"]\n", 1, "descripton", "unknown field"),
        ("[service]\nexec = [\"/a\"]\n[limit]\n", 3, "limit", "unknown field `limit`"),
        ("[service]\nexec = \"/a\"\n", 2, "service.exec", "invalid type"),
        ("[service]\nexec = [\"/a\", 5]\n", 2, "service.exec[1]", "invalid type"),
        ("# a comment\n\n[service]\nkind = \"oneshot\"\n", 3, "service.exec", "missing field `exec`"),
        ("description = \"x\"\n", 1, "service", "missing field `service`"),
        ("[service]\nexec = [\"/a\"]\nkind = \"daemon\"\n", 3, "service.kind", "unknown variant `daemon`"),
        ("[service]\nexec = [\"/a\"]\nkill_mode = \"all\"\n", 3, "service.kill_mode", "unknown variant `all`"),
        ("[service]\nexec = [\"/a\"]\n[restart]\npolicy = \"sometimes\"\n", 4, "restart.policy", "unknown variant"),
        ("[service]\nexec = [\"/a\"]\n[restart]\nstart_limit = -1\n", 4, "restart.start_limit", "expected u32"),
        ("[service]\nexec = [\"/a\"]\nenvironment = { A = 1 }\n", 3, "service.environment.A", "invalid type"),
        ("[service]\nexec = [\"/a\"\nready = \"notify\"\n", 3, "", "invalid array"),
        ("[service]\nexec = [\"/a\"]\n[health]\ninterval = \"1s\"\n", 3, "health.check", "missing field `check`"),
        // semantic errors
        ("[service]\nexec = [\"/a\"]\nstart_timeout = \"0s\"\n", 3, "service.start_timeout", "must be more than 0"),
        ("[service]\nexec = [\"/a\"]\nstop_timeout = 10\n", 3, "service.stop_timeout", "invalid duration 10"),
        (
            "[service]\nexec = [\"/a\"]\nstop_signal = \"SIGSTOPP\"\n",
            3,
            "service.stop_signal",
            "invalid signal \"SIGSTOPP\"",
        ),
        ("[service]\nexec = [\"bin/etcd\"]\n", 2, "service.exec[0]", "\"bin/etcd\" is not an absolute path"),
        ("[service]\nexec = [\n  \"/a\",\n  \"b\\u0000\",\n]\n", 4, "service.exec[1]", "NUL"),
        ("[service]\nexec = []\n", 2, "service.exec", "must name a program"),
        (
            "[service]\nexec = [\"/a\"]\nworking_directory = \"var\"\n",
            3,
            "service.working_directory",
            "not an absolute path",
        ),
        ("[service]\nexec = [\"/a\"]\nuser = \"Bad User\"\n", 3, "service.user", "invalid user or group"),
        (
            "[service]\nexec = [\"/a\"]\nstate_directory = [\"ok\", \"../etc\"]\n",
            3,
            "service.state_directory[1]",
            "invalid state directory \"../etc\"",
        ),
        (
            "[service]\nexec = [\"/a\"]\nstate_directory = [\"/var/lib/x\"]\n",
            3,
            "service.state_directory[0]",
            "expected a relative path under /var/lib",
        ),
        (
            "[service]\nexec = [\"/a\"]\nstate_directory = [\"x\", \"x\"]\n",
            3,
            "service.state_directory[1]",
            "listed twice",
        ),
        (
            "[service]\nexec = [\"/a\"]\nstate_directory_mode = \"0789\"\n",
            3,
            "service.state_directory_mode",
            "invalid mode",
        ),
        ("[service]\nexec = [\"/a\"]\nstate_directory_mode = 700\n", 3, "service.state_directory_mode", "invalid type"),
        ("[service]\nexec = [\"/a\"]\ngroup = -5\n", 3, "service.group", "invalid user or group"),
        (
            "[service]\nexec = [\"/a\"]\nenvironment = { \"A.B\" = \"1\" }\n",
            3,
            "service.environment.\"A.B\"",
            "invalid variable name",
        ),
        ("[service]\nexec = [\"/a\"]\nready = \"listening\"\n", 3, "service.ready", "invalid readiness"),
        ("[service]\nexec = [\"/a\"]\nready = \"exit\"\n", 3, "service.ready", "for kind = \"oneshot\""),
        (
            "[service]\nexec = [\"/a\"]\nkind = \"oneshot\"\nready = \"notify\"\n",
            4,
            "service.ready",
            "a oneshot is ready when it exits 0",
        ),
        (
            "[service]\nexec = [\"/a\"]\n\n\nready = { tcp = \"localhost:80\" }\n",
            5,
            "service.ready.tcp",
            "invalid address",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[dependencies]\nrequires = [\"y\", \"x\"]\n",
            4,
            "dependencies.requires[1]",
            "x cannot depend on itself",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[dependencies]\nafter = [\n\"Etcd\"]\n",
            5,
            "dependencies.after[0]",
            "invalid unit name \"Etcd\"",
        ),
        (
            "[service]\nexec = [\"/a\"]\nkind = \"oneshot\"\n[restart]\npolicy = \"always\"\n",
            5,
            "restart.policy",
            "a oneshot that exited 0 is done",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[restart]\nbackoff_initial = \"1m\"\nbackoff_max = \"10s\"\n",
            4,
            "restart.backoff_initial",
            "more than backoff_max",
        ),
        ("[service]\nexec = [\"/a\"]\n[restart]\nstart_limit = 0\n", 4, "restart.start_limit", "at least 1"),
        (
            "[service]\nexec = [\"/a\"]\n[limits]\nmemory_max = \"512MB\"\n",
            4,
            "limits.memory_max",
            "invalid size \"512MB\"",
        ),
        ("[service]\nexec = [\"/a\"]\n[limits]\npids_max = 0\n", 4, "limits.pids_max", "invalid limit 0"),
        ("[service]\nexec = [\"/a\"]\n[limits]\ncpu_weight = 0\n", 4, "limits.cpu_weight", "not in 1..=10000"),
        ("[service]\nexec = [\"/a\"]\n[limits]\ncpu_weight = 20000\n", 4, "limits.cpu_weight", "not in 1..=10000"),
        ("[service]\nexec = [\"/a\"]\n[health]\ncheck = { http = \"x\" }\n", 4, "health.check", "invalid health check"),
        (
            "[service]\nexec = [\"/a\"]\n[health]\ncheck = { command = [\"check\"] }\n",
            4,
            "health.check.command[0]",
            "not an absolute path",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[health]\ncheck = { tcp = \"1.2.3.4\" }\n",
            4,
            "health.check.tcp",
            "invalid address",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[health]\ncheck = { tcp = \"1.2.3.4:1\" }\nfailures = 0\n",
            5,
            "health.failures",
            "at least 1",
        ),
        (
            "[service]\nexec = [\"/a\"]\nkind = \"oneshot\"\n[health]\ncheck = { tcp = \"1.2.3.4:1\" }\n",
            4,
            "health",
            "a oneshot has no health check",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[conditions]\npath_exists = \"etc/x\"\n",
            4,
            "conditions.path_exists",
            "not an absolute path",
        ),
        (
            "[service]\nexec = [\"/a\"]\n[conditions]\npath_exists = [\"/a\", \"!b\"]\n",
            4,
            "conditions.path_exists[1]",
            "not an absolute path",
        ),
        // dotted keys instead of sections
        ("service.exec = [\"/a\"]\nservice.stop_timeout = \"1x\"\n", 2, "service.stop_timeout", "invalid duration"),
    ];
    for (text, line, key, message) in cases {
        let e = parse_err(text);
        let ctx = format!("{text:?} gave {e}");
        assert_eq!(e.at.file, file_of("x"), "{ctx}");
        assert_eq!(e.at.line, Some(*line), "{ctx}");
        if key.is_empty() {
            // A syntax error: the key may not be known.
        } else {
            assert_eq!(e.at.key.as_deref(), Some(*key), "{ctx}");
        }
        assert!(e.kind.to_string().contains(message), "{ctx}");
        assert!(!e.to_string().contains('\n'), "one line: {ctx}");
    }
}

#[test]
fn unit_every_semantic_problem_in_a_file_is_reported() {
    let text = "[service]\nexec = [\"a\"]\nstop_timeout = \"x\"\n[limits]\ncpu_weight = 0\n";
    let errors = parse("x", text).unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| (e.at.line.unwrap(), e.at.key.clone().unwrap())).collect();
    assert_eq!(
        keys,
        vec![
            (2, "service.exec[0]".to_owned()),
            (3, "service.stop_timeout".to_owned()),
            (5, "limits.cpu_weight".to_owned())
        ]
    );
}

#[test]
fn unit_restart_backoff_doubles_up_to_the_maximum() {
    let r = parse_ok("x", MINIMAL).restart;
    let ms = |n| r.backoff(n).as_millis();
    assert_eq!([ms(1), ms(2), ms(3), ms(4)], [100, 200, 400, 800]);
    assert_eq!(r.backoff(9), Duration::from_secs(25) + Duration::from_millis(600));
    assert_eq!(r.backoff(10), Duration::from_secs(30));
    assert_eq!(r.backoff(1000), Duration::from_secs(30));
    assert_eq!(r.backoff(0), Duration::from_millis(100));
}

#[test]
fn unit_conditions_check() {
    let c = Conditions {
        first_boot: Some(true),
        path_exists: vec![
            PathCondition { path: "/yes".into(), negate: false },
            PathCondition { path: "/no".into(), negate: true },
        ],
    };
    let exists = |p: &Path| p == Path::new("/yes");
    assert_eq!(c.check(true, exists), Ok(()));
    assert!(c.check(false, exists).unwrap_err().contains("first_boot"));
    assert!(c.check(true, |_| true).unwrap_err().contains("/no exists"));
    assert!(c.check(true, |_| false).unwrap_err().contains("/yes does not exist"));
    assert_eq!(Conditions::default().check(false, |_| false), Ok(()));
}

#[test]
fn unit_resource_limits_take_one_value_soft_hard_infinity_and_sizes() {
    let u = parse_ok(
        "x",
        "[service]\nexec = [\"/a\"]\n[limits]\nnofile = 1048576\nnproc = \"4096\"\ncore = 0\nstack = \"8M:infinity\"\n\
         as = \"infinity\"\nfsize = \"1G:2G\"\nsigpending = \"100:200\"\nmsgqueue = 819200\nrtprio = \"0:99\"\nmemlock = \"infinity:infinity\"\n",
    );
    let rl = |soft, hard| ResourceLimit { soft, hard };
    let (v, max) = (Limit::Value, Limit::Max);
    let got: Vec<(&str, ResourceLimit)> = u.limits.rlimits.iter().map(|(r, l)| (r.key(), *l)).collect();
    assert_eq!(
        got,
        [
            ("nofile", rl(v(1 << 20), v(1 << 20))),
            ("nproc", rl(v(4096), v(4096))),
            ("core", rl(v(0), v(0))),
            ("memlock", rl(max, max)),
            ("stack", rl(v(8 << 20), max)),
            ("as", rl(max, max)),
            ("fsize", rl(v(1 << 30), v(2 << 30))),
            ("sigpending", rl(v(100), v(200))),
            ("msgqueue", rl(v(819_200), v(819_200))),
            ("rtprio", rl(v(0), v(99))),
        ]
    );
    assert_eq!(u.limits.rlimits[&Rlimit::Stack].to_string(), "8388608:infinity");
    assert_eq!(u.limits.rlimits[&Rlimit::Nproc].to_string(), "4096");
    assert!(u.limits.cgroup_settings().is_empty(), "rlimits are no cgroup files");
    assert!(parse_ok("x", MINIMAL).limits.rlimits.is_empty(), "nothing set: the defaults apply at exec");
    for r in Rlimit::ALL {
        assert!(docs_mention(r.key()), "docs/units.md does not describe limits.{}", r.key());
    }

    let cases: &[(&str, &str)] = &[
        ("nofile = \"64K\"", "invalid limit \"64K\" (expected a number, \"infinity\", or \"SOFT:HARD\""),
        ("nofile = \"2048:1024\"", "the soft limit is above the hard limit"),
        ("core = \"infinity:1G\"", "the soft limit is above the hard limit"),
        ("nproc = -1", "invalid limit -1"),
        ("memlock = \"64MB\"", "expected bytes or a number with K, M, G or T"),
        ("nofile = \"unlimited\"", "invalid limit \"unlimited\""),
        ("nofile = \"1024:\"", "invalid limit \"1024:\""),
        ("stack = true", "invalid limit true"),
    ];
    for (line, want) in cases {
        let text = format!("[service]\nexec = [\"/a\"]\n[limits]\n{line}\n");
        let e = parse_err(&text);
        let key = line.split(' ').next().unwrap();
        assert_eq!((e.at.line, e.at.key.clone()), (Some(4), Some(format!("limits.{key}"))), "{line}: {e}");
        assert!(e.to_string().contains(want), "{line}: {e}");
    }
    let e = parse_err("[service]\nexec = [\"/a\"]\n[limits]\nnofiles = 1\n");
    assert!(e.to_string().contains("unknown field `nofiles`"), "{e}");
}

/// Whether docs/units.md has `key` as a key of an example.
fn docs_mention(key: &str) -> bool {
    let text = include_str!("../../../docs/units.md");
    text.contains(&format!("`{key}`")) || text.lines().any(|l| l.starts_with(&format!("{key} = ")))
}
