#!/usr/bin/env python3
"""Writes the fuzz seeds in fuzz/seeds/<target>/ (committed; scripts/fuzz.sh copies them into
the scratch corpus fuzz/corpus/<target>/ that the fuzzers grow).

Pickles come from the real logging.handlers.SocketHandler.makePickle, for varied records, at
every pickle protocol 0 to 5 (makePickle itself uses 1; the others show the decoder every
opcode family CPython writes). JSON lines are record dicts, python-logstash events (when
python-logstash is installed) and hostile lines; RESP seeds are Redis replies. Headers follow
fuzz/checks.rs: framing seeds start with [limit_hi, limit_lo, step], RESP seeds with
[flags, chunk].

Usage: fuzz/seed.py   (rewrites the generated seeds; files copied from the repository and crash
inputs, named crash-*, are kept)
"""

import datetime
import decimal
import enum
import json
import logging
import logging.handlers
import os
import pickle
import shutil
import struct
import sys
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


class Point:
    """A custom class in an extra: pickled as __main__.Point with its __dict__."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


class Color(enum.Enum):
    RED = 1


class Capture(logging.handlers.SocketHandler):
    """SocketHandler that keeps its frames, pickled at `protocol`, instead of sending them."""

    protocol = 1

    def __init__(self):
        super().__init__("127.0.0.1", 9)
        self.frames = []

    def makePickle(self, record):
        # The stdlib method, with its pickle.dumps(d, 1) pointed at the chosen protocol.
        real = logging.handlers.pickle
        proto = self.protocol

        class Shim:
            @staticmethod
            def dumps(obj, _protocol=None):
                return real.dumps(obj, proto)

        logging.handlers.pickle = Shim
        try:
            return super().makePickle(record)
        finally:
            logging.handlers.pickle = real

    def send(self, s):
        self.frames.append(s)


def log_everything(log):
    """Logs the varied records; returns their names in order."""
    names = []

    def rec(name, fn):
        fn()
        names.append(name)

    rec("plain", lambda: log.info("hello world"))
    rec("args", lambda: log.warning("user %s id %d ratio %.2f %r", "ada", 42, 0.5, [1]))
    rec("unicode", lambda: log.error("h\u00e9llo \u2603 \u65e5\u672c \U0001f600 \x00 \u2028"))
    rec("surrogate", lambda: log.info("lone \ud800 surrogate"))
    extras = {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
        "when_tz": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 5, 1),
        "clock": datetime.time(12, 30, 1, 5),
        "delta": datetime.timedelta(days=-1, seconds=5, microseconds=7),
        "raw": b"\x00a\xff'\"",
        "buf": bytearray(b"xyz"),
        "point": Point(1, Point(2, None)),
        "ids": {3, 1, 2},
        "frozen": frozenset(["a"]),
        "price": decimal.Decimal("-12.3400"),
        "nan_dec": decimal.Decimal("NaN"),
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "z": complex(1, -2),
        "pair": (1, "two", None),
        "nested": {"a": [1, 2.5, {"b": True}], 7: "int key", (1, 2): "tuple key"},
        "big": 2**100,
        "neg_big": -(2**70),
        "floats": [float("nan"), float("inf"), -0.0, 1e-310, 1e308],
        "color": Color.RED,
        "tags": ["auth", "x"],
        "request_id": 42,
        "shared": None,
    }
    shared = [1, 2]
    extras["shared"] = [shared, shared]
    rec("extras", lambda: log.info("with extras", extra=extras))
    rec("tags_not_list", lambda: log.info("odd tags", extra={"tags": "just-a-string"}))

    def exc():
        try:
            {}["missing"]
        except KeyError:
            log.exception("division %s", "failed")

    rec("exception", exc)
    rec("stack_info", lambda: log.debug("where am I", stack_info=True))
    rec("non_str_msg", lambda: log.critical({"msg": "a dict as the message"}))
    rec("long", lambda: log.info("big %s", "z" * 3000))
    return names


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def clean():
    """Removes generated seeds; keeps copied files and crash inputs."""
    for target in ("framing", "pickle", "json_event", "resp_reply"):
        d = os.path.join(SEEDS, target)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name.startswith("gen-"):
                os.remove(os.path.join(d, name))


def prefixed(payload):
    return struct.pack(">L", len(payload)) + payload


def framing_header(limit, step):
    return struct.pack(">HB", limit, step)


def main():
    clean()
    cap = Capture()
    log = logging.getLogger("pystash.fuzz.seed")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(cap)

    frames_p1 = []
    for proto in range(0, 6):
        cap.protocol = proto
        cap.frames.clear()
        names = log_everything(log)
        for name, frame in zip(names, cap.frames):
            write("pickle", f"gen-{name}-p{proto}", frame[4:])
        if proto == 1:
            frames_p1 = list(zip(names, cap.frames))

    # Streams as SocketHandler sends them, mixed with JSON lines, read in various ways.
    good = [f for _, f in frames_p1[:3]]
    stream = b"".join(good) + b'{"message": "json line"}\n' + good[0] + b"text line\r\n\n"
    write("framing", "gen-stream-whole", framing_header(4096, 0) + stream)
    write("framing", "gen-stream-bytewise", framing_header(4096, 1) + stream)
    write("framing", "gen-stream-chunks", framing_header(4096, 13) + stream)
    write("framing", "gen-stream-small-limit", framing_header(64, 7) + stream)
    write("framing", "gen-exception", framing_header(8192, 0) + dict(frames_p1)["exception"])
    write("framing", "gen-truncated", framing_header(4096, 3) + good[0][: len(good[0]) // 2])
    write("framing", "gen-huge-prefix", framing_header(100, 5) + b"\x00\xff\xff\xffabc" + good[1])
    write("framing", "gen-long-line", framing_header(10, 2) + b"a" * 30 + b"\nok\n{}")
    write("framing", "gen-limit-line", framing_header(10, 1) + b"a" * 10 + b"\r\n" + b"b" * 11)

    # JSON lines.
    rec = logging.LogRecord("app.mod", logging.INFO, "/srv/app/mod.py", 12, "user %s", ("ada",), None)
    d = dict(rec.__dict__)
    d["msg"] = rec.getMessage()
    d["args"] = None
    write("json_event", "gen-record-dict", json.dumps(d).encode())
    d2 = dict(d, message="already formatted", extra_field={"k": [1, None]}, tags=["x"])
    write("json_event", "gen-record-dict-message", json.dumps(d2).encode())
    write("json_event", "gen-record-created-str", json.dumps(dict(d, created="now")).encode())
    write("json_event", "gen-record-created-huge", json.dumps(dict(d, created=1e20)).encode())
    write("json_event", "gen-record-created-neg", json.dumps(dict(d, created=-1e11)).encode())
    write("json_event", "gen-event", b'{"@timestamp":"2024-01-01T00:00:00Z","message":"hi","n":1}')
    write("json_event", "gen-event-dup-keys", b'{"a":1,"a":2,"@version":"0","tags":"t","host":5}')
    write("json_event", "gen-numbers", b'{"big":123456789012345678901234567890,"f":1e308,"neg":-0,"e":1E-400}')
    write("json_event", "gen-escapes", b'{"s":"\\u00e9\\ud83d\\ude00\\n\\u0000","\\u2028":"\\""}')
    write("json_event", "gen-lone-surrogate", b'{"s":"\\ud800"}')
    write("json_event", "gen-invalid-json", b'{"message": "unterminated')
    write("json_event", "gen-invalid-utf8", b'{"message": "\xff\xfe"}')
    write("json_event", "gen-text", b"plain text log line")
    write("json_event", "gen-text-invalid-utf8", b"caf\xe9")
    write("json_event", "gen-not-object", b"  [1,2,3]")
    write("json_event", "gen-empty", b"")
    write("json_event", "gen-deep-ok", b'{"a":' * 100 + b"1" + b"}" * 100)
    write("json_event", "gen-deep-over", b'{"a":' * 130 + b"1" + b"}" * 130)
    write("json_event", "gen-deep-list", b'{"a":' + b"[" * 200 + b"]" * 200 + b"}")
    try:
        import logstash  # python-logstash, as its handlers send
    except ImportError:
        logstash = None
    if logstash is not None:
        for version in (0, 1):
            fmt = logstash.LogstashFormatterVersion0 if version == 0 else logstash.LogstashFormatterVersion1
            f = fmt(message_type="plmsg", tags=["pl-tag"])
            r = logging.LogRecord("pl", logging.ERROR, "/p.py", 1, "boom %d", (1,), None)
            r.user = "ada"
            r.when = datetime.datetime(2024, 1, 1)
            write("json_event", f"gen-python-logstash-v{version}", f.format(r))

    # RESP replies. flags: bit0 AUTH, bit1 SELECT, bit2 max-queue-length, bits 4-7 records - 1.
    def resp(name, flags, chunk, replies):
        write("resp_reply", f"gen-{name}", bytes([flags, chunk]) + replies)

    resp("ack", 0x20, 0, b":3\r\n")
    resp("ack-bytewise", 0x70, 1, b":3\r\n:6\r\n:8\r\n")
    resp("setup", 0x23, 5, b"+OK\r\n+OK\r\n:3\r\n")
    resp("auth-refused", 0x21, 0, b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
    resp("oom-then-ok", 0x70, 4, b"-OOM command not allowed when used memory > 'maxmemory'.\r\n:3\r\n:6\r\n:8\r\n")
    resp("wrongtype", 0x20, 0, b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    resp("noauth", 0x50, 3, b"-NOAUTH Authentication required.\r\n:3\r\n:6\r\n")
    resp("readonly", 0x20, 0, b"-READONLY You can't write against a read only replica.\r\n")
    resp("loading", 0x20, 0, b"-LOADING Redis is loading the dataset in memory\r\n")
    resp("congestion", 0x74, 0, b":9\r\n:9\r\n:2\r\n:5\r\n:8\r\n")
    resp("simple-string", 0x20, 0, b"+OK\r\n")
    resp("array", 0x20, 0, b"*2\r\n$1\r\na\r\n:1\r\n")
    resp("null", 0x20, 0, b"$-1\r\n*-1\r\n")
    resp("partial", 0x20, 2, b":1")
    resp("unrequested", 0x00, 0, b":1\r\n:2\r\n")
    resp("garbage", 0x20, 0, b"?garbage\r\n")
    resp("huge-bulk", 0x20, 0, b"$99999999999\r\nabc")
    resp("negative-len", 0x20, 0, b":-5\r\n")
    resp("i64-overflow", 0x20, 0, b":99999999999999999999\r\n")

    # Files already in the repository.
    for src in sorted(os.listdir(os.path.join(ROOT, "src/decode/testdata"))):
        if src.endswith(".pickle"):
            shutil.copy(os.path.join(ROOT, "src/decode/testdata", src), os.path.join(SEEDS, "pickle", "repo-" + src))
    bench = os.path.join(ROOT, "benches/data")
    for src in sorted(os.listdir(bench)):
        with open(os.path.join(bench, src), "rb") as f:
            data = f.read()
        if src.endswith(".frame"):
            write("pickle", "repo-" + src, data[4:])
            write("framing", "repo-" + src, framing_header(4096, 0) + data)
        elif src.endswith(".json"):
            write("json_event", "repo-" + src, data.rstrip(b"\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
