#!/usr/bin/env python3
"""Writes the sample records the criterion benches in benches/ read, made by real CPython.

benches/data/typical.frame    SocketHandler.makePickle() of a typical request log record
benches/data/plain.frame      the same without the `tags` list: a record holding no container
benches/data/exception.frame  the same for logger.exception() with a short traceback
benches/data/record.json      the same typical record's dict as one JSON line (a JSON record)
benches/data/logstash.json    python-logstash's LogstashFormatterVersion1 output (a JSON event)

Run from the repository root: python3 scripts/gen-bench-data.py
"""

import json
import logging
import logging.handlers
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parent.parent / "benches" / "data"


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("shop.checkout.api")
    log.setLevel(logging.DEBUG)
    cap = Capture()
    log.addHandler(cap)
    log.info(
        "order %s placed by user %s in %.1f ms",
        "A-10023",
        "ada@example.com",
        12.5,
        extra={"request_id": "9f1c2b7e-4d3a", "status": 201, "tags": ["checkout"]},
    )
    log.info(
        "order %s placed by user %s in %.1f ms",
        "A-10023",
        "ada@example.com",
        12.5,
        extra={"request_id": "9f1c2b7e-4d3a", "status": 201},
    )
    try:
        {}["missing"]
    except KeyError:
        log.exception("lookup failed for %s", "missing")
    sock = logging.handlers.SocketHandler("127.0.0.1", 9)
    typical, plain, exc = cap.records
    for rec in (typical, plain, exc):
        # Where a deployed service would log from, not where this script runs.
        rec.pathname, rec.filename, rec.module = "/srv/shop/checkout/api.py", "api.py", "api"
    exc.exc_text = logging.Formatter().formatException(exc.exc_info).replace(
        str(pathlib.Path(__file__).resolve()), typical.pathname
    )
    (OUT / "typical.frame").write_bytes(sock.makePickle(typical))
    (OUT / "plain.frame").write_bytes(sock.makePickle(plain))
    (OUT / "exception.frame").write_bytes(sock.makePickle(exc))
    d = dict(typical.__dict__)
    d["msg"] = typical.getMessage()
    d["args"] = None
    (OUT / "record.json").write_text(json.dumps(d) + "\n")
    try:
        from logstash.formatter import LogstashFormatterVersion1
    except ImportError:
        sys.exit("pip install python-logstash first")
    fmt = LogstashFormatterVersion1(message_type="logstash", tags=["web"])
    (OUT / "logstash.json").write_bytes(fmt.format(typical) + b"\n")


if __name__ == "__main__":
    main()
