"""One request on the worker: its own generator and noise, its streams' text, its events.

A GenerateJob reproduces `charrnn sample` (inference/sample.py) draw for draw: its own
torch.Generator seeded with the request's seed; the prime (or "\\n", or one random character
drawn first) through the fused kernel in Sampler.PRIME_CHUNK pieces, B rows at once; then
Gumbel noise for `_block_size(B, V, length)` characters at a time, (block, B, V), drawn at
the start of each block whether or not the block is used to its end; and the same Picker on
the row of noise of each character. Which other requests share the batch changes none of
this, only which rows of the step the request's streams occupy (and so how the batched
matrix product rounds in the last bits: a request alone is bit for bit `charrnn sample`).

The worker drives a job (worker.py, batch.py); the HTTP side reads its events:

    job.prime_chunk()     until True: the prime through the model, a chunk per call
    job.noise_now()       each step: this character's noise for the rows still running
    job.take(ids)         each step: the ids drawn for those rows; True when the job is done
    job.inbox, job.wakeup the events ("text", index, text) and ("done", payload, state)
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time

import torch
import torch.nn.functional as F

from ..core.units import LN2
from ..inference.sample import Picker, Sampler, _block_size, gumbel_
from ..corpus.vocab import END
from ..inference.stops import StopStrings
from .loaded import LoadedModel
from .validation import GenerateSettings

# A streaming event goes out with the first character, then when at least `flush_every`
# seconds have passed since the last: 40 events a second still read as a stream, and each
# event costs the event loop (and the GIL it shares with the worker) the same however long.
# With many streams the worker spaces them out (Batch.layout) so that all of them together
# send about EVENTS_PER_SECOND.
FLUSH_SECONDS = 0.025
EVENTS_PER_SECOND = 1000


class Job:
    """What the worker and the HTTP side share. `cancelled` is written by the HTTP side (a
    client went away), `finished` by the worker; events cross over through `post`, which
    the worker delivers once per step on the event loop (Worker.flush)."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.cancelled = self.finished = False
        self.post = None  # set by the worker: (job, event) into its outbox
        self.inbox: collections.deque = collections.deque()  # event-loop side
        self.wakeup: asyncio.Event | None = None

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

    def fail(self, message: str) -> None:
        self.finished = True
        self.post(("error", message))


class GenerateJob(Job):
    def __init__(self, loaded: LoadedModel, settings: GenerateSettings, prime: str,
                 stops: list[str], hidden=None, pending: str = ""):
        super().__init__(loaded)
        self.settings = settings
        self.B = B = settings.num_samples
        self.length = settings.length
        self.device, V = loaded.device, len(loaded.vocab)
        # A seed the server picks fits in 53 bits, so that JavaScript reads it back exactly.
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(53)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.picker = Picker(V, settings.temperature, settings.top_k)
        self.key = (settings.temperature, self.picker.top_k)  # rows drawn together share it
        self.block = _block_size(B, V, self.length)
        self.noise = (torch.zeros(self.block, B, V, device=self.device)
                      if settings.temperature > 0 else None)
        # Views made once: indexing a tensor on every step costs as much as a small op.
        self.noise_rows = self.noise.unbind(0) if self.noise is not None else ()
        self.k = 0  # the position in the block of noise
        self.made = 0  # characters drawn per stream so far
        self.stops = StopStrings(stops, B)
        self.streaming = settings.stream
        self.flush_every = FLUSH_SECONDS
        self.pending = [[] for _ in range(B)]  # text not yet sent, per stream
        # The whole text, for a whole answer, or for the novelty check after a stream.
        self.keep_text = not settings.stream or settings.novelty
        self.texts = [[] for _ in range(B)]
        self.counts = [0] * B
        self.last_ids: list[int] = []
        self.flushed_time = 0.0
        # The prime: a session's pending character first (its state has not read it yet).
        self.prime, self.hidden = pending + prime, hidden
        self.prime_read = len(prime)
        self._prime_ids = None
        self._prime_at = 0
        self.logits = None  # (B, V) after the prime, for the first draw
        # Rows of the batch: which streams are in it (shrinks as streams stop, batch.py).
        self.kept = list(range(B))
        self.kept_index = None  # the same as a tensor, when not every stream is kept
        self.offset = 0

    # -- the prime --------------------------------------------------------------------

    def prime_chunk(self) -> bool:
        """One chunk of the prime through the fused kernel; True when the prime is read."""
        model, vocab = self.loaded.model, self.loaded.vocab
        if self._prime_ids is None:
            prime = self.prime
            if not prime and vocab.end is not None:  # as Sampler._prime: after the mark
                prime = vocab.chars[vocab.end]
            elif not prime:  # as Sampler._prime: start after a newline, or a random character
                prime = ("\n" if "\n" in vocab else vocab.chars[int(torch.randint(
                    len(vocab), (1,), generator=self.generator, device=self.device))])
            self._prime_ids = torch.tensor(vocab.encode(prime), device=self.device)
        ids, start = self._prime_ids, self._prime_at
        chunk = ids[start:start + Sampler.PRIME_CHUNK]
        logits, self.hidden = model(chunk[None, :].expand(self.B, -1), self.hidden)
        self._prime_at = start + Sampler.PRIME_CHUNK
        if self._prime_at < len(ids):
            return False
        self.logits = logits[:, -1]
        return True

    # -- each step --------------------------------------------------------------------

    def noise_now(self) -> torch.Tensor | None:
        """This character's Gumbel noise for the kept rows, (rows, V); a new block of noise
        from this job's generator at the start of each block."""
        if self.noise is None:
            return None
        if self.k == 0:
            gumbel_(self.noise, self.generator)
        row = self.noise_rows[self.k]
        return row if self.kept_index is None else row.index_select(0, self.kept_index)

    def take(self, ids: list[int]) -> bool:
        """The ids drawn for the kept rows; returns whether the job has finished."""
        vocab = self.loaded.vocab
        # With stop_at_end, the mark itself ends a stream (a stop string) and is dropped.
        chars = vocab.chars if self.settings.stop_at_end else vocab.shown_chars
        self.last_ids = ids
        self.made += 1
        self.k = (self.k + 1) % self.block
        if self.B == 1 and not self.stops.stops:  # the common case, kept lean: once a step
            self.pending[0].append(chars[ids[0]])
            self.counts[0] += 1
        else:
            pieces = [""] * self.B
            for r, i in zip(self.kept, ids):
                pieces[r] = chars[i]
            for r, piece in enumerate(self.stops.cut(pieces)):
                if piece and vocab.end is not None:
                    piece = piece.replace(END, "")
                if piece:
                    self.pending[r].append(piece)
                    self.counts[r] += len(piece)
        done = self.made >= self.length or self.stops.all_ended
        if done or self.streaming and (
                self.made == 1 or time.monotonic() - self.flushed_time >= self.flush_every):
            self.flush()
        return done

    def ended_rows(self) -> bool:
        """Whether a kept row has stopped (it can leave the batch)."""
        return bool(self.stops.stops) and any(self.stops.ended[r] for r in self.kept)

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
        samples = []
        for r in range(self.B):
            why = "stop" if self.stops.ended[r] else reason or "length"
            sample = {"index": r, "finish_reason": why, "chars": self.counts[r]}
            if not self.streaming:
                sample["text"] = self.text_of(r)
            samples.append(sample)
        payload = {"samples": samples, "seed": self.seed, "session": self.settings.session}
        state = None
        if hidden is not None and self.last_ids:
            pending = self.loaded.vocab.chars[self.last_ids[0]]  # re-encoded: the mark itself
            state = (hidden, pending, self.prime_read + self.made)
        self.post(("done", payload, state))


class ScoreJob(Job):
    """A text scored a chunk at a time, so that a long text does not hold up the streams:
    each character's surprisal in bits and the model's top 5 guesses before it. A chunk is
    as many characters as fit in the time the worker gives it (chunk_for), from what the
    last chunk took per character."""

    MAX_CHUNK = 256  # characters per model call at most
    MIN_CHUNK = 16  # and at least: below that, the cost of a call outweighs its characters
    TOP = 5

    def __init__(self, loaded: LoadedModel, text: str):
        super().__init__(loaded)
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
