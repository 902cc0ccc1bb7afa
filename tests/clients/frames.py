#!/usr/bin/env python3
"""Builds wire frames for the bad-input tests and prints them as hex in one JSON object.

Good frames come from the real logging.handlers.SocketHandler.makePickle (a DatagramHandler
datagram is the same bytes). Bad frames are hand-made pickles: code-running reduces, nesting
100,000 deep, invalid opcodes, a top-level value that is not a record, truncation.

Usage: frames.py --touch PATH --good N [--big-bytes N]
"""

import argparse
import json
import logging
import logging.handlers
import pickle
import struct
import sys

MARKER = "__PYSTASH_SPLICE_MARKER__"
DEPTH = 100_000


class Capture(logging.handlers.SocketHandler):
    """SocketHandler that keeps its frames instead of sending them."""

    def __init__(self):
        super().__init__("127.0.0.1", 9)
        self.frames = []

    def send(self, s):
        self.frames.append(s)


def frame(payload):
    return struct.pack(">L", len(payload)) + payload


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--touch", required=True, help="file a code-running pickle would create")
    p.add_argument("--good", type=int, default=50)
    p.add_argument("--big-bytes", type=int, default=8192)
    args = p.parse_args()

    cap = Capture()
    log = logging.getLogger("pystash.frames")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(cap)

    for i in range(args.good):
        log.info("good %d", i)
    good = [{"message": f"good {i}", "frame": f.hex()} for i, f in enumerate(cap.frames)]
    cap.frames.clear()

    log.info("big %s", "z" * args.big_bytes)
    big = cap.frames.pop()

    def spliced(message, value_ops):
        """A real record frame whose `evil` extra is replaced by hand-written pickle opcodes."""
        log.info(message, extra={"evil": MARKER})
        raw = cap.frames.pop()[4:]
        marker = b"X" + struct.pack("<I", len(MARKER)) + MARKER.encode()  # BINUNICODE
        assert marker.startswith(b"X") and raw.count(marker) == 1, "protocol 1 layout changed"
        return frame(raw.replace(marker, value_ops))

    touch = args.touch.encode()
    os_system = b"cos\nsystem\n(S'touch " + touch + b"'\ntR"
    builtin_eval = (
        b"c__builtin__\neval\n(S'__import__(\"os\").system(\"touch " + touch + b"\")'\ntR"
    )
    deep = b"]" * DEPTH + b"a" * (DEPTH - 1)

    good_frame = bytes.fromhex(good[0]["frame"])
    frames = {
        "bad_opcode": frame(b"\xff" + bytes(range(64))),
        "list_pickle": frame(pickle.dumps([1, 2], 1)),
        "os_system_bare": frame(os_system + b"."),
        "deep_bare": frame(deep + b"."),
        "os_system_in_record": spliced("evil os.system", os_system),
        "eval_in_record": spliced("evil eval", builtin_eval),
        "deep_in_record": spliced("evil deep", deep),
        # The length prefix promises the whole record; only half of it follows.
        "truncated": good_frame[: len(good_frame) // 2],
        "big": big,
    }
    out = {
        "good": good,
        "frames": {k: v.hex() for k, v in frames.items()},
        "spliced_messages": ["evil os.system", "evil eval", "evil deep"],
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
