"""The streams of many requests as the rows of one batched step.

    batch = Batch(model)
    batch.join(member)        # a member whose generation has read its prime: it joins at layout
    batch.layout()            # when members came or went: rows packed, state carried over
    finished = batch.draw()   # one character for every row, each request with its own noise
    batch.state_of(member)    # a finished member's first stream's state, before the next step
    batch.step()              # every row through the model at once (Stepper)

A member is a request as its runner sees it (serve's GenerateJob): its `generation`
(engine.py), `finished` and `cancelled`, and `take(ids, kept)`, which receives the
characters drawn for its kept streams and says whether it is done. Where a member's streams
sit is the batch's own record (`Rows`). Rows are packed at the top of a Stepper whose size is
the next power of two, so that a few sizes serve any number of streams and a join or a leave
costs a copy of the state, not a new Stepper. A member that runs alone gets a Stepper of
exactly its B streams, with its stopped streams kept in (as Sampler keeps them): the same
sizes and operations as `charrnn sample`, hence the same text for the same seed. Members
with the same temperature and top-k sit next to each other and are drawn with one Picker
call: the draw is row by row, so sharing the call changes no bit of a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..core.model import CharRNN, hidden_from_tensors, hidden_tensors
from .draws import Picker
from .engine import Generation
from .stepper import ReferenceStepper, Stepper

EXACT_SIZES_KEPT = 2  # Steppers of sizes other than powers of two: each copies the weights


class Member(Protocol):
    generation: Generation
    finished: bool
    cancelled: bool

    def take(self, ids: list[int], kept: list[int]) -> bool: ...


@dataclass(eq=False)
class Rows:
    """Where one member's streams sit: which are still in (a stopped one leaves unless its
    member runs alone), the same as a tensor when not all are, and the first row."""
    member: Member
    kept: list[int]
    index: torch.Tensor | None = None
    offset: int = 0

    @property
    def key(self) -> tuple:
        return self.member.generation.picker.key

    def leaving(self) -> bool:
        return self.member.finished or self.member.cancelled


@dataclass(eq=False)
class Group:
    """Consecutive rows drawn by one Picker call, on views of the Stepper's logits and ids."""
    picker: Picker
    members: list[Rows]
    logits: torch.Tensor
    ids: torch.Tensor


class Batch:
    def __init__(self, model: CharRNN, precision: str = "fp32"):
        """`precision`: the products of the batched step, "fp32" or "bf16" (Stepper); a
        model the written-out step does not cover steps in fp32 whatever it says."""
        self.model = model
        self.precision = precision
        self.device = model.head.weight.device
        self.fast = Stepper.supports(model)
        self.steppers: dict[int, Stepper] = {}
        self.stepper: Stepper | None = None
        self.placed: list[Rows] = []  # in row order
        self.incoming: list[Rows] = []
        self.groups: list[Group] = []
        self.drawn = None  # the ids of every row, a view
        self.rows = 0
        self.dirty = False

    def __bool__(self) -> bool:
        return bool(self.placed or self.incoming)

    @property
    def members(self) -> list[Member]:
        return [r.member for r in self.placed + self.incoming]

    def join(self, member: Member) -> None:
        self.incoming.append(Rows(member, list(range(member.generation.B))))
        self.dirty = True

    def leave_cancelled(self) -> None:
        if any(r.member.cancelled for r in self.placed + self.incoming):
            self.incoming = [r for r in self.incoming if not r.member.cancelled]
            self.dirty = True

    def clear(self) -> list[Member]:
        """Every member out at once (the batch failed); returns them."""
        members = self.members
        self.placed, self.incoming, self.stepper, self.groups, self.rows = [], [], None, [], 0
        return members

    # -- layout -----------------------------------------------------------------------

    def layout(self) -> None:
        """Pack the rows of the running members (new ones last), carrying every state over."""
        old = self.stepper
        stay = [r for r in self.placed if not r.leaving()]
        placed = sorted(stay + self.incoming, key=lambda r: r.key)  # stable: stayers keep order
        was = {id(r): (r.offset, list(r.kept)) for r in stay}
        self._keep(placed)
        n = sum(len(r.kept) for r in placed)
        self.incoming, self.dirty = [], False
        if n == 0:
            self.placed, self.stepper, self.rows, self.groups = [], None, 0, []
            return
        size = n if len(placed) == 1 else 1 << (n - 1).bit_length()  # alone: as sample
        state, logits = self._gather(placed, was, old)
        self._load(state, logits, n, size)
        self.placed, self.rows = placed, n
        self._group()

    def _keep(self, placed: list[Rows]) -> None:
        """Drop the stopped streams of each member, unless it runs alone (as sample)."""
        for r in placed:
            if len(placed) > 1:
                ended = r.member.generation.ended
                r.kept = [s for s in r.kept if not ended[s]]
            r.index = (None if len(r.kept) == r.member.generation.B else
                       torch.tensor(r.kept, device=self.device))

    def _gather(self, placed: list[Rows], was: dict, old: Stepper | None):
        """The state tensors (layers, n, H) and logits (n, V) of the kept rows, in order:
        a stayer's from where its rows were, a newcomer's from its prime."""
        parts, logits = [], []
        if was:
            old_state, old_logits = hidden_tensors(old.hidden()), old.logits
        for r in placed:
            if id(r) in was:
                offset, kept = was[id(r)]
                rows = torch.tensor([offset + kept.index(s) for s in r.kept],
                                    device=self.device)
                parts.append([t.index_select(1, rows) for t in old_state])
                logits.append(old_logits.index_select(0, rows))
            else:  # fresh from its prime: (layers, B, H) and (B, V), the batch's now
                first, hidden = r.member.generation.priming.hand_over()
                state = hidden_tensors(hidden)
                parts.append(state if r.index is None else
                             [t.index_select(1, r.index) for t in state])
                logits.append(first if r.index is None else first.index_select(0, r.index))
        state = [torch.cat([p[i] for p in parts], dim=1) for i in range(len(parts[0]))]
        return state, torch.cat(logits)

    def _load(self, state: list[torch.Tensor], logits: torch.Tensor, n: int, size: int):
        if n < size:  # padding rows: computed, never read
            state = [torch.cat([t, t.new_zeros(t.shape[0], size - n, t.shape[2])], dim=1)
                     for t in state]
        stepper = self.stepper = self._stepper(size)
        stepper.load(hidden_from_tensors(state, self.model.cell))
        stepper.logits[:n].copy_(logits)
        stepper.logits[n:].zero_()

    def _group(self) -> None:
        """Consecutive members with one Picker key share a Group; offsets set here."""
        spans, at = [], 0
        for r in self.placed:
            r.offset = at
            if spans and spans[-1][2][0].key == r.key:
                spans[-1][2].append(r)
            else:
                spans.append([at, None, [r]])
            at += len(r.kept)
            spans[-1][1] = at
        logits, ids = self.stepper.logits, self.stepper.ids
        self.groups = [Group(members[0].member.generation.picker, members,
                             logits[start:end], ids[start:end])
                       for start, end, members in spans]
        self.drawn = ids[:self.rows]

    def _stepper(self, size: int):
        stepper = self.steppers.get(size)
        if stepper is None:
            if size & (size - 1):  # not a power of two: keep only the latest few
                odd = [s for s in self.steppers if s & (s - 1)]
                for s in odd[:max(0, len(odd) - EXACT_SIZES_KEPT + 1)]:
                    del self.steppers[s]
            stepper = self.steppers[size] = (
                Stepper(self.model, size, precision=self.precision) if self.fast
                else ReferenceStepper(self.model, size))
        return stepper

    # -- each step --------------------------------------------------------------------

    def draw(self) -> list[Member]:
        """One character for every row; returns the members that finished with it."""
        for group in self.groups:
            noise = [_noise_of(r) for r in group.members]
            group.picker(group.logits, noise[0] if len(noise) == 1 else
                         None if noise[0] is None else torch.cat(noise), group.ids)
        ids = self.drawn.tolist()
        finished = []
        for r in self.placed:
            if r.member.take(ids[r.offset:r.offset + len(r.kept)], r.kept):
                finished.append(r.member)
                self.dirty = True
            elif len(self.placed) > 1 and r.member.generation.ended_any(r.kept):
                self.dirty = True
        return finished

    def state_of(self, member: Member):
        """A member's first stream's state now (layers, 1, H): what a session keeps."""
        offset = next(r.offset for r in self.placed if r.member is member)
        state = [t[:, offset:offset + 1].clone()
                 for t in hidden_tensors(self.stepper.hidden())]
        return hidden_from_tensors(state, self.model.cell)

    def step(self) -> None:
        if self.stepper is not None:
            self.stepper.step()


def _noise_of(rows: Rows) -> torch.Tensor | None:
    """This character's noise for a member's kept rows, (kept, V); None at temperature 0."""
    noise = rows.member.generation.noise.next()
    if noise is None or rows.index is None:
        return noise
    return noise.index_select(0, rows.index)
