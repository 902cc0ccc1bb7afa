//! `--spool-dir`: an append-only, checksummed, segmented disk spool, the [`Overflow`] of a
//! worker's pipeline. Records that do not fit in memory (Redis down, slow, or over
//! `--max-queue-length`) are appended here and read back in order; a segment file is deleted
//! once every record in it was acknowledged by Redis. The spool survives restarts and crashes:
//! at start every segment is checked and a torn tail (a record cut short or failing its
//! checksum) is cut off, never replayed.
//!
//! Segment file `w<worker>-<seq>.seg`: the 8-byte magic, then records of
//! `[u32 LE length][u32 LE CRC-32 of the payload][payload]`.
//!
//! Durability: a record is in the spool once `write(2)` returned, so it survives the process
//! being killed; `--spool-fsync` says when it also survives the machine losing power.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::{error, info, warn};

use crate::redis::pipeline::Overflow;

const MAGIC: &[u8; 8] = b"PYSTSPL1";
const HEADER: u64 = 8;
const RECORD_HEADER: u64 = 8;
/// A length above this in a record header is corruption, not a record.
const MAX_RECORD: u32 = 1 << 24;

/// When appended records are made durable with `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After each loop turn that appended (group commit).
    Always,
    /// At most this often.
    Interval(Duration),
    /// Never: the OS writes back when it likes.
    Never,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory shared by the workers; created if missing.
    pub dir: PathBuf,
    /// Bytes this worker's spool may hold.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// `--spool-fsync`.
    pub fsync: FsyncPolicy,
}

#[derive(Debug)]
struct Segment {
    seq: u32,
    path: PathBuf,
    file: File,
    /// Bytes in the file (valid records only).
    len: u64,
    records: u64,
    /// Offset of the next record to read.
    read_at: u64,
    read: u64,
    acked: u64,
}

/// One worker's spool.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    worker: usize,
    /// Oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    next_seq: u32,
    bytes: u64,
    dirty: bool,
    last_sync: Option<Instant>,
    failed: bool,
    /// One record being written, reused.
    scratch: Vec<u8>,
}

/// What [`Spool::open`] found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting to be replayed.
    pub records: u64,
    /// Bytes cut off torn or corrupt tails.
    pub torn_bytes: u64,
}

fn parse_name(name: &str) -> Option<(usize, u32)> {
    let rest = name.strip_prefix('w')?.strip_suffix(".seg")?;
    let (worker, seq) = rest.split_once('-')?;
    Some((worker.parse().ok()?, seq.parse().ok()?))
}

impl Spool {
    /// Opens worker `worker`'s share of the spool in `config.dir`: its own segments and those
    /// of workers that no longer exist (`w % workers == worker`), checked and ready to replay.
    ///
    /// # Errors
    /// When the directory or a segment cannot be read or created.
    pub fn open(
        config: SpoolConfig,
        worker: usize,
        workers: usize,
    ) -> io::Result<(Spool, Recovered)> {
        fs::create_dir_all(&config.dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&config.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some((w, seq)) = name.to_str().and_then(parse_name) {
                if w % workers.max(1) == worker {
                    found.push((seq, w, entry.path()));
                }
            }
        }
        found.sort();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut next_seq = 0;
        for (seq, _, path) in found {
            next_seq = next_seq.max(seq.saturating_add(1));
            let (segment, torn) = Segment::recover(seq, path)?;
            recovered.torn_bytes += torn;
            if segment.records == 0 {
                let _ = fs::remove_file(&segment.path);
                continue;
            }
            recovered.records += segment.records;
            segments.push_back(segment);
        }
        let bytes = segments.iter().map(|s| s.len).sum();
        if recovered.records > 0 || recovered.torn_bytes > 0 {
            info!(
                worker,
                records = recovered.records,
                torn_bytes = recovered.torn_bytes,
                dir = %config.dir.display(),
                "spool: replaying records left by a previous run"
            );
        }
        Ok((
            Spool {
                config,
                worker,
                segments,
                next_seq,
                bytes,
                dirty: false,
                last_sync: None,
                failed: false,
                scratch: Vec::new(),
            },
            recovered,
        ))
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let path = self
            .config
            .dir
            .join(format!("w{}-{seq:010}.seg", self.worker));
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        self.bytes += HEADER;
        self.segments.push_back(Segment {
            seq,
            path,
            file,
            len: HEADER,
            records: 0,
            read_at: HEADER,
            read: 0,
            acked: 0,
        });
        Ok(())
    }

    fn try_append(&mut self, event: &[u8]) -> io::Result<()> {
        let needs_new = self
            .segments
            .back()
            .is_none_or(|s| s.len >= self.config.segment_bytes);
        if needs_new {
            self.start_segment()?;
        }
        let Some(segment) = self.segments.back_mut() else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let mut header = [0u8; RECORD_HEADER as usize];
        header[..4].copy_from_slice(&(event.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(event).to_le_bytes());
        // One write per record: a crash leaves at most one torn record at the tail.
        let record = &mut self.scratch;
        record.clear();
        record.extend_from_slice(&header);
        record.extend_from_slice(event);
        if let Err(err) = segment.file.write_all(record) {
            // Cut what may have been written, so the next record starts cleanly.
            let _ = segment.file.set_len(segment.len);
            return Err(err);
        }
        segment.len += record.len() as u64;
        segment.records += 1;
        self.bytes += record.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Deletes segments whose records are all in Redis: older ones as soon as they are, and
    /// the one being written once the whole spool is.
    fn release(&mut self) {
        let done = |s: &Segment| s.acked == s.records && s.read == s.records;
        let keep = if self.segments.iter().all(done) { 0 } else { 1 };
        while self.segments.len() > keep && self.segments.front().is_some_and(done) {
            let Some(segment) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= segment.len;
            if let Err(err) = fs::remove_file(&segment.path) {
                warn!(path = %segment.path.display(), %err, "spool: cannot delete a delivered segment");
            }
        }
    }
}

impl Segment {
    /// Opens an existing segment and finds its valid records; cuts a torn tail.
    fn recover(seq: u32, path: PathBuf) -> io::Result<(Segment, u64)> {
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let mut magic = [0u8; 8];
        let valid_magic =
            size >= HEADER && file.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC;
        let mut at = HEADER;
        let mut records = 0;
        if valid_magic {
            let mut header = [0u8; RECORD_HEADER as usize];
            let mut payload = Vec::new();
            while at + RECORD_HEADER <= size {
                file.read_exact_at(&mut header, at)?;
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                let end = at + RECORD_HEADER + u64::from(len);
                if len > MAX_RECORD || end > size {
                    break;
                }
                payload.resize(len as usize, 0);
                file.read_exact_at(&mut payload, at + RECORD_HEADER)?;
                if crc32fast::hash(&payload) != crc {
                    break;
                }
                at = end;
                records += 1;
            }
        } else {
            at = 0;
        }
        let torn = size - at;
        if torn > 0 {
            warn!(path = %path.display(), torn_bytes = torn, "spool: cutting a torn or corrupt tail");
            file.set_len(at)?;
        }
        Ok((
            Segment {
                seq,
                path,
                file,
                len: at,
                records,
                read_at: HEADER,
                read: 0,
                acked: 0,
            },
            torn,
        ))
    }
}

impl Overflow for Spool {
    fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.read == s.records)
    }

    fn is_full(&self) -> bool {
        self.failed || self.bytes >= self.config.max_bytes
    }

    fn append(&mut self, event: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        match self.try_append(event) {
            Ok(()) => true,
            Err(err) => {
                // A broken disk must not stop the proxy: it keeps going with memory only.
                error!(%err, dir = %self.config.dir.display(), "spool: write failed; spooling disabled");
                self.failed = true;
                false
            }
        }
    }

    fn read(&mut self, out: &mut BytesMut) -> Option<u32> {
        let segment = self.segments.iter_mut().find(|s| s.read < s.records)?;
        let mut header = [0u8; RECORD_HEADER as usize];
        let ok = segment
            .file
            .read_exact_at(&mut header, segment.read_at)
            .is_ok();
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let start = out.len();
        out.resize(start + len, 0);
        if !ok
            || segment
                .file
                .read_exact_at(&mut out[start..], segment.read_at + RECORD_HEADER)
                .is_err()
        {
            // The file was checked when written or recovered; a read error now is the disk.
            error!(path = %segment.path.display(), "spool: cannot read back a record; skipping the segment");
            out.truncate(start);
            segment.read = segment.records;
            segment.acked = segment.records;
            return None;
        }
        segment.read_at += RECORD_HEADER + len as u64;
        segment.read += 1;
        Some(segment.seq)
    }

    fn ack(&mut self, tag: u32) {
        if let Some(segment) = self.segments.iter_mut().find(|s| s.seq == tag) {
            segment.acked = (segment.acked + 1).min(segment.read);
        }
        self.release();
    }

    fn sync(&mut self, now: Instant) {
        if !self.dirty {
            return;
        }
        let due = match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.last_sync.is_none_or(|t| now >= t + every),
            FsyncPolicy::Never => false,
        };
        if due {
            self.sync_all();
            self.last_sync = Some(now);
        }
    }

    fn sync_all(&mut self) {
        if let Some(segment) = self.segments.back() {
            if let Err(err) = segment.file.sync_data() {
                error!(%err, "spool: fsync failed");
            }
        }
        self.dirty = false;
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn unread(&self) -> u64 {
        self.segments.iter().map(|s| s.records - s.read).sum()
    }
}

/// Whether `dir` looks usable as a spool: exists or can be created, and is writable.
///
/// # Errors
/// The I/O error that makes it unusable.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(".pystash-probe");
    File::create(&probe)?;
    fs::remove_file(probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::pipeline::{Pipeline, PipelineConfig, PushCommand, Reply};
    use bytes::Bytes;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "pystash-spool-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            Dir(p)
        }
        fn files(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .map(|r| {
                    r.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(dir: &Dir, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.0.clone(),
            max_bytes: 1 << 20,
            segment_bytes,
            fsync: FsyncPolicy::Always,
        }
    }

    fn read_all(spool: &mut Spool) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        loop {
            let mut buf = BytesMut::new();
            match spool.read(&mut buf) {
                Some(tag) => out.push((String::from_utf8(buf.to_vec()).unwrap(), tag)),
                None => return out,
            }
        }
    }

    #[test]
    fn records_come_back_in_order_and_files_go_once_acknowledged() {
        let dir = Dir::new("order");
        let (mut spool, rec) = Spool::open(config(&dir, 100), 0, 1).unwrap();
        assert_eq!(rec, Recovered::default());
        for i in 0..20 {
            assert!(spool.append(format!("event {i}").as_bytes()));
        }
        assert!(dir.files().len() > 2, "rotated: {:?}", dir.files());
        let got = read_all(&mut spool);
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        let want: Vec<String> = (0..20).map(|i| format!("event {i}")).collect();
        assert_eq!(texts, want);
        assert!(spool.is_empty());
        let segments = dir.files().len();
        // Acknowledging the first segment's records deletes it, and only it.
        let first = got[0].1;
        for (_, tag) in got.iter().filter(|(_, t)| *t == first) {
            spool.ack(*tag);
        }
        assert_eq!(dir.files().len(), segments - 1);
        for (_, tag) in got.iter().filter(|(_, t)| *t != first) {
            spool.ack(*tag);
        }
        assert!(dir.files().is_empty(), "{:?}", dir.files());
        assert_eq!(spool.bytes(), 0);
    }

    #[test]
    fn unacknowledged_records_survive_a_restart() {
        let dir = Dir::new("restart");
        {
            let (mut spool, _) = Spool::open(config(&dir, 64), 0, 1).unwrap();
            for i in 0..10 {
                spool.append(format!("r{i}").as_bytes());
            }
            // Read and acknowledge the first few, then "crash".
            let got = read_all(&mut spool);
            for (_, tag) in &got[..3] {
                spool.ack(*tag);
            }
        }
        let (mut spool, rec) = Spool::open(config(&dir, 64), 0, 1).unwrap();
        let texts: Vec<String> = read_all(&mut spool).into_iter().map(|(t, _)| t).collect();
        // Segments are released whole: at least the unacknowledged 7 come back, in order.
        assert!(rec.records >= 7 && rec.records <= 10, "{rec:?}");
        assert_eq!(texts.len() as u64, rec.records);
        assert_eq!(texts.last().map(String::as_str), Some("r9"));
        assert!(texts
            .windows(2)
            .all(|w| w[0][1..].parse::<u32>().unwrap() < w[1][1..].parse::<u32>().unwrap()));
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut_never_replayed() {
        let dir = Dir::new("torn");
        {
            let (mut spool, _) = Spool::open(config(&dir, 1 << 20), 0, 1).unwrap();
            for i in 0..3 {
                spool.append(format!("good {i}").as_bytes());
            }
        }
        let path = dir.0.join(&dir.files()[0]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // Half a record: a length and part of its payload.
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'x', b'y']).unwrap();
        drop(f);
        let (mut spool, rec) = Spool::open(config(&dir, 1 << 20), 0, 1).unwrap();
        assert_eq!(
            rec,
            Recovered {
                records: 3,
                torn_bytes: 10
            }
        );
        assert_eq!(read_all(&mut spool).len(), 3);
        drop(spool);
        // A flipped payload byte fails its checksum: that record and all after it are cut.
        let mut bytes = fs::read(&path).unwrap();
        let second = HEADER as usize + RECORD_HEADER as usize + 6 + RECORD_HEADER as usize;
        bytes[second] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (mut spool, rec) = Spool::open(config(&dir, 1 << 20), 0, 1).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(read_all(&mut spool)[0].0, "good 0");
        // New records go after what survived.
        assert!(spool.append(b"after"));
        assert_eq!(read_all(&mut spool)[0].0, "after");
    }

    #[test]
    fn full_spool_refuses_and_orphans_are_adopted() {
        let dir = Dir::new("full");
        let small = SpoolConfig {
            max_bytes: 100,
            ..config(&dir, 1 << 20)
        };
        {
            let (mut spool, _) = Spool::open(small.clone(), 3, 4).unwrap();
            let mut n = 0;
            while spool.append(b"0123456789") {
                n += 1;
            }
            assert!(spool.is_full());
            assert!((4..=6).contains(&n), "{n}");
        }
        // Worker 3 is gone (2 workers now): worker 1 takes its segments over.
        let (mut w0, r0) = Spool::open(small.clone(), 0, 2).unwrap();
        let (mut w1, r1) = Spool::open(small, 1, 2).unwrap();
        assert_eq!(r0.records, 0);
        assert!(r1.records >= 4);
        assert!(read_all(&mut w0).is_empty());
        assert_eq!(read_all(&mut w1).len() as u64, r1.records);
    }

    #[test]
    fn pipeline_overflows_to_the_spool_in_order() {
        let dir = Dir::new("pipeline");
        let (spool, _) = Spool::open(config(&dir, 256), 0, 1).unwrap();
        let mut p = Pipeline::new(PipelineConfig {
            key: Bytes::from_static(b"q"),
            command: PushCommand::Rpush,
            capacity: 3,
            max_batch_records: 2,
            max_batch_bytes: 1 << 20,
            max_in_flight: 1,
        });
        p.set_overflow(Box::new(spool));
        for i in 0..10 {
            assert!(p.push(format!("e{i}").as_bytes()));
        }
        assert_eq!(p.len(), 2, "memory holds the in-flight window");
        assert!(p.overflow_bytes() > 0);
        let mut delivered = Vec::new();
        while !p.is_empty() {
            let mut out = Vec::new();
            assert_eq!(p.poll_write(&mut out), 1);
            let text = String::from_utf8_lossy(&out).into_owned();
            delivered.extend(
                text.split("\r\n")
                    .filter(|l| l.starts_with('e'))
                    .map(str::to_owned),
            );
            p.handle_reply(Reply::Integer(0));
        }
        let want: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
        assert_eq!(delivered, want);
        assert_eq!(p.overflow_bytes(), 0);
        assert!(dir.files().is_empty());
    }

    #[test]
    fn memory_holds_no_more_than_the_in_flight_window_with_a_spool() {
        let dir = Dir::new("window");
        let (spool, _) = Spool::open(config(&dir, 1 << 20), 0, 1).unwrap();
        let mut p = Pipeline::new(PipelineConfig {
            key: Bytes::from_static(b"q"),
            command: PushCommand::Rpush,
            capacity: 1000,
            max_batch_records: 2,
            max_batch_bytes: 1 << 20,
            max_in_flight: 2,
        });
        p.set_overflow(Box::new(spool));
        for i in 0..10 {
            assert!(p.push(format!("w{i}").as_bytes()));
        }
        // 2 pushes of 2 records may be in flight: the other 6 are already on disk.
        assert_eq!(p.len(), 4);
        let on_disk = Spool::open(config(&dir, 1 << 20), 0, 1).unwrap().1.records;
        assert_eq!(on_disk, 6);
        assert_eq!(p.held(), 10, "4 in memory, 6 on disk");
        let mut delivered = Vec::new();
        while !p.is_empty() {
            let mut out = Vec::new();
            p.poll_write(&mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            delivered.extend(
                text.split("\r\n")
                    .filter(|l| l.starts_with('w'))
                    .map(str::to_owned),
            );
            p.handle_reply(Reply::Integer(0));
        }
        let want: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
        assert_eq!(delivered, want);
    }

    #[test]
    fn clear_at_the_deadline_spills_memory_to_the_spool() {
        let dir = Dir::new("clear");
        let cfg = config(&dir, 1 << 20);
        let (spool, _) = Spool::open(cfg.clone(), 0, 1).unwrap();
        let mut p = Pipeline::new(PipelineConfig {
            key: Bytes::from_static(b"q"),
            command: PushCommand::Rpush,
            capacity: 100,
            max_batch_records: 100,
            max_batch_bytes: 1 << 20,
            max_in_flight: 1,
        });
        p.set_overflow(Box::new(spool));
        for i in 0..5 {
            p.push(format!("m{i}").as_bytes());
        }
        p.poll_write(&mut Vec::new());
        assert_eq!(p.clear(), 0, "nothing lost");
        drop(p);
        let (mut spool, rec) = Spool::open(cfg, 0, 1).unwrap();
        assert_eq!(rec.records, 5);
        let texts: Vec<String> = read_all(&mut spool).into_iter().map(|(t, _)| t).collect();
        assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    }
}
