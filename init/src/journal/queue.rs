//! The bounded queue between the capture thread (and PID1's own lines) and
//! the writer thread: producers never wait; what does not fit is dropped and
//! counted per unit, and the count is written in the unit's log before its
//! next record.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::record::Record;

/// What a queued record costs beyond its text (the unit name is shared).
const RECORD_OVERHEAD: usize = 64;

/// One entry of the queue.
pub(super) enum Item {
    Record(Arc<str>, Record),
    /// Records of the unit dropped at the queue before the next one.
    Dropped(Arc<str>, u64),
    Control(Control),
}

/// What the writer is asked to do besides writing records.
pub(super) enum Control {
    Attach(PathBuf, mpsc::Sender<io::Result<()>>),
    Detach(mpsc::Sender<()>),
    Flush(mpsc::Sender<()>),
    /// Holds the writer until the sender is dropped: a disk that hangs.
    #[cfg(test)]
    Pause(mpsc::Receiver<()>),
    Stop,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Item>,
    bytes: usize,
    /// Per unit: records dropped since its last queued one.
    drops: HashMap<Arc<str>, u64>,
}

#[derive(Default)]
/// Totals, read by [`super::Stats`].
pub(super) struct Counters {
    pub(super) written: AtomicU64,
    pub(super) dropped: AtomicU64,
}

/// Records waiting for the writer, at most `cap` bytes of them.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    cap: usize,
    pub(super) counters: Counters,
}

impl Queue {
    pub(super) fn new(cap: usize) -> Queue {
        Queue { state: Mutex::default(), ready: Condvar::new(), cap, counters: Counters::default() }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues records of one unit, in order; drops and counts those that
    /// do not fit. Never waits for the writer.
    pub(super) fn push(&self, unit: &Arc<str>, records: impl IntoIterator<Item = Record>) {
        let mut q = self.lock();
        let mut wake = false;
        for r in records {
            let cost = r.text.len().saturating_add(RECORD_OVERHEAD);
            wake = true;
            if q.bytes.saturating_add(cost) > self.cap {
                *q.drops.entry(Arc::clone(unit)).or_insert(0) += 1;
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(n) = q.drops.remove(unit) {
                q.items.push_back(Item::Dropped(Arc::clone(unit), n));
            }
            q.items.push_back(Item::Record(Arc::clone(unit), r));
            q.bytes += cost;
        }
        drop(q);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Control messages are few and small; they are never dropped.
    pub(super) fn control(&self, c: Control) {
        self.lock().items.push_back(Item::Control(c));
        self.ready.notify_one();
    }

    /// Waits for work and takes all of it, with the drops after the last
    /// record of each unit.
    pub(super) fn take(&self) -> (VecDeque<Item>, HashMap<Arc<str>, u64>) {
        let mut q = self.lock();
        while q.items.is_empty() && q.drops.is_empty() {
            q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        q.bytes = 0;
        (std::mem::take(&mut q.items), std::mem::take(&mut q.drops))
    }
}
