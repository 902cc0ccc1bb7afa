//! RESP2 command encoder (<https://redis.io/docs/latest/develop/reference/protocol-spec/>).
//!
//! A command is an array of bulk strings. Its size is computed once, reserved once and written
//! once, so a push of a thousand events is one allocation at most (usually none: the buffer is
//! reused).

/// Decimal digits of `n`.
fn digits(n: usize) -> usize {
    let mut n = n;
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Bytes of one bulk string `$<len>\r\n<bytes>\r\n`.
pub fn bulk_len(len: usize) -> usize {
    1 + digits(len) + 2 + len + 2
}

/// Bytes of a command whose arguments have the given lengths.
pub fn command_len(arg_lens: impl Iterator<Item = usize>) -> usize {
    let mut count = 0;
    let mut total = 0;
    for len in arg_lens {
        count += 1;
        total += bulk_len(len);
    }
    1 + digits(count) + 2 + total
}

fn write_header(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string, a command's argument, to `out` ([`bulk_len`] bytes).
pub fn write_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    write_header(out, b'$', arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Appends one command (`args[0]` is its name) to `out`.
pub fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(command_len(args.iter().map(|a| a.len())));
    write_header(out, b'*', args.len());
    for arg in args {
        write_bulk(out, arg);
    }
}

/// Appends the start of `<command> <key> <value>...` to `out`, for `values` values that the
/// caller appends next as bulk strings ([`write_bulk`], or copies of ones written before) of
/// `value_bytes` in all; reserves room for them too.
pub fn write_push_header(
    out: &mut Vec<u8>,
    command: &[u8],
    key: &[u8],
    values: usize,
    value_bytes: usize,
) {
    let count = 2 + values;
    out.reserve(
        1 + digits(count) + 2 + bulk_len(command.len()) + bulk_len(key.len()) + value_bytes,
    );
    write_header(out, b'*', count);
    write_bulk(out, command);
    write_bulk(out, key);
}

/// Appends `<command> <key> <value>...` (e.g. a multi-value RPUSH) to `out`.
///
/// `values` is iterated twice: once to size the command, once to write it.
pub fn write_push<'v, I>(out: &mut Vec<u8>, command: &[u8], key: &[u8], values: I)
where
    I: Iterator<Item = &'v [u8]> + Clone,
{
    let (count, bytes) = values
        .clone()
        .fold((0, 0), |(n, b), v| (n + 1, b + bulk_len(v.len())));
    write_push_header(out, command, key, count, bytes);
    for value in values {
        write_bulk(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::decode::decode;
    use redis_protocol::resp2::types::OwnedFrame;

    fn bulk_strings(frame: OwnedFrame) -> Vec<Vec<u8>> {
        match frame {
            OwnedFrame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    OwnedFrame::BulkString(b) => b,
                    other => panic!("not a bulk string: {other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn push_round_trips_through_redis_protocol() {
        let values: Vec<Vec<u8>> = (0..1200)
            .map(|i| {
                let mut v = format!("{{\"n\":{i},\"s\":\"\\r\\n\"}}").into_bytes();
                v.extend(std::iter::repeat_n(b'x', i % 17));
                v
            })
            .chain([
                Vec::new(),
                b"\r\n$3\r\n*1".to_vec(),
                "日本 ✓".as_bytes().to_vec(),
            ])
            .collect();
        let mut out = b"leading".to_vec();
        write_push(
            &mut out,
            b"RPUSH",
            b"logstash",
            values.iter().map(Vec::as_slice),
        );
        let expected_len = command_len([5, 8].into_iter().chain(values.iter().map(Vec::len)));
        assert_eq!(out.len(), 7 + expected_len);
        let (frame, used) = decode(&out[7..]).unwrap().expect("complete");
        assert_eq!(used, expected_len);
        let args = bulk_strings(frame);
        assert_eq!(args[0], b"RPUSH");
        assert_eq!(args[1], b"logstash");
        assert_eq!(&args[2..], &values[..]);
    }

    #[test]
    fn command_round_trips_and_sizes_are_exact() {
        for args in [
            vec![&b"AUTH"[..], b"user", b"p@ss word"],
            vec![b"SELECT", b"15"],
            vec![b"PING"],
            vec![&[b'a'; 9][..], &[b'b'; 10], &[b'c'; 99], &[b'd'; 100]],
        ] {
            let mut out = Vec::new();
            write_command(&mut out, &args);
            assert_eq!(out.len(), command_len(args.iter().map(|a| a.len())));
            let (frame, used) = decode(&out).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(bulk_strings(frame), args);
        }
        let mut out = Vec::new();
        write_command(&mut out, &[b"SELECT", b"1"]);
        assert_eq!(out, b"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n");
    }

    #[test]
    fn digits_at_boundaries() {
        for (n, d) in [(0, 1), (9, 1), (10, 2), (99, 2), (100, 3), (usize::MAX, 20)] {
            assert_eq!(digits(n), d, "{n}");
        }
    }
}
