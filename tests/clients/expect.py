"""What a pystash event should hold for a CPython LogRecord, computed in Python.

The integration tests (tests/common/expect.rs) build the whole Logstash event from these values,
so the rules for rendering live in one place per language: here for the record side, there for
the event layout.
"""

import datetime
import decimal
import json
import logging
import socket
import uuid
import warnings

# Attributes every LogRecord has; anything else in record.__dict__ came from `extra=`.
# `message` and `asctime` are set by Formatter.format; `taskName` exists from Python 3.12 on.
STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def timestamp(created):
    """`@timestamp` as the contract states it: utcfromtimestamp(created) with microseconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        when = datetime.datetime.utcfromtimestamp(created)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render(value):
    """An extra's expected JSON value: JSON-native values as they are, others as readable text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [render(v) for v in value]
    if isinstance(value, dict):
        return {str(k): render(v) for k, v in value.items()}
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, set, frozenset)):
        return repr(value)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    # A plain instance: `module.Class(attr=repr, ...)` in attribute order.
    cls = type(value)
    attrs = ", ".join(f"{k}={v!r}" for k, v in vars(value).items())
    return f"{cls.__module__}.{cls.__qualname__}({attrs})"


def json_roundtrip(value):
    """An extra as a JSON sender writes it (json.dumps(default=str)) and pystash keeps it."""
    return json.loads(json.dumps(value, default=str))


def expected(record, as_json=False):
    """The record-side values of one event; the handler must already have formatted it.

    `as_json`: the record travelled as a JSON object, so extras are what JSON made of them.
    """
    rendering = json_roundtrip if as_json else render
    return {
        "message": record.getMessage(),
        "timestamp": timestamp(record.created),
        "created": record.created,
        "path": record.pathname,
        "logger": record.name,
        "levelname": record.levelname,
        "filename": record.filename,
        "lineno": record.lineno,
        # SocketHandler.makePickle formats the traceback into exc_text and sends exc_info=None.
        "exc_text": record.exc_text,
        "stack_info": record.stack_info,
        "tags": list(getattr(record, "tags", None) or []),
        "extras": [
            [k, rendering(v)]
            for k, v in vars(record).items()
            if k not in STANDARD and k != "tags"
        ],
    }


class Recorder(logging.Handler):
    """Keeps every record it sees; added after the network handler, so exc_text is set."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def host_info():
    return {"hostname": socket.gethostname(), "fqdn": socket.getfqdn()}
