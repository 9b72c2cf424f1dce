"""Connections that cannot hold the server: deadlines for a request to arrive, and a cap.

    gate = Gate(limits, cap=connection_cap(limits.max_connections))
    config = uvicorn.Config(app, http=gate.protocol(), ...)

uvicorn (0.55, h11) closes a connection that idles between requests (timeout_keep_alive),
but nothing closes one that sends half its headers, or a body a byte a minute: every byte
cancels that timer. And its limit_concurrency answers 503 to every request once stalled
connections fill the quota, the legitimate one included. So the protocol here, uvicorn's
own with three additions:

- a request's line and headers must arrive within `header_timeout` seconds of the
  connection opening (or of the end of the previous answer), its body within
  `body_timeout` seconds of the headers; bytes arriving do not extend either deadline;
- past `max_connections` open connections, a new one closes the connection that has waited
  longest for its request to arrive (headers or body): a stalled client loses its place to
  one that sends at once. When every connection is running a request, the new one gets 503;
- a lingering close: a connection closed after refusing a body it has not read (413, 415,
  503) first sends its answer and a FIN, then reads and drops what the client still sends
  (LINGER_SECONDS, LINGER_BYTES at most), so the client reads the refusal instead of a
  reset connection; as web servers do;
- the counts, for /healthz and the log (one line per kind a minute, logs.py).

A connection whose request has fully arrived is never closed here: its answer may stream
for minutes.
"""

from __future__ import annotations

import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import Limits

log = logging.getLogger("charrnn.serve")
LINGER_SECONDS = 2.0  # after refusing a body: time for the client to stop sending and read
LINGER_BYTES = 1 << 20  # and the most of the refused body read (and dropped) meanwhile


class Gate:
    """What every connection shares: the cap, the deadlines, the connections waiting for
    their request (oldest first), and the counts."""

    def __init__(self, limits: Limits, cap: int):
        self.cap = cap
        self.header_timeout, self.body_timeout = limits.header_timeout, limits.body_timeout
        self.waiting: dict[GuardedH11Protocol, None] = {}  # insertion order: oldest first
        self.open = 0
        self.counts = {"timed_out": 0, "pushed_out": 0, "turned_away": 0}

    def protocol(self) -> type:
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"gate": self})

    def health(self) -> dict:
        return {"connections": self.open, "max_connections": self.cap, **self.counts}

    def oldest_waiting(self):
        return next(iter(self.waiting), None)


BUSY_BODY = json.dumps({"error": "busy: every connection this server keeps open is running "
                                 "a request (--max-connections); retry shortly"}).encode()
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
        + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class Lingering:
    """A connection's transport whose close() lingers while the client is still sending a
    body that was refused: the answer and a FIN go out, the rest is read and dropped, and
    the connection closes when the client has finished, or after LINGER_SECONDS or
    LINGER_BYTES. Without it, closing with unread bytes sends a reset, and the client may
    lose the answer that explains it."""

    def __init__(self, transport, protocol: GuardedH11Protocol):
        self.transport, self.protocol = transport, protocol
        self.closing = self.lingering = False
        self.dropped = 0

    def __getattr__(self, name):  # everything else is the transport's
        return getattr(self.transport, name)

    def is_closing(self) -> bool:
        return self.closing or self.transport.is_closing()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        t = self.transport
        if (self.protocol.conn.their_state is h11.SEND_BODY and not t.is_closing()
                and t.can_write_eof()):
            self.linger()
        else:
            t.close()

    def linger(self) -> None:
        self.closing = self.lingering = True
        self.transport.write_eof()  # after what is buffered: the answer, then EOF
        self.transport.resume_reading()
        self.protocol.loop.call_later(LINGER_SECONDS, self.transport.close)

    def close_now(self) -> None:
        self.closing = True
        self.transport.close()

    def drop(self, n: int) -> None:
        self.dropped += n
        if self.dropped > LINGER_BYTES:
            self.transport.close()


class GuardedH11Protocol(H11Protocol):
    gate: Gate  # set by Gate.protocol()

    def connection_made(self, transport) -> None:
        super().connection_made(Lingering(transport, self))
        gate = self.gate
        gate.open += 1
        self.deadline = None
        self.phase = None
        if gate.open > gate.cap:
            victim = gate.oldest_waiting()
            if victim is None:  # every other connection is running a request
                gate.counts["turned_away"] += 1
                log.warning("turned away a connection: all %d are running requests "
                            "(--max-connections)", gate.cap)
                self.transport.write(BUSY)  # its request, if any, is read and dropped
                self.transport.linger()
                return
            gate.counts["pushed_out"] += 1
            log.warning("closed the connection that had waited longest for its request: "
                        "%d are open (--max-connections)", gate.cap)
            victim.end()
        self._wait("headers", gate.header_timeout)

    def connection_lost(self, exc) -> None:
        self.gate.open -= 1
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:  # the rest of a refused body: dropped unread
            self.transport.drop(len(data))
            return
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    # ---------------------------------------------------------------------------------

    def _track(self) -> None:
        """Which deadline applies, from what h11 has read of the client's request."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.phase != "headers" and self._answered():
            self._wait("headers", self.gate.header_timeout)  # a new request on the connection
        elif state is h11.SEND_BODY and self.phase == "headers":
            self._wait("body", self.gate.body_timeout)
        elif state is h11.DONE and self.phase in ("headers", "body"):
            self._stop_waiting()  # it has all arrived: the answer takes what it takes
            self.phase = "running"

    def _answered(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _wait(self, phase: str, seconds: float) -> None:
        self._stop_waiting()
        self.phase = phase
        self.deadline = self.loop.call_later(seconds, self._expired, phase, seconds)
        self.gate.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.gate.waiting.pop(self, None)

    def _expired(self, phase: str, seconds: float) -> None:
        self.deadline = None
        self.gate.counts["timed_out"] += 1
        log.warning("closed a connection: its request's %s did not arrive within %gs "
                    "(--%s-timeout)", phase, seconds, "header" if phase == "headers" else "body")
        self.end()

    def end(self) -> None:
        """Close now, without lingering; a handler reading the body sees the client gone."""
        self._stop_waiting()
        self.phase = "closed"
        self.transport.close_now()
