//! Cuts byte streams and datagrams into frames: CPython's 4-byte big-endian length + pickle
//! (`SocketHandler.makePickle` in CPython `Lib/logging/handlers.py`), or newline-delimited
//! JSON/text lines (python-logstash and most JSON loggers). The format is detected per frame from
//! its first byte: a length prefix of a frame under 16 MiB starts with a control byte, a line
//! starts with `{` or other text.
//!
//! Pure: no I/O. A claimed length is compared with the limit before anything is reserved.

use std::ops::Range;

use bytes::{Buf, BytesMut};
use thiserror::Error;

/// How a frame's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A pickled `LogRecord.__dict__` (the length prefix is removed).
    Pickle,
    /// One line of text, usually a JSON object (the line ending is removed).
    Line,
}

/// One frame cut from a stream; `payload` owns its bytes so decoders may parse it in place.
#[derive(Debug)]
pub struct Frame {
    /// How `payload` is encoded.
    pub kind: FrameKind,
    /// The frame without its length prefix or line ending.
    pub payload: BytesMut,
}

/// A complete frame at the front of the caller's buffer, not yet taken off it: `buf[payload]`
/// is the payload, and the caller advances `buf` by `len` (prefix and line end included) once
/// it is handled, before asking for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAt {
    /// How the frame was delimited, which says how to decode it.
    pub kind: FrameKind,
    /// Where the payload is in the buffer.
    pub payload: Range<usize>,
    /// Bytes the frame takes up at the front of the buffer.
    pub len: usize,
}

/// A frame the framer had to throw away. The stream stays usable.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix or line longer than the limit; its bytes are skipped as they arrive.
    #[error("frame of {claimed} bytes exceeds the limit of {limit}")]
    Oversized {
        /// The length the prefix claimed, or the bytes seen so far of an unterminated line.
        claimed: u64,
        /// `--max-record-bytes`.
        limit: usize,
    },
    /// The stream ended inside a length-prefixed frame.
    #[error("stream ended {missing} bytes before the end of a frame")]
    Truncated {
        /// Bytes still expected.
        missing: usize,
    },
    /// A datagram's length prefix disagreed with the datagram's size.
    #[error("length prefix says {claimed} bytes, datagram carries {actual}")]
    BadLength {
        /// The length the prefix claimed.
        claimed: u64,
        /// The bytes after the prefix.
        actual: usize,
    },
}

const PREFIX_LEN: usize = 4;

/// Whether a frame starting with `byte` is length-prefixed. Lines start with `{` or text;
/// prefixes of frames shorter than 16 MiB start with 0x00, and no text starts with a control
/// byte other than whitespace.
fn is_prefix_start(byte: u8) -> bool {
    byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Strips a trailing `\n` or `\r\n`.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Not skipping.
    None,
    /// Skipping the rest of an oversized length-prefixed frame.
    Bytes(u64),
    /// Skipping up to the end of an oversized line.
    Line,
}

/// Frames one stream connection. Feed it the connection's read buffer after every read.
#[derive(Debug)]
pub struct StreamFramer {
    max_frame_bytes: usize,
    skip: Skip,
    /// Bytes of the current line already searched for `\n`, so long lines are scanned once.
    scanned: usize,
}

impl StreamFramer {
    /// A framer that refuses frames over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        StreamFramer {
            max_frame_bytes,
            skip: Skip::None,
            scanned: 0,
        }
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. After an `Err` the caller counts the rejection
    /// and calls again: the framer skips the bad frame's bytes, including ones not read yet.
    ///
    /// # Errors
    /// [`FrameError::Oversized`] for a frame over the limit.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        Ok(self.decode_at(buf)?.map(|at| {
            let mut payload = buf.split_to(at.len);
            payload.truncate(at.payload.end);
            payload.advance(at.payload.start);
            Frame {
                kind: at.kind,
                payload,
            }
        }))
    }

    /// Finds the next complete frame at the front of `buf` without taking it off, as
    /// [`Self::decode`] does otherwise (bad frames and blank lines are skipped, so they are off
    /// `buf` already). The caller decodes `buf[at.payload]` in place and then advances `buf`
    /// by `at.len`; a frame needs no buffer of its own.
    ///
    /// # Errors
    /// As [`Self::decode`].
    pub fn decode_at(&mut self, buf: &mut BytesMut) -> Result<Option<FrameAt>, FrameError> {
        loop {
            match self.skip {
                Skip::None => {}
                Skip::Bytes(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    buf.advance(n);
                    let left = left - n as u64;
                    if left > 0 {
                        self.skip = Skip::Bytes(left);
                        return Ok(None);
                    }
                    self.skip = Skip::None;
                }
                Skip::Line => match memchr(b'\n', buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.skip = Skip::None;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if is_prefix_start(first) {
                return self.decode_prefixed(buf);
            }
            match self.decode_line(buf)? {
                // Blank lines (keep-alives, `\r\n` separators) carry no record.
                Some(at) if buf[at.payload.clone()].iter().all(u8::is_ascii_whitespace) => {
                    buf.advance(at.len);
                    continue;
                }
                other => return Ok(other),
            }
        }
    }

    fn decode_prefixed(&mut self, buf: &mut BytesMut) -> Result<Option<FrameAt>, FrameError> {
        let Some(prefix) = buf.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let claimed = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let len = claimed as usize;
        if len > self.max_frame_bytes {
            buf.advance(PREFIX_LEN);
            self.skip = Skip::Bytes(u64::from(claimed));
            return Err(FrameError::Oversized {
                claimed: u64::from(claimed),
                limit: self.max_frame_bytes,
            });
        }
        if buf.len() - PREFIX_LEN < len {
            // Checked against the limit above, so this reserve is bounded.
            buf.reserve(PREFIX_LEN + len - buf.len());
            return Ok(None);
        }
        Ok(Some(FrameAt {
            kind: FrameKind::Pickle,
            payload: PREFIX_LEN..PREFIX_LEN + len,
            len: PREFIX_LEN + len,
        }))
    }

    fn decode_line(&mut self, buf: &mut BytesMut) -> Result<Option<FrameAt>, FrameError> {
        // A line may be max_frame_bytes long plus its `\r\n`.
        let window = buf.len().min(self.max_frame_bytes + 2);
        match memchr(b'\n', &buf[self.scanned.min(window)..window]) {
            Some(i) => {
                let end = self.scanned.min(window) + i + 1;
                self.scanned = 0;
                let len = trim_line_end(&buf[..end]).len();
                if len > self.max_frame_bytes {
                    buf.advance(end);
                    return Err(FrameError::Oversized {
                        claimed: len as u64,
                        limit: self.max_frame_bytes,
                    });
                }
                Ok(Some(FrameAt {
                    kind: FrameKind::Line,
                    payload: 0..len,
                    len: end,
                }))
            }
            None if window > self.max_frame_bytes + 1 => {
                let claimed = window as u64;
                buf.advance(window);
                self.scanned = 0;
                self.skip = Skip::Line;
                Err(FrameError::Oversized {
                    claimed,
                    limit: self.max_frame_bytes,
                })
            }
            None => {
                self.scanned = window;
                Ok(None)
            }
        }
    }

    /// Called once the peer closed the stream: what is left in `buf` becomes a last frame
    /// (a line needs no final `\n`) or an error (a length-prefixed frame cut short).
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when the stream ended inside a length-prefixed frame.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.is_empty() || self.skip != Skip::None {
            buf.clear();
            return Ok(None);
        }
        if is_prefix_start(buf[0]) {
            let missing = match buf.get(..PREFIX_LEN) {
                Some(p) => (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
                    .saturating_sub(buf.len() - PREFIX_LEN),
                None => PREFIX_LEN - buf.len(),
            };
            buf.clear();
            return Err(FrameError::Truncated { missing });
        }
        self.scanned = 0;
        // `decode_line` holds back up to the limit plus one byte waiting for `\n`; a final
        // `\r` is a line ending like any other.
        let len = trim_line_end(buf).len();
        if len > self.max_frame_bytes {
            let claimed = buf.len() as u64;
            buf.clear();
            return Err(FrameError::Oversized {
                claimed,
                limit: self.max_frame_bytes,
            });
        }
        let mut payload = buf.split();
        payload.truncate(len);
        Ok(Some(Frame {
            kind: FrameKind::Line,
            payload,
        }))
        .map(|f| f.filter(|f| !f.payload.iter().all(u8::is_ascii_whitespace)))
    }
}

/// Frames one datagram (CPython `DatagramHandler` sends exactly one length-prefixed pickle per
/// datagram; JSON senders one object, maybe newline-terminated). Returns the payload's range.
///
/// # Errors
/// [`FrameError::BadLength`] when a length prefix disagrees with the datagram's size,
/// [`FrameError::Oversized`] when the payload is over `max_frame_bytes`.
pub fn decode_datagram(
    datagram: &[u8],
    max_frame_bytes: usize,
) -> Result<(FrameKind, Range<usize>), FrameError> {
    let (kind, range) = match datagram.first() {
        Some(&first) if is_prefix_start(first) => {
            let actual = datagram.len().saturating_sub(PREFIX_LEN);
            let claimed = match datagram.get(..PREFIX_LEN) {
                Some(p) => u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as u64,
                None => 0,
            };
            if datagram.len() < PREFIX_LEN || claimed != actual as u64 {
                return Err(FrameError::BadLength { claimed, actual });
            }
            (FrameKind::Pickle, PREFIX_LEN..datagram.len())
        }
        _ => {
            let line = trim_line_end(datagram);
            (FrameKind::Line, 0..line.len())
        }
    };
    if range.len() > max_frame_bytes {
        return Err(FrameError::Oversized {
            claimed: range.len() as u64,
            limit: max_frame_bytes,
        });
    }
    Ok((kind, range))
}

/// The first `needle` in `haystack`, a word (or a vector) at a time.
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Runs the framer over `input` delivered in the given chunks; collects frames and errors.
    fn run(
        input: &[u8],
        chunk: usize,
        max: usize,
    ) -> Vec<Result<(FrameKind, Vec<u8>), FrameError>> {
        let mut framer = StreamFramer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match framer.decode(&mut buf) {
                    Ok(Some(f)) => out.push(Ok((f.kind, f.payload.to_vec()))),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        loop {
            match framer.finish(&mut buf) {
                Ok(Some(f)) => out.push(Ok((f.kind, f.payload.to_vec()))),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    fn mixed_stream() -> (Vec<u8>, Vec<(FrameKind, Vec<u8>)>) {
        let mut input = prefixed(b"}q\x00pickle-one.");
        input.extend_from_slice(b"{\"message\": \"json one\"}\n");
        input.extend_from_slice(&prefixed(b"\x80\x02pickle two with \n newline"));
        input.extend_from_slice(b"plain text line\r\n\n");
        input.extend_from_slice(&prefixed(b""));
        let expected = vec![
            (FrameKind::Pickle, b"}q\x00pickle-one.".to_vec()),
            (FrameKind::Line, b"{\"message\": \"json one\"}".to_vec()),
            (
                FrameKind::Pickle,
                b"\x80\x02pickle two with \n newline".to_vec(),
            ),
            (FrameKind::Line, b"plain text line".to_vec()),
            (FrameKind::Pickle, b"".to_vec()),
        ];
        (input, expected)
    }

    #[test]
    fn mixed_formats_at_every_chunk_size() {
        let (input, expected) = mixed_stream();
        for chunk in 1..=input.len() {
            let got: Vec<_> = run(&input, chunk, 1024)
                .into_iter()
                .map(|r| r.expect("no error"))
                .collect();
            assert_eq!(got, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn mixed_formats_at_every_split_point() {
        let (input, expected) = mixed_stream();
        for split in 0..=input.len() {
            let mut framer = StreamFramer::new(1024);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&input[..split], &input[split..]] {
                buf.extend_from_slice(part);
                while let Some(f) = framer.decode(&mut buf).unwrap() {
                    got.push((f.kind, f.payload.to_vec()));
                }
            }
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn oversized_prefixed_frame_is_skipped_and_the_next_frame_survives() {
        let mut input = prefixed(&[b'x'; 100]);
        input.extend_from_slice(&prefixed(b"good"));
        for chunk in [1, 7, 1000] {
            let got = run(&input, chunk, 50);
            assert_eq!(
                got,
                vec![
                    Err(FrameError::Oversized {
                        claimed: 100,
                        limit: 50
                    }),
                    Ok((FrameKind::Pickle, b"good".to_vec())),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn huge_length_prefix_reserves_nothing() {
        let mut framer = StreamFramer::new(1 << 20);
        let mut buf = BytesMut::from(&b"\x00\xff\xff\xffabc"[..]);
        let before = buf.capacity();
        assert!(matches!(
            framer.decode(&mut buf),
            Err(FrameError::Oversized {
                claimed: 0x00ff_ffff,
                ..
            })
        ));
        assert!(buf.capacity() <= before);
        // 0xFFFFFFFF starts with a text byte: an unterminated line, skipped past the limit.
        let got = run(
            &[&[0xff; 4][..], &[b'z'; 200], b"\n{\"a\":1}\n"].concat(),
            16,
            100,
        );
        assert_eq!(
            got,
            vec![
                Err(FrameError::Oversized {
                    claimed: 102,
                    limit: 100
                }),
                Ok((FrameKind::Line, b"{\"a\":1}".to_vec())),
            ]
        );
    }

    #[test]
    fn oversized_line_is_skipped_to_its_end() {
        let input = [&[b'a'; 30][..], b"\nok\n"].concat();
        for chunk in [1, 5, 100] {
            let got = run(&input, chunk, 10);
            assert_eq!(got.len(), 2, "chunk {chunk}: {got:?}");
            assert!(matches!(got[0], Err(FrameError::Oversized { .. })));
            assert_eq!(got[1], Ok((FrameKind::Line, b"ok".to_vec())));
        }
    }

    #[test]
    fn line_of_exactly_the_limit_passes() {
        let input = [&[b'a'; 10][..], b"\r\n"].concat();
        for chunk in 1..=input.len() {
            assert_eq!(
                run(&input, chunk, 10),
                vec![Ok((FrameKind::Line, vec![b'a'; 10]))]
            );
        }
    }

    #[test]
    fn truncated_stream_is_reported() {
        let input = prefixed(b"0123456789");
        assert_eq!(
            run(&input[..8], 3, 100),
            vec![Err(FrameError::Truncated { missing: 6 })]
        );
        assert_eq!(
            run(&input[..2], 3, 100),
            vec![Err(FrameError::Truncated { missing: 2 })]
        );
        // A last line needs no newline.
        assert_eq!(
            run(b"{\"a\":1}", 3, 100),
            vec![Ok((FrameKind::Line, b"{\"a\":1}".to_vec()))]
        );
    }

    #[test]
    fn unterminated_last_line_over_the_limit_is_refused() {
        // Found by the `framing` fuzz target: one byte over the limit, then EOF.
        assert!(matches!(
            run(b"a", 1, 0).as_slice(),
            [Err(FrameError::Oversized {
                claimed: 1,
                limit: 0
            })]
        ));
        assert_eq!(
            run(b"ab", 2, 2),
            vec![Ok((FrameKind::Line, b"ab".to_vec()))]
        );
        assert!(matches!(
            run(b"abc", 3, 2).as_slice(),
            [Err(FrameError::Oversized { .. })]
        ));
        // And its `\r` is not part of it (also found by fuzzing).
        assert_eq!(
            run(b"ab\r", 3, 2),
            vec![Ok((FrameKind::Line, b"ab".to_vec()))]
        );
    }

    #[test]
    fn datagrams() {
        let d = prefixed(b"payload");
        assert_eq!(decode_datagram(&d, 100), Ok((FrameKind::Pickle, 4..11)));
        assert_eq!(
            decode_datagram(&d[..9], 100),
            Err(FrameError::BadLength {
                claimed: 7,
                actual: 5
            })
        );
        assert!(matches!(
            decode_datagram(&d, 3),
            Err(FrameError::Oversized { .. })
        ));
        assert_eq!(
            decode_datagram(b"{\"a\":1}\n", 100),
            Ok((FrameKind::Line, 0..7))
        );
        assert!(matches!(
            decode_datagram(b"\x00\x00", 100),
            Err(FrameError::BadLength { .. })
        ));
    }
}
