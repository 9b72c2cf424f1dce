"""What the HTTP routes share, without HTTP: admitting requests, sessions, counts, reloads.

    service = Service(loaded, Limits())
    service.start(asyncio.get_running_loop())      # the worker thread
    job = service.generate(settings)               # checked, counted, handed to the worker
    async for event in job.events(): ...
    service.release(job)                           # always, once: streams and session freed

Everything here runs on the event loop (one thread), so the counts and the session store
need no lock; the model is only ever touched by the worker. With a novelty index (serve
--novelty), a request's final event waits for its samples' novelty reports (judge.py).
"""

from __future__ import annotations

import sys

from ..core.model import FLOAT_BYTES
from .jobs import GenerateJob, Job, ScoreJob
from .judge import Judge
from .limits import Limits
from .loaded import LoadedModel
from .sessions import BusySession, Session, SessionStore, StoreFull
from .validation import (
    MAX_CELLS_TEXT,
    MAX_STOP_CHARS,
    BadRequest,
    GenerateSettings,
    model_text,
    shown,
)
from .worker import Worker

RETRY_AFTER = "1"  # seconds: streams of a few hundred characters end within about that


class Service:
    def __init__(self, loaded: LoadedModel, limits: Limits, echo=None, novelty=None):
        self.loaded, self.limits = loaded, limits
        self.judge = Judge(novelty) if novelty is not None else None  # serve --novelty
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.sessions = SessionStore(limits.max_sessions, limits.session_ttl,
                                     FLOAT_BYTES * loaded.state_floats)
        self.streams = 0  # running streams: every sample of every request, and each score
        self.closing = False
        self.worker: Worker | None = None
        self.loop = None
        self.counts = {"generate": 0, "score": 0, "refused": 0}
        self.buffered = 0  # bytes of the request bodies being read (--max-buffered)
        self.gate = None  # the connections' Gate (connections.py), for /healthz

    # -- life -------------------------------------------------------------------------

    def start(self, loop) -> None:
        self.loop = loop
        self.worker = Worker(self.deliver, loop)
        self.worker.start()

    def close(self) -> None:
        """Shutting down: open streams end with a final event, new requests get 503."""
        self.closing = True
        if self.worker is not None:
            self.worker.close()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.judge is not None:
            self.judge.stop()

    def replace_model(self, loaded: LoadedModel) -> None:
        """A new model for new requests (--watch); running ones finish on theirs."""
        self.loaded = loaded
        self.sessions.state_bytes = FLOAT_BYTES * loaded.state_floats
        for line in loaded.lines():
            self.echo(line.replace("model: ", "reloaded model: ", 1))

    # -- requests ---------------------------------------------------------------------

    def generate(self, settings: GenerateSettings) -> GenerateJob:
        loaded, limits = self.loaded, self.limits
        if settings.novelty and self.judge is None:
            raise BadRequest(422, "'novelty' needs the training text's index, which this "
                                  "server has not opened: start the server with --novelty")
        prime = model_text(loaded.vocab, loaded.options, settings.prime, "prime",
                           limits.max_prime)
        stops = [model_text(loaded.vocab, loaded.options, s, "stop", MAX_STOP_CHARS)
                 for s in settings.stop]
        session = self._session_for(settings.session, loaded) if settings.session else None
        self._admit(settings.num_samples)
        job = GenerateJob(loaded, self.worker.outbox, settings, prime, stops, session)
        if session is not None:
            session.busy = True
        self._start(job, "generate")
        return job

    def score(self, text: str) -> ScoreJob:
        loaded = self.loaded
        text = model_text(loaded.vocab, loaded.options, text, "text", self.limits.max_text)
        if len(text) < 2:
            raise BadRequest(422, "'text' needs at least 2 characters: each one is scored "
                                  "from the ones before it")
        self._admit(1)
        job = ScoreJob(loaded, self.worker.outbox, text)
        self._start(job, "score")
        return job

    def cells(self, text: str, cell: int | None) -> dict:
        """The Cells view of a text (neurons/live.py). Runs on the caller's thread, beside
        the worker: it only reads the weights, and the route lets one run at a time."""
        from ..neurons.live import cell_view
        loaded = self.loaded
        cap = min(self.limits.max_text, MAX_CELLS_TEXT)
        text = model_text(loaded.vocab, loaded.options, text, "text", cap)
        count = loaded.model.num_layers * loaded.model.hidden_size * (
            2 if loaded.model.cell == "lstm" else 1)
        if cell is not None and not 0 <= cell < count:
            raise BadRequest(422, f"'cell' must be 0 to {count - 1} for this model, got {cell}")
        if not text:
            raise BadRequest(422, "'text' is empty: send the text to read")
        return {**cell_view(loaded.model, loaded.vocab, text, cell), "text": text}

    def _admit(self, rows: int) -> None:
        if self.closing:
            raise BadRequest(503, "the server is shutting down", {"Retry-After": RETRY_AFTER})
        if self.streams + rows > self.limits.max_streams:
            self.counts["refused"] += 1
            raise BadRequest(503, f"busy: {self.streams:,} streams are running and this "
                                  f"server runs {self.limits.max_streams:,} at most "
                                  f"(--max-streams); retry shortly",
                             {"Retry-After": RETRY_AFTER})

    def hold_body(self, n: int) -> None:
        """n more bytes of a body being read, or 503 when that would pass --max-buffered."""
        if self.buffered + n > self.limits.max_buffered:
            self.counts["refused"] += 1
            raise BadRequest(503, f"busy: the request bodies being received hold "
                                  f"{self.buffered:,} bytes, and this server holds "
                                  f"{self.limits.max_buffered:,} at most (--max-buffered); "
                                  f"retry shortly", {"Retry-After": RETRY_AFTER,
                                                     "Connection": "close"})
        self.buffered += n

    def free_body(self, n: int) -> None:
        self.buffered -= n

    def _start(self, job: Job, kind: str) -> None:
        self.streams += job.rows
        self.counts[kind] += 1
        self.worker.submit(job)

    def release(self, job: Job) -> None:
        """The request is over (answered, or its client gone): free what it held, once."""
        if not job.release():
            return
        if not job.finished:
            job.cancelled = True  # the worker drops it at its next turn
            self.worker.cancelled()
        self.streams -= job.rows
        if job.session is not None:
            job.session.busy = False
            self.sessions.use(job.session)  # a generate ending on it is a use, too

    def deliver(self, events: list) -> None:
        """On the event loop: a turn's events from the worker, to their requests."""
        for job, event in events:
            if job.cancelled:
                continue
            if event[0] == "done" and event[2] is not None and job.session is not None:
                _continue(job.session, *event[2])
            if event[0] == "done" and isinstance(job, GenerateJob) and job.settings.novelty:
                self.judge.final(job, event, self.loop)
            else:
                job.receive(event)

    # -- sessions ---------------------------------------------------------------------

    def _session_for(self, name: str, loaded: LoadedModel) -> Session:
        session = self.sessions.get(name)
        if session is None:
            raise BadRequest(404, f"unknown session {shown(name)}: it was never created, or sat "
                                  f"idle too long, or was pushed out by newer ones; create it "
                                  f"with POST /v1/sessions")
        if session.busy:
            raise BadRequest(409, f"session {shown(name)} is busy with another request; a session "
                                  f"continues one request at a time")
        if session.generation != loaded.generation:
            self.sessions.drop(name)
            raise BadRequest(409, f"session {shown(name)} was made with a model that has since "
                                  f"been replaced (--watch); create it again")
        return session

    def create_session(self, name: str) -> Session:
        try:
            return self.sessions.create(name, self.loaded.generation)
        except BusySession:
            raise BadRequest(409, f"session {shown(name)} is busy with a request; reset it once "
                                  f"that has ended") from None
        except StoreFull:
            raise BadRequest(503, f"all {self.limits.max_sessions:,} sessions are in use by "
                                  f"running requests (--max-sessions)",
                             {"Retry-After": RETRY_AFTER}) from None

    def delete_session(self, name: str) -> None:
        try:
            found = self.sessions.delete(name)
        except BusySession:
            raise BadRequest(409, f"session {shown(name)} is busy with a request") from None
        if not found:
            raise BadRequest(404, f"unknown session {shown(name)}")

    def session_info(self, name: str) -> dict:
        session = self.sessions.peek(name)
        if session is None:
            raise BadRequest(404, f"unknown session {shown(name)}")
        return {**session.info(), "bytes": self.sessions.state_bytes
                if session.hidden is not None else 0}

    def health(self) -> dict:
        self.sessions.sweep()
        return {"status": "closing" if self.closing else "ok",
                "streams": self.streams, "max_streams": self.limits.max_streams,
                "sessions": len(self.sessions), "max_sessions": self.limits.max_sessions,
                "session_bytes": self.sessions.bytes,
                "model_generation": self.loaded.generation,
                "steps": self.worker.steps if self.worker else 0,
                "chunks": self.worker.chunks if self.worker else 0, **self.counts,
                "body_bytes": self.buffered, **(self.gate.health() if self.gate else {})}

    def novelty_info(self) -> dict | None:
        """What GET /v1/model says of the novelty check: None when the server has none."""
        return self.judge.info() if self.judge is not None else None


def _continue(session: Session, hidden, pending: str, chars: int) -> None:
    """A session after a request on it: its new state, and what that state has read."""
    session.hidden, session.pending = hidden, pending
    session.chars += chars
    session.requests += 1
