#!/usr/bin/env python3
"""A Python application logging to pystash with the standard library only.

Every kind of record goes out twice: through logging.handlers.SocketHandler (TCP, pickles
with a length prefix) and through DatagramHandler (UDP, one pickle per datagram). Each record
carries `kind` and `transport` extras so the events are easy to find in Redis.

    python3 scripts/example_app.py HOST TCP_PORT UDP_PORT
    python3 scripts/example_app.py 127.0.0.1 9020 9021

Kinds: plain, args (%-formatting), unicode, extras (one of every value type), tags,
exception (exc_info), stack (stack_info), critical.
"""

import datetime
import decimal
import logging
import logging.handlers
import sys
import uuid


class Point:
    """A custom object: pystash renders it as a string, it never runs its code."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


def log_every_kind(log, transport):
    def extra(kind, **more):
        return {"kind": kind, "transport": transport, **more}

    log.info("plain message", extra=extra("plain"))
    log.info("user %s has %d items", "ada", 3, extra=extra("args"))
    log.warning("héllo wörld ✓ 日本", extra=extra("unicode"))
    log.info(
        "one extra of every type",
        extra=extra(
            "extras",
            an_int=42,
            a_big_int=2**80,
            a_float=1.5,
            a_bool=True,
            a_none=None,
            a_str="text",
            a_list=[1, "two", 3.0],
            a_tuple=(1, 2),
            a_dict={"nested": {"deep": [1, 2]}},
            a_set={7},
            some_bytes=b"\x00raw",
            a_datetime=datetime.datetime(2024, 1, 2, 3, 4, 5, 123456),
            a_decimal=decimal.Decimal("1.10"),
            a_uuid=uuid.UUID(int=1),
            an_object=Point(1, 2),
        ),
    )
    log.info("tagged", extra=extra("tags", tags=["billing", "eu"]))
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("division failed", extra=extra("exception"))
    log.info("where am I", stack_info=True, extra=extra("stack"))
    log.critical("disk full", extra=extra("critical"))


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    host, tcp_port, udp_port = argv[1], int(argv[2]), int(argv[3])

    tcp = logging.getLogger("example.tcp")
    tcp.setLevel(logging.DEBUG)
    tcp.addHandler(logging.handlers.SocketHandler(host, tcp_port))

    udp = logging.getLogger("example.udp")
    udp.setLevel(logging.DEBUG)
    udp.addHandler(logging.handlers.DatagramHandler(host, udp_port))

    log_every_kind(tcp, "tcp")
    log_every_kind(udp, "udp")
    logging.shutdown()  # closes the TCP connection after the last record
    print("sent 8 records over tcp and 8 over udp")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
