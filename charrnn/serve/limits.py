"""The limits a server enforces, and whether the address it listens on is safe.

    limits = Limits(max_length=2000)
    limits.line()                        # 'limits: body 82.59 KiB, prime 10,000 chars, ...'
    limits.connections_line()            # 'connections: 1,000 at once, headers within 10s, ...'
    exposure_warning("0.0.0.0", api_key=None)   # a warning line, or None when safe

Every limit is a flag of `charrnn serve`, and every one lives here. A request over a field's
limit gets 422 naming the field and the limit; a body over `max_body` gets 413 before any of
it is parsed (from Content-Length, else as soon as the bytes read pass it); a request that
would take the running streams past `max_streams` gets 503 with Retry-After. Slow clients:
a connection must send its headers within `header_timeout` seconds (of opening, or of the
end of its last answer) and its body within `body_timeout` more, else it is closed; at most
`max_connections` are open (a new one past that closes the one that has waited longest for
its request to arrive, so stalled connections cannot lock out a client that sends at
once); and the bodies being read together hold at most `max_buffered` bytes (503 beyond).
"""

from __future__ import annotations

import ipaddress
import os
import resource
from dataclasses import asdict, dataclass

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
MAX_HEADER_BYTES = 16 << 10  # h11's buffer for one request's line and headers (its default)
KEEP_ALIVE_SECONDS = 5  # an idle connection between requests (uvicorn's timeout_keep_alive)
FILES_SPARE = 64  # file descriptors kept for everything but connections: logs, the model, ...
# JSON spends at most 6 bytes on a character (\uXXXX); 16 stop strings of 200 characters and
# the other fields fit in the slack.
JSON_BYTES_PER_CHAR = 6
BODY_SLACK = 24 << 10


@dataclass(frozen=True)
class Limits:
    max_body: int | None = None  # bytes of a request body; None: what the field limits need
    max_prime: int = 10_000  # characters of a prime (after the model's text options)
    max_text: int = 10_000  # characters of a text to score; each comes back with its top 5
    max_length: int = 5_000  # characters generated per sample
    max_samples: int = 16  # num_samples per request
    max_streams: int = 64  # streams running at once, every request's samples counted
    max_sessions: int = 1_000  # sessions kept; the least recently used goes first
    session_ttl: float = 3600.0  # seconds a session may sit idle before it is dropped
    max_connections: int = 1_000  # connections open at once (and below the open-file limit)
    header_timeout: float = 10.0  # seconds for a request's line and headers to arrive
    body_timeout: float = 30.0  # seconds more for its body: the largest at 2.8 KB/s
    max_buffered: int = 32 << 20  # bytes of all the bodies being read at once

    def __post_init__(self):
        if self.max_body is None:  # the largest body a valid request can need, no more
            longest = max(self.max_prime, self.max_text)
            object.__setattr__(self, "max_body", JSON_BYTES_PER_CHAR * longest + BODY_SLACK)
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"limits: body {_bytes(self.max_body)}, prime {self.max_prime:,} chars, "
                f"text to score {self.max_text:,} chars, length {self.max_length:,}, "
                f"num_samples {self.max_samples:,}, streams at once {self.max_streams:,}, "
                f"sessions {self.max_sessions:,} (idle for {_duration(self.session_ttl)} at "
                f"most)")

    def connections_line(self, connections: int) -> str:
        return (f"connections: {connections:,} at once, headers within "
                f"{_duration(self.header_timeout)}, body within "
                f"{_duration(self.body_timeout)}, bodies being read {_bytes(self.max_buffered)} "
                f"in all")


def connection_cap(wanted: int) -> int:
    """`wanted` connections, or fewer where the open-file limit would run out first: past
    that limit accept() fails, and nobody, not even a client with the key, gets in. The
    soft limit is raised to the hard one first, as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 32
    return max(1, min(wanted, soft - in_use - FILES_SPARE))


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host`: a loopback address or name."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for an address other machines can reach without a key, else None."""
    if is_loopback(host) or api_key:
        return None
    return (f"warning: listening on {host} without an API key: anyone who can reach this "
            f"port can use the model; set CHARRNN_API_KEY (or --api-key) to require "
            f"'Authorization: Bearer KEY' on every /v1 route")


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:,} bytes"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
