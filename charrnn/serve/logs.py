"""A log that cannot be flooded: one line per kind of message per interval.

    install()                                # on uvicorn's, asyncio's and our own logger
    log = logging.getLogger("charrnn.serve")
    log.warning("closed %s: no headers within %gs", peer, 10)

A client can make the server log at will (malformed requests, stalled connections, running
the process out of files), so every logger the server writes to goes through RateLimit:
the first message of a kind (its logger, its text before arguments, its exception type)
in each interval is written, the others only counted, and the next one written says how
many were left out. A traceback is written the first time its kind is seen; after that the
line names the exception only, so the log grows by at most a few lines per kind a minute.
"""

from __future__ import annotations

import logging
import sys
import time

INTERVAL = 60.0  # seconds
LOGGERS = ("uvicorn.error", "asyncio", "charrnn.serve")


class RateLimit(logging.Filter):
    def __init__(self, interval: float = INTERVAL, clock=time.monotonic):
        super().__init__()
        self.interval, self.clock = interval, clock
        self.kinds: dict[tuple, list] = {}  # kind -> [time written, left out since]
        self.traced: set[tuple] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, str(record.msg).split("\n", 1)[0][:200], error)
        now = self.clock()
        seen = self.kinds.get(kind)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        left_out = seen[1] if seen is not None else 0
        self.kinds[kind] = [now, 0]
        if len(self.kinds) > 10_000:  # kinds come from our code's texts: bounded, but be sure
            self.kinds = {kind: self.kinds[kind]}
        message = record.getMessage()
        if record.exc_info and kind in self.traced:  # one traceback per kind is enough
            message += f" ({error}: {record.exc_info[1]})"
            record.exc_info = record.exc_text = None
        elif record.exc_info:
            self.traced.add(kind)
        if left_out:
            message += (f" [{left_out:,} more like this in the last "
                        f"{now - seen[0]:.0f}s were left out]")
        record.msg, record.args = message, None
        return True


def install(interval: float = INTERVAL) -> RateLimit:
    """The one RateLimit, on every logger a client can make the server write to; our own
    logger writes single lines to stderr."""
    limit = RateLimit(interval)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RateLimit)]:
            logger.removeFilter(old)
        logger.addFilter(limit)
    ours = logging.getLogger("charrnn.serve")
    if not ours.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        ours.addHandler(handler)
        ours.propagate = False
        ours.setLevel(logging.WARNING)
    return limit
