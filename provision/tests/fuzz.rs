//! No input makes the readers or `check` panic: arbitrary bytes, and
//! mutations of real documents (the examples and the cloud-init corpus
//! when present). A short run under `cargo test` (a few seconds);
//! `PROPTEST_CASES=100000 cargo test -p berth-provision --test fuzz` for a
//! long one.

use std::sync::OnceLock;

use proptest::prelude::*;

use berth_provision::{check, interpret, plan, toml_tree, yaml};

/// Seeds: the two examples, and the corpus's documents if found.
fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/");
        let mut v: Vec<Vec<u8>> = ["user-data.yaml", "user-data.toml"]
            .iter()
            .filter_map(|f| std::fs::read(format!("{dir}{f}")).ok())
            .collect();
        let corpus =
            std::env::var("BERTH_CLOUD_INIT_CORPUS").unwrap_or_else(|_| "/work/shared/corpus/cloud-init".into());
        for sub in ["examples", "module-docs/cc_users_groups", "module-docs/cc_write_files", "module-docs/cc_ntp"] {
            if let Ok(rd) = std::fs::read_dir(format!("{corpus}/{sub}")) {
                for e in rd.flatten() {
                    if e.path().is_file() {
                        if let Ok(b) = std::fs::read(e.path()) {
                            v.push(b);
                        }
                    }
                }
            }
        }
        v
    })
}

fn all_readers(bytes: &[u8]) {
    if let Ok(doc) = check("fuzz", bytes) {
        plan_on_the_image(&doc.config);
    }
    let _ = interpret::meta_data("fuzz", bytes);
    let _ = interpret::network_config("fuzz", bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = yaml::read("fuzz", &text);
    let _ = toml_tree::read("fuzz", &text);
}

/// The apply planner over a document that passed, against the image's
/// own accounts: it may refuse (an unknown owner, a missing time zone),
/// never panic.
fn plan_on_the_image(config: &berth_provision::Config) {
    let rootfs = concat!(env!("CARGO_MANIFEST_DIR"), "/../image-build/rootfs/etc/");
    let text = |f: &str| std::fs::read_to_string(format!("{rootfs}{f}")).unwrap_or_default();
    let facts = plan::Facts {
        passwd: text("passwd"),
        group: text("group"),
        shadow: text("shadow"),
        image_units: ["sshd", "network", "etcd"].map(String::from).into(),
        instance_id: "i-fuzz".into(),
        ..plan::Facts::default()
    };
    let scope = plan::Scope { per_instance: true, bootcmd: true };
    let _ = plan::plan(config, &facts, &plan::Previous::default(), scope);
}

/// A mutation: replace, insert or delete a byte range of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn apply(mut doc: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = doc.len().max(1);
        match e {
            Edit::Replace(at, b) => {
                let at = at % n;
                for (i, x) in b.iter().enumerate() {
                    if let Some(slot) = doc.get_mut(at + i) {
                        *slot = *x;
                    }
                }
            }
            Edit::Insert(at, b) => {
                let at = (at % n).min(doc.len());
                doc.splice(at..at, b.iter().copied());
            }
            Edit::Delete(at, len) => {
                let at = (at % n).min(doc.len());
                let end = (at + len % 64).min(doc.len());
                doc.drain(at..end);
            }
        }
    }
    doc
}

/// Bytes YAML and TOML care about, to hit their corners more often.
fn syntax_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![any::<u8>(), prop::sample::select(b":-[]{},#&*!|>'\"\n =.\t?%@`\\0".to_vec()),],
        0..12,
    )
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), syntax_bytes()).prop_map(|(a, b)| Edit::Replace(a, b)),
        (any::<usize>(), syntax_bytes()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, l)| Edit::Delete(a, l)),
    ]
}

/// A structured #cloud-config document from pieces of real keys and values.
fn structured() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "hostname",
        "users",
        "write_files",
        "runcmd",
        "bootcmd",
        "ntp",
        "network",
        "berth",
        "units",
        "etcd",
        "update",
        "path",
        "permissions",
        "encoding",
        "content",
        "name",
        "groups",
        "version",
        "ethernets",
        "config",
        "type",
        "subnets",
        "passwd",
    ]);
    let scalar = prop::sample::select(vec![
        "yes",
        "0644",
        "'0644'",
        "~",
        "",
        "default",
        "/etc/x",
        "b64",
        "gz+b64",
        "!!binary aGk=",
        "1",
        "2",
        "[]",
        "{}",
        "-1",
        "physical",
        "static",
        "\"a\\u0000b\"",
        "*a",
        "&a x",
        "10.0.0.1/24",
    ]);
    let line = (0usize..4, key, prop::bool::ANY, scalar)
        .prop_map(|(indent, k, dash, v)| format!("{}{}{k}: {v}\n", "  ".repeat(indent), if dash { "- " } else { "" }));
    prop::collection::vec(line, 0..24).prop_map(|lines| format!("#cloud-config\n{}", lines.concat()))
}

/// A structured #berth-config document: tables, arrays of tables and
/// values of every TOML type under real keys.
fn structured_toml() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "hostname",
        "users",
        "write_files",
        "runcmd",
        "ntp",
        "network",
        "units",
        "etcd",
        "update",
        "ssh",
        "path",
        "permissions",
        "encoding",
        "content",
        "name",
        "groups",
        "version",
        "add",
        "disable",
        "enabled",
        "auto",
        "reboot",
        "window",
        "\"set-name\"",
    ]);
    let value = prop::sample::select(vec![
        "1",
        "0o644",
        "\"0644\"",
        "true",
        "1.5",
        "1979-05-27T07:32:00Z",
        "[]",
        "[1, \"a\"]",
        "{}",
        "{ a = 1 }",
        "\"\"",
        "\"default\"",
        "\"/etc/x\"",
        "'''\n[service]\nexec = [\"/x\"]\n'''",
        "[\"default\", { name = \"b\" }]",
        "\"02:00-03:00\"",
    ]);
    let line = (key, value, 0u8..4).prop_map(|(k, v, kind)| match kind {
        0 => format!("[{k}]\n"),
        1 => format!("[[{k}]]\n"),
        _ => format!("{k} = {v}\n"),
    });
    prop::collection::vec(line, 0..24).prop_map(|lines| format!("#berth-config\n{}", lines.concat()))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_readers(&bytes);
        let mut with_header = b"#cloud-config\n".to_vec();
        with_header.extend_from_slice(&bytes);
        all_readers(&with_header);
        let mut native = b"#berth-config\n".to_vec();
        native.extend_from_slice(&bytes);
        all_readers(&native);
    }

    #[test]
    fn mutated_documents(seed in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..6)) {
        let seeds = seeds();
        prop_assume!(!seeds.is_empty());
        let doc = seeds.get(seed.index(seeds.len())).cloned().unwrap_or_default();
        all_readers(&apply(doc, &edits));
    }

    #[test]
    fn structured_toml_documents(doc in structured_toml()) {
        all_readers(doc.as_bytes());
        if let Err(r) = check("s", doc.as_bytes()) {
            prop_assert!(!r.errors.is_empty());
        }
    }

    #[test]
    fn structured_documents(doc in structured()) {
        all_readers(doc.as_bytes());
        // Accepted or rejected, every diagnostic names its source.
        match check("s", doc.as_bytes()) {
            Ok(d) => prop_assert!(d.warnings.iter().all(|w| w.place.source == "s")),
            Err(r) => prop_assert!(!r.errors.is_empty() && r.errors.iter().all(|e| e.place.source == "s")),
        }
    }
}
