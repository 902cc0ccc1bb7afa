//! JSON-lines encoder for the same record dicts the pickle encoder writes: one compact object
//! and a newline, as JSON loggers send over TCP (and, without the newline's meaning, UDP).
//! Pure: appends to a caller's buffer.

use crate::pickle::Val;

fn encode_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn encode_val(v: Val<'_>, out: &mut Vec<u8>) {
    match v {
        Val::Str(s) => encode_str(s, out),
        Val::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        // Rust's shortest round-trip rendering, like Python's repr; never NaN or inf here.
        Val::Float(f) if f.is_finite() => {
            let mut s = f.to_string();
            if !s.contains(['.', 'e', 'E']) {
                s.push_str(".0");
            }
            out.extend_from_slice(s.as_bytes());
        }
        Val::Float(_) | Val::None => out.extend_from_slice(b"null"),
        Val::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
    }
}

/// Appends `{"key":value,...}` and a newline to `out`.
pub fn encode_line(items: &[(&str, Val<'_>)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_str(k, out);
        out.push(b':');
        encode_val(*v, out);
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        let mut out = Vec::new();
        let items = [
            ("msg", Val::Str("a \"quoted\"\\ line\n\u{1}é")),
            ("n", Val::Int(-3)),
            ("f", Val::Float(1700000000.0)),
            ("g", Val::Float(0.1)),
            ("x", Val::None),
            ("b", Val::Bool(true)),
        ];
        encode_line(&items, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msg"], "a \"quoted\"\\ line\n\u{1}é");
        assert_eq!(v["n"], -3);
        assert_eq!(v["f"], 1700000000.0);
        assert!(v["f"].is_f64());
        assert_eq!(v["g"], 0.1);
        assert!(v["x"].is_null());
        assert_eq!(v["b"], true);
    }
}
