"""An exported file checked against the model it came from, in onnxruntime.

    diff = max_logit_difference(model, data)      # data: the ONNX file's bytes (or its path)

Both run the same 1,000 characters (two streams, so the batch axis is exercised too), fed in
chunks of varying length with the recurrent state carried from each chunk into the next,
exactly as a caller carries it: PyTorch through the model's own forward, onnxruntime through
the file's explicit state inputs and outputs. The result is the largest absolute difference
between their logits; `export` refuses a file over TOLERANCE.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..core.model import CharRNN, hidden_tensors
from .metadata import state_names

CHECK_CHARS = 1000
CHECK_STREAMS = 2
TOLERANCE = 1e-4  # fp32: the two sides differ only in the order of their sums (~1e-7)

# Chunk lengths, cycled: single characters (as sampling feeds them) and long chunks (as a
# prime goes in), so the runtime's kernels run on both and every boundary carries state.
CHUNKS = (1, 7, 64, 1, 200, 3, 128)


def session_for(data, threads: int = 0):
    """An onnxruntime CPU session on a file's bytes or path; `threads` 0 = its default."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the runtime's notes are not the user's
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def chunk_bounds(length: int, sizes=CHUNKS) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive chunks covering range(length), their sizes cycling."""
    start, k = 0, 0
    while start < length:
        end = min(length, start + sizes[k % len(sizes)])
        yield start, end
        start, k = end, k + 1


@torch.no_grad()
def max_logit_difference(model: CharRNN, data, length: int = CHECK_CHARS,
                         batch_size: int = CHECK_STREAMS, seed: int = 0) -> float:
    """The largest |logit difference| between the model and the file over `length`
    characters per stream; inf when either side gives a non-finite value."""
    session = session_for(data)
    model = model.eval()
    # Random characters rather than text: they drive the state through more of its range
    # than any one text would. A seeded generator keeps the global random state alone.
    ids = torch.randint(model.vocab_size, (batch_size, length),
                        generator=torch.Generator().manual_seed(seed))
    names = state_names(model.cell)
    hidden = model.init_hidden(batch_size)  # zeros: where sampling and evaluation start
    state = {name: t.numpy().copy() for name, t in zip(names, hidden_tensors(hidden))}
    worst = 0.0
    for start, end in chunk_bounds(length):
        chunk = ids[:, start:end]  # (B, T)
        logits, hidden = model(chunk, hidden)  # (B, T, V)
        logits_out, *state_out = session.run(None, {"ids": chunk.numpy(), **state})
        state = dict(zip(names, state_out))
        diff = float(np.max(np.abs(logits_out - logits.numpy())))
        if not math.isfinite(diff):
            return math.inf
        worst = max(worst, diff)
    return worst
