"""Sessions: named hidden states that a request leaves behind and the next one continues.

    store = SessionStore(max_sessions=1000, ttl=3600, state_bytes=4 * layers * H * 2)
    session = store.create("doc-1", generation=1)   # evicts the least recently used if full
    session = store.get("doc-1")                    # None once expired, evicted or deleted
    store.use(session)                              # a generate on it began or ended
    store.bytes                                     # memory the stored states take

A session holds one stream's state: (layers, 1, H) tensors, h and c for an LSTM, h
otherwise; that is layers x H x (1 or 2) floats, whatever the length of the text behind it.
"Least recently used" means the last generate on a session (its start and its end), not
its creation, nor a look at it (GET /v1/sessions/NAME): the store keeps its sessions in
that order, so eviction and expiry both take the one idle longest.

The store is used from the HTTP event loop only, so it needs no lock: the worker hands the
state of a finished request back through the request's final event.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(eq=False)
class Session:
    name: str
    generation: int  # the model the state belongs to (LoadedModel.generation)
    hidden: object = None  # the model's state after the text so far; None: blank
    pending: str = ""  # the last character generated, which the state has not read yet
    chars: int = 0  # characters the state has read: primes and generated text
    requests: int = 0
    busy: bool = False  # a request is running on it: a second one would race
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)

    def info(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        return {"session": self.name, "chars": self.chars, "requests": self.requests,
                "busy": self.busy, "idle_seconds": round(now - self.last_used, 3)}


class StoreFull(Exception):
    """Every session is in use by a running request: none can be evicted."""


class SessionStore:
    def __init__(self, max_sessions: int, ttl: float, state_bytes: int):
        self.max_sessions, self.ttl, self.state_bytes = max_sessions, ttl, state_bytes
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self.evicted = self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def bytes(self) -> int:
        """Memory the stored states take: one state per session that has read any text."""
        return self.state_bytes * sum(s.hidden is not None for s in self._sessions.values())

    def create(self, name: str, generation: int) -> Session:
        """A blank session named `name`, replacing one of that name (reset)."""
        self.sweep()
        old = self._sessions.pop(name, None)
        if old is not None and old.busy:
            self._sessions[name] = old
            raise BusySession(name)
        while len(self._sessions) >= self.max_sessions:
            victim = next((s for s in self._sessions.values() if not s.busy), None)
            if victim is None:
                raise StoreFull()
            del self._sessions[victim.name]
            self.evicted += 1
        session = self._sessions[name] = Session(name, generation)
        return session

    def get(self, name: str) -> Session | None:
        """The session, marked as just used; None if there is none (or it expired)."""
        self.sweep()
        session = self._sessions.get(name)
        if session is not None:
            self.use(session)
        return session

    def use(self, session: Session) -> None:
        """A generate began or ended on `session`: it is now the most recently used."""
        session.last_used = time.monotonic()
        if self._sessions.get(session.name) is session:  # not deleted or replaced meanwhile
            self._sessions.move_to_end(session.name)

    def peek(self, name: str) -> Session | None:
        self.sweep()
        return self._sessions.get(name)

    def delete(self, name: str) -> bool:
        session = self._sessions.get(name)
        if session is None:
            return False
        if session.busy:
            raise BusySession(name)
        del self._sessions[name]
        return True

    def drop(self, name: str) -> None:
        self._sessions.pop(name, None)

    def sweep(self, now: float | None = None) -> int:
        """Drop the sessions idle for longer than the TTL (a running one is never idle)."""
        now = time.monotonic() if now is None else now
        stale = []
        for s in self._sessions.values():  # least recently used first: stop at a fresh one
            if now - s.last_used <= self.ttl:
                break
            if not s.busy:
                stale.append(s.name)
        for name in stale:
            del self._sessions[name]
        self.expired += len(stale)
        return len(stale)


class BusySession(Exception):
    """A request is running on the session."""
