#!/usr/bin/env python3
"""Logs through python-logstash's TCPLogstashHandler / UDPLogstashHandler (version=1) and prints
the exact JSON payloads it sent, as {"payloads": [str, ...]} in the order sent.

Those events are not CPython records: pystash keeps each as it is and only adds @timestamp,
@version, host, type and tags where missing (python-logstash already sets all five).
"""

import argparse
import datetime
import json
import logging
import sys

import logstash


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transport", choices=["tcp", "udp"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()

    cls = logstash.TCPLogstashHandler if args.transport == "tcp" else logstash.UDPLogstashHandler
    handler = cls(args.host, args.port, message_type="plmsg", tags=["pl-tag"], version=1)
    payloads = []
    make = handler.makePickle

    def capture(record):
        data = make(record)
        payloads.append(data.rstrip(b"\n").decode("utf-8"))
        return data

    handler.makePickle = capture
    log = logging.getLogger("pl.test")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)

    log.info("pl plain")
    log.warning("pl args %s %d", "x", 7)
    log.error("pl héllo ✓ 日本 😀")
    log.info(
        "pl extras",
        extra={
            "s": "str",
            "i": 1,
            "f": 2.5,
            "b": True,
            "n": None,
            "l": [1, 2],
            "d": {"k": "v"},
            "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        },
    )
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("pl exception")
    log.info("pl big %s", "y" * (2000 if args.transport == "udp" else 50_000))

    handler.close()
    json.dump({"payloads": payloads}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
