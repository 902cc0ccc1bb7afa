#!/usr/bin/env python3
"""Logs a scenario through CPython's own logging handlers and prints, as one JSON object on
stdout, what each record should become in Redis.

Transports: `tcp` (logging.handlers.SocketHandler(host, port)), `unix`
(SocketHandler(path, None)), `udp` (DatagramHandler(host, port)); `tcp-json`, `unix-json` and
`udp-json` send the same record dict SocketHandler pickles, as a JSON line or datagram instead
(json.dumps(default=str)), which pystash must format like a pickled record.

Pickle protocol: 1 as SocketHandler writes it, or --pickle-protocol N (0-5).

Scenarios:
  full    every kind of record the event layout has to handle (messages are unique)
  simple  --count records "<prefix> <i>", nothing else
  seq     --count records "seq <i>" with a `seq` extra, paced at --rate records/s; prints only
          counts (used by the Redis outage test)

Output: {"hostname", "fqdn", "records": [expect.expected(record), ...]} in the order sent.
"""

import argparse
import datetime
import decimal
import json
import logging
import logging.handlers
import pickle
import struct
import sys
import time
import uuid

import expect


class Point:
    """A class the proxy cannot know: rendered as `__main__.Point(x=1, y=2)`."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


def record_json(handler, record):
    """SocketHandler.makePickle's dict, as JSON."""
    if record.exc_info:
        handler.format(record)  # sets record.exc_text, as makePickle does
    d = dict(record.__dict__)
    d["msg"] = record.getMessage()
    d["args"] = None
    d["exc_info"] = None
    d.pop("message", None)
    return json.dumps(d, default=str).encode("utf-8")


class JsonSocketHandler(logging.handlers.SocketHandler):
    def makePickle(self, record):
        return record_json(self, record) + b"\n"


class JsonDatagramHandler(logging.handlers.DatagramHandler):
    def makePickle(self, record):
        return record_json(self, record)


def with_protocol(cls, protocol):
    """`cls` pickling with `protocol` instead of SocketHandler's 1 (older and newer clients)."""

    class Handler(cls):
        def makePickle(self, record):
            frame = super().makePickle(record)
            d = pickle.loads(frame[4:])
            data = pickle.dumps(d, protocol)
            return struct.pack(">L", len(data)) + data

    return Handler


def make_handler(args):
    if args.pickle_protocol is not None:
        tcp, udp = (
            with_protocol(logging.handlers.SocketHandler, args.pickle_protocol),
            with_protocol(logging.handlers.DatagramHandler, args.pickle_protocol),
        )
    else:
        tcp, udp = logging.handlers.SocketHandler, logging.handlers.DatagramHandler
    if args.transport == "tcp-json":
        return JsonSocketHandler(args.host, args.port)
    if args.transport == "unix-json":
        return JsonSocketHandler(args.path, None)
    if args.transport == "udp-json":
        return JsonDatagramHandler(args.host, args.port)
    if args.transport == "tcp":
        return tcp(args.host, args.port)
    if args.transport == "unix":
        return tcp(args.path, None)
    if args.transport == "udp":
        return udp(args.host, args.port)
    raise SystemExit(f"unknown transport {args.transport}")


def fail():
    return 1 / 0


def full(log, args):
    log.info("plain message")
    log.warning("args %s %d %.2f %r", "x", 42, 3.14159, {"k": 1})
    log.error("héllo ✓ 日本 %s", "😀")
    log.info("escapes: quote\" backslash\\ newline\n tab\t ctrl\x01 del\x7f sep\u2028 end")
    log.info("")
    log.info({"not": "a string"})
    shared = [1, "two"]
    log.info(
        "extras of every type",
        extra={
            "s": "héllo ✓ 日本 😀 \"q\" \\",
            "i": 42,
            "neg": -7,
            "big": 2**40,
            "f": 3.14159,
            "tiny": 1e-7,
            "huge": 1.5e300,
            "t": True,
            "fa": False,
            "none": None,
            "lst": [1, "a", None, 2.5, [True, False]],
            "dct": {"a": 1, "b": [1, 2], "c": {"d": None}, "e": "é"},
            "tup": (1, "x", (2, 3)),
            "empty_list": [],
            "empty_dict": {},
            "empty_str": "",
            "shared_a": shared,
            "shared_b": shared,
            "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
            "raw": b"\x00ab\xff",
            "raw_quote": b"it's \"q\"\n",
            "point": Point(1, 2),
            "st": {1, 2},
            "dec": decimal.Decimal("1.50"),
            "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        },
    )
    log.info("tagged record", extra={"tags": ["t1", "t2"], "after_tags": 1})
    try:
        fail()
    except ZeroDivisionError:
        log.exception("failed %s", "op", extra={"ctx": "exception"})
    try:
        try:
            {}["missing"]
        except KeyError as e:
            raise ValueError("chained é") from e
    except ValueError:
        log.error("chained exception", exc_info=True, extra={"tags": ["exc"]})
    log.debug("with stack", stack_info=True)
    try:
        fail()
    except ZeroDivisionError:
        log.critical("exception and stack", exc_info=True, stack_info=True)
    logging.getLogger("app.sub.module").warning("other logger")
    logging.addLevelName(25, "NOTICE")
    log.log(25, "custom level")
    if not args.transport.startswith("udp"):
        # A datagram cannot carry this; a stream must.
        log.info("big %s", "x" * 100_000)
    # Timestamps Python rounds in particular ways: microsecond rounding up into the next second,
    # values that are not exact in binary, before the epoch, far future.
    for i, created in enumerate(
        [1.5, 1700000000.9999996, 1234567890.0000005, -1.25, 4102444800.123456, 1700000000.0]
    ):
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 1000 + i, "created %r", (created,), None
        )
        record.created = created
        log.handle(record)


def simple(log, args):
    for i in range(args.count):
        log.info("%s %d", args.prefix, i)


def seq(log, args):
    start = time.monotonic()
    for i in range(args.count):
        log.info("seq %d", i, extra={"seq": i})
        if args.rate and i % 50 == 49:
            ahead = (i + 1) / args.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return time.monotonic() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transport", choices=["tcp", "udp", "unix", "tcp-json", "udp-json", "unix-json"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--path")
    p.add_argument("--scenario", choices=["full", "simple", "seq"], default="full")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--prefix", default="simple")
    p.add_argument("--logger", default="pystash.test")
    p.add_argument("--pickle-protocol", type=int, help="re-pickle each record with this protocol")
    args = p.parse_args()

    handler = make_handler(args)
    recorder = expect.Recorder()
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    if args.scenario != "seq":
        root.addHandler(recorder)
    log = logging.getLogger(args.logger)

    out = expect.host_info()
    if args.scenario == "full":
        full(log, args)
    elif args.scenario == "simple":
        simple(log, args)
    else:
        out["seconds"] = seq(log, args)
        out["sent"] = args.count
    handler.flush()
    handler.close()
    root.removeHandler(handler)
    as_json = args.transport.endswith("-json")
    out["records"] = [expect.expected(r, as_json) for r in recorder.records]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
