//! Tests of the unit format, loading and the dependency graph.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;

fn name(s: &str) -> UnitName {
    UnitName::new(s).unwrap()
}

fn names(v: &[&str]) -> Vec<UnitName> {
    v.iter().map(|s| name(s)).collect()
}

fn set(v: &[&str]) -> BTreeSet<UnitName> {
    v.iter().map(|s| name(s)).collect()
}

fn file_of(unit: &str) -> PathBuf {
    PathBuf::from(format!("/etc/berth/units/{unit}.toml"))
}

fn parse(unit: &str, text: &str) -> Result<Unit, Vec<UnitError>> {
    parse_unit(&name(unit), &file_of(unit), text)
}

fn parse_ok(unit: &str, text: &str) -> Unit {
    match parse(unit, text) {
        Ok(u) => u,
        Err(errors) => panic!("{unit}: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

/// The single error of a bad file.
fn parse_err(text: &str) -> UnitError {
    let errors = parse("x", text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

const MINIMAL: &str = "[service]\nexec = [\"/usr/bin/true\"]\n";

// ---- format -----------------------------------------------------------------

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
    assert_eq!(s.kind, Kind::LongRunning);
    assert_eq!(s.ready, Ready::Started);
    assert_eq!(s.start_timeout, Duration::from_secs(60));
    assert_eq!(s.stop_signal, Signal::SIGTERM);
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
    assert_eq!(examples.len(), 4);
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
    assert_eq!(s.ready, Ready::Notify);
    assert_eq!(s.start_timeout, Duration::from_secs(120));
    assert_eq!(s.stop_signal, Signal::SIGTERM);
    let deps = |r: Relation| u.dependencies.get(r).iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    assert_eq!(deps(Relation::Requires), names(&["network"]));
    assert_eq!(deps(Relation::Wants), names(&["time-sync"]));
    assert_eq!(deps(Relation::After), names(&["network", "time-sync"]));
    let req = &u.dependencies.requires[0];
    assert_eq!(req.at.key.as_deref(), Some("dependencies.requires[0]"));
    assert!(req.at.line.is_some());
    assert_eq!(u.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(
        u.limits,
        Limits { memory_max: Some(Limit::Value(512 << 20)), cpu_weight: Some(100), pids_max: Some(Limit::Value(1024)) }
    );
    assert_eq!(
        u.limits.cgroup_settings(),
        vec![("memory.max", "536870912".to_owned()), ("cpu.weight", "100".to_owned()), ("pids.max", "1024".to_owned())]
    );
    let h = u.health.clone().unwrap();
    assert_eq!(h.check, HealthCheck::Tcp("127.0.0.1:2379".parse().unwrap()));
    assert_eq!((h.interval, h.timeout, h.failures), (Duration::from_secs(10), Duration::from_secs(5), 3));
    assert_eq!(u.conditions.first_boot, Some(false));
    assert_eq!(
        u.conditions.path_exists,
        vec![PathCondition { path: "/etc/berth/etcd.conf.yml".into(), negate: false }]
    );

    let containerd = parse_ok("containerd", &doc_examples()[2]);
    assert_eq!(containerd.service.kill_mode, KillMode::Main);
    assert_eq!(containerd.restart.policy, RestartPolicy::Always);
    assert_eq!(containerd.limits.pids_max, Some(Limit::Max));
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
    for bad in ["", "10", "s", "10 sec", "1.5s", "-1s", "10S", "99999999999999999999s", "1m30s"] {
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
    let text = "[service]\nexec = [\"/usr/bin/etcd\"]\nstop_timeout = \"10 sec\"\n";
    let e = parse_err(text);
    assert_eq!(
        e.to_string(),
        "/etc/berth/units/x.toml:3: key service.stop_timeout: invalid duration \"10 sec\" (expected e.g. 500ms, 10s, 2m)"
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

// ---- load -------------------------------------------------------------------

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("berth-unit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        Scratch(dir)
    }

    fn write(&self, dir: &str, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(dir).join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self) -> Loaded {
        load(&[&self.0.join("usr"), &self.0.join("etc"), &self.0.join("missing")])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

// ---- graph ------------------------------------------------------------------

/// A unit file with these dependencies: `deps` is e.g.
/// `[("requires", &["a"]), ("after", &["b"])]`, one key per line.
fn unit_with(unit: &str, deps: &[(&str, &[&str])]) -> Unit {
    let mut text = String::from(MINIMAL);
    text.push_str("[dependencies]\n");
    for (relation, list) in deps {
        let list: Vec<String> = list.iter().map(|d| format!("{d:?}")).collect();
        text.push_str(&format!("{relation} = [{}]\n", list.join(", ")));
    }
    parse_ok(unit, &text)
}

fn loaded(units: Vec<Unit>) -> Loaded {
    Loaded { units: units.into_iter().map(|u| (u.name.clone(), u)).collect(), ..Loaded::default() }
}

fn layers_of(plan: &Plan) -> Vec<Vec<&str>> {
    plan.layers.iter().map(|l| l.iter().map(UnitName::as_str).collect()).collect()
}

#[test]
fn unit_graph_parallel_layers_and_reverse_shutdown() {
    let plan = plan(loaded(vec![
        unit_with("network", &[]),
        unit_with("etcd", &[("requires", &["network"])]),
        unit_with("containerd", &[("after", &["network"])]),
        unit_with("router", &[("requires", &["etcd"]), ("after", &["containerd"]), ("wants", &["sshd"])]),
        unit_with("sshd", &[]),
    ]));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(plan.excluded.is_empty());
    assert_eq!(layers_of(&plan), vec![vec!["network", "sshd"], vec!["containerd", "etcd"], vec!["router"]]);
    // Units nothing waits for stop first; then the reverse of the start order.
    let shutdown: Vec<Vec<&str>> = plan.shutdown.iter().map(|l| l.iter().map(UnitName::as_str).collect()).collect();
    assert_eq!(shutdown, vec![vec!["router", "sshd"], vec!["containerd", "etcd"], vec!["network"]]);

    let router = &plan.needs[&name("router")];
    assert_eq!(router.requires, set(&["etcd"]));
    assert_eq!(router.after, set(&["containerd"]));
    assert_eq!(router.wants, set(&["sshd"]));
    assert_eq!(router.waits_for(), set(&["etcd", "containerd"]).iter().collect());
    assert_eq!(plan.needs[&name("network")].dependents, set(&["containerd", "etcd"]));
    assert_eq!(plan.needs[&name("sshd")].dependents, set(&[]));
}

#[test]
fn unit_graph_requires_plus_after_waits_once_for_ready() {
    let plan = plan(loaded(vec![unit_with("a", &[]), unit_with("b", &[("requires", &["a"]), ("after", &["a"])])]));
    let b = &plan.needs[&name("b")];
    assert_eq!(b.requires, set(&["a"]));
    assert!(b.after.is_empty());
}

#[test]
fn unit_graph_gate() {
    let plan = plan(loaded(vec![
        unit_with("a", &[]),
        unit_with("b", &[]),
        unit_with("c", &[("requires", &["a"]), ("after", &["b"])]),
    ]));
    let c = &plan.needs[&name("c")];
    let gate = |a: State, b: State| c.gate(|u| if u.as_str() == "a" { a } else { b });
    assert_eq!(gate(State::Pending, State::Ready), Gate::Wait);
    assert_eq!(gate(State::Ready, State::Pending), Gate::Wait);
    assert_eq!(gate(State::Ready, State::Ready), Gate::Start);
    assert_eq!(gate(State::Ready, State::Failed), Gate::Start);
    assert_eq!(gate(State::Skipped, State::Skipped), Gate::Start);
    assert_eq!(gate(State::Failed, State::Pending), Gate::Never { dependency: name("a") });
    assert_eq!(plan.needs[&name("a")].gate(|_| State::Pending), Gate::Start);
}

#[test]
fn unit_graph_missing_dependency() {
    let plan = plan(loaded(vec![
        unit_with("a", &[("requires", &["nope"])]),
        unit_with("b", &[("wants", &["gone"]), ("after", &["a", "missing"])]),
    ]));
    let errors: Vec<String> = plan.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        vec![
            "/etc/berth/units/a.toml:4: key dependencies.requires[0]: a requires nope, but there is no unit nope (a is left out)",
            "/etc/berth/units/b.toml:4: key dependencies.wants[0]: b wants gone, but there is no unit gone (the dependency is ignored)",
            "/etc/berth/units/b.toml:5: key dependencies.after[1]: b after missing, but there is no unit missing (the dependency is ignored)",
        ]
    );
    assert_eq!(plan.excluded[&name("a")].reason, Exclusion::MissingDependency { dependency: name("nope") });
    // b stays, without its edges to missing units nor to the left-out a.
    assert_eq!(layers_of(&plan), vec![vec!["b"]]);
    assert_eq!(plan.needs[&name("b")], Needs::default());
}

#[test]
fn unit_graph_three_unit_cycle_is_named_in_full_and_the_rest_starts() {
    let plan = plan(loaded(vec![
        unit_with("a", &[("requires", &["b"])]),
        unit_with("b", &[("after", &["c"])]),
        unit_with("c", &[("wants", &["x"]), ("requires", &["a"])]),
        unit_with("x", &[("wants", &["a"])]),
        unit_with("d", &[]),
        unit_with("e", &[("after", &["a"]), ("requires", &["d"])]),
    ]));
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    let e = &plan.errors[0];
    assert_eq!(
        e.to_string(),
        "/etc/berth/units/a.toml:4: key dependencies.requires[0]: dependency cycle a -> b -> c -> a \
         (a requires b at /etc/berth/units/a.toml:4, b after c at /etc/berth/units/b.toml:4, \
         c requires a at /etc/berth/units/c.toml:5); left out: a, b, c"
    );
    let ErrorKind::Cycle(cycle) = &e.kind else { panic!("{e:?}") };
    assert_eq!(cycle.members, names(&["a", "b", "c"]));
    assert_eq!(cycle.steps[2].at.key.as_deref(), Some("dependencies.requires[0]"));
    for u in ["a", "b", "c"] {
        assert_eq!(plan.excluded[&name(u)].reason, Exclusion::Cycle { cycle: names(&["a", "b", "c", "a"]) });
    }
    // Unrelated units, and units only ordered after or wanting the cycle, start.
    assert_eq!(layers_of(&plan), vec![vec!["d", "x"], vec!["e"]]);
}

#[test]
fn unit_graph_cycles_found_through_their_first_unit_deterministically() {
    let units = || {
        vec![
            unit_with("p", &[("after", &["q"])]),
            unit_with("q", &[("requires", &["p", "r"])]),
            unit_with("r", &[("after", &["q"])]),
            unit_with("s", &[("after", &["s2"])]),
            unit_with("s2", &[("after", &["s"])]),
        ]
    };
    let one = plan(loaded(units()));
    let two = plan(loaded(units().into_iter().rev().collect()));
    let show = |p: &Plan| p.errors.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(show(&one), show(&two));
    assert_eq!(one.errors.len(), 2);
    let ErrorKind::Cycle(c) = &one.errors[0].kind else { panic!() };
    // One component {p, q, r}: its shortest cycle through p, all members out.
    let path: Vec<&str> =
        std::iter::once(c.steps[0].from.as_str()).chain(c.steps.iter().map(|s| s.to.as_str())).collect();
    assert_eq!(path, vec!["p", "q", "p"]);
    assert_eq!(c.members, names(&["p", "q", "r"]));
    assert!(one.errors[1].to_string().contains("dependency cycle s -> s2 -> s"), "{}", one.errors[1]);
    assert!(one.units.is_empty());
}

#[test]
fn unit_graph_transitive_exclusion_names_the_chain() {
    let plan = plan(loaded(vec![
        unit_with("network", &[("requires", &["nic-firmware"])]),
        unit_with("etcd", &[("requires", &["network"])]),
        unit_with("router", &[("requires", &["etcd"]), ("after", &["network"])]),
        unit_with("logger", &[("after", &["etcd"])]),
    ]));
    assert_eq!(plan.errors.len(), 1);
    let root = Exclusion::MissingDependency { dependency: name("nic-firmware") };
    assert_eq!(plan.excluded[&name("network")].reason, root);
    assert_eq!(
        plan.excluded[&name("etcd")].reason,
        Exclusion::RequiresExcluded { chain: names(&["network"]), root: Box::new(root.clone()) }
    );
    let router = &plan.excluded[&name("router")];
    assert_eq!(router.reason, Exclusion::RequiresExcluded { chain: names(&["etcd", "network"]), root: Box::new(root) });
    assert_eq!(
        router.reason.to_string(),
        "requires etcd -> network; network is left out: requires nic-firmware, which does not exist"
    );
    assert_eq!(router.unit.name, name("router"));
    assert_eq!(layers_of(&plan), vec![vec!["logger"]]);
}

#[test]
fn unit_graph_requires_on_masked_or_invalid_units() {
    let mut l = loaded(vec![
        unit_with("a", &[("requires", &["masked"])]),
        unit_with("b", &[("requires", &["broken"])]),
        unit_with("c", &[("after", &["masked", "broken"]), ("wants", &["masked"])]),
    ]);
    l.masked.insert(name("masked"), "/etc/berth/units/masked.toml".into());
    l.invalid.insert(name("broken"));
    let plan = plan(l);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(plan.excluded[&name("a")].reason, Exclusion::RequiresMasked { dependency: name("masked") });
    assert_eq!(plan.excluded[&name("b")].reason, Exclusion::RequiresInvalid { dependency: name("broken") });
    assert_eq!(layers_of(&plan), vec![vec!["c"]]);
    assert_eq!(plan.masked.len(), 1);
}

#[test]
fn unit_graph_from_directories_end_to_end() {
    let s = Scratch::new("e2e");
    s.write("usr", "network.toml", MINIMAL);
    s.write(
        "usr",
        "etcd.toml",
        "[service]\nexec = [\"/usr/bin/etcd\"]\nready = \"notify\"\n[dependencies]\nrequires = [\"network\"]\n",
    );
    s.write("usr", "sshd.toml", MINIMAL);
    s.write("etc", "sshd.toml", "");
    s.write("etc", "app.toml", "[service]\nexec = [\"/a\"]\n[dependencies]\nrequires = [\"etcd\", \"sshd\"]\n");
    s.write("etc", "bad.toml", "[service]\nexec = [\"/a\"]\nstop_signal = \"NOPE\"\n");
    let plan = plan(s.load());
    assert_eq!(layers_of(&plan), vec![vec!["network"], vec!["etcd"]]);
    assert_eq!(plan.excluded[&name("app")].reason, Exclusion::RequiresMasked { dependency: name("sshd") });
    assert_eq!(plan.errors.len(), 1);
    assert!(plan.errors[0].to_string().ends_with("bad.toml:3: key service.stop_signal: invalid signal \"NOPE\" (expected a name like \"SIGTERM\" or \"SIGINT\")"), "{}", plan.errors[0]);
}
