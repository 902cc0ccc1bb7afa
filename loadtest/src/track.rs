//! Sequence tracking per stream: which records arrived, how many twice, how many after a
//! later one. Pure; one bit per sequence number.

use serde::{Deserialize, Serialize};

/// What became of one delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time this sequence number arrived, after every lower one seen so far.
    InOrder,
    /// First arrival, but a higher sequence number of the stream came before it.
    Reordered,
    /// Arrived before: a duplicate.
    Duplicate,
    /// Not a stream of this run.
    Foreign,
}

#[derive(Debug, Default, Clone)]
struct Stream {
    bits: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    /// Highest sequence number seen, plus one (0: none yet).
    next: u64,
}

/// Per-stream counts for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StreamCounts {
    /// Stream id.
    pub stream: u32,
    /// Records the sender handed to the kernel.
    pub sent: u64,
    /// Distinct records delivered.
    pub delivered: u64,
    /// `sent - delivered`.
    pub lost: u64,
    /// Deliveries of a record already delivered.
    pub duplicates: u64,
    /// Records delivered after a higher sequence number of the same stream.
    pub reordered: u64,
}

/// Tracks the sequence numbers of a fixed set of streams `0..n`.
#[derive(Debug, Clone)]
pub struct Tracker {
    streams: Vec<Stream>,
    foreign: u64,
    /// Streams are added as they show up (another run's, whose stream count is unknown).
    open: bool,
}

/// Sequence numbers past this are taken as foreign, so a corrupt one cannot allocate 2 GiB.
const MAX_SEQ: u64 = 1 << 34;
/// Streams an open tracker takes at most.
const MAX_OPEN_STREAMS: u32 = 1 << 16;

impl Tracker {
    /// A tracker for streams `0..streams`.
    pub fn new(streams: u32) -> Tracker {
        Tracker {
            streams: vec![Stream::default(); streams as usize],
            foreign: 0,
            open: false,
        }
    }

    /// A tracker that adds streams as they show up (up to 65536).
    pub fn open() -> Tracker {
        Tracker {
            streams: Vec::new(),
            foreign: 0,
            open: true,
        }
    }

    /// Notes one delivery.
    pub fn handle(&mut self, stream: u32, seq: u64) -> Seen {
        if self.open && stream as usize >= self.streams.len() && stream < MAX_OPEN_STREAMS {
            self.streams.resize(stream as usize + 1, Stream::default());
        }
        let Some(s) = self.streams.get_mut(stream as usize) else {
            self.foreign += 1;
            return Seen::Foreign;
        };
        if seq >= MAX_SEQ {
            self.foreign += 1;
            return Seen::Foreign;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= s.bits.len() {
            s.bits.resize((word + 1).next_power_of_two(), 0);
        }
        if s.bits[word] & bit != 0 {
            s.duplicates += 1;
            return Seen::Duplicate;
        }
        s.bits[word] |= bit;
        s.distinct += 1;
        if seq < s.next {
            s.reordered += 1;
            Seen::Reordered
        } else {
            s.next = seq + 1;
            Seen::InOrder
        }
    }

    /// Notes a delivery that is not from this run at all.
    pub fn handle_foreign(&mut self) {
        self.foreign += 1;
    }

    /// Distinct records delivered, over all streams.
    pub fn delivered(&self) -> u64 {
        self.streams.iter().map(|s| s.distinct).sum()
    }

    /// Deliveries that belonged to no stream of this run.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// Deliveries of records already delivered, over all streams.
    pub fn duplicates(&self) -> u64 {
        self.streams.iter().map(|s| s.duplicates).sum()
    }

    /// Records delivered after a later one of their stream, over all streams.
    pub fn reordered(&self) -> u64 {
        self.streams.iter().map(|s| s.reordered).sum()
    }

    /// Streams tracked (for an open tracker: the highest stream seen, plus one).
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Counts per stream, given how many each stream sent.
    pub fn counts(&self, sent: &[u64]) -> Vec<StreamCounts> {
        self.streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let sent = sent.get(i).copied().unwrap_or(0);
                StreamCounts {
                    stream: i as u32,
                    sent,
                    delivered: s.distinct,
                    lost: sent.saturating_sub(s.distinct),
                    duplicates: s.duplicates,
                    reordered: s.reordered,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_duplicates_and_reordering() {
        let mut t = Tracker::new(2);
        // Stream 0: 0..10 with 3 lost, 5 twice, 7 after 8.
        for seq in [0, 1, 2, 4, 5, 5, 6, 8, 7, 9] {
            t.handle(0, seq);
        }
        // Stream 1: all 0..200 in order, 100 delivered three times.
        for seq in 0..200 {
            assert_eq!(t.handle(1, seq), Seen::InOrder);
        }
        assert_eq!(t.handle(1, 100), Seen::Duplicate);
        assert_eq!(t.handle(1, 100), Seen::Duplicate);
        assert_eq!(t.handle(2, 0), Seen::Foreign);
        assert_eq!(t.handle(0, u64::MAX), Seen::Foreign);
        t.handle_foreign();

        let c = t.counts(&[10, 200]);
        assert_eq!(
            c[0],
            StreamCounts {
                stream: 0,
                sent: 10,
                delivered: 9,
                lost: 1,
                duplicates: 1,
                reordered: 1
            }
        );
        assert_eq!(
            c[1],
            StreamCounts {
                stream: 1,
                sent: 200,
                delivered: 200,
                lost: 0,
                duplicates: 2,
                reordered: 0
            }
        );
        assert_eq!(t.delivered(), 209);
        assert_eq!(t.foreign(), 3);
    }

    #[test]
    fn a_reversed_stream_is_all_reordered_but_the_first() {
        let mut t = Tracker::new(1);
        for seq in (0..1000).rev() {
            t.handle(0, seq);
        }
        let c = t.counts(&[1000])[0];
        assert_eq!(
            (c.delivered, c.lost, c.duplicates, c.reordered),
            (1000, 0, 0, 999)
        );
    }
}
