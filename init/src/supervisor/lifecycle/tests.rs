//! The decision and the transitions, with plain values for the stop
//! line and the restart timer: no tokio, no processes. Times are µs.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::unit::{Kind, Restart, RestartPolicy};

/// A run's stop line that records each request (its `whole_group`).
#[derive(Clone, Default)]
struct Line(Rc<RefCell<Vec<bool>>>);

impl StopSink for Line {
    fn request_stop(&self, whole_group: bool) {
        self.0.borrow_mut().push(whole_group);
    }
}

impl Line {
    fn sent(&self) -> Vec<bool> {
        self.0.borrow().clone()
    }
}

/// A restart timer that keeps its delay and counts its cancellations.
struct Timer {
    delay: Duration,
    cancelled: Rc<Cell<u32>>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancelled.set(self.cancelled.get() + 1);
    }
}

type Life = Lifecycle<Line, Timer>;

const S: u64 = 1_000_000;

fn restart(policy: RestartPolicy) -> Restart {
    Restart {
        policy,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        start_limit: 4,
        start_limit_interval: Duration::from_secs(60),
    }
}

fn policy(kind: Kind, p: RestartPolicy) -> Policy {
    Policy { kind, restart: restart(p) }
}

fn exited(code: i32, was_ready: bool) -> Outcome {
    Outcome { exit: Some(ExitStatus::Exited(code)), cause: Cause::Exited, was_ready }
}

fn history(times: &[u64]) -> StartHistory {
    let mut h = StartHistory::default();
    for &t in times {
        h.record(t);
    }
    h
}

fn no_timer(_: Duration) -> Timer {
    panic!("no restart was expected")
}

/// A timer factory and the count of cancelled timers it made.
fn timers() -> (Rc<Cell<u32>>, impl Fn(Duration) -> Timer) {
    let cancelled = Rc::new(Cell::new(0));
    let c = Rc::clone(&cancelled);
    (cancelled, move |delay| Timer { delay, cancelled: Rc::clone(&c) })
}

/// A unit started at `t` (run 1, pid 42), and its stop line.
fn starting(t: u64) -> (Life, Line) {
    let mut life = Life::new(t);
    let line = Line::default();
    life.start_attempt(t);
    life.started(1, line.clone(), 42, t, t);
    (life, line)
}

// ---- decide -----------------------------------------------------------------

#[test]
fn a_oneshot_that_exits_0_is_done() {
    let r = restart(RestartPolicy::OnFailure);
    let d = decide(Kind::Oneshot, &r, &exited(0, false), &history(&[0]), S);
    assert_eq!(d, Decision::Done);
}

#[test]
fn a_failure_under_policy_never_fails_with_what_happened() {
    let r = restart(RestartPolicy::Never);
    let d = decide(Kind::Oneshot, &r, &exited(2, false), &history(&[0]), S);
    assert_eq!(d, Decision::Failed("exit status 2".into()));
    let d = decide(Kind::LongRunning, &r, &exited(0, false), &history(&[0]), S);
    assert_eq!(d, Decision::Failed("exit status 0 before it was ready".into()), "exit 0 before ready is a failure");
}

#[test]
fn a_clean_exit_after_ready_is_inactive_unless_policy_always() {
    let h = history(&[0]);
    let d = decide(Kind::LongRunning, &restart(RestartPolicy::OnFailure), &exited(0, true), &h, S);
    assert_eq!(d, Decision::Inactive("exit status 0".into()));
    let d = decide(Kind::LongRunning, &restart(RestartPolicy::Always), &exited(0, true), &h, S);
    assert_eq!(
        d,
        Decision::Restart { delay: Duration::from_millis(100), reason: "restart in 100ms after: exit status 0".into() }
    );
}

#[test]
fn the_backoff_doubles_with_the_starts_in_the_window_up_to_its_max() {
    let r = Restart { start_limit: 10, ..restart(RestartPolicy::OnFailure) };
    let delays: Vec<Duration> = (1..=6u64)
        .map(|n| {
            let starts: Vec<u64> = (0..n).map(|i| i * S).collect();
            match decide(Kind::LongRunning, &r, &exited(1, true), &history(&starts), n * S) {
                Decision::Restart { delay, .. } => delay,
                d => panic!("{n} starts: {d:?}"),
            }
        })
        .collect();
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
    match decide(Kind::LongRunning, &r, &exited(1, true), &history(&[0, S, 2 * S, 3 * S]), 4 * S) {
        Decision::Restart { reason, .. } => assert_eq!(reason, "restart in 800ms after: exit status 1"),
        d => panic!("{d:?}"),
    }
}

#[test]
fn the_backoff_starts_over_once_the_starts_are_older_than_the_interval() {
    let r = restart(RestartPolicy::Always);
    // Three starts long ago and one just now: only the last one counts.
    let h = history(&[0, S, 2 * S, 100 * S]);
    let d = decide(Kind::LongRunning, &r, &exited(1, true), &h, 100 * S + 5);
    assert!(matches!(d, Decision::Restart { delay, .. } if delay == Duration::from_millis(100)), "{d:?}");
    // A start exactly start_limit_interval ago no longer counts.
    let h = history(&[0, S]);
    assert_eq!(h.within(r.start_limit_interval, 60 * S - 1), 2);
    assert_eq!(h.within(r.start_limit_interval, 60 * S), 1);
}

#[test]
fn the_start_limit_fails_the_unit() {
    let r = restart(RestartPolicy::OnFailure);
    let d = decide(Kind::LongRunning, &r, &exited(3, true), &history(&[0, 1, 2, 3]), 4);
    assert_eq!(d, Decision::Failed("start limit hit: 4 starts within 1m; last: exit status 3".into()));
}

#[test]
fn outcomes_say_what_happened() {
    let o = |cause: Cause, exit: Option<ExitStatus>| Outcome { exit, cause, was_ready: false };
    let long = Kind::LongRunning;
    assert_eq!(o(Cause::StartTimeout(Duration::from_millis(1500)), None).describe(long), "not ready within 1s 500ms");
    assert_eq!(o(Cause::HealthFailed("health check failed".into()), None).describe(long), "health check failed");
    assert_eq!(o(Cause::SpawnFailed("no such file".into()), None).describe(long), "cannot start: no such file");
    assert_eq!(o(Cause::Exited, None).describe(long), "ended (status unknown) before it was ready");
    assert_eq!(o(Cause::Exited, Some(ExitStatus::Signaled(9))).describe(Kind::Oneshot), "killed by signal 9");
}

// ---- transitions -------------------------------------------------------------

#[test]
fn a_run_becomes_ready_once_and_says_how_long_it_took() {
    let (mut life, _) = starting(10 * S);
    assert_eq!(life.state(), UnitState::Starting);
    assert_eq!(life.pid(), Some(42));
    assert_eq!(life.ready_after_us(), None);
    assert_eq!(life.mark_ready(10 * S + 300_000), Some(Duration::from_millis(300)));
    assert_eq!(life.state(), UnitState::Active);
    assert_eq!(life.since_us(), 10 * S + 300_000);
    assert_eq!(life.ready_after_us(), Some(300_000));
    let first = life.first_start();
    assert_eq!((first.started_us, first.ready_us), (Some(10 * S), Some(10 * S + 300_000)));
    assert_eq!(life.mark_ready(11 * S), None, "already ready");
    assert_eq!(life.ready_after_us(), Some(300_000));
}

#[test]
fn a_stop_while_starting_is_sent_once_and_ends_inactive() {
    let (mut life, line) = starting(0);
    life.set_status_text("warming up".into());
    life.stop_requested(false, S);
    assert_eq!((life.state(), life.reason()), (UnitState::Stopping, "stopping"));
    assert_eq!(life.mark_ready(S), None, "readiness while stopping changes nothing");
    life.stop_requested(true, 2 * S);
    assert!(life.request_stop(true, "shutdown", 3 * S));
    assert_eq!(line.sent(), vec![false], "one request, the first one's kill scope");
    assert_eq!(life.since_us(), S, "still stopping since the first request");
    let stopped = Outcome { exit: Some(ExitStatus::Signaled(15)), cause: Cause::Stopped, was_ready: false };
    let (after, note) =
        life.run_ended(&stopped, policy(Kind::LongRunning, RestartPolicy::Always), false, 4 * S, no_timer).unwrap();
    assert_eq!((after, note.as_str()), (AfterRun::Stopped, "stopped: stopped"));
    assert_eq!((life.state(), life.reason()), (UnitState::Inactive, "stopped"));
    assert_eq!(life.last_exit(), Some(&Exit::Signal(15)));
    assert_eq!(life.pid(), None);
    assert!(!life.request_stop(true, "shutdown", 5 * S), "nothing left to stop");
}

#[test]
fn a_dead_main_process_is_stopping_until_its_group_is_empty_then_decided() {
    let (mut life, line) = starting(0);
    life.mark_ready(S);
    life.main_exited(Some(ExitStatus::Exited(1)), 2 * S);
    assert_eq!(life.state(), UnitState::Stopping);
    assert_eq!((life.pid(), life.last_exit()), (None, Some(&Exit::Code(1))));
    assert!(line.sent().is_empty(), "the run stops its group itself");
    let (cancelled, make) = timers();
    let (after, note) = life
        .run_ended(&exited(1, true), policy(Kind::LongRunning, RestartPolicy::OnFailure), false, 3 * S, &make)
        .unwrap();
    assert_eq!(after, AfterRun::Decided);
    assert_eq!(note, "restart in 100ms after: exit status 1");
    assert_eq!((life.state(), life.reason()), (UnitState::Restarting, note.as_str()));
    assert_eq!(life.restart_timer().map(|t| t.delay), Some(Duration::from_millis(100)));
    // The timer is due: the next start leaves Restarting and drops it.
    life.start_attempt(4 * S);
    life.started(2, Line::default(), 43, 4 * S, 4 * S);
    assert_eq!(cancelled.get(), 1);
    assert_eq!((life.state(), life.restarts(), life.first_start().started_us), (UnitState::Starting, 1, Some(0)));
    assert_eq!(life.run().map(|r| r.id), Some(2));
}

#[test]
fn a_oneshot_done_is_active_without_a_process() {
    let (mut life, _) = starting(0);
    let (after, note) = life
        .run_ended(&exited(0, false), policy(Kind::Oneshot, RestartPolicy::OnFailure), false, 250_000, no_timer)
        .unwrap();
    assert_eq!((after, note.as_str()), (AfterRun::Decided, "done: exit status 0 after 250ms"));
    assert_eq!(life.state(), UnitState::Active);
    assert!(!life.is_live());
    assert_eq!(life.ready_after_us(), Some(250_000));
    // `start` leaves it be; `restart` runs it again.
    assert!(!life.start_requested(false, true, S));
    assert!(life.start_requested(true, true, S));
}

#[test]
fn stop_while_restarting_cancels_the_timer() {
    let (mut life, _) = starting(0);
    let (cancelled, make) = timers();
    life.run_ended(&exited(1, false), policy(Kind::LongRunning, RestartPolicy::OnFailure), false, S, &make);
    assert_eq!(life.state(), UnitState::Restarting);
    life.stop_requested(true, 2 * S);
    assert_eq!((life.state(), life.reason()), (UnitState::Inactive, "stopped"));
    assert_eq!(cancelled.get(), 1);
    assert!(life.restart_timer().is_none());
}

#[test]
fn restart_requested_while_running_stops_then_waits_again_with_a_fresh_start_limit() {
    let (mut life, line) = starting(0);
    life.mark_ready(1);
    assert!(!life.start_requested(true, true, S), "not idle: its run is stopped first");
    assert_eq!((life.state(), life.reason()), (UnitState::Stopping, "restarting"));
    assert_eq!(line.sent(), vec![true]);
    let stopped = Outcome { exit: Some(ExitStatus::Exited(0)), cause: Cause::Stopped, was_ready: true };
    let (after, _) =
        life.run_ended(&stopped, policy(Kind::LongRunning, RestartPolicy::Never), false, 2 * S, no_timer).unwrap();
    assert_eq!(after, AfterRun::Restart);
    assert_eq!(life.state(), UnitState::Waiting);
    assert_eq!(life.history.within(Duration::from_secs(60), 2 * S), 0, "fresh start limit");
}

#[test]
fn stop_then_start_while_stopping_restarts_but_plain_start_of_a_running_unit_does_nothing() {
    let (mut life, line) = starting(0);
    assert!(!life.start_requested(false, false, S));
    assert_eq!(life.state(), UnitState::Starting, "a plain start leaves a run alone");
    life.stop_requested(false, S);
    assert!(!life.start_requested(false, false, 2 * S));
    assert_eq!(life.run().map(|r| &r.then), Some(&Then::Restart));
    assert_eq!(life.reason(), "restarting");
    assert_eq!(line.sent(), vec![false]);
}

#[test]
fn shutdown_ends_a_run_inactive_whatever_was_planned() {
    let (mut life, _) = starting(0);
    life.stop_requested(false, 1);
    assert!(life.request_stop(true, "shutdown", 2));
    let (after, note) =
        life.run_ended(&exited(1, false), policy(Kind::LongRunning, RestartPolicy::Always), true, 3, no_timer).unwrap();
    assert_eq!((after, note.as_str()), (AfterRun::Shutdown, "stopped for shutdown: exit status 1 before it was ready"));
    assert_eq!((life.state(), life.reason()), (UnitState::Inactive, "stopped (shutdown)"));
}

#[test]
fn shutdown_keeps_waiting_and_restarting_units_from_starting() {
    let mut waiting = Life::new(0);
    waiting.shutdown_begun(1);
    assert_eq!((waiting.state(), waiting.reason()), (UnitState::Inactive, "not started: shutdown"));
    let (mut failed, _) = starting(0);
    failed.run_ended(&exited(1, false), policy(Kind::Oneshot, RestartPolicy::Never), false, 1, no_timer);
    failed.shutdown_begun(2);
    assert_eq!(failed.state(), UnitState::Failed);
    failed.stopped_for_shutdown(3);
    assert_eq!((failed.state(), failed.reason()), (UnitState::Inactive, "stopped (shutdown)"));
}

#[test]
fn a_left_out_unit_is_never_activated_nor_stopped() {
    let mut life = Life::left_out("not started: bad".into(), 0);
    assert_eq!((life.state(), life.left_out_reason()), (UnitState::Failed, Some("not started: bad")));
    assert!(!life.activate(1));
    life.stop_requested(true, 2);
    life.stopped_for_shutdown(3);
    assert_eq!((life.state(), life.reason(), life.since_us()), (UnitState::Failed, "not started: bad", 0));
}

#[test]
fn a_unit_removed_while_running_is_retired_when_its_run_ends_unless_it_came_back() {
    let (mut life, line) = starting(0);
    assert!(life.removed(Some("not started: broken".into()), 1));
    assert!(life.is_retiring());
    assert_eq!((life.state(), life.reason()), (UnitState::Stopping, "removed from the units"));
    assert_eq!(line.sent(), vec![true], "a removed unit's whole group goes");
    life.stop_requested(false, 2);
    assert!(life.is_retiring(), "a stop does not cancel the removal");
    let stopped = Outcome { exit: None, cause: Cause::Stopped, was_ready: false };
    let p = policy(Kind::LongRunning, RestartPolicy::Always);
    let (after, _) = life.run_ended(&stopped, p, false, 3, no_timer).unwrap();
    assert_eq!(after, AfterRun::Retire(Some("not started: broken".into())));
    assert_eq!(life.left_out_reason(), Some("not started: broken"));

    let (mut back, _) = starting(0);
    back.removed(None, 1);
    assert!(!back.kept(false, true, 2), "back in the plan while stopping");
    assert_eq!(back.run_ended(&stopped, p, false, 3, no_timer).map(|(a, _)| a), Some(AfterRun::Restart));
    assert_eq!(back.state(), UnitState::Waiting);
}

#[test]
fn a_changed_definition_restarts_a_run_and_activates_an_idle_unit_that_is_not_stopped() {
    let (mut life, line) = starting(0);
    assert!(!life.kept(true, false, 1));
    assert_eq!((life.state(), life.reason()), (UnitState::Stopping, "restarting with its new definition"));
    assert_eq!(line.sent(), vec![false]);
    let (mut unchanged, line) = starting(0);
    assert!(!unchanged.kept(false, false, 1));
    assert_eq!((unchanged.state(), line.sent()), (UnitState::Starting, vec![]));

    let mut failed = Life::new(0);
    failed.dependency_failed("db", 1);
    assert!(failed.kept(true, false, 2));
    let mut stopped = Life::new(0);
    stopped.stop_requested(false, 1);
    assert!(!stopped.kept(true, false, 2), "a stopped unit stays stopped");
}

#[test]
fn a_spawn_failure_counts_as_a_start_and_is_decided() {
    let mut life = Life::new(0);
    life.start_attempt(0);
    let (_, make) = timers();
    let notes = life.spawn_failed("x: not found".into(), policy(Kind::LongRunning, RestartPolicy::OnFailure), 1, &make);
    assert_eq!(
        notes,
        ["cannot start: x: not found".to_string(), "restart in 100ms after: cannot start: x: not found".into()]
    );
    assert_eq!((life.state(), life.restarts()), (UnitState::Restarting, 0));
}

#[test]
fn status_text_shows_while_there_is_no_reason_and_goes_when_the_run_does() {
    let (mut life, _) = starting(0);
    life.set_status_text("loading".into());
    assert_eq!(life.reason(), "loading");
    life.mark_ready(1);
    assert_eq!(life.reason(), "loading", "kept from starting to active");
    life.stop_requested(false, 2);
    assert_eq!(life.reason(), "stopping");
    assert!(life.status_text.is_empty(), "gone once it is no longer starting or active");
    life.set_status_text("bye".into());
    life.run_ended(&exited(0, true), policy(Kind::LongRunning, RestartPolicy::Never), false, 3, no_timer);
    life.activate(4);
    assert_eq!((life.state(), life.reason()), (UnitState::Waiting, ""));
}

#[test]
fn the_gate_sees_active_as_ready_and_left_out_as_failed() {
    let (mut life, _) = starting(0);
    assert_eq!(life.gate_state(), State::Pending);
    life.mark_ready(1);
    assert_eq!(life.gate_state(), State::Ready);
    assert_eq!(Life::left_out("x".into(), 0).gate_state(), State::Failed);
    let mut skipped = Life::new(0);
    skipped.skip("no /x".into(), 1);
    assert_eq!((skipped.gate_state(), skipped.settled()), (State::Skipped, true));
}

#[test]
fn the_first_starts_timeline_is_kept_across_runs() {
    let mut life = Life::new(0);
    life.gate_opened(true, 5);
    life.gate_opened(true, 50);
    life.start_attempt(6);
    life.started(1, Line::default(), 1, 6, 6);
    life.mark_ready(8);
    life.main_exited(Some(ExitStatus::Exited(1)), 9);
    life.run_ended(&exited(1, true), policy(Kind::LongRunning, RestartPolicy::Never), false, 9, no_timer);
    life.activate(10);
    life.start_attempt(20);
    life.started(2, Line::default(), 2, 20, 20);
    life.mark_ready(30);
    let first = FirstStart { waited_from_us: Some(5), started_us: Some(6), ready_us: Some(8) };
    assert_eq!(life.first_start(), first);
    assert_eq!(life.ready_after_us(), Some(10), "ready_after is the last run's");
    let mut no_wait = Life::new(0);
    no_wait.gate_opened(false, 5);
    assert_eq!(no_wait.first_start().waited_from_us, None);
}

#[test]
fn a_program_that_put_itself_in_the_background_fails_whatever_the_policy() {
    let left = "it left 1 process running (pid 9: food)".to_owned();
    let outcome =
        |was_ready| Outcome { exit: Some(ExitStatus::Exited(0)), cause: Cause::Daemonized(left.clone()), was_ready };
    let why = "exit status 0, but it left 1 process running (pid 9: food)".to_owned();
    for kind in [Kind::LongRunning, Kind::Oneshot] {
        for p in [RestartPolicy::Always, RestartPolicy::OnFailure, RestartPolicy::Never] {
            for was_ready in [true, false] {
                let d = decide(kind, &restart(p), &outcome(was_ready), &StartHistory::default(), S);
                assert_eq!(d, Decision::Failed(why.clone()), "{kind:?} {p:?} ready {was_ready}");
            }
        }
    }
}

#[test]
fn a_degraded_run_keeps_running_is_settled_holds_its_dependents_and_recovers() {
    let (mut life, _line) = starting(0);
    assert!(life.degrade("not ready within start_timeout 1m".into(), S));
    assert_eq!((life.state(), life.reason()), (UnitState::Degraded, "not ready within start_timeout 1m"));
    assert_eq!((life.pid(), life.since_us()), (Some(42), S));
    assert!(life.settled(), "nothing is under way");
    assert_eq!(life.gate_state(), State::Pending, "what requires it waits");
    assert!(!life.recovered(2 * S), "never ready: only READY=1 makes it active");
    // Ready late: active, no longer degraded.
    assert!(life.mark_ready(3 * S).is_some());
    assert_eq!((life.state(), life.reason()), (UnitState::Active, ""));
    // Failing health checks, then a passing one.
    assert!(life.degrade("health check failed 3 times in a row".into(), 4 * S));
    assert_eq!(life.state(), UnitState::Degraded);
    assert!(life.recovered(5 * S));
    assert_eq!((life.state(), life.reason(), life.since_us()), (UnitState::Active, "", 5 * S));
    assert!(!life.recovered(6 * S), "it was not degraded");
    // Stopping: degrading no longer applies.
    life.stop_requested(true, 7 * S);
    assert!(!life.degrade("late".into(), 8 * S));
    assert_eq!(life.state(), UnitState::Stopping);
}

/// A stop line that records whether each request was for good.
#[derive(Clone, Default)]
struct FinalLine(Rc<RefCell<Vec<(bool, bool)>>>);

impl StopSink for FinalLine {
    fn request_stop(&self, whole_group: bool) {
        self.0.borrow_mut().push((whole_group, false));
    }
    fn request_final_stop(&self, whole_group: bool) {
        self.0.borrow_mut().push((whole_group, true));
    }
}

#[test]
fn a_stop_for_good_asks_for_exec_stop_and_a_restart_does_not() {
    let for_good = |act: &dyn Fn(&mut Lifecycle<FinalLine, Timer>)| {
        let mut life: Lifecycle<FinalLine, Timer> = Lifecycle::new(0);
        let line = FinalLine::default();
        life.started(1, line.clone(), 42, 0, 0);
        act(&mut life);
        let sent = line.0.borrow().clone();
        sent
    };
    assert_eq!(for_good(&|l| l.stop_requested(false, S)), [(false, true)]);
    assert_eq!(for_good(&|l| assert!(l.request_stop(true, "shutdown", S))), [(true, true)]);
    assert_eq!(for_good(&|l| assert!(l.removed(None, S))), [(true, true)]);
    assert_eq!(for_good(&|l| assert!(!l.start_requested(true, false, S))), [(false, false)]);
    assert_eq!(for_good(&|l| assert!(!l.kept(true, true, S))), [(true, false)]);
}
