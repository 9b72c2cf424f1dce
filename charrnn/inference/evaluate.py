"""Validation loss over a whole split, scored with context, independent of the batch size.

    nats = evaluate(model, data.split("val"), batch_size=32, seq_len=64, device="cpu")
    bpc = nats / math.log(2)

The figure: the mean cross-entropy of every next-character prediction of the split, each
made with at least `context` characters of the text before it (all of them near the start).

The split is cut into B streams like the training data (see corpus/streams.py), and each stream is run
chunk by chunk carrying its state. Before scoring, every stream but the first reads the
`context` characters just before its start, unscored (a burn-in): its first prediction then
has the same context as it would have in one stream carried over the whole text. Without
the burn-in each stream would start from a blank state, and the score would depend on how
many streams the text was cut into. The few characters left over after B*L go through at the
end as the continuation of the last stream, with its state, so every one of the N-1
predictions of the split is scored exactly once.

Streams are capped at (N-1) // context, so each one is at least as long as its burn-in and
the burn-in costs at most as much as the scoring.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core import distributed
from ..core.bars import NoBar
from ..core.precision import autocast
from ..core.model import cross_entropy, map_hidden, select_rows
from ..corpus.streams import as_index, stream_length

CONTEXT = 512  # the default burn-in: past it, more context changes the score by < 0.01 nats


class Abandoned(Exception):
    """An evaluation stopped midway because its `abort` said so (Ctrl-C during training):
    there is no figure."""


class _Watch:
    """The bar, and the abort check between chunks."""

    def __init__(self, bar, abort):
        self.bar, self.abort = bar, abort

    def update(self, n: int) -> None:
        self.bar.update(n)
        if self.abort is not None and self.abort():
            raise Abandoned()

    def reset(self, total=None) -> None:
        self.bar.reset(total=total)


def eval_streams(n: int, batch_size: int, context: int = CONTEXT) -> int:
    """The streams `evaluate` cuts n characters into: at most batch_size, each at least
    `context` long (one stream when the text is shorter)."""
    return max(1, min(batch_size, (n - 1) // max(context, 1)))


@torch.no_grad()
def evaluate(model, array: np.ndarray, batch_size: int, seq_len: int, device,
             amp_dtype=None, dist: distributed.Dist = distributed.Dist(),
             context: int = CONTEXT, bar=None, abort=None) -> float:
    """Mean cross-entropy in nats per character over every prediction in `array`, each with
    at least `context` characters of context where the text has them. `bar` (core/bars.py),
    if given, counts the characters read, burn-ins included. `abort`, if given, is asked
    after every chunk; when it says True the evaluation raises Abandoned (one process only:
    under DDP every rank must finish the collective)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        total = _score(model, array, batch_size, seq_len, device, amp_dtype, dist, context,
                       _Watch(bar if bar is not None else NoBar(), abort))
    finally:
        model.train(was_training)
    return total / (len(array) - 1)


def _score(model, array, batch_size, seq_len, device, amp_dtype, dist, context, bar) -> float:
    """The summed loss of `evaluate`."""
    n = len(array)
    B = eval_streams(n, batch_size, context)
    L = stream_length(n, B)
    start, stop = dist.rows(B)

    def run(idx, hidden):
        with autocast(device, amp_dtype):
            return model(idx, hidden)

    W = context if B > 1 else 0
    leftover = n - 1 - B * L if stop == B else 0  # predictions after the B streams
    bar.reset(total=(stop - start) * (W + L) + max(leftover, 0))
    total, hidden = torch.zeros((), dtype=torch.float64, device=device), None
    if stop > start:
        # B > 1 implies L >= context, so every burn-in but the first stream's is in the text.
        total, hidden = _score_streams(run, array, start, stop, L, W, seq_len, device, bar)
    if leftover > 0:
        # The tail continues the last stream, so it starts from that stream's state.
        tail = _to_device(array[B * L:], device)
        last = None if hidden is None else select_rows(hidden, slice(-1, None))
        for t in range(0, len(tail) - 1, seq_len):
            T = min(seq_len, len(tail) - 1 - t)
            logits, last = run(tail[None, t:t + T], last)
            total += cross_entropy(logits, tail[None, t + 1:t + 1 + T], "sum")
            bar.update(T)
    distributed.all_reduce_sum(dist, total)
    return total.item()


def _score_streams(run, array: np.ndarray, start: int, stop: int, L: int, W: int,
                   seq_len: int, device: torch.device, bar):
    """Streams [start, stop), each of L predictions after a burn-in of W characters:
    (summed loss, the state they end in)."""
    rows = stop - start
    # Row b's text, burn-in included, is part[b*L : b*L + W + L + 1]. Row 0 has nothing
    # before it: it reads W filler characters and its state is then cleared.
    lead = max(0, W - start * L)
    ids = array[start * L - W + lead: stop * L + 1]
    part = _to_device(np.concatenate([np.zeros(lead, ids.dtype), ids]) if lead else ids, device)
    hidden, total = None, torch.zeros((), dtype=torch.float64, device=device)
    for t in range(0, W, seq_len):
        _, hidden = run(part.as_strided((rows, min(seq_len, W - t)), (L, 1), t), hidden)
        bar.update(rows * min(seq_len, W - t))
    if lead:
        hidden = _clear_first_row(hidden, rows, device)
    for t in range(0, L, seq_len):
        T = min(seq_len, L - t)
        logits, hidden = run(part.as_strided((rows, T), (L, 1), W + t), hidden)
        total += cross_entropy(logits, part.as_strided((rows, T), (L, 1), W + t + 1), "sum")
        bar.update(rows * T)
    return total, hidden


def _clear_first_row(hidden, rows: int, device: torch.device):
    """The state with row 0 blank: (layers, B, H) tensors."""
    first = torch.arange(rows, device=device)[:, None] == 0  # (B, 1)
    return map_hidden(lambda h: torch.where(first, 0.0, h), hidden)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return as_index(np.ascontiguousarray(array), device).to(device)


@torch.no_grad()
def blank_start_loss(model, array: np.ndarray, device, length: int = 200, starts: int = 256,
                     context: int = 0, batch_size: int = 64) -> float:
    """Mean cross-entropy of the `length` predictions that follow each of `starts` evenly
    spaced points of `array`, each run from a blank state as a sample is; with `context`,
    after reading that many characters before the point instead (the same predictions with
    context, to compare). It measures how well the model works from a blank state."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    first = context
    last = len(array) - length - 1
    if last < first:
        raise ValueError(f"{len(array)} characters are too few for {length} after "
                         f"{context} of context")
    points = np.unique(np.linspace(first, last, starts).astype(np.int64))
    # Only the windows are widened to int64, not the whole text: (N, context + length + 1).
    windows = torch.from_numpy(np.stack([array[p - context: p + length + 1] for p in points])
                               .astype(np.int64))
    total = 0.0
    for rows in windows.split(batch_size):
        rows = rows.to(device)
        logits, _ = model(rows[:, :-1])
        total += cross_entropy(logits[:, context:], rows[:, context + 1:], "sum").item()
    model.train(was_training)
    return total / (len(points) * length)
