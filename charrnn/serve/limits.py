"""The limits a server enforces, and whether the address it listens on is safe.

    limits = Limits(max_length=2000)
    limits.line()                        # 'limits: body 1 MiB, prime 10,000 chars, ...'
    exposure_warning("0.0.0.0", api_key=None)   # a warning line, or None when safe

Every limit is a flag of `charrnn serve`. A request over a field's limit gets 422 naming
the field and the limit, a body over `max_body` gets 413, and a request that would take the
running streams past `max_streams` gets 503 with Retry-After.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@dataclass(frozen=True)
class Limits:
    max_body: int = 1 << 20  # bytes of a request body: JSON of the longest prime fits easily
    max_prime: int = 10_000  # characters of a prime (after the model's text options)
    max_text: int = 10_000  # characters of a text to score; each comes back with its top 5
    max_length: int = 5_000  # characters generated per sample
    max_samples: int = 16  # num_samples per request
    max_streams: int = 64  # streams running at once, every request's samples counted
    max_sessions: int = 1_000  # sessions kept; the least recently used goes first
    session_ttl: float = 3600.0  # seconds a session may sit idle before it is dropped

    def __post_init__(self):
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
