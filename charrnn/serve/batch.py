"""The running streams of one model as the rows of one batched step.

    batch = Batch(loaded)
    batch.join(job)           # a primed GenerateJob: its rows join at the next layout
    batch.layout()            # when jobs came or went: rows packed, state carried over
    finished = batch.draw()   # one character for every row, each job with its own noise
    batch.state_of(job)       # a finished session job's state, before the next step
    batch.step()              # every row through the model at once (Stepper)

Rows are packed at the top of a Stepper whose size is the next power of two, so that a few
sizes serve any number of streams and a join or a leave costs a copy of the state, not a
new Stepper. A job that runs alone gets a Stepper of exactly its num_samples, with its
stopped streams kept in (as `charrnn sample` keeps them): the same sizes and the same
operations as `charrnn sample`, hence the same text for the same seed. Jobs with the same
temperature and top-k sit next to each other and are drawn with one Picker call: the draw
is row by row (add, top-k mask, argmax), so sharing the call changes no bit of a row.
"""

from __future__ import annotations

import torch

from ..core.model import hidden_from_tensors, hidden_tensors
from ..inference.stepper import ReferenceStepper, Stepper
from .jobs import EVENTS_PER_SECOND, FLUSH_SECONDS, GenerateJob
from .loaded import LoadedModel

EXACT_SIZES_KEPT = 2  # Steppers of sizes other than powers of two: each copies the weights


class Batch:
    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.fast = Stepper.supports(self.model)
        self.steppers: dict[int, Stepper] = {}
        self.stepper: Stepper | None = None
        self.jobs: list[GenerateJob] = []  # in row order
        self.incoming: list[GenerateJob] = []
        self.groups: list[tuple] = []  # (first job, jobs, their logits, their ids)
        self.drawn = None  # the ids of every row, a view
        self.rows = 0
        self.dirty = False

    def __bool__(self) -> bool:
        return bool(self.jobs or self.incoming)

    @property
    def streams(self) -> int:
        return sum(len(j.kept) for j in self.jobs) + sum(j.B for j in self.incoming)

    def join(self, job: GenerateJob) -> None:
        self.incoming.append(job)
        self.dirty = True

    def leave_cancelled(self) -> None:
        if any(j.cancelled for j in self.jobs) or any(j.cancelled for j in self.incoming):
            self.incoming = [j for j in self.incoming if not j.cancelled]
            self.dirty = True

    # ---------------------------------------------------------------------------------

    def layout(self) -> None:
        """Pack the rows of the running jobs (new ones last), carrying every state over."""
        old, old_jobs = self.stepper, self.jobs
        stay = [j for j in old_jobs if not j.finished and not j.cancelled]
        jobs = sorted(stay + self.incoming, key=lambda j: j.key)  # stable: stayers keep order
        solo = len(jobs) == 1
        old_rows = {id(j): (j.offset, list(j.kept)) for j in stay}
        for job in jobs:
            if not solo:  # a stopped stream leaves, unless its job runs alone (as sample)
                job.kept = [r for r in job.kept if not job.stops.ended[r]]
            job.kept_index = (None if len(job.kept) == job.B else
                              torch.tensor(job.kept, device=self.loaded.device))
        n = sum(len(j.kept) for j in jobs)
        self.incoming, self.dirty = [], False
        if n == 0:
            self.jobs, self.stepper, self.rows, self.groups = [], None, 0, []
            return
        size = n if solo else 1 << (n - 1).bit_length()  # alone: as many rows as sample
        parts, logits = [], []
        if old is not None and stay:
            old_state, old_logits = hidden_tensors(old.hidden()), old.logits
        for job in jobs:
            if id(job) in old_rows:  # its rows where they were, those still kept
                offset, was = old_rows[id(job)]
                rows = torch.tensor([offset + was.index(r) for r in job.kept],
                                    device=self.loaded.device)
                parts.append([t.index_select(1, rows) for t in old_state])
                logits.append(old_logits.index_select(0, rows))
            else:  # fresh from its prime: (layers, B, H) and (B, V)
                rows = job.kept_index
                state = hidden_tensors(job.hidden)
                parts.append(state if rows is None else [t.index_select(1, rows) for t in state])
                logits.append(job.logits if rows is None else job.logits.index_select(0, rows))
                job.hidden = job.logits = None  # the batch holds them now
        state = [torch.cat([p[i] for p in parts], dim=1) for i in range(len(parts[0]))]
        if n < size:  # padding rows: computed, never read
            state = [torch.cat([t, t.new_zeros(t.shape[0], size - n, t.shape[2])], dim=1)
                     for t in state]
        stepper = self._stepper(size)
        stepper.load(hidden_from_tensors(state, self.model.cell))
        stepper.logits[:n].copy_(torch.cat(logits))
        stepper.logits[n:].zero_()
        self.stepper, self.jobs, self.rows = stepper, jobs, n
        self._group(jobs)
        flush_every = max(FLUSH_SECONDS, len(jobs) / EVENTS_PER_SECOND)
        for job in jobs:
            job.flush_every = flush_every

    def _group(self, jobs: list[GenerateJob]) -> None:
        """Consecutive jobs with one (temperature, top_k) are drawn by one Picker call, on
        views of the Stepper's logits and ids made here once."""
        spans, at = [], 0
        for job in jobs:
            job.offset = at
            end = at + len(job.kept)
            if spans and spans[-1][2].key == job.key:
                spans[-1][1] = end
                spans[-1][3].append(job)
            else:
                spans.append([at, end, job, [job]])
            at = end
        logits, ids = self.stepper.logits, self.stepper.ids
        self.groups = [(first, members, logits[start:end], ids[start:end])
                       for start, end, first, members in spans]
        self.drawn = ids[:self.rows]

    def _stepper(self, size: int):
        stepper = self.steppers.get(size)
        if stepper is None:
            if size & (size - 1):  # not a power of two: keep only the latest few
                odd = [s for s in self.steppers if s & (s - 1)]
                for s in odd[:max(0, len(odd) - EXACT_SIZES_KEPT + 1)]:
                    del self.steppers[s]
            cls = Stepper if self.fast else ReferenceStepper
            stepper = self.steppers[size] = cls(self.model, size)
        return stepper

    # ---------------------------------------------------------------------------------

    def draw(self) -> list[GenerateJob]:
        """One character for every row; returns the jobs that finished with it."""
        for first, members, logits, out in self.groups:
            if first.noise is None:
                noise = None  # temperature 0: the argmax, no noise
            elif len(members) == 1:
                noise = first.noise_now()
            else:
                noise = torch.cat([job.noise_now() for job in members])
            first.picker(logits, noise, out)
        ids = self.drawn.tolist()
        finished = []
        for job in self.jobs:
            if job.take(ids[job.offset:job.offset + len(job.kept)]):
                finished.append(job)
                self.dirty = True
            elif len(self.jobs) > 1 and job.ended_rows():
                self.dirty = True
        return finished

    def state_of(self, job: GenerateJob):
        """A job's first stream's state now (layers, 1, H): what a session keeps."""
        rows = slice(job.offset, job.offset + 1)
        state = [t[:, rows].clone() for t in hidden_tensors(self.stepper.hidden())]
        return hidden_from_tensors(state, self.model.cell)

    def step(self) -> None:
        if self.stepper is not None:
            self.stepper.step()
