//! One log record, its text form, the clock it carries and how raw output is
//! cut into records. Pure: no I/O.
//!
//! A record is one line:
//!
//! ```text
//! 2026-11-28T23:59:59.123456Z stdout hello world
//! ```
//!
//! UTC in RFC 3339 with microseconds, one space, the stream name, one space,
//! the text (possibly empty). The text never holds a newline; everything else
//! the service wrote is kept, invalid UTF-8 as U+FFFD.
//!
//! A line the service has not ended yet is written in pieces, each marked
//! by a `+` right after the stream name: the line goes on in the next
//! record of the same stream, and the first record of that stream without
//! the mark ends it (its text may be empty).
//!
//! ```text
//! 2026-11-28T23:59:59.100000Z stdout+ first 16 KiB of a long line
//! 2026-11-28T23:59:59.100000Z stderr a line of the other stream
//! 2026-11-28T23:59:59.100000Z stdout+ the next 16 KiB
//! 2026-11-28T23:59:59.100000Z stdout its end
//! 2026-11-28T23:59:59.600000Z stdout+ a prompt, no newline yet
//! ```
//!
//! A piece is written when a line outgrows the bound of a record
//! ([`super::LogLimits::max_line_bytes`]) and when the start of a line has
//! waited for its newline about half a second ([`PARTIAL_AFTER`]), so
//! what a service said shows at once and is never repeated: the end,
//! when it comes, is joined to it ([`super::Joiner`]). A record without the
//! mark is a whole line, as every record of files written before the mark
//! existed is.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the start of a line waits for its newline before it is
/// written as a piece (marked as continued).
pub const PARTIAL_AFTER: Duration = Duration::from_millis(500);

/// The mark after the stream name of a piece: the line goes on.
const CONTINUED_MARK: char = '+';

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Which output a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Written by PID1 itself: its own messages in `berth.log`, and notes
    /// about a unit (lines dropped, ...) in the unit's log.
    Init,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Init => "init",
        }
    }

    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            "init" => Some(Stream::Init),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wall-clock time in microseconds since the Unix epoch, UTC, from the
/// epoch to the end of year 9999 (what RFC 3339 text with a four-digit year
/// holds); times outside are clamped to that range: a clock before 1970 is
/// an unset one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// 9999-12-31T23:59:59.999999Z.
const MAX_MICROS: i64 = 253_402_300_800 * MICROS_PER_SECOND - 1;

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    /// Clamped to the range of [`Timestamp`].
    pub fn from_system(t: SystemTime) -> Timestamp {
        let micros = t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Timestamp(micros.min(MAX_MICROS))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    fn system_time(self) -> SystemTime {
        let micros = u64::try_from(self.0.clamp(0, MAX_MICROS)).unwrap_or(0);
        UNIX_EPOCH + Duration::from_micros(micros)
    }

    /// Parses exactly what [`fmt::Display`] writes,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (RFC 3339, UTC, microseconds); `None`
    /// for anything else, a leap second or a day that does not exist
    /// included.
    pub fn parse(s: &str) -> Option<Timestamp> {
        // The text form has one spelling: the calendar is humantime's, the
        // shape (six fraction digits, `Z`) is checked by writing it back.
        if s.len() != 27 {
            return None;
        }
        let t = Timestamp::from_system(humantime::parse_rfc3339(s).ok()?);
        (t.to_string() == s).then_some(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In range by construction of system_time(): humantime's formatter
        // panics before the epoch and fails after year 9999.
        write!(f, "{}", humantime::format_rfc3339_micros(self.system_time()))
    }
}

/// One line of a service's output, or one message of PID1; or a piece of
/// one (`continued`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: Timestamp,
    pub stream: Stream,
    pub text: String,
    /// The line goes on in the next record of the same stream: this is a
    /// piece of it (written `stdout+`).
    pub continued: bool,
}

impl Record {
    /// A whole line.
    pub fn new(time: Timestamp, stream: Stream, text: impl Into<String>) -> Record {
        Record { time, stream, text: text.into(), continued: false }
    }

    /// A piece of a line that goes on in the next record of `stream`.
    pub fn piece(time: Timestamp, stream: Stream, text: impl Into<String>) -> Record {
        Record { time, stream, text: text.into(), continued: true }
    }

    /// The stream's name and the mark of a piece: `stdout`, `stdout+`.
    fn stream_field(&self) -> impl fmt::Display {
        struct Field(Stream, bool);
        impl fmt::Display for Field {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())?;
                if self.1 {
                    write!(f, "{CONTINUED_MARK}")?;
                }
                Ok(())
            }
        }
        Field(self.stream, self.continued)
    }

    /// Appends the record's line, with its newline, to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{} {} ", self.time, self.stream_field());
        out.extend_from_slice(self.text.as_bytes());
        out.push(b'\n');
    }

    /// The record's line without its newline.
    pub fn to_line(&self) -> String {
        self.to_string()
    }

    /// Parses one line (with or without its newline). None for a line that
    /// is not a record (a torn write after a crash, a foreign file).
    pub fn parse(line: &str) -> Option<Record> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (time, rest) = line.split_once(' ')?;
        // An empty text leaves a trailing space; accept it trimmed as well.
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let (stream, continued) = match stream.strip_suffix(CONTINUED_MARK) {
            Some(s) => (s, true),
            None => (stream, false),
        };
        Some(Record {
            time: Timestamp::parse(time)?,
            stream: Stream::parse(stream)?,
            text: text.to_string(),
            continued,
        })
    }

    /// Parses a line as bytes, replacing invalid UTF-8.
    pub fn parse_bytes(line: &[u8]) -> Option<Record> {
        Record::parse(&String::from_utf8_lossy(line))
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.time, self.stream_field(), self.text)
    }
}

/// Cuts a byte stream into lines of at most `max` bytes.
///
/// A line longer than `max` is split into pieces, cut before a UTF-8
/// character rather than through it, each but the last marked as continued;
/// the newline itself is not part of the text. Bytes after the last newline
/// wait for more input, [`flush_partial`] (a piece, when they waited long
/// enough) or [`finish`] (the end of the stream).
///
/// [`flush_partial`]: LineSplitter::flush_partial
/// [`finish`]: LineSplitter::finish
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// A piece of the current line was emitted: its end is still owed,
    /// even an empty one.
    open: bool,
}

impl LineSplitter {
    /// The smallest bound that still holds any UTF-8 character.
    pub const MIN: usize = 4;

    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max: max.max(Self::MIN), open: false }
    }

    /// Feeds bytes; calls `emit` with each complete line or piece, and
    /// whether it is a piece (the line goes on).
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(String, bool)) {
        let mut rest = data;
        loop {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, after) = rest.split_at_checked(i).unwrap_or((rest, &[]));
                    self.push(line, &mut emit);
                    self.open = false;
                    emit(to_text(std::mem::take(&mut self.buf)), false);
                    rest = after.get(1..).unwrap_or_default();
                }
                None => {
                    self.push(rest, &mut emit);
                    return;
                }
            }
        }
    }

    /// The bytes waiting for their newline, as a piece of their line (the
    /// line goes on), up to the last whole character; None when there is
    /// nothing whole to give.
    pub fn flush_partial(&mut self) -> Option<String> {
        let end = whole_chars_end(&self.buf);
        if end == 0 {
            return None;
        }
        let rest = self.buf.split_off(end);
        self.open = true;
        Some(to_text(std::mem::replace(&mut self.buf, rest)))
    }

    /// The end of the last line when the stream ended without its
    /// newline: the bytes left, or an empty end for a line whose pieces
    /// were given already; None when the last line was ended.
    pub fn finish(&mut self) -> Option<String> {
        let open = std::mem::take(&mut self.open);
        if self.buf.is_empty() && !open {
            None
        } else {
            Some(to_text(std::mem::take(&mut self.buf)))
        }
    }

    /// Bytes waiting for their newline.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Appends a newline-free piece, emitting full-size pieces; leaves at
    /// most `max` bytes in the buffer.
    fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(String, bool)) {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() > self.max {
            let cut = cut_point(&self.buf, self.max);
            let rest = self.buf.split_off(cut);
            self.open = true;
            emit(to_text(std::mem::replace(&mut self.buf, rest)), true);
        }
    }
}

/// The length of `buf` without a UTF-8 character that is cut off at its
/// end (its first 1 to 3 bytes, waiting for the rest).
fn whole_chars_end(buf: &[u8]) -> usize {
    // The last byte that is not a continuation byte, within the last four.
    let len = buf.len();
    for back in 1..=4.min(len) {
        let i = len - back;
        let Some(&b) = buf.get(i) else { break };
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needs = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            // ASCII or not a lead byte: nothing is waiting for more.
            _ => 1,
        };
        return if back < needs { i } else { len };
    }
    len
}

/// Where to cut `buf` (longer than `max`) so no character is split: at
/// `max`, or up to 3 bytes earlier when `max` falls inside a character.
fn cut_point(buf: &[u8], max: usize) -> usize {
    let is_continuation = |i: usize| buf.get(i).is_some_and(|b| b & 0xC0 == 0x80);
    let mut cut = max;
    while cut > 0 && max - cut < 3 && is_continuation(cut) {
        cut -= 1;
    }
    if cut == 0 || is_continuation(cut) {
        // Not a valid character anyway: cut where the bound says.
        max
    } else {
        cut
    }
}

fn to_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|| panic!("parse {s}"))
    }

    #[test]
    fn known_timestamps_format_as_rfc3339_utc_with_micros() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000000Z"),
            (1, "1970-01-01T00:00:00.000001Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
            (1_709_164_800_000_000, "2024-02-29T00:00:00.000000Z"),
            (4_107_542_399_000_000, "2100-02-28T23:59:59.000000Z"),
            (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),
            (1_795_910_399_123_456, "2026-11-28T23:59:59.123456Z"),
            (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
            (1_704_067_199_500_000, "2023-12-31T23:59:59.500000Z"),
        ];
        for &(micros, text) in cases {
            assert_eq!(Timestamp(micros).to_string(), text, "{micros}");
            assert_eq!(Timestamp::parse(text), Some(Timestamp(micros)), "{text}");
        }
    }

    #[test]
    fn timestamps_outside_the_range_are_clamped_never_a_panic() {
        let max = Timestamp(i64::MAX).to_string();
        assert_eq!(max, "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::parse(&max), Some(Timestamp(MAX_MICROS)));
        assert_eq!(Timestamp::parse("999999-12-31T23:59:59.999999Z"), None);
        assert_eq!(Timestamp(i64::MIN).to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::parse("1969-12-31T23:59:59.999999Z"), None);
    }

    #[test]
    fn system_time_converts_and_a_clock_before_the_epoch_reads_as_the_epoch() {
        let after = UNIX_EPOCH + Duration::from_micros(1_795_910_399_123_456);
        assert_eq!(Timestamp::from_system(after).to_string(), "2026-11-28T23:59:59.123456Z");
        let before = UNIX_EPOCH - Duration::from_micros(1_500_000);
        assert_eq!(Timestamp::from_system(before), Timestamp(0));
        let now = Timestamp::now().to_string();
        assert_eq!(now.len(), 27, "{now}");
    }

    #[test]
    fn malformed_timestamps_are_rejected() {
        for bad in [
            "",
            "2026-11-28T23:59:59.123456",
            "2026-11-28 23:59:59.123456Z",
            "2026-11-28T23:59:59Z",
            "2026-11-28T23:59:59.12345Z",
            "2026-13-01T00:00:00.000000Z",
            "2026-02-29T00:00:00.000000Z",
            "2026-11-31T00:00:00.000000Z",
            "2026-11-28T24:00:00.000000Z",
            "2026-11-28T23:60:00.000000Z",
            "2026-11-28T23:59:60.000000Z",
            "+026-11-28T23:59:59.123456Z",
            "2026-1-28T23:59:59.123456Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
        assert_eq!(ts("2024-02-29T12:00:00.000000Z").to_string(), "2024-02-29T12:00:00.000000Z");
    }

    #[test]
    fn records_format_and_parse_back() {
        let r = Record::new(Timestamp(1_795_910_399_123_456), Stream::Stdout, "hello world");
        let mut out = Vec::new();
        r.write_line(&mut out);
        assert_eq!(out, b"2026-11-28T23:59:59.123456Z stdout hello world\n");
        assert_eq!(r.to_line(), "2026-11-28T23:59:59.123456Z stdout hello world");
        assert_eq!(Record::parse_bytes(&out), Some(r.clone()));
        // Spaces inside the text and an empty text survive.
        let spaced = Record::new(Timestamp(5), Stream::Stderr, "  two  spaces ");
        assert_eq!(Record::parse(&spaced.to_line()), Some(spaced));
        let empty = Record::new(Timestamp(5), Stream::Init, "");
        assert_eq!(empty.to_line(), "1970-01-01T00:00:00.000005Z init ");
        assert_eq!(Record::parse(&empty.to_line()), Some(empty.clone()));
        assert_eq!(Record::parse("1970-01-01T00:00:00.000005Z init"), Some(empty));
        for bad in ["", "hello", "2026-11-28T23:59:59.123456Z", "2026-11-28T23:59:59.123456Z stdou x", "x stdout y"] {
            assert_eq!(Record::parse(bad), None, "{bad}");
        }
    }

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let mut s = LineSplitter::new(max);
        let mut lines = Vec::new();
        for c in chunks {
            s.feed(c, |l, _| lines.push(l));
        }
        (lines, s.finish())
    }

    #[test]
    fn lines_are_split_on_newlines_across_reads() {
        let (lines, last) = split(100, &[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(lines, ["one", "two", ""]);
        assert_eq!(last.as_deref(), Some("three"));
        let (lines, last) = split(100, &[b"a\r\nb\n"]);
        assert_eq!(lines, ["a\r", "b"]);
        assert_eq!(last, None);
    }

    #[test]
    fn long_lines_are_cut_at_the_bound_but_not_through_a_character() {
        // Exactly the bound: one line, no empty piece after it.
        let (lines, last) = split(8, &[b"abcdefgh\n"]);
        assert_eq!((lines, last), (vec!["abcdefgh".to_string()], None));
        let (lines, last) = split(8, &[b"abcdefghij\n", b"0123456789abcdefghXY"]);
        assert_eq!(lines, ["abcdefgh", "ij", "01234567", "89abcdef"]);
        assert_eq!(last.as_deref(), Some("ghXY"));
        // "é" is two bytes at 7..9: the first piece stops before it.
        let (lines, _) = split(8, &["abcdefgé xyz\n".as_bytes()]);
        assert_eq!(lines, ["abcdefg", "é xyz"]);
        // A four-byte character straddling the bound.
        let (lines, _) = split(8, &["abcdef😀yz\n".as_bytes()]);
        assert_eq!(lines, ["abcdef", "😀yz"]);
        // Invalid UTF-8 is kept, replaced.
        let (lines, _) = split(100, &[b"bad \xff\xfe end\n"]);
        assert_eq!(lines, ["bad \u{FFFD}\u{FFFD} end"]);
        // Only continuation bytes: cut at the bound.
        let (lines, last) = split(4, &[b"\x80\x80\x80\x80\x80\x80"]);
        assert_eq!(lines, ["\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"]);
        assert_eq!(last.as_deref(), Some("\u{FFFD}\u{FFFD}"));
    }

    #[test]
    fn a_huge_line_is_bounded_in_memory() {
        let mut s = LineSplitter::new(16 * 1024);
        let mut n = 0;
        for _ in 0..100 {
            s.feed(&[b'x'; 10_000], |l, continued| {
                assert_eq!((l.len(), continued), (16 * 1024, true));
                n += 1;
            });
            assert!(s.pending() <= 16 * 1024);
        }
        assert_eq!(n, 1_000_000 / (16 * 1024));
        assert_eq!(s.finish().map(|l| l.len()), Some(1_000_000 % (16 * 1024)));
    }

    /// Feeds `chunks`, calling flush_partial after each; every record as
    /// (text, continued), the end from finish last.
    fn pieces(max: usize, chunks: &[&[u8]], flush: bool) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l, continued| out.push((l, continued)));
            if flush {
                out.extend(s.flush_partial().map(|l| (l, true)));
            }
        }
        out.extend(s.finish().map(|l| (l, false)));
        out
    }

    fn owned(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    #[test]
    fn the_pieces_of_a_long_line_are_marked_and_its_end_is_not() {
        assert_eq!(
            pieces(8, &[b"abcdefghij\n", b"0123456789abcdefgh\nXY"], false),
            owned(&[
                ("abcdefgh", true),
                ("ij", false),
                ("01234567", true),
                ("89abcdef", true),
                ("gh", false),
                ("XY", false)
            ])
        );
        // A line of exactly twice the bound: no empty end after it.
        assert_eq!(pieces(4, &[b"abcdefgh\n"], false), owned(&[("abcd", true), ("efgh", false)]));
        // Cut at the bound at the end of the stream: the end is owed.
        assert_eq!(pieces(4, &[b"abcdefghi"], false), owned(&[("abcd", true), ("efgh", true), ("i", false)]));
    }

    #[test]
    fn a_flushed_partial_line_is_a_piece_whose_end_comes_later_never_twice() {
        // Flushed, then its newline alone: an empty end joins it.
        assert_eq!(pieces(100, &[b"LAST-WORDS", b"\n"], true), owned(&[("LAST-WORDS", true), ("", false)]));
        // Flushed twice, then more and the newline.
        assert_eq!(
            pieces(100, &[b"a", b"b", b"c\nd"], true),
            owned(&[("a", true), ("b", true), ("c", false), ("d", true), ("", false)])
        );
        // The stream ends after a flushed piece: the line is ended.
        let mut s = LineSplitter::new(100);
        s.feed(b"prompt> ", |_, _| panic!("no line yet"));
        assert_eq!(s.flush_partial().as_deref(), Some("prompt> "));
        assert_eq!(s.flush_partial(), None);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.finish().as_deref(), Some(""));
        assert_eq!(s.finish(), None);
        // A character cut by a read waits for its other bytes.
        let mut s = LineSplitter::new(100);
        s.feed(&"ab😀".as_bytes()[..4], |_, _| panic!("no line yet"));
        assert_eq!(s.flush_partial().as_deref(), Some("ab"));
        assert_eq!(s.flush_partial(), None);
        let mut lines = Vec::new();
        s.feed(&"😀\n".as_bytes()[2..], |l, c| lines.push((l, c)));
        assert_eq!(lines, owned(&[("😀", false)]));
        assert_eq!(whole_chars_end("é".as_bytes()), 2);
        assert_eq!(whole_chars_end(b"\xe2\x82"), 0);
        assert_eq!(whole_chars_end(b"x\x80\x80\x80\x80"), 5);
    }

    #[test]
    fn pieces_are_marked_in_the_text_form_and_unmarked_lines_read_as_before() {
        let piece = Record::piece(Timestamp(1_795_910_399_123_456), Stream::Stdout, "first part");
        assert_eq!(piece.to_line(), "2026-11-28T23:59:59.123456Z stdout+ first part");
        let mut out = Vec::new();
        piece.write_line(&mut out);
        assert_eq!(out, b"2026-11-28T23:59:59.123456Z stdout+ first part\n");
        assert_eq!(Record::parse_bytes(&out), Some(piece));
        let empty_end = Record::piece(Timestamp(5), Stream::Stderr, "");
        assert_eq!(Record::parse("1970-01-01T00:00:00.000005Z stderr+"), Some(empty_end.clone()));
        assert_eq!(Record::parse(&empty_end.to_line()), Some(empty_end));
        // A file written before the mark: whole lines, a `+` in the text
        // is text.
        let old = Record::parse("2026-11-28T23:59:59.123456Z stdout + not a mark").unwrap();
        assert_eq!((old.text.as_str(), old.continued), ("+ not a mark", false));
        for bad in ["2026-11-28T23:59:59.123456Z stdout++ x", "2026-11-28T23:59:59.123456Z + x"] {
            assert_eq!(Record::parse(bad), None, "{bad}");
        }
    }
}
