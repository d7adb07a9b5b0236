//! The dependency graph: layers, gates, missing dependencies, cycles, exclusions.

use super::*;

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
    // The invalid unit is carried over, so a reload can tell it from a
    // removed one.
    assert_eq!(plan.invalid, BTreeSet::from([name("broken")]));
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
    assert_eq!(plan.invalid, BTreeSet::from([name("bad")]), "neither started nor excluded, but named");
    assert!(!plan.units.contains_key(&name("bad")) && !plan.excluded.contains_key(&name("bad")));
    assert!(plan.errors[0].to_string().ends_with("bad.toml:3: key service.stop_signal: invalid signal \"NOPE\" (expected a name like \"SIGTERM\" or \"SIGINT\")"), "{}", plan.errors[0]);
}
