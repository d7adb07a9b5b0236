use super::*;

fn opts(slot: Slot) -> String {
    format!("root=/dev/dm-0 dm-mod.waitfor=PARTUUID=uuid-{} berth.slot={}", slot.name(), slot.name())
}

fn entry(file: &str, slot: Slot) -> (String, String) {
    let version = EntryName::parse(file).unwrap().version;
    (file.to_string(), boot_entry::entry_text(&version, slot, &opts(slot)))
}

fn efi(s: &str) -> Vec<u8> {
    let mut b = vec![7, 0, 0, 0];
    for u in s.encode_utf16().chain([0]) {
        b.extend(u.to_le_bytes());
    }
    b
}

fn load(files: &[(String, String)], booted: Slot, count: Option<&str>) -> Result<AbState, LoadError> {
    let count = count.map(|c| efi(&format!("\\loader\\entries\\{c}")));
    AbState::load(files, &opts(booted), count.as_deref(), None)
}

/// Booted blessed 1.0 in A, blessed 0.9 in B.
fn two_good() -> AbState {
    load(&[entry("berth-1.0.conf", Slot::A), entry("berth-0.9.conf", Slot::B)], Slot::A, None).unwrap()
}

#[test]
fn loads_counters_blessed_and_bad_entries() {
    let files = [entry("berth-2.0+2-1.conf", Slot::B), entry("berth-1.0.conf", Slot::A)];
    let s = load(&files, Slot::B, Some("berth-2.0+2-1.conf")).unwrap();
    assert_eq!(s.booted(), Slot::B);
    assert_eq!(s.booted_partuuid(), Some("uuid-b"));
    let b = s.booted_entry().unwrap();
    assert_eq!((b.name.tries_left, b.name.tries_done), (Some(2), Some(1)));
    assert!(s.entry(Slot::A).unwrap().is_blessed());
    assert!(s.plan().is_empty());

    let files =
        [entry("berth-2.0+0.conf", Slot::B), entry("berth-1.0.conf", Slot::A), ("other.conf".into(), "x".into())];
    let s = load(&files, Slot::A, None).unwrap();
    let bad = s.entry(Slot::B).unwrap();
    assert!(bad.name.is_bad() && !bad.is_spent());
}

#[test]
fn efi_variables_are_decoded_and_checked() {
    let files = [entry("berth-1.0+2-1.conf", Slot::A)];
    let sel = efi("berth-1.0.conf");
    let s =
        AbState::load(&files, &opts(Slot::A), Some(&efi("/loader/entries/berth-1.0+2-1.conf")), Some(&sel)).unwrap();
    assert_eq!(s.entry_selected(), Some("berth-1.0.conf"));
    assert_eq!(s.boot_count_path(), Some("/loader/entries/berth-1.0+2-1.conf"));
    // Without the .conf suffix too.
    assert!(AbState::load(&files, &opts(Slot::A), None, Some(&efi("berth-1.0"))).is_ok());

    let malformed: [&[u8]; 3] = [&[1, 2], &[7, 0, 0, 0, 0x41], &[7, 0, 0, 0, 0x00, 0xd8, 0x41, 0x00]];
    for bytes in malformed {
        let e = AbState::load(&files, &opts(Slot::A), Some(bytes), None).unwrap_err();
        assert!(matches!(e, LoadError::Variable { name: LOADER_BOOT_COUNT_PATH, .. }), "{e}");
        let e = AbState::load(&files, &opts(Slot::A), None, Some(bytes)).unwrap_err();
        assert!(matches!(e, LoadError::Variable { name: LOADER_ENTRY_SELECTED, .. }), "{e}");
    }
    let e = AbState::load(&files, &opts(Slot::A), Some(&efi("/loader/entries/berth-1.0+1-2.conf")), None);
    assert!(matches!(e, Err(LoadError::BootCountPathMismatch { .. })));
    let e = AbState::load(&files, &opts(Slot::A), None, Some(&efi("berth-0.9.conf")));
    assert!(matches!(e, Err(LoadError::EntrySelectedMismatch { .. })));
}

#[test]
fn a_boot_blessed_since_it_began_loads_as_not_counted() {
    // systemd-boot set the variable to the counted name; the entry was
    // renamed (blessed) since; the variable stays until the next boot.
    let files = [entry("berth-1.0.conf", Slot::A)];
    let s = load(&files, Slot::A, Some("berth-1.0+2-1.conf")).unwrap();
    assert_eq!(s.boot_count_path(), None);
    // Another version's counted name is still a mismatch.
    assert!(matches!(load(&files, Slot::A, Some("berth-1.1+2-1.conf")), Err(LoadError::BootCountPathMismatch { .. })));
}

/// A fresh disk's entry starts slot A's UKI and has no options: its
/// slot comes from the `efi` path, and an update is staged next to it.
#[test]
fn a_uki_entry_is_read_by_its_efi_path_and_updates_stage_beside_it() {
    let uki = ("berth-1.0.conf".to_string(), boot_entry::uki_entry_text("1.0", Slot::A));
    let mut s = load(&[uki], Slot::A, None).unwrap();
    assert_eq!(s.booted(), Slot::A);
    s.stage("1.1", Slot::B).unwrap();
    assert!(s.plan().iter().any(|op| matches!(op, FileOp::WritePayload { slot: Slot::B, .. })));
}

#[test]
fn malformed_inputs_name_what_was_wrong() {
    let unknown = ("berth-1.0.conf".to_string(), "linux /berth/c/linux.efi\noptions berth.slot=c\n".to_string());
    let e = load(&[unknown], Slot::A, None).unwrap_err();
    assert_eq!(e, LoadError::UnknownSlot { file: "berth-1.0.conf".into() });
    assert!(e.to_string().contains("berth-1.0.conf"));

    let wrong_kernel = ("berth-1.0.conf".to_string(), format!("linux /berth/b/linux.efi\noptions {}\n", opts(Slot::A)));
    assert!(matches!(load(&[wrong_kernel], Slot::A, None), Err(LoadError::KernelMismatch { .. })));

    let e = load(&[("berth-1.0+x.conf".into(), String::new())], Slot::A, None);
    assert!(matches!(e, Err(LoadError::EntryName(f, _)) if f == "berth-1.0+x.conf"));

    let twice = [entry("berth-1.0.conf", Slot::A), entry("berth-0.9.conf", Slot::A)];
    assert!(matches!(load(&twice, Slot::A, None), Err(LoadError::TwoEntriesForSlot { .. })));
    assert_eq!(load(&[entry("berth-1.0.conf", Slot::A)], Slot::B, None), Err(LoadError::NoBootedEntry("b")));
    assert_eq!(AbState::load(&[entry("berth-1.0.conf", Slot::A)], "quiet", None, None), Err(LoadError::CmdlineNoSlot));
}

#[test]
fn stage_replaces_the_other_slot_in_a_safe_order() {
    let mut s = two_good();
    s.stage("1.1", Slot::B).unwrap();
    let plan = s.plan();
    assert_eq!(plan.len(), 3, "{plan:?}");
    assert_eq!(plan[0], FileOp::Remove { file: "berth-0.9.conf".into() });
    assert_eq!(plan[1], FileOp::WritePayload { slot: Slot::B, version: "1.1".into() });
    let FileOp::Write { file, contents } = &plan[2] else { panic!("{plan:?}") };
    assert_eq!(file, "berth-1.1+3.conf");
    assert_eq!(contents, &boot_entry::uki_entry_text("1.1", Slot::B), "the new entry boots slot b's UKI");

    // An empty other slot: payload, then entry.
    let mut s = load(&[entry("berth-1.0.conf", Slot::A)], Slot::A, None).unwrap();
    s.stage("1.1", Slot::B).unwrap();
    assert!(matches!(s.plan()[..], [FileOp::WritePayload { .. }, FileOp::Write { .. }]));
}

#[test]
fn stage_refusals() {
    let mut s = two_good();
    assert_eq!(s.stage("1.1", Slot::A), Err(TransitionError::TargetsBootedSlot("a")));
    assert_eq!(s.stage("1.0", Slot::B), Err(TransitionError::SameVersionAsBooted("1.0".into())));
    assert!(matches!(s.stage("a/b", Slot::B), Err(TransitionError::BadVersion(_))));
    assert_eq!(s, two_good());
    let files = [entry("berth-1.0+2-1.conf", Slot::A)];
    let mut s = load(&files, Slot::A, Some("berth-1.0+2-1.conf")).unwrap();
    assert!(matches!(s.stage("1.1", Slot::B), Err(TransitionError::BootedNotBlessed(_))));
}

#[test]
fn bless_drops_the_booted_counter() {
    let files = [entry("berth-1.1+2-1.conf", Slot::B), entry("berth-1.0.conf", Slot::A)];
    let mut s = load(&files, Slot::B, Some("berth-1.1+2-1.conf")).unwrap();
    s.bless().unwrap();
    assert_eq!(s.plan(), [FileOp::Rename { from: "berth-1.1+2-1.conf".into(), to: "berth-1.1.conf".into() }]);
    assert_eq!(s.bless(), Err(TransitionError::AlreadyBlessed("berth-1.1.conf".into())));
}

#[test]
fn mark_bad_sets_the_counter_to_zero() {
    let mut s = two_good();
    s.mark_bad(Slot::B).unwrap();
    assert_eq!(s.plan(), [FileOp::Rename { from: "berth-0.9.conf".into(), to: "berth-0.9+0.conf".into() }]);
    let mut s = load(&[entry("berth-1.0.conf", Slot::A)], Slot::A, None).unwrap();
    assert_eq!(s.mark_bad(Slot::B), Err(TransitionError::NoEntry("b")));
}

#[test]
fn rollback_goes_back_and_forth_between_good_slots() {
    let mut s = two_good();
    s.rollback().unwrap();
    assert_eq!(s.plan(), [FileOp::Rename { from: "berth-1.0.conf".into(), to: "berth-1.0+0.conf".into() }]);

    // Booted 0.9 in B after the rollback: going back re-arms 1.0.
    let files = [entry("berth-1.0+0.conf", Slot::A), entry("berth-0.9.conf", Slot::B)];
    let mut s = load(&files, Slot::B, None).unwrap();
    s.rollback().unwrap();
    assert_eq!(
        s.plan(),
        [
            FileOp::Rename { from: "berth-1.0+0.conf".into(), to: "berth-1.0+3.conf".into() },
            FileOp::Rename { from: "berth-0.9.conf".into(), to: "berth-0.9+0.conf".into() },
        ]
    );
}

#[test]
fn rollback_refusals() {
    let mut s = load(&[entry("berth-1.0.conf", Slot::A)], Slot::A, None).unwrap();
    assert_eq!(s.rollback(), Err(TransitionError::NoEntry("b")));
    let files = [entry("berth-1.0.conf", Slot::A), entry("berth-1.1+0-3.conf", Slot::B)];
    let mut s = load(&files, Slot::A, None).unwrap();
    assert_eq!(s.rollback(), Err(TransitionError::OtherFailed("berth-1.1+0-3.conf".into())));
    let files = [entry("berth-1.0.conf", Slot::A), entry("berth-1.1+3.conf", Slot::B)];
    let mut s = load(&files, Slot::A, None).unwrap();
    assert_eq!(s.rollback(), Err(TransitionError::OtherUnproven("berth-1.1+3.conf".into())));
    assert!(s.plan().is_empty());
}
