//! Rebuilding lines from their pieces (records marked as continued, see
//! [`super::record`]), as a reader shows them. Pure: no I/O.
//!
//! A piece waits for the next record of its stream; the first record of
//! that stream without the mark ends the line, which comes out whole, at
//! the place of its end, with the time of its first piece. Bounded: a line
//! is rebuilt up to `max` bytes; past that, what was joined comes out as it
//! is, still marked, and the rest makes a line of its own.

use super::record::{Record, Stream};
use super::DROPPED_PREFIX;

/// Joins pieces into lines, one record at a time (a follower's records
/// come a few at a time). Holds at most one line per stream.
#[derive(Debug)]
pub struct Joiner {
    max: usize,
    /// Lines whose end has not come yet, oldest first; one per stream.
    open: Vec<Record>,
}

impl Joiner {
    /// Rebuilds lines of at most `max` bytes.
    pub fn new(max: usize) -> Joiner {
        Joiner { max, open: Vec::new() }
    }

    /// Takes the next record, in the log's order; appends to `out` what it
    /// completes: whole lines, and lines cut at the bound (still marked).
    pub fn push(&mut self, record: Record, out: &mut Vec<Record>) {
        if record.stream == Stream::Init && !record.continued && record.text.starts_with(DROPPED_PREFIX) {
            // Pieces may be among the lost records: what is open must not
            // be joined to what comes after the loss.
            out.append(&mut self.open);
            out.push(record);
            return;
        }
        let Some(i) = self.open.iter().position(|o| o.stream == record.stream) else {
            if record.continued {
                self.open.push(record);
            } else {
                out.push(record);
            }
            return;
        };
        let line = self.open.remove(i);
        if line.text.len().saturating_add(record.text.len()) > self.max {
            // Too long to rebuild: shown as it is, marked as going on.
            out.push(line);
            if record.continued {
                self.open.push(record);
            } else {
                out.push(record);
            }
            return;
        }
        let mut line = line;
        line.text.push_str(&record.text);
        line.continued = record.continued;
        if line.continued {
            self.open.push(line);
        } else {
            out.push(line);
        }
    }

    /// The lines waiting for their end (so far), oldest first; at most one
    /// per stream.
    pub fn open(&self) -> &[Record] {
        &self.open
    }

    /// The line of `stream` waiting for its end, as it is (marked as going
    /// on); forgotten here, as with [`Joiner::take_open`].
    pub fn take_open_of(&mut self, stream: Stream) -> Option<Record> {
        let i = self.open.iter().position(|r| r.stream == stream)?;
        Some(self.open.remove(i))
    }

    /// The lines still waiting for their end, as they are (marked as going
    /// on), oldest first; forgotten here: what comes next of their stream
    /// starts a line of its own.
    pub fn take_open(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.open)
    }
}

/// Every line of `records` (in the log's order) rebuilt from its pieces,
/// up to `max` bytes each; lines still waiting for their end come last,
/// marked as going on.
pub fn join(records: impl IntoIterator<Item = Record>, max: usize) -> Vec<Record> {
    let mut joiner = Joiner::new(max);
    let mut out = Vec::new();
    for r in records {
        joiner.push(r, &mut out);
    }
    out.append(&mut joiner.take_open());
    out
}

#[cfg(test)]
mod tests {
    use super::super::record::Timestamp;
    use super::*;

    fn rec(t: i64, stream: Stream, text: &str, continued: bool) -> Record {
        Record { time: Timestamp(t), stream, text: text.to_string(), continued }
    }

    fn shown(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| format!("{}{} {}", r.stream, if r.continued { "+" } else { "" }, r.text)).collect()
    }

    #[test]
    fn pieces_join_per_stream_at_the_place_of_their_end_with_the_first_time() {
        let got = join(
            [
                rec(1, Stream::Stdout, "one", false),
                rec(2, Stream::Stdout, "lo", true),
                rec(3, Stream::Stderr, "err", false),
                rec(4, Stream::Stdout, "ng", true),
                rec(5, Stream::Stderr, "e1", true),
                rec(6, Stream::Stdout, " line", false),
                rec(7, Stream::Stderr, "", false),
                rec(8, Stream::Stdout, "LAST-WORDS", true),
            ],
            100,
        );
        assert_eq!(shown(&got), ["stdout one", "stderr err", "stdout long line", "stderr e1", "stdout+ LAST-WORDS"]);
        assert_eq!(got.iter().map(|r| r.time.0).collect::<Vec<_>>(), [1, 3, 2, 5, 8]);
    }

    #[test]
    fn a_loss_between_pieces_keeps_them_apart() {
        let marker = format!("{DROPPED_PREFIX}3 lines");
        let got = join(
            [
                rec(1, Stream::Stdout, "start", true),
                rec(2, Stream::Init, &marker, false),
                rec(3, Stream::Stdout, "end", false),
                // PID1's other notes do not break a line.
                rec(4, Stream::Stdout, "a", true),
                rec(5, Stream::Init, "restart in 1s", false),
                rec(6, Stream::Stdout, "b", false),
            ],
            100,
        );
        assert_eq!(
            shown(&got),
            ["stdout+ start", format!("init {marker}").as_str(), "stdout end", "init restart in 1s", "stdout ab"]
        );
    }

    #[test]
    fn a_line_is_rebuilt_up_to_the_bound_and_shown_marked_past_it() {
        let pieces = (0..5).map(|i| rec(i, Stream::Stdout, "abcd", i < 4));
        assert_eq!(shown(&join(pieces, 10)), ["stdout+ abcdabcd", "stdout+ abcdabcd", "stdout abcd"]);
        let mut j = Joiner::new(10);
        let mut out = Vec::new();
        j.push(rec(1, Stream::Stdout, "held", true), &mut out);
        j.push(rec(2, Stream::Stderr, "too", true), &mut out);
        assert!(out.is_empty());
        assert_eq!(shown(j.open()), ["stdout+ held", "stderr+ too"]);
        assert_eq!(j.take_open_of(Stream::Stderr).map(|r| r.text), Some("too".into()));
        assert_eq!(j.take_open_of(Stream::Stderr), None);
        assert_eq!(shown(&j.take_open()), ["stdout+ held"]);
        assert!(j.open().is_empty());
        // What comes after a line given out unfinished is a line of its own.
        j.push(rec(2, Stream::Stdout, " more", false), &mut out);
        assert_eq!(shown(&out), ["stdout  more"]);
    }
}
