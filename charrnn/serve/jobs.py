"""One request on the worker: its generation, its streams' text, its events.

A GenerateJob runs the same Generation as `charrnn sample` (inference/engine.py): the
request's own generator seeded with its seed, the same first-character rule, priming, noise
blocks, Picker and stop strings. The worker packs its streams with other requests' into one
Stepper (inference/batch.py); which requests share the batch changes only which rows its
streams occupy (and so how the batched matrix product rounds in the last bits: a request
alone is bit for bit `charrnn sample`).

The worker drives a job; the HTTP side reads its events:

    job.generation.priming.chunk()   until True: the prime through the model, a chunk per call
    job.take(ids, kept)              each step, from the batch: True when the job is done
    job.inbox, job.wakeup            the events ("text", index, text), ("done", payload,
                                     state) and ("error", error), `error` carrying its status
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time

import torch
import torch.nn.functional as F

from ..core.units import LN2
from ..inference.engine import Generation
from .loaded import LoadedModel
from .sessions import Session
from .validation import GenerateSettings

# A streaming event goes out with the first character, then when at least `flush_every`
# seconds have passed since the last: 40 events a second still read as a stream, and each
# event costs the event loop (and the GIL it shares with the worker) the same however long.
# With many streams the worker spaces them out (GenerateJob.pace) so that all of them
# together send about EVENTS_PER_SECOND.
FLUSH_SECONDS = 0.025
EVENTS_PER_SECOND = 1000


class InternalError(Exception):
    """A request failed on the server's side (a bug, out of memory): the log says more."""

    status = 500


class Outbox:
    """The worker's events of a turn, handed to the event loop together (Worker._flush)."""

    def __init__(self):
        self.events: list = []

    def put(self, job: "Job", event: tuple) -> None:
        self.events.append((job, event))

    def take(self) -> list:
        events, self.events = self.events, []
        return events


class Job:
    """What the worker and the HTTP side share. `cancelled` is written by the HTTP side (a
    client went away), `finished` by the worker; events cross over through the outbox,
    which the worker delivers once per turn on the event loop. `rows`: the streams it
    counts against --max-streams."""

    def __init__(self, loaded: LoadedModel, outbox: Outbox, rows: int = 1,
                 session: Session | None = None):
        self.loaded, self.outbox, self.rows, self.session = loaded, outbox, rows, session
        self.cancelled = self.finished = False
        self.released = False  # freed by the service (Service.release), once
        self.inbox: collections.deque = collections.deque()  # event-loop side
        self.wakeup: asyncio.Event | None = None

    def post(self, event: tuple) -> None:
        """On the worker: an event for the event loop."""
        self.outbox.put(self, event)

    def receive(self, event) -> None:
        """On the event loop: an event from the worker."""
        self.inbox.append(event)
        if self.wakeup is not None:
            self.wakeup.set()

    async def events(self):
        """On the event loop: the events as they come, until the final one."""
        self.wakeup = self.wakeup or asyncio.Event()
        while True:
            while self.inbox:
                event = self.inbox.popleft()
                yield event
                if event[0] in ("done", "error"):
                    return
            await self.wakeup.wait()
            self.wakeup.clear()

    def release(self) -> bool:
        """Mark the request freed; False if it already was."""
        first, self.released = not self.released, True
        return first

    def fail(self, error: Exception) -> None:
        self.finished = True
        self.post(("error", error))


class GenerateJob(Job):
    def __init__(self, loaded: LoadedModel, outbox: Outbox, settings: GenerateSettings,
                 prime: str, stops: list[str], session: Session | None = None):
        super().__init__(loaded, outbox, settings.num_samples, session)
        self.settings = settings
        B = settings.num_samples
        # A seed the server picks fits in 53 bits, so that JavaScript reads it back exactly.
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(53)
        generator = torch.Generator(device=loaded.device)
        generator.manual_seed(self.seed)
        # The prime: a session's pending character first (its state has not read it yet).
        pending, hidden = (session.pending, session.hidden) if session else ("", None)
        self.prime, self.prime_read = pending + prime, len(prime)
        self.generation = Generation(loaded.model, loaded.vocab, B, settings.length,
                                     settings.temperature, settings.top_k, generator,
                                     self.prime, stops, settings.stop_at_end, hidden)
        self.streaming = settings.stream
        self.flush_every = FLUSH_SECONDS
        self.flushed_time = 0.0
        self.pending = [[] for _ in range(B)]  # text not yet sent, per stream
        # The whole text, for a whole answer, or for the novelty check after a stream.
        self.keep_text = not settings.stream or settings.novelty
        self.texts = [[] for _ in range(B)]
        self.counts = [0] * B
        self.last_ids: list[int] = []

    def pace(self, running: int) -> None:
        """`running` requests share the worker: space the events so that all of them
        together send about EVENTS_PER_SECOND."""
        self.flush_every = max(FLUSH_SECONDS, running / EVENTS_PER_SECOND)

    def take(self, ids: list[int], kept: list[int]) -> bool:
        """The ids drawn for the kept streams; returns whether the job has finished."""
        gen = self.generation
        pieces = gen.take(ids, kept)
        self.last_ids = ids
        for r, piece in enumerate(pieces):
            if piece:
                self.pending[r].append(piece)
                self.counts[r] += len(piece)
        done = gen.done
        if done or self.streaming and (
                gen.made == 1 or time.monotonic() - self.flushed_time >= self.flush_every):
            self.flush()
        return done

    def flush(self) -> None:
        for r, parts in enumerate(self.pending):
            if parts:
                text = "".join(parts)
                self.pending[r] = []
                if self.streaming:
                    self.post(("text", r, text))
                if self.keep_text:
                    self.texts[r].append(text)
        self.flushed_time = time.monotonic()

    def text_of(self, r: int) -> str:
        """Stream r's whole text (prime excluded), when the job keeps it."""
        return "".join(self.texts[r])

    def finish(self, hidden=None, reason: str | None = None) -> None:
        """The final event: each stream's finish reason; `hidden`, a session's new state
        (before the last character drawn, which the next request reads first)."""
        self.flush()
        self.finished = True
        ended = self.generation.ended
        samples = []
        for r in range(self.generation.B):
            why = "stop" if ended[r] else reason or "length"
            sample = {"index": r, "finish_reason": why, "chars": self.counts[r]}
            if not self.streaming:
                sample["text"] = self.text_of(r)
            samples.append(sample)
        payload = {"samples": samples, "seed": self.seed, "session": self.settings.session}
        state = None
        if hidden is not None and self.last_ids:
            pending = self.loaded.vocab.chars[self.last_ids[0]]  # re-encoded: the mark itself
            state = (hidden, pending, self.prime_read + self.generation.made)
        self.post(("done", payload, state))


class ScoreJob(Job):
    """A text scored a chunk at a time, so that a long text does not hold up the streams:
    each character's surprisal in bits and the model's top 5 guesses before it. A chunk is
    as many characters as fit in the time the worker gives it (chunk_for), from what the
    last chunk took per character."""

    MAX_CHUNK = 256  # characters per model call at most
    MIN_CHUNK = 16  # and at least: below that, the cost of a call outweighs its characters
    TOP = 5

    def __init__(self, loaded: LoadedModel, outbox: Outbox, text: str):
        super().__init__(loaded, outbox)
        self.text = text
        self.ids = torch.tensor(loaded.vocab.encode(text), device=loaded.device)
        self.at, self.hidden, self.nats = 0, None, 0.0
        self.characters = [{"char": text[0], "bits": None, "top": []}]
        self.seconds_per_char: float | None = None  # measured on each chunk

    def chunk_for(self, seconds: float) -> int:
        """The characters of a chunk that takes about `seconds`."""
        if self.seconds_per_char is None:
            return self.MIN_CHUNK  # the first chunk measures
        return int(min(self.MAX_CHUNK, max(self.MIN_CHUNK, seconds / self.seconds_per_char)))

    def advance(self, chars: int = MAX_CHUNK) -> bool:
        """A chunk of `chars` predictions; True when every character after the first is
        scored."""
        started = time.perf_counter()
        n = len(self.ids) - 1
        inputs = self.ids[self.at:min(self.at + chars, n)]
        targets = self.ids[self.at + 1:self.at + 1 + len(inputs)]
        logits, self.hidden = self.loaded.model(inputs[None], self.hidden)
        logp = F.log_softmax(logits[0].float(), dim=-1)  # (T, V)
        nll = -logp.gather(1, targets[:, None])[:, 0]  # (T,) nats
        self.nats += float(nll.double().sum())
        top = torch.topk(logp, min(self.TOP, logp.shape[-1]), dim=-1)
        chars = self.loaded.vocab.shown_chars
        for j, (bits, probs, idx) in enumerate(zip((nll / LN2).tolist(),
                                                   top.values.exp().tolist(),
                                                   top.indices.tolist())):
            self.characters.append({
                "char": self.text[self.at + 1 + j], "bits": round(bits, 4),
                "top": [[chars[i], round(p, 5)] for i, p in zip(idx, probs)]})
        self.at += len(inputs)
        self.seconds_per_char = (time.perf_counter() - started) / len(inputs)
        if self.at < n:
            return False
        nats = self.nats / n
        self.finished = True
        self.post(("done", {"scored": n, "nats_per_char": nats, "bits_per_char": nats / LN2,
                            "characters": self.characters}, None))
        return True
