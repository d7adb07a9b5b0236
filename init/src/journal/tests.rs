//! The journal end to end on the host: real pipes, real children, real
//! files in a temp dir, the writer and capture threads running.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::testutil::TempDir;
use super::*;
use crate::reaper::tests::pump_until;
use crate::reaper::{ExitStatus, Reaper};

const T: Duration = Duration::from_secs(20);

fn started(limits: LogLimits, dir: &TempDir) -> Journal {
    let j = Journal::start(limits).unwrap();
    j.attach(dir.path(), T).unwrap();
    j
}

fn small(max_file_bytes: u64, rotated_files: u32) -> LogLimits {
    LogLimits { max_file_bytes, rotated_files, ..LogLimits::default() }
}

/// Runs `script` with its stdout and stderr captured as `unit`; returns
/// how long it took until the child had exited and both streams ended.
fn run_captured(j: &Journal, unit: &str, script: &str) -> Duration {
    let (out_w, out_closed) = j.pipe(unit, Stream::Stdout).unwrap();
    let (err_w, err_closed) = j.pipe(unit, Stream::Stderr).unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
    let start = Instant::now();
    // Through the reaper: other tests in this process reap with waitpid(-1).
    let (_pid, mut status) = Reaper::global().spawn_async(&mut cmd).unwrap();
    // The parent's copies of the write ends go with the Command.
    drop(cmd);
    let mut exit = None;
    pump_until(|| {
        if exit.is_none() {
            exit = status.try_recv().ok();
        }
        exit.is_some() && out_closed.is_closed() && err_closed.is_closed()
    });
    assert_eq!(exit, Some(ExitStatus::Exited(0)));
    start.elapsed()
}

fn texts(records: &[Record], stream: Stream) -> Vec<String> {
    records.iter().filter(|r| r.stream == stream).map(|r| r.text.clone()).collect()
}

fn file_lines(dir: &TempDir, unit: &str, index: u32) -> Vec<String> {
    fs::read_to_string(log_path(dir.path(), unit, index)).unwrap().lines().map(String::from).collect()
}

#[test]
fn journal_captures_a_real_child_each_stream_in_order() {
    let dir = TempDir::new("child");
    let j = started(LogLimits::default(), &dir);
    run_captured(
        &j,
        "svc",
        "echo out; echo err >&2; for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf partial",
    );
    assert!(j.flush(T));
    let records = tail(dir.path(), "svc", 100).unwrap();
    assert_eq!(texts(&records, Stream::Stdout), ["out", "out1", "out2", "out3", "partial"]);
    assert_eq!(texts(&records, Stream::Stderr), ["err", "err1", "err2", "err3"]);
    for stream in [Stream::Stdout, Stream::Stderr] {
        let times: Vec<Timestamp> = records.iter().filter(|r| r.stream == stream).map(|r| r.time).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }
    // The file itself: one record per line, as documented.
    let lines = file_lines(&dir, "svc", 0);
    assert_eq!(lines.len(), 9);
    let first = lines.iter().find(|l| l.ends_with(" stdout out")).unwrap();
    assert_eq!(first.len(), "2026-11-28T23:59:59.123456Z stdout out".len(), "{first}");
    assert!(lines.iter().any(|l| l.ends_with("Z stderr err2")), "{lines:?}");
    assert_eq!(j.stats(), Stats { written: 9, dropped: 0 });
    assert_eq!(units(dir.path()).unwrap(), ["svc"]);
}

#[test]
fn journal_rotation_keeps_n_files_and_drops_the_oldest() {
    let dir = TempDir::new("rotate");
    // Stale files from a larger limit are cleaned up at the next rotation.
    fs::write(log_path(dir.path(), "svc", 3), "stale\n").unwrap();
    fs::write(log_path(dir.path(), "svc", 4), "stale\n").unwrap();
    let j = started(small(1000, 2), &dir);
    for i in 0..200 {
        j.record("svc", Stream::Stdout, &format!("line {i:03}")).unwrap();
    }
    assert!(j.flush(T));
    let mut kept = Vec::new();
    for index in [2, 1, 0] {
        let path = log_path(dir.path(), "svc", index);
        let len = fs::metadata(&path).unwrap().len();
        assert!(len > 0 && len <= 1000, "{} has {len} bytes", path.display());
        kept.extend(file_lines(&dir, "svc", index).iter().map(|l| Record::parse(l).unwrap().text));
    }
    for index in [3, 4] {
        assert!(!log_path(dir.path(), "svc", index).exists(), "no .{index}");
    }
    // Contiguous, newest last, the oldest gone.
    let first: usize = kept[0].trim_start_matches("line ").parse().unwrap();
    assert!(first > 0);
    let expected: Vec<String> = (first..200).map(|i| format!("line {i:03}")).collect();
    assert_eq!(kept, expected);
    assert!(kept.len() > 44, "three files of about 22 records");

    // tail across the rotated files, in order.
    let all = tail(dir.path(), "svc", 1000).unwrap();
    assert_eq!(all.iter().map(|r| r.text.clone()).collect::<Vec<_>>(), expected);
    let last30 = tail(dir.path(), "svc", 30).unwrap();
    assert_eq!(last30.iter().map(|r| r.text.clone()).collect::<Vec<_>>(), expected[expected.len() - 30..]);
    assert!(file_lines(&dir, "svc", 0).len() < 30, "the 30 span files");
    assert_eq!(tail(dir.path(), "svc", 0).unwrap(), []);
    assert_eq!(tail(dir.path(), "nothing", 5).unwrap(), []);
    assert_eq!(tail(dir.path(), "../etc", 5).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(j.stats(), Stats { written: 200, dropped: 0 });
}

#[test]
fn journal_tail_ignores_a_line_being_written_and_foreign_lines() {
    let dir = TempDir::new("partial");
    fs::write(
        log_path(dir.path(), "svc", 1),
        "1970-01-01T00:00:00.000001Z stdout one\nnot a record\n1970-01-01T00:00:00.000002Z stderr two\n",
    )
    .unwrap();
    fs::write(log_path(dir.path(), "svc", 0), "1970-01-01T00:00:00.000003Z stdout three\n1970-01-01T00:00:0").unwrap();
    let got: Vec<String> = tail(dir.path(), "svc", 10).unwrap().iter().map(|r| r.text.clone()).collect();
    assert_eq!(got, ["one", "two", "three"]);
    let got: Vec<String> = tail(dir.path(), "svc", 2).unwrap().iter().map(|r| r.text.clone()).collect();
    assert_eq!(got, ["two", "three"]);
    // A writer that reopens the torn file starts on a new line.
    let j = started(LogLimits::default(), &dir);
    j.record("svc", Stream::Stdout, "four").unwrap();
    assert!(j.flush(T));
    let got: Vec<String> = tail(dir.path(), "svc", 10).unwrap().iter().map(|r| r.text.clone()).collect();
    assert_eq!(got, ["one", "two", "three", "four"]);
}

#[test]
fn journal_long_lines_are_split_across_chunks_of_the_reader() {
    // Records longer than the reader's 64 KiB chunk and a bound of 100 KiB.
    let dir = TempDir::new("long");
    let j = started(LogLimits { max_line_bytes: 100 * 1024, ..LogLimits::default() }, &dir);
    let long = "y".repeat(150 * 1024);
    j.record("svc", Stream::Stdout, &format!("a\n{long}\nb")).unwrap();
    assert!(j.flush(T));
    let got = tail(dir.path(), "svc", 10).unwrap();
    let lens: Vec<(usize, bool)> = got.iter().map(|r| (r.text.len(), r.continued)).collect();
    assert_eq!(lens, [(1, false), (100 * 1024, true), (50 * 1024, false), (1, false)]);
    // The last line's pieces are its: one line back is both of them.
    let got = tail(dir.path(), "svc", 2).unwrap();
    assert_eq!(got.iter().map(|r| r.text.len()).collect::<Vec<_>>(), [100 * 1024, 50 * 1024, 1]);
    assert_eq!(join(got, MAX_JOINED_BYTES).iter().map(|r| r.text.len()).collect::<Vec<_>>(), [150 * 1024, 1]);
}

#[test]
fn journal_init_messages_go_to_berth_log() {
    let dir = TempDir::new("init");
    let j = started(LogLimits::default(), &dir);
    j.init_line("data: mounted /dev/vda4");
    j.init_line("two\nlines");
    assert!(j.flush(T));
    let got = tail(dir.path(), INIT_UNIT, 10).unwrap();
    assert!(got.iter().all(|r| r.stream == Stream::Init));
    assert_eq!(got.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["data: mounted /dev/vda4", "two", "lines"]);
    assert!(log_path(dir.path(), "berth", 0).exists());
    // The name is taken: no service can write into PID1's log.
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    assert_eq!(j.capture(INIT_UNIT, Stream::Stdout, r).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    assert!(j.record("a/b", Stream::Init, "x").is_err());
}

#[test]
fn journal_records_before_var_is_mounted_are_kept_and_written_on_attach() {
    let dir = TempDir::new("early");
    let j = Journal::start(LogLimits { backlog_bytes: 20 * 50, ..LogLimits::default() }).unwrap();
    for i in 0..40 {
        j.record("svc", Stream::Stdout, &format!("early {i:02}")).unwrap();
    }
    j.init_line("before /var");
    assert!(j.flush(T));
    assert!(!log_path(dir.path(), "svc", 0).exists());
    j.attach(dir.path(), T).unwrap();
    let got = tail(dir.path(), "svc", 100).unwrap();
    // Lines are 27 + 8 + 9 = 44 bytes: 22 fit, the 18 oldest were dropped.
    assert_eq!(got[0].stream, Stream::Init);
    assert_eq!(got[0].text, format!("{DROPPED_PREFIX}18 lines"));
    let kept: Vec<String> = got[1..].iter().map(|r| r.text.clone()).collect();
    assert_eq!(kept, (18..40).map(|i| format!("early {i:02}")).collect::<Vec<_>>());
    assert_eq!(tail(dir.path(), INIT_UNIT, 1).unwrap()[0].text, "before /var");
    assert_eq!(j.stats(), Stats { written: 23, dropped: 18 });

    // Detached again (shutdown unmounts /var): kept, then written.
    assert!(j.detach(T));
    j.record("svc", Stream::Stdout, "while detached").unwrap();
    assert!(j.flush(T));
    assert_eq!(tail(dir.path(), "svc", 1).unwrap()[0].text, "early 39");
    j.attach(dir.path(), T).unwrap();
    assert_eq!(tail(dir.path(), "svc", 1).unwrap()[0].text, "while detached");
}

#[test]
fn journal_a_failing_log_file_drops_and_counts_then_recovers() {
    let dir = TempDir::new("fail");
    // A FIFO in the file's place: opening it must fail, not hang (and a
    // disk that refuses writes takes the same path).
    let path = log_path(dir.path(), "svc", 0);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let j = started(LogLimits::default(), &dir);
    for i in 0..5 {
        j.record("svc", Stream::Stdout, &format!("lost {i}")).unwrap();
    }
    assert!(j.flush(T));
    assert_eq!(j.stats(), Stats { written: 0, dropped: 5 });
    fs::remove_file(&path).unwrap();
    // Retried at most once a second.
    std::thread::sleep(Duration::from_millis(1100));
    j.record("svc", Stream::Stdout, "after").unwrap();
    assert!(j.flush(T));
    let got = tail(dir.path(), "svc", 10).unwrap();
    assert_eq!(got.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), [&format!("{DROPPED_PREFIX}5 lines"), "after"]);
    assert_eq!(j.stats(), Stats { written: 1, dropped: 5 });
}

fn numbers(records: &[Record]) -> Vec<usize> {
    records.iter().map(|r| r.text.trim_start_matches("line ").parse().unwrap()).collect()
}

#[test]
fn journal_follow_sees_new_lines_and_survives_rotations() {
    let dir = TempDir::new("follow");
    let j = started(small(1000, 3), &dir);
    let emit = |range: std::ops::Range<usize>| {
        for i in range {
            j.record("svc", Stream::Stdout, &format!("line {i:03}")).unwrap();
        }
        assert!(j.flush(T));
    };
    emit(0..5);
    let (backlog, mut f) = follow(dir.path(), "svc", 2).unwrap();
    assert_eq!(numbers(&backlog), [3, 4]);
    assert_eq!(f.poll().unwrap(), []);
    emit(5..10);
    assert_eq!(numbers(&f.wait(T).unwrap()), (5..10).collect::<Vec<_>>());
    // Two and a half files' worth between two looks: two rotations.
    emit(10..60);
    assert!(log_path(dir.path(), "svc", 2).exists(), "rotated twice");
    assert_eq!(numbers(&f.poll().unwrap()), (10..60).collect::<Vec<_>>());
    emit(60..70);
    assert_eq!(numbers(&f.poll().unwrap()), (60..70).collect::<Vec<_>>());
    // Truncated in place (an operator's `> file`): read from the start.
    fs::OpenOptions::new().write(true).open(log_path(dir.path(), "svc", 0)).unwrap().set_len(0).unwrap();
    j.detach(T);
    j.attach(dir.path(), T).unwrap();
    emit(70..72);
    assert_eq!(numbers(&f.wait(T).unwrap()), [70, 71]);
}

#[test]
fn journal_follow_a_unit_before_its_first_line() {
    let dir = TempDir::new("follow-new");
    let (backlog, mut f) = follow(dir.path(), "svc", 10).unwrap();
    assert!(backlog.is_empty());
    assert_eq!(f.poll().unwrap(), []);
    let j = started(small(1000, 1), &dir);
    j.record("svc", Stream::Stderr, "line 000").unwrap();
    assert!(j.flush(T));
    let got = f.wait(T).unwrap();
    assert_eq!((numbers(&got), got[0].stream), (vec![0], Stream::Stderr));
    // Between a rotation and the next record there is no current file:
    // rotate by hand, as the writer does.
    for i in 1..30 {
        j.record("svc", Stream::Stdout, &format!("line {i:03}")).unwrap();
    }
    assert!(j.flush(T));
    assert!(log_path(dir.path(), "svc", 1).exists(), "rotated once by the writer");
    fs::rename(log_path(dir.path(), "svc", 0), log_path(dir.path(), "svc", 1)).unwrap();
    assert_eq!(numbers(&f.poll().unwrap()), (1..30).collect::<Vec<_>>());
    assert_eq!(f.poll().unwrap(), []);
    j.detach(T);
    j.attach(dir.path(), T).unwrap();
    j.record("svc", Stream::Stdout, "line 030").unwrap();
    assert!(j.flush(T));
    assert_eq!(numbers(&f.wait(T).unwrap()), [30]);
}

/// 50,000 lines of 100 bytes, then END.
const FIVE_MB: &str =
    "yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 \
                       | cut -c1-99 | head -c 5000000; echo END";
const FIVE_MB_LINES: u64 = 50_001;

#[test]
fn journal_a_child_writing_5mb_finishes_while_its_log_rotates() {
    let dir = TempDir::new("5mb");
    let max = 256 * 1024;
    let j = started(small(max, 2), &dir);
    let took = run_captured(&j, "big", FIVE_MB);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(j.flush(T));
    for index in 0..=2 {
        let len = fs::metadata(log_path(dir.path(), "big", index)).unwrap().len();
        assert!(len <= max, ".{index}: {len}");
        // Records are 135 bytes: a rotated file is full to the last one.
        assert!(index == 0 || len > max - 135, ".{index}: {len}");
    }
    assert!(!log_path(dir.path(), "big", 3).exists());
    let stats = j.stats();
    assert_eq!(stats.written + stats.dropped, FIVE_MB_LINES, "{stats:?}");
    let last = tail(dir.path(), "big", 1).unwrap();
    if stats.dropped == 0 {
        assert_eq!(last[0].text, "END");
    } else {
        assert!(last[0].text == "END" || last[0].text.starts_with(DROPPED_PREFIX), "{last:?}");
    }
    let all = tail(dir.path(), "big", 100_000).unwrap();
    assert!(all.len() > 2 * (max as usize / 135), "the files' records: {}", all.len());
    assert!(all.iter().all(|r| r.stream == Stream::Init || r.text.len() == 99 || r.text == "END"));
}

#[test]
fn journal_a_stuck_writer_never_blocks_the_service() {
    let dir = TempDir::new("stuck");
    let j = started(LogLimits { queue_bytes: 64 * 1024, ..small(256 * 1024, 2) }, &dir);
    // The writer hangs, as on a disk that does not answer.
    let release = j.pause_writer();
    let took = run_captured(&j, "big", FIVE_MB);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let stats = j.stats();
    assert!(stats.dropped > 40_000, "{stats:?}");
    drop(release);
    assert!(j.flush(T));
    let stats = j.stats();
    assert_eq!(stats.written + stats.dropped, FIVE_MB_LINES, "{stats:?}");
    // The loss is reported in the unit's log, where it happened.
    let all = tail(dir.path(), "big", 100_000).unwrap();
    let markers: Vec<&Record> = all.iter().filter(|r| r.stream == Stream::Init).collect();
    assert!(!markers.is_empty(), "{stats:?} {} records, first {:?} last {:?}", all.len(), all.first(), all.last());
    assert!(markers.iter().all(|r| r.text.starts_with(DROPPED_PREFIX)), "{markers:?}");
}

/// Starts `script` with its stdout captured as `unit` and returns at once:
/// the exit status comes on the receiver, the end of the stream on Closed.
fn start_captured(j: &Journal, unit: &str, script: &str) -> (tokio::sync::oneshot::Receiver<ExitStatus>, Closed) {
    let (out_w, out_closed) = j.pipe(unit, Stream::Stdout).unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::from(out_w)).stderr(Stdio::null());
    let (_pid, status) = Reaper::global().spawn_async(&mut cmd).unwrap();
    drop(cmd);
    (status, out_closed)
}

/// Tells the child started by [`start_captured`] to go on (creates `go`)
/// and waits until it exited 0, its stream ended and all is written.
fn let_it_end(
    j: &Journal,
    go: &std::path::Path,
    mut status: tokio::sync::oneshot::Receiver<ExitStatus>,
    closed: &Closed,
) {
    fs::write(go, "").unwrap();
    let mut exit = None;
    pump_until(|| {
        if exit.is_none() {
            exit = status.try_recv().ok();
        }
        exit.is_some() && closed.is_closed()
    });
    assert_eq!(exit, Some(ExitStatus::Exited(0)));
    assert!(j.flush(T));
}

/// Polls `tail` until a record holds `needle`; how long that took, or
/// None after `limit`.
fn time_until_logged(dir: &TempDir, unit: &str, needle: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if tail(dir.path(), unit, 100).unwrap().iter().any(|r| r.text.contains(needle)) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn journal_a_partial_line_shows_within_a_second_and_joins_its_end_later() {
    let dir = TempDir::new("partial-live");
    let j = started(LogLimits::default(), &dir);
    let go = dir.path().join("go");
    // The writer keeps the pipe open (it is still running) and says the
    // rest of its line only when told.
    let script = format!("printf LAST-WORDS; while [ ! -e '{}' ]; do sleep 0.05; done; echo ' and more'", go.display());
    let (status, closed) = start_captured(&j, "svc", &script);
    let took = time_until_logged(&dir, "svc", "LAST-WORDS", Duration::from_secs(3));
    assert!(took.is_some_and(|t| t < Duration::from_millis(1500)), "LAST-WORDS logged after {took:?}");
    assert!(!closed.is_closed(), "the writer still holds its pipe");
    let_it_end(&j, &go, status, &closed);
    // The piece shown early and its end are one line, not two.
    let got = join(tail(dir.path(), "svc", 10).unwrap(), MAX_JOINED_BYTES);
    assert_eq!(
        got.iter().map(|r| (r.text.as_str(), r.continued)).collect::<Vec<_>>(),
        [("LAST-WORDS and more", false)]
    );
}

#[test]
fn journal_a_100000_byte_line_reads_back_whole_and_the_last_words_show() {
    let dir = TempDir::new("long-live");
    let j = started(LogLimits::default(), &dir);
    let go = dir.path().join("go");
    // 100,000 bytes, newline, then LAST-WORDS without one; the service
    // keeps running (and its pipe open) until told.
    let script = format!(
        "printf START-; head -c 99990 /dev/zero | tr '\\0' x; printf -- '-END\\nLAST-WORDS'; \
         while [ ! -e '{}' ]; do sleep 0.05; done",
        go.display()
    );
    let (status, closed) = start_captured(&j, "svc", &script);
    let took = time_until_logged(&dir, "svc", "LAST-WORDS", Duration::from_secs(3));
    assert!(took.is_some_and(|t| t < Duration::from_millis(1500)), "LAST-WORDS logged after {took:?}");
    // Pieces of at most the bound in the file, one line for a reader.
    let records = tail(dir.path(), "svc", 2).unwrap();
    assert!(records.len() > 2 && records.iter().all(|r| r.text.len() <= 16 * 1024), "{}", records.len());
    let lines = join(records, MAX_JOINED_BYTES);
    let got: Vec<(usize, bool)> = lines.iter().map(|r| (r.text.len(), r.continued)).collect();
    assert_eq!(got, [(100_000, false), (10, true)]);
    assert!(lines[0].text.starts_with("START-x") && lines[0].text.ends_with("x-END"));
    assert_eq!(lines[1].text, "LAST-WORDS");
    // Only the last line: still the whole of it.
    assert_eq!(join(tail(dir.path(), "svc", 1).unwrap(), MAX_JOINED_BYTES).len(), 1);
    let_it_end(&j, &go, status, &closed);
    // The stream ended: the last line is ended, with nothing repeated.
    let lines = join(tail(dir.path(), "svc", 10).unwrap(), MAX_JOINED_BYTES);
    let got: Vec<(usize, bool)> = lines.iter().map(|r| (r.text.len(), r.continued)).collect();
    assert_eq!(got, [(100_000, false), (10, false)]);
}

fn piece_lines(records: &[(Stream, &str, bool)]) -> String {
    let mut out = String::new();
    for (i, (stream, text, continued)) in records.iter().enumerate() {
        let r =
            Record { time: Timestamp(1 + i as i64), stream: *stream, text: text.to_string(), continued: *continued };
        out.push_str(&r.to_line());
        out.push('\n');
    }
    out
}

#[test]
fn journal_tail_counts_lines_not_pieces_across_files_and_streams() {
    use Stream::{Init, Stderr, Stdout};
    let dir = TempDir::new("tail-lines");
    let marker = format!("{DROPPED_PREFIX}2 lines");
    // The start of a long line in the rotated file, its end in the current.
    fs::write(
        log_path(dir.path(), "svc", 1),
        piece_lines(&[(Stdout, "old", false), (Stdout, "a", true), (Stderr, "e1", false), (Stdout, "b", true)]),
    )
    .unwrap();
    fs::write(
        log_path(dir.path(), "svc", 0),
        piece_lines(&[(Stderr, "e2", false), (Stdout, "c", false), (Stdout, "open", true)]),
    )
    .unwrap();
    let texts = |n| tail(dir.path(), "svc", n).unwrap().into_iter().map(|r| r.text).collect::<Vec<_>>();
    assert_eq!(texts(1), ["open"]);
    assert_eq!(texts(2), ["a", "b", "c", "open"]);
    assert_eq!(texts(3), ["a", "b", "e2", "c", "open"]);
    assert_eq!(texts(4), ["a", "e1", "b", "e2", "c", "open"]);
    assert_eq!(texts(5), ["old", "a", "e1", "b", "e2", "c", "open"]);
    let joined = join(tail(dir.path(), "svc", 3).unwrap(), MAX_JOINED_BYTES);
    assert_eq!(
        joined.iter().map(|r| r.to_line()).collect::<Vec<_>>(),
        [
            "1970-01-01T00:00:00.000001Z stderr e2",
            "1970-01-01T00:00:00.000002Z stdout abc",
            "1970-01-01T00:00:00.000003Z stdout+ open",
        ]
    );
    // A loss report ends the search for older pieces: they are not joined
    // across it.
    fs::write(
        log_path(dir.path(), "svc", 0),
        piece_lines(&[(Stdout, "x", true), (Init, &marker, false), (Stdout, "y", false)]),
    )
    .unwrap();
    fs::remove_file(log_path(dir.path(), "svc", 1)).unwrap();
    assert_eq!(texts(1), ["y"]);
    assert_eq!(texts(2), [marker.as_str(), "y"]);
    assert_eq!(texts(3), ["x", marker.as_str(), "y"]);
}

#[test]
fn journal_follow_yields_pieces_that_join_into_the_line() {
    let dir = TempDir::new("follow-pieces");
    let j = started(LogLimits { max_line_bytes: 1000, ..LogLimits::default() }, &dir);
    j.record("svc", Stream::Stdout, "before").unwrap();
    assert!(j.flush(T));
    let (backlog, mut f) = follow(dir.path(), "svc", 1).unwrap();
    assert_eq!(backlog.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["before"]);
    let long = "z".repeat(2500);
    j.record("svc", Stream::Stdout, &long).unwrap();
    assert!(j.flush(T));
    let got = f.wait(T).unwrap();
    assert_eq!(
        got.iter().map(|r| (r.text.len(), r.continued)).collect::<Vec<_>>(),
        [(1000, true), (1000, true), (500, false)]
    );
    assert_eq!(join(got, MAX_JOINED_BYTES).iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), [long.as_str()]);
}
