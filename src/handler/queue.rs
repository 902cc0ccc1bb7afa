//! The bounded queue between the application's threads and the handler's worker thread, and the
//! worker's loop.
//!
//! The application thread's whole cost is encoding the record into a reused thread-local buffer
//! ([`with_scratch`]) and [`Queue::send`]: one uncontended lock, one copy of the encoded bytes
//! into the queue's buffer, and a wake-up only when the worker sleeps with nothing to do. No
//! allocation in the steady state. The worker takes the whole queue at once (a swap of buffers
//! under the lock), decodes and formats each record with the proxy's
//! [`EventFormat`](crate::event::EventFormat), hands the events to the [`Transport`], and
//! lingers a moment after a busy round so that under load records gather into batches without
//! waking it one by one.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::record::{self, Captured};
use super::transport::Transport;
use super::{OnFull, Stats};
use crate::event::{self, EventFormat};

thread_local! {
    /// Set on worker threads: a record logged there (by code the worker calls) is dropped rather
    /// than queued, which could wait on the worker itself.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
    /// Each logging thread's buffer for encoding a record.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer larger than this is not kept for the next record.
const MAX_SCRATCH_KEPT: usize = 64 * 1024;

/// Runs `f` with this thread's empty scratch buffer (a fresh one when it is in use: a `Display`
/// impl that logs while its record is being encoded, or a thread being torn down).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut f = Some(f);
    let result = SCRATCH.try_with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        buf.clear();
        let result = (f.take()?)(&mut buf);
        if buf.capacity() > MAX_SCRATCH_KEPT {
            *buf = Vec::new();
        }
        Some(result)
    });
    match (result, f) {
        (Ok(Some(result)), _) => result,
        (_, Some(f)) => f(&mut Vec::new()),
        (_, None) => unreachable!("f ran, so it returned its result"),
    }
}

/// Counters the worker updates; read by [`Queue::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) dropped_unavailable: AtomicU64,
    pub(crate) dropped_oversized: AtomicU64,
    pub(crate) dropped_invalid: AtomicU64,
    pub(crate) dropped_shutdown: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a failure of the destination and keeps its description.
    pub(crate) fn error(&self, what: std::fmt::Arguments<'_>) {
        Counters::add(&self.errors, 1);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(what.to_string());
    }
}

/// How records become bytes for the destination.
#[derive(Debug)]
pub(crate) enum Format {
    /// A Logstash event (for Logstash inputs and Redis).
    Event(EventFormat),
    /// The record dict as JSON, for a pystash proxy to format with its own settings; the
    /// configured tags go first in the record's `tags`.
    Record { tags: Vec<String> },
}

impl Format {
    /// Appends the bytes for `record`.
    ///
    /// # Errors
    ///
    /// When the formatter rejects the record (a time outside years 1 to 9999); `out` is left as
    /// it was.
    fn write(
        &self,
        record: &Captured<'_>,
        process: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), event::EventError> {
        match self {
            Format::Event(format) => format.write_record(&record.to_value(process, &[]), out),
            Format::Record { tags } => event::write_value(&record.to_value(process, tags), out, 0),
        }
    }
}

/// What the application threads and the worker share, under one lock.
#[derive(Debug)]
struct State {
    /// Encoded records, one after the other.
    records: Vec<u8>,
    /// Records in `records`.
    count: usize,
    /// Records the worker took out of `records` and has not formatted yet.
    held: usize,
    capacity: usize,
    /// The worker sleeps until records arrive: a push must wake it.
    wake_on_push: bool,
    /// Threads waiting for room ([`OnFull::Block`]).
    blocked: usize,
    accepted: u64,
    dropped_full: u64,
    flush_requested: u64,
    flush_done: u64,
    /// Set when the handle is dropped: deliver what is queued until then, take nothing new.
    shutdown: Option<Instant>,
    /// The worker has returned (or panicked).
    exited: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The worker waits here.
    wake: Condvar,
    /// Blocked senders wait here.
    room: Condvar,
    /// `flush` and `shutdown` wait here.
    done: Condvar,
    counters: Counters,
    on_full: OnFull,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every update is one
        // assignment or push), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side: cheap to clone, one per `log` backend or `tracing` layer.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    /// Queues one encoded record for the worker; when the queue is full, drops and counts it
    /// or waits for room, as configured.
    pub(crate) fn send(&self, record: &[u8]) {
        if IN_WORKER.get() {
            return;
        }
        let shared = &*self.shared;
        let mut state = shared.lock();
        loop {
            if state.shutdown.is_some() || state.exited {
                drop(state);
                Counters::add(&shared.counters.dropped_shutdown, 1);
                return;
            }
            if state.count + state.held < state.capacity {
                break;
            }
            match shared.on_full {
                OnFull::Drop => {
                    state.dropped_full += 1;
                    drop(state);
                    return;
                }
                OnFull::Block => {
                    state.blocked += 1;
                    state = shared
                        .room
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    state.blocked -= 1;
                }
            }
        }
        state.records.extend_from_slice(record);
        state.count += 1;
        state.accepted += 1;
        if state.wake_on_push {
            state.wake_on_push = false;
            drop(state);
            shared.wake.notify_one();
        }
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> Stats {
        let shared = &*self.shared;
        let (accepted, dropped_full, pending) = {
            let state = shared.lock();
            (state.accepted, state.dropped_full, state.count + state.held)
        };
        let c = &shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            accepted,
            sent: get(&c.sent),
            pending: pending as u64,
            dropped_full,
            dropped_unavailable: get(&c.dropped_unavailable),
            dropped_oversized: get(&c.dropped_oversized),
            dropped_invalid: get(&c.dropped_invalid),
            dropped_shutdown: get(&c.dropped_shutdown),
            errors: get(&c.errors),
            reconnects: get(&c.reconnects),
        }
    }

    /// The last failure of the destination, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        let last = &self.shared.counters.last_error;
        last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until everything queued before this call was delivered, at most `timeout`.
    /// Returns whether it was.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        if IN_WORKER.get() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        let shared = &*self.shared;
        let mut state = shared.lock();
        state.flush_requested += 1;
        let wanted = state.flush_requested;
        shared.wake.notify_one();
        while state.flush_done < wanted && !state.exited {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = shared
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.flush_done >= wanted
    }

    /// Stops taking records, lets the worker deliver what is queued until `timeout` passes,
    /// and waits for it that long. Records still held then are counted as
    /// [`Stats::dropped_shutdown`]. Returns whether the worker finished in time.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let shared = &*self.shared;
        let mut state = shared.lock();
        state.shutdown.get_or_insert(deadline);
        shared.wake.notify_one();
        shared.room.notify_all();
        // A little past the worker's own deadline, so that it can count what it gives up.
        let deadline = deadline + Duration::from_millis(50);
        while !state.exited {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = shared
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.exited
    }
}

/// The worker thread's state.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    format: Format,
    transport: Transport,
    linger: Duration,
    /// Records taken from the queue; `local[local_at..]` are not formatted yet.
    local: Vec<u8>,
    local_at: usize,
    /// Records in `local[local_at..]`.
    local_count: usize,
    event: Vec<u8>,
    process: u32,
}

/// Marks the worker gone however it ends, so senders and flushes never wait for it in vain.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.lock().exited = true;
        self.0.room.notify_all();
        self.0.done.notify_all();
    }
}

/// A queue and the worker that drains it; the worker runs once given its thread.
pub(crate) fn new(
    capacity: usize,
    on_full: OnFull,
    format: Format,
    transport: Transport,
    linger: Duration,
) -> (Queue, Worker) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            records: Vec::new(),
            count: 0,
            held: 0,
            capacity: capacity.max(1),
            wake_on_push: false,
            blocked: 0,
            accepted: 0,
            dropped_full: 0,
            flush_requested: 0,
            flush_done: 0,
            shutdown: None,
            exited: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
        done: Condvar::new(),
        counters: Counters::default(),
        on_full,
    });
    let queue = Queue {
        shared: Arc::clone(&shared),
    };
    let worker = Worker {
        shared,
        format,
        transport,
        linger,
        local: Vec::new(),
        local_at: 0,
        local_count: 0,
        event: Vec::with_capacity(1024),
        process: std::process::id(),
    };
    (queue, worker)
}

impl Worker {
    /// Drains the queue into the destination until shut down.
    pub(crate) fn run(mut self) {
        IN_WORKER.set(true);
        let _exit = ExitGuard(Arc::clone(&self.shared));
        loop {
            // Take everything queued, once the previous batch is formatted.
            let flush_wanted = {
                let mut state = self.shared.lock();
                if self.local_count == 0 && state.count > 0 {
                    // The queue gets the worker's emptied buffer back: no allocation.
                    self.local.clear();
                    self.local_at = 0;
                    std::mem::swap(&mut state.records, &mut self.local);
                    self.local_count = std::mem::take(&mut state.count);
                    state.held = self.local_count;
                    if state.blocked > 0 {
                        self.shared.room.notify_all();
                    }
                }
                state.flush_requested
            };
            let progress = self.deliver();
            let now = Instant::now();
            let caught_up = self.local_count == 0;
            let mut state = self.shared.lock();
            state.held = self.local_count;
            if state.blocked > 0 && state.count + state.held < state.capacity {
                self.shared.room.notify_all();
            }
            if caught_up && self.transport.held() == 0 && state.count == 0 {
                if state.flush_done < flush_wanted {
                    state.flush_done = flush_wanted;
                    self.shared.done.notify_all();
                }
                if state.shutdown.is_some() {
                    return;
                }
            }
            if let Some(deadline) = state.shutdown {
                if now >= deadline {
                    let lost = state.count + self.local_count + self.transport.clear();
                    state.records.clear();
                    state.count = 0;
                    self.local_count = 0;
                    state.held = 0;
                    Counters::add(&self.shared.counters.dropped_shutdown, lost as u64);
                    return;
                }
            }
            if progress {
                drop(state);
                // Under load the next records gather meanwhile, and senders need not wake us.
                if caught_up && !self.linger.is_zero() {
                    std::thread::sleep(self.linger);
                }
                continue;
            }
            let can_take = self.local_count == 0 && self.transport.has_room();
            if can_take && state.count > 0 {
                continue;
            }
            if state.flush_requested != flush_wanted {
                continue;
            }
            // Nothing to do until records arrive (if there is room for them), the transport's
            // backoff passes, a flush is asked for, or the shutdown deadline.
            let wake_at = [self.transport.retry_at(), state.shutdown]
                .into_iter()
                .flatten()
                .min();
            state.wake_on_push = can_take;
            state = match wake_at {
                Some(at) => {
                    let left = at.saturating_duration_since(now);
                    self.shared
                        .wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
            state.wake_on_push = false;
        }
    }

    /// Formats held records into the transport while it has room, and lets it write.
    /// Returns whether anything moved.
    fn deliver(&mut self) -> bool {
        let counters = &self.shared.counters;
        let mut progress = false;
        let now = Instant::now();
        while self.local_count > 0 && self.transport.has_room() {
            progress = true;
            self.local_count -= 1;
            let Some((record, used)) = record::decode(&self.local[self.local_at..]) else {
                // Not what the encoder writes: a bug. Skip the rest rather than misread it.
                Counters::add(&counters.dropped_invalid, self.local_count as u64 + 1);
                self.local_count = 0;
                break;
            };
            self.local_at += used;
            self.event.clear();
            match self.format.write(&record, self.process, &mut self.event) {
                Ok(()) => self.transport.push(&self.event, now, counters),
                Err(_) => Counters::add(&counters.dropped_invalid, 1),
            }
        }
        loop {
            let delivered = self.transport.poll(Instant::now(), counters);
            progress |= delivered;
            // Keep writing while the transport takes whole batches and records wait.
            if !delivered || self.transport.held() == 0 {
                break;
            }
        }
        progress
    }
}
