#!/usr/bin/env python3
"""Writes the pickle fixtures the tests in src/decode/pickle.rs and src/repr.rs load.

Each fixture is what CPython's logging.handlers.SocketHandler sends after its 4-byte length:
`pickle.dumps(dict(record.__dict__), 1)` (`makePickle`), here for one realistic record with
extras of every common type, pickled at protocols 0-5, and for a record with an exception.

Next to them, expected.tsv holds one line per field: `file<TAB>key<TAB>expected`, where
expected is what `repr::repr_string` must render for the decoded value: Python's own `repr()`
for plain values, and the readable forms pystash promises for the rest (ISO dates, `str()` of
Decimal/UUID/timedelta, `module.Class(k=v)` for objects).

Run from the repository root: python3 scripts/gen-pickle-fixtures.py
"""

import datetime
import decimal
import enum
import logging
import logging.handlers
import pathlib
import pickle
import sys
import uuid

OUT = pathlib.Path(__file__).resolve().parent.parent / "src" / "decode" / "testdata"


class Point:
    """A plain class: pickled as its __dict__, by reference to __main__.Point."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


class Color(enum.Enum):
    RED = 1


UTC = datetime.timezone.utc
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))

# (value, expected rendering when it is not Python's repr())
EXTRAS = {
    "x_str": ("héllo ✓ 日本 'quoted' \"double\"\ttab", None),
    "x_int": (-42, None),
    "x_big": (2**100 + 7, str(2**100 + 7)),
    "x_negbig": (-(2**70), str(-(2**70))),
    "x_float": (3.25, None),
    "x_tiny": (1e-300, None),
    "x_true": (True, None),
    "x_none": (None, None),
    "x_list": ([1, "two", 3.0, None, [False]], None),
    "x_dict": ({"a": 1, "b": {"c": [2, 3]}}, None),
    "x_tuple": ((1, "b", (2,)), None),
    "x_naive": (datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), None),
    "x_utc": (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), None),
    "x_ist": (datetime.datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=IST), None),
    "x_date": (datetime.date(2024, 2, 29), None),
    "x_time": (datetime.time(13, 14, 15, 500), None),
    "x_delta": (datetime.timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5), None),
    "x_negdelta": (datetime.timedelta(seconds=-1), None),
    "x_bytes": (b"ab\x00'\xff\n", None),
    "x_emptybytes": (b"", None),
    "x_bytearray": (bytearray(b"\x01xy"), repr(b"\x01xy")),
    "x_set": ({3, 1, 2}, None),
    "x_emptyset": (set(), None),
    # Value has no frozenset variant: it decodes to a set.
    "x_frozenset": (frozenset({5}), "{5}"),
    "x_decimal": (decimal.Decimal("1.50"), None),
    "x_uuid": (uuid.UUID("12345678-1234-5678-1234-567812345678"), None),
    "x_point": (Point(1, "y"), "__main__.Point(x=1, y='y')"),
    "x_color": (Color.RED, "__main__.Color(1)"),
    "x_error": (ValueError("bad", 2), "builtins.ValueError('bad', 2)"),
}


def expected(value, override):
    if override is not None:
        return override
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (datetime.timedelta, decimal.Decimal, uuid.UUID)):
        return str(value)
    return repr(value)


def make_record(exc_info=None):
    record = logging.LogRecord(
        "app.db",
        logging.WARNING if exc_info is None else logging.ERROR,
        "/srv/app/db.py",
        42,
        "query %s took %.1f ms",
        ("users", 12.5),
        exc_info,
        func="run_query",
    )
    # Fixed values where LogRecord reads the clock, the process or the thread.
    record.created = 1704164645.123456
    record.msecs = 123.0
    record.relativeCreated = 1234.5678
    record.thread = 140234567890123
    record.threadName = "MainThread"
    record.process = 4242
    record.processName = "MainProcess"
    return record


def record_dict(record):
    """What SocketHandler.makePickle pickles (CPython Lib/logging/handlers.py)."""
    d = dict(record.__dict__)
    d["msg"] = record.getMessage()
    d["args"] = None
    d["exc_info"] = None
    d.pop("message", None)
    return d


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.SocketHandler("localhost", None)
    lines = []

    record = make_record()
    overrides = {}
    for key, (value, override) in EXTRAS.items():
        setattr(record, key, value)
        overrides[key] = override
    d = record_dict(record)
    wire = handler.makePickle(record)
    assert wire[4:] == pickle.dumps(d, 1), "makePickle is no longer protocol 1"
    for proto in range(6):
        name = f"record-p{proto}.pickle"
        (OUT / name).write_bytes(pickle.dumps(d, proto))
        for key, value in d.items():
            lines.append((name, key, expected(value, overrides.get(key))))

    try:
        {}["missing"]
    except KeyError:
        record = make_record(sys.exc_info())
    wire = handler.makePickle(record)  # formats the traceback into exc_text
    d = record_dict(record)
    assert d["exc_text"].startswith("Traceback"), d["exc_text"]
    name = "exc-p1.pickle"
    (OUT / name).write_bytes(wire[4:])
    for key, value in d.items():
        lines.append((name, key, repr(value)))

    with open(OUT / "expected.tsv", "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            assert not any("\t" in part or "\n" in part for part in line), line
            f.write("\t".join(line) + "\n")


if __name__ == "__main__":
    main()
