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

/// Records waiting for Redis, in order: `queue[..sent]` are in flight, the rest not sent yet.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    queue: VecDeque<Bytes>,
    /// `queue[i]` came back from the overflow with tag `tags[i]`, or never left memory.
    tags: VecDeque<u32>,
    sent: usize,
    /// Records carried by each command awaiting a reply, oldest first.
    in_flight: VecDeque<usize>,
    /// Events are copied here and split off, so holding one costs no allocation of its own.
    arena: BytesMut,
    overflow: Option<Box<dyn Overflow>>,
    /// Send every new record to the overflow, room in memory or not (Redis is failing).
    spill: bool,
    /// Records in `queue` that never left memory.
    memory_only: usize,
}

const ARENA_CHUNK: usize = 256 * 1024;

impl Pipeline {
    /// An empty pipeline.
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            queue: VecDeque::with_capacity(config.capacity.min(1 << 16)),
            config,
            sent: 0,
            in_flight: VecDeque::new(),
            arena: BytesMut::new(),
            tags: VecDeque::new(),
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
            if self.arena.capacity() - self.arena.len() < 64 * 1024 {
                self.arena.reserve(ARENA_CHUNK);
            }
            match overflow.read(&mut self.arena) {
                Some(tag) => {
                    self.queue.push_back(self.arena.split().freeze());
                    self.tags.push_back(tag);
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

    /// Takes a copy of one event. Returns `false`, taking nothing, when full.
    pub fn push(&mut self, event: &[u8]) -> bool {
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
        if self.arena.capacity() < event.len() {
            self.arena.reserve(event.len().max(ARENA_CHUNK));
        }
        self.arena.extend_from_slice(event);
        self.queue.push_back(self.arena.split().freeze());
        self.tags.push_back(MEMORY);
        self.memory_only += 1;
        true
    }

    /// Appends push commands for unsent records to `out` while the in-flight limit allows.
    /// Returns the number of commands written.
    pub fn poll_write(&mut self, out: &mut Vec<u8>) -> usize {
        self.refill();
        let mut commands = 0;
        while self.in_flight.len() < self.config.max_in_flight && self.sent < self.queue.len() {
            let mut bytes = 0;
            let batch = self
                .queue
                .range(self.sent..)
                .take(self.config.max_batch_records)
                .take_while(|event| {
                    bytes += event.len();
                    // The first event always goes, however big.
                    bytes == event.len() || bytes <= self.config.max_batch_bytes
                })
                .count();
            let values = self
                .queue
                .range(self.sent..self.sent + batch)
                .map(|b| b.as_ref());
            resp::write_push(out, self.config.command.name(), &self.config.key, values);
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
                self.queue.drain(..records);
                self.sent -= records;
                for tag in self.tags.drain(..records) {
                    match &mut self.overflow {
                        _ if tag == MEMORY => self.memory_only -= 1,
                        Some(o) => o.ack(tag),
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
                self.tags.make_contiguous()[..self.sent].rotate_left(records);
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
        for (event, tag) in self.queue.drain(..).zip(self.tags.drain(..)) {
            let kept = match &mut self.overflow {
                Some(o) => tag != MEMORY || o.append(&event),
                None => false,
            };
            lost += usize::from(!kept);
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
