"""Validation loss over a whole split, with its own carried hidden state.

    nats = evaluate(model, data.split("val"), batch_size=32, seq_len=64, device="cpu")
    bpc = nats / math.log(2)

The split is cut into B streams like the training data (see data.py); each stream is run
chunk by chunk carrying its state. The few characters left over after B*L go through at the
end as the continuation of the last stream, with its state, so every one of the N-1
next-character predictions of the split is scored exactly once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .data import as_index, stream_length
from .device import autocast
from .model import select_rows

LN2 = math.log(2)


@torch.no_grad()
def evaluate(model, array: np.ndarray, batch_size: int, seq_len: int, device,
             amp_dtype=None, dist: distributed.Dist = distributed.Dist()) -> float:
    """Mean cross-entropy in nats per character over every prediction in `array`."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n = len(array)
    B = max(1, min(batch_size, n - 1))
    L = stream_length(n, B)
    start, stop = dist.rows(B)
    total = torch.zeros((), dtype=torch.float64, device=device)

    def score(idx, targets, hidden):
        with autocast(device, amp_dtype):
            logits, hidden = model(idx, hidden)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                               targets.reshape(-1).long(), reduction="sum")
        return loss, hidden

    hidden = None
    if stop > start:
        part = _to_device(array[start * L: stop * L + 1], device)
        for t in range(0, L, seq_len):
            T = min(seq_len, L - t)
            idx = part.as_strided((stop - start, T), (L, 1), t)
            targets = part.as_strided((stop - start, T), (L, 1), t + 1)
            loss, hidden = score(idx, targets, hidden)
            total += loss
    if stop == B and B * L < n - 1:
        # The tail continues the last stream, so it starts from that stream's state.
        tail = _to_device(array[B * L:], device)
        last = None if hidden is None else select_rows(hidden, slice(-1, None))
        for t in range(0, len(tail) - 1, seq_len):
            T = min(seq_len, len(tail) - 1 - t)
            loss, last = score(tail[None, t:t + T], tail[None, t + 1:t + 1 + T], last)
            total += loss
    distributed.all_reduce_sum(dist, total)
    model.train(was_training)
    return total.item() / (n - 1)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return as_index(np.ascontiguousarray(array), device).to(device)
