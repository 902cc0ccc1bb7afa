//! Batching and the in-flight FIFO: every accepted event stays here until Redis acknowledged the
//! command that carried it. Pure: the sink feeds it replies and disconnects.
//!
//! With an [`Overflow`] (the disk spool), records that find the memory buffer full, or find
//! older records already overflowed, go there instead, and come back in order as memory frees
//! up; an overflowed record is released from it only once Redis acknowledged it.
//!
//! Batches form by themselves: a command is written as soon as fewer than `max_in_flight`
//! commands await replies, so a lone record leaves at once, and under load records pile up
//! behind the in-flight commands and leave together in the next, bigger push. No timer.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::resp;

/// Which end of the list records are pushed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushCommand {
    /// `RPUSH`: Logstash's redis input pops from the head, so the list stays in order.
    Rpush,
    /// `LPUSH`: for consumers that pop from the tail.
    Lpush,
}

impl PushCommand {
    fn name(self) -> &'static [u8] {
        match self {
            PushCommand::Rpush => b"RPUSH",
            PushCommand::Lpush => b"LPUSH",
        }
    }
}

/// Where records go when memory is full (the disk spool). Records come back in the order
/// they went in, each with a tag that [`Overflow::ack`] is given once Redis stored it.
pub trait Overflow: Send + std::fmt::Debug {
    /// No record is waiting to be read back.
    fn is_empty(&self) -> bool;
    /// No room for another record.
    fn is_full(&self) -> bool;
    /// Stores a copy of one event; `false` when there is no room (or it could not be stored).
    fn append(&mut self, event: &[u8]) -> bool;
    /// Appends the oldest record not read yet to `out`; returns its tag, `None` when empty.
    fn read(&mut self, out: &mut BytesMut) -> Option<u32>;
    /// One record read with `tag` is in Redis: its storage may be released.
    fn ack(&mut self, tag: u32);
    /// Makes appended records durable as the policy asks; called every loop turn.
    fn sync(&mut self, now: std::time::Instant);
    /// Makes every appended record durable now (at exit).
    fn sync_all(&mut self);
    /// Bytes stored.
    fn bytes(&self) -> u64;
    /// Records stored and not read back yet.
    fn unread(&self) -> u64;
}

/// Tag of a record that never left memory.
const MEMORY: u32 = u32::MAX;

/// Limits of one [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The list's key.
    pub key: Bytes,
    /// RPUSH or LPUSH.
    pub command: PushCommand,
    /// Records held at most (unsent and unacknowledged together).
    pub capacity: usize,
    /// Records in one push at most.
    pub max_batch_records: usize,
    /// Event bytes in one push at most (a single larger event still goes alone).
    pub max_batch_bytes: usize,
    /// Push commands awaiting replies at most.
    pub max_in_flight: usize,
}

/// A reply to one push, reduced to what the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The list's length after the push.
    Integer(i64),
    /// An error reply, e.g. `WRONGTYPE ...` or `OOM ...`.
    Error(&'a str),
    /// Any other reply: not what a push answers.
    Unexpected,
}

/// What a reply meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Redis stored `records` events; the list is now `list_len` long.
    Pushed {
        /// Events acknowledged.
        records: usize,
        /// The list's length after the push.
        list_len: i64,
    },
    /// Redis refused the push; its `records` are queued again, after the commands still in
    /// flight.
    Refused {
        /// Events queued again.
        records: usize,
    },
}

/// One event held: the RESP bulk string `$<len>\r\n<event>\r\n` at `start` in the arena's
/// chunk numbered `chunk`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    chunk: u32,
    start: u32,
    /// Bytes of the bulk string.
    bulk: u32,
    /// Bytes of its header, `$<len>\r\n`.
    header: u8,
    /// Where the event came from: the overflow's tag, or [`MEMORY`].
    tag: u32,
}

impl Entry {
    fn event_len(&self) -> usize {
        (self.bulk - u32::from(self.header) - 2) as usize
    }
}

/// Records waiting for Redis, in order: `queue[..sent]` are in flight, the rest not sent yet.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    queue: VecDeque<Entry>,
    sent: usize,
    /// Records carried by each command awaiting a reply, oldest first.
    in_flight: VecDeque<usize>,
    arena: Arena,
    /// An event read back from the overflow, on its way into the arena.
    scratch: BytesMut,
    overflow: Option<Box<dyn Overflow>>,
    /// Send every new record to the overflow, room in memory or not (Redis is failing).
    spill: bool,
    /// Records in `queue` that never left memory.
    memory_only: usize,
}

/// Largest event held: arena offsets are 32-bit.
pub const MAX_EVENT_BYTES: usize = (u32::MAX / 2) as usize;
/// Bytes of an arena chunk (a larger event gets a chunk of its own size).
const ARENA_CHUNK: usize = 256 * 1024;
/// Emptied chunks kept for reuse (4 MiB), so a steady flow neither allocates nor faults in new
/// pages: one acknowledged push frees up to a few chunks at once, and a chunk handed back to
/// the allocator tends to come back as fresh pages.
const SPARE_CHUNKS: usize = 16;

/// Where held events live, already encoded as the bulk strings a push carries, back to back in
/// the order they came, so a push copies whole runs of them at once. Chunks are freed in order
/// once no record in them is held; nothing is counted per event but a plain integer.
#[derive(Debug, Default)]
struct Arena {
    chunks: VecDeque<Chunk>,
    /// Number of `chunks[0]`; numbers wrap.
    first: u32,
    spare: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Chunk {
    /// Never grows past its capacity: a full chunk is followed by a new one.
    buf: Vec<u8>,
    /// Records held in this chunk.
    live: u32,
}

impl Arena {
    /// Stores `event` as a bulk string; the entry has no tag yet.
    ///
    /// Inlined, so that the entry goes from registers into the queue: returned through
    /// memory, it was written in pieces and read back whole, a store-forwarding stall that
    /// took most of [`Pipeline::push`].
    #[inline(always)]
    fn append(&mut self, event: &[u8]) -> Entry {
        let bulk = resp::bulk_len(event.len());
        let room = self
            .chunks
            .back()
            .is_some_and(|c| c.buf.capacity() - c.buf.len() >= bulk);
        if !room {
            self.add_chunk(bulk);
        }
        let number = self.first.wrapping_add(self.chunks.len() as u32 - 1);
        let chunk = self.chunks.back_mut().expect("a chunk with room");
        let start = chunk.buf.len();
        resp::write_bulk(&mut chunk.buf, event);
        chunk.live += 1;
        Entry {
            chunk: number,
            start: start as u32,
            bulk: bulk as u32,
            header: (bulk - event.len() - 2) as u8,
            tag: MEMORY,
        }
    }

    /// Starts a chunk with room for `bulk` bytes: a spare one when it is large enough.
    #[cold]
    fn add_chunk(&mut self, bulk: usize) {
        let buf = match self.spare.last() {
            Some(buf) if buf.capacity() >= bulk => self.spare.pop().expect("a spare"),
            _ => Vec::with_capacity(bulk.max(ARENA_CHUNK)),
        };
        self.chunks.push_back(Chunk { buf, live: 0 });
    }

    /// Where chunk number `number` is in `chunks`.
    fn index(&self, number: u32) -> usize {
        number.wrapping_sub(self.first) as usize
    }

    /// The bytes `start..end` of chunk number `number`.
    fn bytes(&self, number: u32, start: usize, end: usize) -> &[u8] {
        &self.chunks[self.index(number)].buf[start..end]
    }

    /// The bulk string of `entry`.
    fn bulk(&self, entry: &Entry) -> &[u8] {
        let start = entry.start as usize;
        self.bytes(entry.chunk, start, start + entry.bulk as usize)
    }

    /// The event of `entry`.
    fn event(&self, entry: &Entry) -> &[u8] {
        let bulk = self.bulk(entry);
        &bulk[usize::from(entry.header)..bulk.len() - 2]
    }

    /// `entry` is no longer held; frees the chunks at the front that hold nothing now.
    fn release(&mut self, entry: &Entry) {
        let i = self.index(entry.chunk);
        self.chunks[i].live -= 1;
        while self.chunks.front().is_some_and(|c| c.live == 0) {
            if self.chunks.len() == 1 {
                // The chunk being filled: start it over.
                self.chunks[0].buf.clear();
                break;
            }
            let mut chunk = self.chunks.pop_front().expect("front");
            self.first = self.first.wrapping_add(1);
            if self.spare.len() < SPARE_CHUNKS && chunk.buf.capacity() == ARENA_CHUNK {
                chunk.buf.clear();
                self.spare.push(chunk.buf);
            }
        }
    }

    /// Appends `entries`' bulk strings to `out`, a run of neighbours at a time.
    fn copy_bulks<'e>(&self, entries: impl Iterator<Item = &'e Entry>, out: &mut Vec<u8>) {
        // (chunk number, start, end) of the run not copied yet.
        let mut run: Option<(u32, usize, usize)> = None;
        for e in entries {
            let (start, end) = (e.start as usize, (e.start + e.bulk) as usize);
            match &mut run {
                Some((chunk, _, run_end)) if *chunk == e.chunk && *run_end == start => {
                    *run_end = end;
                }
                _ => {
                    if let Some((chunk, s, e)) = run.replace((e.chunk, start, end)) {
                        out.extend_from_slice(self.bytes(chunk, s, e));
                    }
                }
            }
        }
        if let Some((chunk, s, e)) = run {
            out.extend_from_slice(self.bytes(chunk, s, e));
        }
    }
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            queue: VecDeque::with_capacity(config.capacity.min(1 << 16)),
            config,
            sent: 0,
            in_flight: VecDeque::new(),
            arena: Arena::default(),
            scratch: BytesMut::new(),
            overflow: None,
            spill: false,
            memory_only: 0,
        }
    }

    /// While `on`, new records go straight to the overflow (if there is one), so that while
    /// Redis is failing every record reaches the disk at once instead of waiting in memory.
    pub fn set_spill(&mut self, on: bool) {
        self.spill = on;
    }

    /// Sends records that do not fit in memory to `overflow`, and first takes back what it
    /// already holds (records spooled before a restart).
    pub fn set_overflow(&mut self, overflow: Box<dyn Overflow>) {
        self.overflow = Some(overflow);
        self.refill();
    }

    /// Records held in memory or waiting in the overflow: what is accepted and not yet in
    /// Redis (records a previous run spooled included).
    pub fn held(&self) -> u64 {
        self.queue.len() as u64 + self.overflow.as_ref().map_or(0, |o| o.unread())
    }

    /// Bytes held by the overflow.
    pub fn overflow_bytes(&self) -> u64 {
        self.overflow.as_ref().map_or(0, |o| o.bytes())
    }

    /// Calls the overflow's [`Overflow::sync`].
    pub fn sync(&mut self, now: std::time::Instant) {
        if let Some(o) = &mut self.overflow {
            o.sync(now);
        }
    }

    /// Moves records from the overflow into memory while there is room.
    fn refill(&mut self) {
        let Some(overflow) = &mut self.overflow else {
            return;
        };
        while self.queue.len() < self.config.capacity {
            self.scratch.clear();
            match overflow.read(&mut self.scratch) {
                Some(tag) => {
                    let entry = self.arena.append(&self.scratch);
                    self.queue.push_back(Entry { tag, ..entry });
                }
                None => break,
            }
        }
    }

    /// The list's key.
    pub fn key(&self) -> &[u8] {
        &self.config.key
    }

    /// Records held in memory (in flight or not sent yet).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No record is held, in memory or waiting in the overflow.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.overflow.as_ref().is_none_or(|o| o.is_empty())
    }

    /// Records not sent yet.
    pub fn unsent(&self) -> usize {
        self.queue.len() - self.sent
    }

    /// Push commands awaiting replies.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// No room for another record, in memory or in the overflow.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.config.capacity
            && self.overflow.as_ref().is_none_or(|o| o.is_full())
    }

    /// Changes how many records may be held (raised at shutdown to take in what the sockets
    /// still hold).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.config.capacity = capacity;
    }

    /// Takes a copy of one event. Returns `false`, taking nothing, when full (or when the event
    /// is over [`MAX_EVENT_BYTES`], which no record within the proxy's frame limit comes near).
    pub fn push(&mut self, event: &[u8]) -> bool {
        if event.len() > MAX_EVENT_BYTES {
            return false;
        }
        if let Some(overflow) = &mut self.overflow {
            // Behind records already overflowed, so order is kept.
            // Records that only memory holds are what a crash loses: with a spool, no more
            // than the in-flight window of them.
            let window = self.config.max_in_flight * self.config.max_batch_records;
            if self.spill
                || self.queue.len() >= self.config.capacity
                || self.memory_only >= window
                || !overflow.is_empty()
            {
                return overflow.append(event);
            }
        }
        if self.queue.len() >= self.config.capacity {
            return false;
        }
        let entry = self.arena.append(event);
        self.queue.push_back(entry);
        self.memory_only += 1;
        true
    }

    /// Appends push commands for unsent records to `out` while the in-flight limit allows.
    /// Returns the number of commands written.
    pub fn poll_write(&mut self, out: &mut Vec<u8>) -> usize {
        self.refill();
        let mut commands = 0;
        while self.in_flight.len() < self.config.max_in_flight && self.sent < self.queue.len() {
            let (mut batch, mut bytes, mut wire) = (0, 0, 0);
            for entry in self
                .queue
                .range(self.sent..)
                .take(self.config.max_batch_records)
            {
                bytes += entry.event_len();
                // The first event always goes, however big.
                if batch > 0 && bytes > self.config.max_batch_bytes {
                    break;
                }
                batch += 1;
                wire += entry.bulk as usize;
            }
            let command = self.config.command.name();
            resp::write_push_header(out, command, &self.config.key, batch, wire);
            let entries = self.queue.range(self.sent..self.sent + batch);
            self.arena.copy_bulks(entries, out);
            self.sent += batch;
            self.in_flight.push_back(batch);
            commands += 1;
        }
        commands
    }

    /// Handles the reply to the oldest command in flight.
    ///
    /// Returns `None` when no command was in flight (a reply Redis should not have sent).
    pub fn handle_reply(&mut self, reply: Reply<'_>) -> Option<Ack> {
        let records = self.in_flight.pop_front()?;
        match reply {
            Reply::Integer(list_len) => {
                self.sent -= records;
                for entry in self.queue.drain(..records) {
                    self.arena.release(&entry);
                    match &mut self.overflow {
                        _ if entry.tag == MEMORY => self.memory_only -= 1,
                        Some(o) => o.ack(entry.tag),
                        None => {}
                    }
                }
                self.refill();
                Some(Ack::Pushed { records, list_len })
            }
            Reply::Error(_) | Reply::Unexpected => {
                // Later commands may still succeed, so these records move behind them: order
                // is kept among records that have not failed.
                self.queue.make_contiguous()[..self.sent].rotate_left(records);
                self.sent -= records;
                Some(Ack::Refused { records })
            }
        }
    }

    /// The connection is gone: whatever was in flight is sent again on the next one. Redis
    /// may have stored some of it, so delivery is at-least-once. Returns the records requeued.
    pub fn handle_disconnect(&mut self) -> usize {
        let requeued = self.sent;
        self.sent = 0;
        self.in_flight.clear();
        requeued
    }

    /// Gives up on the records held in memory (shutdown deadline passed). With an overflow,
    /// records that never left memory are written to it first, and records read back from it
    /// stay there for the next run. Returns how many are lost.
    pub fn clear(&mut self) -> usize {
        let mut lost = 0;
        for entry in self.queue.drain(..) {
            let kept = match &mut self.overflow {
                Some(o) => entry.tag != MEMORY || o.append(self.arena.event(&entry)),
                None => false,
            };
            lost += usize::from(!kept);
            self.arena.release(&entry);
        }
        self.memory_only = 0;
        if let Some(o) = &mut self.overflow {
            // Whatever the policy, a clean exit leaves the spool on disk.
            o.sync_all();
        }
        self.in_flight.clear();
        self.sent = 0;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::decode::decode;
    use redis_protocol::resp2::types::OwnedFrame;

    fn config(capacity: usize, batch: usize, in_flight: usize) -> PipelineConfig {
        PipelineConfig {
            key: Bytes::from_static(b"logstash"),
            command: PushCommand::Rpush,
            capacity,
            max_batch_records: batch,
            max_batch_bytes: 1 << 20,
            max_in_flight: in_flight,
        }
    }

    /// Decodes every command in `out` into its pushed values.
    fn commands(out: &[u8]) -> Vec<Vec<String>> {
        let mut at = 0;
        let mut cmds = Vec::new();
        while at < out.len() {
            let (frame, used) = decode(&out[at..]).unwrap().unwrap();
            at += used;
            let OwnedFrame::Array(items) = frame else {
                panic!("not an array")
            };
            let args: Vec<String> = items
                .into_iter()
                .map(|f| match f {
                    OwnedFrame::BulkString(b) => String::from_utf8(b).unwrap(),
                    _ => panic!("not bulk"),
                })
                .collect();
            assert_eq!(args[0], "RPUSH");
            assert_eq!(args[1], "logstash");
            cmds.push(args[2..].to_vec());
        }
        cmds
    }

    fn fill(p: &mut Pipeline, range: std::ops::Range<usize>) {
        for i in range {
            assert!(p.push(format!("e{i}").as_bytes()));
        }
    }

    #[test]
    fn lone_record_leaves_at_once_and_batches_grow_under_load() {
        let mut p = Pipeline::new(config(1000, 100, 2));
        fill(&mut p, 0..1);
        let mut out = Vec::new();
        assert_eq!(p.poll_write(&mut out), 1);
        assert_eq!(commands(&out), vec![vec!["e0"]]);
        fill(&mut p, 1..2);
        out.clear();
        assert_eq!(p.poll_write(&mut out), 1);
        // Both slots busy: records pile up and leave together later.
        fill(&mut p, 2..50);
        out.clear();
        assert_eq!(p.poll_write(&mut out), 0);
        assert_eq!(
            p.handle_reply(Reply::Integer(1)),
            Some(Ack::Pushed {
                records: 1,
                list_len: 1
            })
        );
        assert_eq!(p.poll_write(&mut out), 1);
        let cmds = commands(&out);
        assert_eq!(cmds[0].len(), 48);
        assert_eq!(cmds[0][0], "e2");
        assert_eq!(p.len(), 49);
    }

    #[test]
    fn batch_respects_record_and_byte_caps() {
        let mut p = Pipeline::new(PipelineConfig {
            max_batch_bytes: 10,
            ..config(1000, 3, 10)
        });
        fill(&mut p, 0..7);
        assert!(p.push(&[b'x'; 50]));
        let mut out = Vec::new();
        p.poll_write(&mut out);
        let sizes: Vec<usize> = commands(&out).iter().map(Vec::len).collect();
        // 2-byte events: 3 per batch by count (6 bytes); then 1; then the big one alone.
        assert_eq!(sizes, vec![3, 3, 1, 1]);
    }

    #[test]
    fn capacity_is_enforced() {
        let mut p = Pipeline::new(config(3, 10, 1));
        fill(&mut p, 0..3);
        assert!(p.is_full());
        assert!(!p.push(b"x"));
        p.poll_write(&mut Vec::new());
        // In-flight records still count against capacity until acknowledged.
        assert!(!p.push(b"x"));
        p.handle_reply(Reply::Integer(3));
        assert!(p.is_empty());
        assert!(p.push(b"x"));
    }

    #[test]
    fn disconnect_resends_everything_unacknowledged_in_order() {
        let mut p = Pipeline::new(config(100, 2, 3));
        fill(&mut p, 0..7);
        let mut out = Vec::new();
        p.poll_write(&mut out);
        p.handle_reply(Reply::Integer(2));
        assert_eq!(p.handle_disconnect(), 4);
        out.clear();
        p.poll_write(&mut out);
        let all: Vec<String> = commands(&out).concat();
        assert_eq!(all, vec!["e2", "e3", "e4", "e5", "e6"]);
    }

    #[test]
    fn refused_batch_is_retried_after_the_ones_in_flight() {
        let mut p = Pipeline::new(config(100, 2, 3));
        fill(&mut p, 0..6);
        let mut out = Vec::new();
        assert_eq!(p.poll_write(&mut out), 3);
        assert_eq!(
            p.handle_reply(Reply::Error("OOM command not allowed")),
            Some(Ack::Refused { records: 2 })
        );
        assert_eq!(p.unsent(), 2);
        assert_eq!(
            p.handle_reply(Reply::Integer(2)),
            Some(Ack::Pushed {
                records: 2,
                list_len: 2
            })
        );
        p.handle_reply(Reply::Integer(4));
        out.clear();
        p.poll_write(&mut out);
        assert_eq!(commands(&out), vec![vec!["e0", "e1"]]);
        assert_eq!(
            p.handle_reply(Reply::Unexpected),
            Some(Ack::Refused { records: 2 })
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p.handle_reply(Reply::Integer(0)), None);
    }

    /// Random pushes (small and chunk-sized events), writes, acknowledgements, refusals and
    /// disconnects: every event reaches Redis whole, exactly once acknowledged, and the arena
    /// keeps no chunk once nothing is held.
    #[test]
    fn events_survive_every_turn_of_the_arena() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut p = Pipeline::new(PipelineConfig {
            max_batch_bytes: 200_000,
            ..config(500, 64, 4)
        });
        let event = |i: u64, size: usize| {
            let mut e = format!("e{i}:").into_bytes();
            e.resize(size.max(e.len()), b'a' + (i % 26) as u8);
            e
        };
        let (mut pushed, mut acked) = (0u64, Vec::new());
        let mut sizes = std::collections::HashMap::new();
        let mut wire: VecDeque<Vec<String>> = VecDeque::new();
        for _ in 0..20_000 {
            match next(10) {
                0..=4 => {
                    let size = match next(20) {
                        0 => 100_000 + next(300_000) as usize,
                        _ => next(900) as usize,
                    };
                    if p.push(&event(pushed, size)) {
                        sizes.insert(pushed, size);
                        pushed += 1;
                    }
                }
                5 | 6 => {
                    let mut out = Vec::new();
                    p.poll_write(&mut out);
                    wire.extend(commands(&out));
                }
                7 | 8 => {
                    if let Some(cmd) = wire.pop_front() {
                        if next(8) == 0 {
                            p.handle_reply(Reply::Error("OOM"));
                        } else {
                            p.handle_reply(Reply::Integer(1));
                            acked.extend(cmd);
                        }
                    }
                }
                _ => {
                    if next(10) == 0 {
                        p.handle_disconnect();
                        wire.clear();
                    }
                }
            }
        }
        // Redis answers everything from here on.
        while !p.is_empty() {
            let mut out = Vec::new();
            p.poll_write(&mut out);
            wire.extend(commands(&out));
            for cmd in wire.drain(..) {
                p.handle_reply(Reply::Integer(1));
                acked.extend(cmd);
            }
        }
        assert!(pushed > 5_000, "{pushed}");
        let mut seen: Vec<u64> = acked
            .iter()
            .map(|e| {
                let (n, rest) = e.split_once(':').unwrap();
                let n: u64 = n[1..].parse().unwrap();
                let whole = event(n, sizes[&n]);
                assert_eq!(e.as_bytes(), &whole[..], "event {n} changed");
                assert!(rest.bytes().all(|b| b == b'a' + (n % 26) as u8));
                n
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..pushed).collect::<Vec<_>>());
        assert!(p.arena.chunks.len() <= 1);
        assert!(p
            .arena
            .chunks
            .iter()
            .all(|c| c.buf.is_empty() && c.live == 0));
        assert!(p.arena.spare.len() <= SPARE_CHUNKS);
    }

    #[test]
    fn lpush_and_clear() {
        let mut p = Pipeline::new(PipelineConfig {
            command: PushCommand::Lpush,
            ..config(10, 10, 1)
        });
        fill(&mut p, 0..2);
        let mut out = Vec::new();
        p.poll_write(&mut out);
        assert!(out.starts_with(b"*4\r\n$5\r\nLPUSH\r\n"));
        assert_eq!(p.clear(), 2);
        assert!(p.is_empty());
        assert_eq!(p.in_flight(), 0);
    }
}
