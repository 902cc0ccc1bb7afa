//! The generator's records checked by real CPython: pickle frames are byte for byte what
//! `SocketHandler.makePickle` writes for a record with the same fields, they decode with
//! `pickle.loads` + `logging.makeLogRecord`, and JSON lines parse back to the same dict.

use std::path::Path;
use std::process::Command;

use pystash_loadtest::dist::SizeDist;
use pystash_loadtest::pickle::{self, Val};
use pystash_loadtest::record::{RecordGen, Stamp};
use pystash_loadtest::Format;
use serde_json::{json, Value};

fn val_json(v: Val<'_>) -> Value {
    match v {
        Val::Str(s) => json!(s),
        Val::Int(i) => json!(i),
        Val::Float(f) => json!(f),
        Val::Bool(b) => json!(b),
        Val::None => Value::Null,
    }
}

fn pairs_json(items: &[(&str, Val<'_>)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(k, v)| json!([k, val_json(*v)]))
            .collect(),
    )
}

/// Runs `script` with the test directory as its argument; it prints `ok N` on success.
fn python(dir: &Path, script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python3 must be installed (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pystash-loadtest-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Frames as `makePickle` returns them, field values as JSON pairs in dict order.
const CHECK_FRAMES: &str = r#"
import json, logging, logging.handlers, pickle, struct, sys
d = sys.argv[1]
records = json.load(open(d + "/records.json"))
data = open(d + "/frames.bin", "rb").read()
handler = logging.handlers.SocketHandler("localhost", None)
off = 0
for i, pairs in enumerate(records):
    (n,) = struct.unpack(">L", data[off:off + 4])
    ours = data[off:off + 4 + n]
    off += 4 + n
    fields = dict(pairs)
    # A real record with these fields: LogRecord's own attributes in their order, then extras.
    rec = logging.makeLogRecord(fields)
    for k in list(rec.__dict__):
        if k not in fields:  # taskName on 3.12+; the generator writes 3.11's records
            del rec.__dict__[k]
    theirs = handler.makePickle(rec)
    if ours != theirs:
        import pickletools
        print("record", i, "differs"); pickletools.dis(ours[4:]); pickletools.dis(theirs[4:])
        sys.exit(1)
    back = logging.makeLogRecord(pickle.loads(ours[4:]))
    assert back.getMessage() == fields["msg"], i
    assert {k: back.__dict__[k] for k in fields} == fields, i
assert off == len(data)
print("ok", len(records))
"#;

#[test]
fn pickle_frames_are_byte_exact_with_socket_handler() {
    let dir = temp_dir("frames");
    let sizes: SizeDist = "1..600@4,600..3000@4,20000..70000@1".parse().unwrap();
    let mut frames = Vec::new();
    let mut records = Vec::new();
    for stream in 0..3u32 {
        let mut gen = RecordGen::new(
            42,
            stream,
            sizes.clone(),
            Format::Pickle,
            31_337,
            1_700_000_000_000_000_000,
        );
        for seq in [
            0u64,
            1,
            2,
            255,
            256,
            65_535,
            65_536,
            1 << 31,
            1 << 40,
            7,
            8,
            9,
            10,
            11,
            12,
            13,
            14,
            15,
            16,
            17,
        ]
        .into_iter()
        .chain(100..160)
        {
            let stamp = Stamp {
                run: 0xdead_beef,
                stream,
                seq,
                due_ns: 1_700_000_000_123_456_789 + seq * 1000,
                sent_ns: 1_700_000_000_123_999_999 + seq * 1000,
            };
            gen.encode(stamp, &mut frames);
            records.push(pairs_json(&gen.items()));
        }
    }
    std::fs::write(dir.join("frames.bin"), &frames).unwrap();
    std::fs::write(dir.join("records.json"), Value::Array(records).to_string()).unwrap();
    let out = python(&dir, CHECK_FRAMES);
    assert_eq!(out.trim(), "ok 240");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Generic dicts: memo past 256 entries (LONG_BINPUT), SETITEMS batches of 1000, every int
/// opcode, floats, None, bools.
const CHECK_DICTS: &str = r#"
import json, pickle, sys
d = sys.argv[1]
dicts = json.load(open(d + "/dicts.json"))
data = open(d + "/dicts.bin", "rb").read()
off = 0
for i, pairs in enumerate(dicts):
    theirs = pickle.dumps(dict(pairs), 1)
    ours = data[off:off + len(theirs)]
    off += len(theirs)
    if ours != theirs:
        print("dict", i, "of", len(pairs), "differs at", next(j for j in range(len(theirs)) if ours[j:j+1] != theirs[j:j+1]))
        sys.exit(1)
assert off == len(data)
print("ok", len(dicts))
"#;

#[test]
fn dicts_match_pickle_dumps_protocol_1() {
    let dir = temp_dir("dicts");
    let keys: Vec<String> = (0..2600).map(|i| format!("key{i}")).collect();
    let strs: Vec<String> = (0..2600).map(|i| format!("value é {i}")).collect();
    let ints = [
        0i64,
        1,
        255,
        256,
        65_535,
        65_536,
        -1,
        -256,
        2_147_483_647,
        -2_147_483_648,
        1 << 31,
        -(1 << 31) - 1,
        i64::MAX,
        i64::MIN,
    ];
    let mut bin = Vec::new();
    let mut dicts = Vec::new();
    for n in [0usize, 1, 2, 255, 256, 999, 1000, 1001, 2000, 2600] {
        let items: Vec<(&str, Val<'_>)> = (0..n)
            .map(|i| {
                let v = match i % 6 {
                    0 => Val::Str(&strs[i]),
                    1 => Val::Int(ints[i % ints.len()]),
                    2 => Val::Float(i as f64 * 0.1 - 3.0),
                    3 => Val::None,
                    4 => Val::Bool(i % 12 == 4),
                    _ => Val::Int(i as i64 * 1_000_003),
                };
                (keys[i].as_str(), v)
            })
            .collect();
        pickle::encode_dict(&items, &mut bin);
        dicts.push(pairs_json(&items));
    }
    std::fs::write(dir.join("dicts.bin"), &bin).unwrap();
    std::fs::write(dir.join("dicts.json"), Value::Array(dicts).to_string()).unwrap();
    assert_eq!(python(&dir, CHECK_DICTS).trim(), "ok 10");
    std::fs::remove_dir_all(dir).unwrap();
}

const CHECK_LINES: &str = r#"
import json, logging, sys
d = sys.argv[1]
records = json.load(open(d + "/records.json"))
lines = open(d + "/lines.jsonl", "rb").read().split(b"\n")
assert lines[-1] == b""
for pairs, line in zip(records, lines):
    obj = json.loads(line)
    assert list(obj.items()) == [tuple(p) for p in pairs]
    assert logging.makeLogRecord(obj).getMessage() == obj["msg"]
print("ok", len(lines) - 1)
"#;

#[test]
fn json_lines_parse_in_cpython() {
    let dir = temp_dir("lines");
    let sizes: SizeDist = "300..5000".parse().unwrap();
    let mut gen = RecordGen::new(9, 4, sizes, Format::Json, 1, 1_700_000_000_000_000_000);
    let mut lines = Vec::new();
    let mut records = Vec::new();
    for seq in 0..100 {
        let stamp = Stamp {
            run: 1,
            stream: 4,
            seq,
            due_ns: 1_700_000_001_000_000_000,
            sent_ns: 1_700_000_001_000_000_500,
        };
        gen.encode(stamp, &mut lines);
        records.push(pairs_json(&gen.items()));
    }
    std::fs::write(dir.join("lines.jsonl"), &lines).unwrap();
    std::fs::write(dir.join("records.json"), Value::Array(records).to_string()).unwrap();
    assert_eq!(python(&dir, CHECK_LINES).trim(), "ok 100");
    std::fs::remove_dir_all(dir).unwrap();
}
