"""The one thread that owns the models: it advances every stream of every request together.

    worker = Worker(deliver=lambda events: ..., loop=asyncio.get_running_loop())
    worker.start()
    worker.submit(job)        # from the event loop; never blocks on the model
    worker.close()            # every open stream ends with a final event ("shutdown")
    worker.stop()             # the thread ends

Each turn of the loop: new requests read one chunk of their prime (or text to score)
through the fused kernel, primed requests join their model's batch, every batch draws one
character for all its rows and steps them all at once, and the events of the turn go to the
event loop in one call. A request that finished, stopped or was cancelled leaves its batch
at the next turn's layout, so within one step. Models are never touched from another
thread, so no lock guards them; the HTTP side only sets `job.cancelled` and reads events.
"""

from __future__ import annotations

import sys
import threading
import traceback

import torch

from .batch import Batch
from .jobs import GenerateJob, Job, ScoreJob


class Worker(threading.Thread):
    def __init__(self, deliver, loop):
        super().__init__(name="charrnn-worker", daemon=True)
        self.deliver, self.loop = deliver, loop
        self.cond = threading.Condition()
        self.inbox: list[Job] = []
        self.priming: list[GenerateJob] = []
        self.scoring: list[ScoreJob] = []
        self.batches: dict[int, Batch] = {}  # by LoadedModel.generation
        self.newest = 0  # the newest model generation seen: older batches go when empty
        self.outbox: list = []
        self.closing = self.stopping = self.ended = False
        self.cancels = False  # set from the event loop: some job was cancelled
        self.steps = 0

    # -- from the event loop ----------------------------------------------------------

    def submit(self, job: Job) -> None:
        job.post = lambda event, job=job: self.outbox.append((job, event))
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
        return bool(self.priming or self.scoring or any(self.batches.values()))

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
            (self.scoring if isinstance(job, ScoreJob) else self.priming).append(job)
            self.newest = max(self.newest, job.loaded.generation)
        if self.priming:
            for job in list(self.priming):
                if job.cancelled or self._guarded(job, job.prime_chunk):
                    self.priming.remove(job)
                    if not job.cancelled and not job.finished:
                        self._batch_of(job).join(job)
        if self.scoring:
            for job in list(self.scoring):
                if job.cancelled or self._guarded(job, job.advance):
                    self.scoring.remove(job)
        cancels, self.cancels = self.cancels, False
        for generation, batch in list(self.batches.items()):
            if cancels:
                batch.leave_cancelled()
            try:
                self._advance(batch)
            except Exception:  # a bug or out of memory: fail this batch, keep serving
                self._report()
                for job in batch.jobs + batch.incoming:
                    if not job.finished:
                        job.fail("internal error while generating; see the server's log")
                batch.jobs, batch.incoming, batch.stepper, batch.groups = [], [], None, []
            if not batch and generation < self.newest:
                del self.batches[generation]  # a replaced model, now unused (--watch)

    def _advance(self, batch: Batch) -> None:
        if batch.dirty:
            batch.layout()
        if not batch.jobs:
            return
        for job in batch.draw():
            # A session keeps the state from before the last character drawn: the next
            # request reads that character first.
            job.finish(batch.state_of(job) if job.settings.session else None)
        batch.step()
        self.steps += 1

    def _batch_of(self, job: GenerateJob) -> Batch:
        batch = self.batches.get(job.loaded.generation)
        if batch is None:
            batch = self.batches[job.loaded.generation] = Batch(job.loaded)
        return batch

    def _guarded(self, job: Job, work) -> bool:
        """work(); True when the job is done with this stage, or failed."""
        try:
            return work()
        except Exception:  # a bug or out of memory: this request fails, the others go on
            self._report()
            job.fail("internal error; see the server's log")
            return True

    def _end_all(self, new: list[Job]) -> None:
        jobs = new + self.priming + self.scoring
        for batch in self.batches.values():
            jobs += batch.jobs + batch.incoming
        for job in jobs:
            if job.finished or job.cancelled:
                continue
            if isinstance(job, GenerateJob):
                job.finish(reason="shutdown")
            else:
                job.fail("the server is shutting down")
        self.priming, self.scoring, self.batches = [], [], {}

    def _flush(self) -> None:
        if not self.outbox:
            return
        events, self.outbox = self.outbox, []
        try:
            self.loop.call_soon_threadsafe(self.deliver, events)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass

    @staticmethod
    def _report() -> None:
        traceback.print_exc(file=sys.stderr)
