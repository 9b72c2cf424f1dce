"""The one thread that owns the models: it advances every stream of every request together.

    worker = Worker(deliver=lambda events: ..., loop=asyncio.get_running_loop())
    worker.start()
    worker.submit(job)        # from the event loop; never blocks on the model
    worker.close()            # every open stream ends with a final event ("shutdown")
    worker.stop()             # the thread ends

Each turn of the loop: one request that is reading (a prime, or a text to score) reads one
chunk of it through the fused kernel, a request that has read its prime joins its model's
batch, every batch draws one character for all its rows and steps them all at once, and the
events of the turn go to the event loop in one call. One chunk a turn, whoever is reading:
long scores cannot starve the streams (each of their steps waits for one chunk at most),
and the streams cannot starve the scores (a chunk goes with every step). A text to score is
read in chunks that take about as long as the streams' step (READ_SECONDS_MIN at least),
or READ_SECONDS_IDLE when no stream runs; a prime in the engine's PRIME_CHUNK pieces, as
`charrnn sample` reads it (inference/engine.py), so that its text stays the same bit for bit. Which request
reads: on even turns the one that has read the fewest chunks, so that a short prime or text
is done within a turn or two however many long ones are queued; on odd turns, of those that
have begun, the one that has waited longest, so that long ones go on at every other turn at
least however many short ones arrive. A request that finished, stopped or was cancelled
leaves its batch at the next turn's layout, so within one step. Models are never touched
from another thread, so no lock guards them; the HTTP side only sets `job.cancelled` and
reads events.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import torch

from ..core.errors import Unavailable
from ..inference.batch import Batch
from .jobs import GenerateJob, InternalError, Job, Outbox, ScoreJob

log = logging.getLogger("charrnn.serve")
READ_SECONDS_MIN = 0.002  # a turn's reading while streams run, when their step takes less
READ_SECONDS_IDLE = 0.05  # and when none runs: what a short request waits behind a long one


@dataclass(eq=False)
class Reader:
    """A request that is reading (a prime, a text to score): the worker's record of it."""
    job: Job
    read_at: int  # the turn of its last chunk (or of its arrival)
    chunks: int = 0


class Worker(threading.Thread):
    def __init__(self, deliver, loop):
        super().__init__(name="charrnn-worker", daemon=True)
        self.deliver, self.loop = deliver, loop
        self.cond = threading.Condition()
        self.inbox: list[Job] = []
        self.reading: list[Reader] = []  # primes and texts to score, a chunk a turn (above)
        self.batches: dict[int, Batch] = {}  # by LoadedModel.generation
        self.newest = 0  # the newest model generation seen: older batches go when empty
        self.outbox = Outbox()  # each job posts its events here
        self.closing = self.stopping = self.ended = False
        self.cancels = False  # set from the event loop: some job was cancelled
        self.steps = 0  # batched steps taken
        self.turns = 0  # turns of the loop
        self.chunks = 0  # chunks read: primes and texts to score
        self.step_seconds = 0.0  # what the streams' step took in the last turn (0: none ran)

    # -- from the event loop ----------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self.cond:
            self.inbox.append(job)
            self.cond.notify()

    def cancelled(self) -> None:
        """A job was cancelled (its client went away): batches look for it at the next turn."""
        self.cancels = True

    def close(self) -> None:
        """End every request now: open streams get their final event."""
        with self.cond:
            self.closing = True
            self.cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.join(timeout)

    # -- the thread -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.reading or any(self.batches.values()))

    def run(self) -> None:
        with torch.inference_mode():
            while True:
                if not (self.inbox or self.closing or self.stopping) and self.busy:
                    self._turn([])  # the usual turn, without the lock: nothing new came
                    self._flush()
                    continue
                with self.cond:
                    while not (self.inbox or self.busy or self.stopping
                               or self.closing and not self.ended):
                        self.cond.wait()
                    new, self.inbox = self.inbox, []
                    closing, stopping = self.closing, self.stopping
                if stopping:
                    return
                if closing:
                    self._end_all(new)
                    self.ended = True
                else:
                    self._turn(new)
                self._flush()

    def _turn(self, new: list[Job]) -> None:
        for job in new:
            self.reading.append(Reader(job, self.turns))
            self.newest = max(self.newest, job.loaded.generation)
        self.reading = [r for r in self.reading if not r.job.cancelled]
        if self.reading:
            self._read(self._next_reader())
        self.turns += 1
        cancels, self.cancels = self.cancels, False
        started, stepped = time.perf_counter(), False
        for generation, batch in list(self.batches.items()):
            if cancels:
                batch.leave_cancelled()
            try:
                stepped = self._advance(batch) or stepped
            except Exception:  # a bug or out of memory: fail this batch, keep serving
                self._report()
                for job in batch.clear():
                    if not job.finished:
                        job.fail(InternalError("internal error while generating; see the "
                                               "server's log"))
            if not batch and generation < self.newest:
                del self.batches[generation]  # a replaced model, now unused (--watch)
        self.step_seconds = time.perf_counter() - started if stepped else 0.0

    def _advance(self, batch: Batch) -> bool:
        """One character for every stream of `batch`; False when it has none."""
        if batch.dirty:
            batch.layout()
            for job in batch.members:
                job.pace(len(batch.placed))
        if not batch.placed:
            return False
        for job in batch.draw():
            # A session keeps the state from before the last character drawn: the next
            # request reads that character first.
            job.finish(batch.state_of(job) if job.settings.session else None)
        batch.step()
        self.steps += 1
        return True

    def _next_reader(self) -> Reader:
        """Fewest chunks read on even turns; on odd ones, of those that have begun, the
        one that has waited longest (see above). min keeps the first of equals, so ties
        go by arrival."""
        begun = [r for r in self.reading if r.chunks] if self.turns % 2 else None
        if begun:
            return min(begun, key=lambda r: r.read_at)
        return min(self.reading, key=lambda r: r.chunks)

    def _read(self, reader: Reader) -> None:
        """One chunk of a prime or a text; a GenerateJob that has read its prime joins its
        batch."""
        job = reader.job
        reader.chunks += 1
        self.chunks += 1
        reader.read_at = self.turns
        if isinstance(job, ScoreJob):
            seconds = (max(READ_SECONDS_MIN, self.step_seconds) if self.step_seconds
                       else READ_SECONDS_IDLE)
            work = lambda: job.advance(job.chunk_for(seconds))  # noqa: E731
        else:
            work = job.generation.priming.chunk
        if self._guarded(job, work):
            self.reading.remove(reader)
            if isinstance(job, GenerateJob) and not job.finished:
                self._batch_of(job).join(job)

    def _batch_of(self, job: GenerateJob) -> Batch:
        batch = self.batches.get(job.loaded.generation)
        if batch is None:
            batch = self.batches[job.loaded.generation] = Batch(job.loaded.model, job.loaded.step_precision)
        return batch

    def _guarded(self, job: Job, work) -> bool:
        """work(); True when the job is done with this stage, or failed."""
        try:
            return work()
        except Exception:  # a bug or out of memory: this request fails, the others go on
            self._report()
            job.fail(InternalError("internal error; see the server's log"))
            return True

    def _end_all(self, new: list[Job]) -> None:
        jobs = new + [r.job for r in self.reading]
        for batch in self.batches.values():
            jobs += batch.members
        for job in jobs:
            if job.finished or job.cancelled:
                continue
            if isinstance(job, GenerateJob):
                job.finish(reason="shutdown")
            else:
                job.fail(Unavailable("the server is shutting down"))
        self.reading, self.batches = [], {}

    def _flush(self) -> None:
        events = self.outbox.take()
        if not events:
            return
        try:
            self.loop.call_soon_threadsafe(self.deliver, events)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass

    @staticmethod
    def _report() -> None:
        # through the log's rate limit (logs.py): a bug hit by every request logs once
        log.error("internal error in the worker", exc_info=True)
