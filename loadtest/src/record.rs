//! Realistic `LogRecord` dicts with varying fields, each carrying the load test's stamp (run,
//! stream, sequence number, send times) as extras, encoded as `SocketHandler` pickle frames or
//! JSON lines of a drawn size. Pure: the caller passes the times in the [`Stamp`].

use std::fmt::Write as _;

use crate::dist::{Rng, SizeDist};
use crate::pickle::{self, Val};
use crate::{json, Format};

/// Extra field: the run's random id, so leftovers from other runs are told apart.
pub const FIELD_RUN: &str = "lt_run";
/// Extra field: the stream (sender thread for UDP, connection for TCP/unix) the record left on.
pub const FIELD_STREAM: &str = "lt_stream";
/// Extra field: the record's sequence number within its stream, from 0.
pub const FIELD_SEQ: &str = "lt_seq";
/// Extra field: when the open-loop schedule meant the record to leave (ns since the Unix epoch).
pub const FIELD_DUE: &str = "lt_due_ns";
/// Extra field: when the record was actually built and handed to the socket (ns since epoch).
pub const FIELD_SENT: &str = "lt_sent_ns";

/// What identifies one record and when it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Run id.
    pub run: u32,
    /// Stream id.
    pub stream: u32,
    /// Sequence number in the stream.
    pub seq: u64,
    /// Scheduled send time, ns since the Unix epoch (CLOCK_REALTIME).
    pub due_ns: u64,
    /// Actual send time, ns since the Unix epoch (CLOCK_REALTIME).
    pub sent_ns: u64,
}

/// Where in an imaginary application a record comes from.
struct Site {
    logger: &'static str,
    pathname: &'static str,
    filename: &'static str,
    module: &'static str,
    func: &'static str,
}

const SITES: [Site; 5] = [
    Site {
        logger: "app.http",
        pathname: "/srv/app/app/http/views.py",
        filename: "views.py",
        module: "views",
        func: "handle_request",
    },
    Site {
        logger: "app.db",
        pathname: "/srv/app/app/db/session.py",
        filename: "session.py",
        module: "session",
        func: "execute",
    },
    Site {
        logger: "app.cache",
        pathname: "/srv/app/app/cache.py",
        filename: "cache.py",
        module: "cache",
        func: "lookup",
    },
    Site {
        logger: "worker.jobs",
        pathname: "/srv/app/worker/jobs.py",
        filename: "jobs.py",
        module: "jobs",
        func: "run_job",
    },
    Site {
        logger: "urllib3.connectionpool",
        pathname: "/usr/lib/python3/dist-packages/urllib3/connectionpool.py",
        filename: "connectionpool.py",
        module: "connectionpool",
        func: "_make_request",
    },
];

/// Words the message is padded with to reach its drawn size (ASCII, nothing to escape).
const FILLER: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor \
                      incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis \
                      nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat ";

/// Number of fields in every record dict.
pub const FIELDS: usize = 26;

/// The random parts of the record being built.
#[derive(Debug, Default)]
struct Draft {
    site: usize,
    level: usize,
    lineno: i64,
    msg: String,
    request_id: String,
    stamp: Stamp,
}

/// Builds one stream's records.
#[derive(Debug)]
pub struct RecordGen {
    rng: Rng,
    sizes: SizeDist,
    format: Format,
    pid: i64,
    thread: i64,
    thread_name: String,
    /// `logging._startTime`, for `relativeCreated` (ns since epoch).
    start_ns: u64,
    draft: Draft,
}

/// `(levelname, levelno)`, drawn INFO 70 %, DEBUG 15 %, WARNING 10 %, ERROR 5 %.
const LEVELS: [(&str, i64); 4] = [("INFO", 20), ("DEBUG", 10), ("WARNING", 30), ("ERROR", 40)];

impl RecordGen {
    /// A generator for `stream`, seeded so runs are reproducible.
    pub fn new(
        seed: u64,
        stream: u32,
        sizes: SizeDist,
        format: Format,
        pid: u32,
        start_ns: u64,
    ) -> RecordGen {
        let thread_name = if stream == 0 {
            "MainThread".to_string()
        } else {
            format!("ThreadPoolExecutor-0_{}", stream - 1)
        };
        RecordGen {
            rng: Rng::new(seed ^ (u64::from(stream) << 32)),
            sizes,
            format,
            pid: i64::from(pid),
            // What `threading.get_ident()` looks like on 64-bit Linux.
            thread: 139_804_612_602_752 + i64::from(stream) * 0x80_1000,
            thread_name,
            start_ns,
            draft: Draft::default(),
        }
    }

    fn draw(&mut self, stamp: Stamp) {
        let rng = &mut self.rng;
        let d = &mut self.draft;
        d.stamp = stamp;
        d.site = rng.range(0, SITES.len() as u64 - 1) as usize;
        let l = rng.range(0, 99);
        d.level = match l {
            0..=69 => 0,
            70..=84 => 1,
            85..=94 => 2,
            _ => 3,
        };
        d.lineno = rng.range(12, 900) as i64;
        d.request_id.clear();
        let _ = write!(d.request_id, "{:016x}", rng.next_u64());
        d.msg.clear();
        let n = rng.range(1, 99_999);
        let ms = rng.range(1, 2_500);
        let _ = match rng.range(0, 5) {
            0 => write!(d.msg, "GET /api/v1/users/{n} -> 200 in {ms} ms"),
            1 => write!(
                d.msg,
                "user u{n} logged in from 10.{}.{}.{}",
                n % 256,
                ms % 256,
                n % 7
            ),
            2 => write!(
                d.msg,
                "cache miss for key session:{:08x}",
                rng.next_u64() as u32
            ),
            3 => write!(
                d.msg,
                "retrying request to billing-{}.internal (attempt {})",
                n % 9,
                ms % 5
            ),
            4 => write!(d.msg, "processed batch {n}: {ms} rows in {} ms", ms / 7),
            _ => write!(d.msg, "slow query on table orders took {ms} ms (rows={n})"),
        };
    }

    /// The record dict, in `LogRecord.__dict__` order then the extras, as `makePickle` sends it
    /// (`msg` already formatted, `args` and `exc_info` None, no `message`).
    pub fn items(&self) -> [(&'static str, Val<'_>); FIELDS] {
        let d = &self.draft;
        let site = &SITES[d.site];
        let (levelname, levelno) = LEVELS[d.level];
        let created = d.stamp.sent_ns as f64 / 1e9;
        let msecs = ((d.stamp.sent_ns % 1_000_000_000) / 1_000_000) as f64;
        let relative = d.stamp.sent_ns.saturating_sub(self.start_ns) as f64 / 1e6;
        [
            ("name", Val::Str(site.logger)),
            ("msg", Val::Str(&d.msg)),
            ("args", Val::None),
            ("levelname", Val::Str(levelname)),
            ("levelno", Val::Int(levelno)),
            ("pathname", Val::Str(site.pathname)),
            ("filename", Val::Str(site.filename)),
            ("module", Val::Str(site.module)),
            ("exc_info", Val::None),
            ("exc_text", Val::None),
            ("stack_info", Val::None),
            ("lineno", Val::Int(d.lineno)),
            ("funcName", Val::Str(site.func)),
            ("created", Val::Float(created)),
            ("msecs", Val::Float(msecs)),
            ("relativeCreated", Val::Float(relative)),
            ("thread", Val::Int(self.thread)),
            ("threadName", Val::Str(&self.thread_name)),
            ("processName", Val::Str("MainProcess")),
            ("process", Val::Int(self.pid)),
            ("request_id", Val::Str(&d.request_id)),
            (FIELD_RUN, Val::Int(i64::from(d.stamp.run))),
            (FIELD_STREAM, Val::Int(i64::from(d.stamp.stream))),
            (FIELD_SEQ, Val::Int(d.stamp.seq as i64)),
            (FIELD_DUE, Val::Int(d.stamp.due_ns as i64)),
            (FIELD_SENT, Val::Int(d.stamp.sent_ns as i64)),
        ]
    }

    fn encode_items(&self, out: &mut Vec<u8>) {
        let items = self.items();
        match self.format {
            Format::Pickle => pickle::encode_frame(&items, out),
            Format::Json => json::encode_line(&items, out),
        }
    }

    /// Appends the next record, as one frame of the drawn size (or the smallest the record
    /// can be, when the draw is smaller), and returns the frame's length.
    pub fn encode(&mut self, stamp: Stamp, out: &mut Vec<u8>) -> usize {
        self.draw(stamp);
        let target = self.sizes.sample(&mut self.rng);
        let start = out.len();
        self.encode_items(out);
        let len = out.len() - start;
        if target > len {
            // The message grows byte for byte with the frame in both formats: BINUNICODE has
            // a fixed-width length and the filler needs no JSON escaping.
            let mut pad = target - len;
            self.draft.msg.push(' ');
            pad -= 1;
            while pad > 0 {
                let take = pad.min(FILLER.len());
                self.draft.msg.push_str(&FILLER[..take]);
                pad -= take;
            }
            out.truncate(start);
            self.encode_items(out);
        }
        out.len() - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            run: 7,
            stream: 1,
            seq,
            due_ns: 1_700_000_000_000_000_000 + seq,
            sent_ns: 1_700_000_000_000_001_000 + seq,
        }
    }

    #[test]
    fn frames_have_the_drawn_size() {
        for format in [Format::Pickle, Format::Json] {
            let sizes: SizeDist = "700..5000".parse().unwrap();
            let mut gen = RecordGen::new(1, 1, sizes, format, 4242, 1_700_000_000_000_000_000);
            let mut out = Vec::new();
            for seq in 0..500 {
                out.clear();
                let len = gen.encode(stamp(seq), &mut out);
                assert_eq!(len, out.len());
                assert!((700..=5000).contains(&len), "{format:?} {len}");
            }
        }
    }

    #[test]
    fn small_draws_give_the_smallest_record() {
        let sizes: SizeDist = "10".parse().unwrap();
        let mut gen = RecordGen::new(1, 0, sizes, Format::Json, 1, 0);
        let mut out = Vec::new();
        let len = gen.encode(stamp(3), &mut out);
        assert!(len > 300 && len < 700, "{len}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[FIELD_SEQ], 3);
        assert_eq!(v[FIELD_STREAM], 1);
        assert_eq!(v["args"], serde_json::Value::Null);
    }
}
