"""The stream layout of truncated backpropagation through time.

    streams = Streams(data.split("train"), batch_size=32, seq_len=64, device="cpu")
    idx, targets = streams.batch(0)          # (B, T) each; targets are idx shifted by one

The training split is cut into B contiguous streams, one per batch row, each L = (N-1)//B
characters long; stream b starts at offset b*L. Chunk i of the epoch is columns
[i*T, (i+1)*T) of every stream, so row b of chunk i+1 continues row b of chunk i and the
hidden state can be carried across them:

    text:    a b c d e f g h i j k l m n o p q r s t u v w x (y)
    B = 3:   stream 0: a b c d e f g h      chunk 0 = columns 0-3, chunk 1 = columns 4-7
             stream 1: i j k l m n o p
             stream 2: q r s t u v w x      the target of x is y, the next character

With several processes (DDP), rank r owns rows [r*B/W, (r+1)*B/W) of the same layout, so
W processes see exactly what one process with B rows sees.

Each stream also starts from a blank state once every K chunks (train.reset_every), the
streams taking turns (blank_starts), so that the model keeps working from the blank state
that sampling and evaluation start from. In a corpus of many documents, a stream also
starts blank at each chunk in which a document starts (document_starts): a document does
not inherit the state of all the text before it, only of the chunk's few characters before
its end-of-document mark, which the model learns to read as "a new document".
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import DataError
from ..core.model import Hidden, map_hidden


def stream_length(n: int, batch_size: int) -> int:
    """Characters per stream when n characters are cut into batch_size streams."""
    return (n - 1) // batch_size


def as_index(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host ids as a tensor, without a copy where the device can use them as they are.

    uint8 ids stay uint8 (4x less memory than int32). uint32 ids are below 2^31, so their
    bytes already are valid int32. uint16 ids stay uint16 on the host (the model widens each
    batch); for a GPU they become int32, which embedding lookups there accept directly.
    """
    if ids.dtype == np.uint32:
        ids = ids.view(np.int32)
    elif ids.dtype == np.uint16 and device.type != "cpu":
        ids = ids.astype(np.int32)
    return torch.from_numpy(ids)


class Streams:
    """The (B, T) chunks of one epoch over `array`, for rows [row_start, row_stop).

    When `resident` (the default whenever the rows fit), this process's part of the split is
    one tensor on the device and every batch is a strided view of it: no copy per step.
    Otherwise batches are gathered from the memory map into pinned memory and copied
    asynchronously, one step ahead of use.
    """

    def __init__(self, array: np.ndarray, batch_size: int, seq_len: int,
                 device: torch.device | str = "cpu", row_start: int = 0,
                 row_stop: int | None = None, resident: bool | None = None,
                 reset_every: int = 0, doc_starts: np.ndarray | None = None):
        """`doc_starts`: where documents start in `array`, for document_starts."""
        self.device = torch.device(device)
        self.batch_size, self.seq_len = batch_size, seq_len
        n = len(array)
        self.stream_len = stream_length(n, batch_size)
        if self.stream_len < seq_len:
            smallest = (n - 1) // seq_len
            raise DataError(
                f"corpus too short: {n:,} characters cannot fill batch_size {batch_size} x "
                f"seq_len {seq_len}; use --batch-size {max(1, smallest)} or less, or a "
                f"shorter --seq-len")
        self.steps_per_epoch = self.stream_len // seq_len
        row_stop = batch_size if row_stop is None else row_stop
        self.rows = row_stop - row_start
        self.keep = blank_starts(reset_every, row_start, row_stop, self.device)
        self.doc_keep = document_starts(doc_starts, self.stream_len, seq_len,
                                        self.steps_per_epoch, row_start, row_stop, self.device)
        L = self.stream_len
        # The rows plus one character: the target of each row's last character.
        part = array[row_start * L: row_stop * L + 1]
        if resident is None:
            resident = _fits(part.nbytes, self.device)
        self.resident = resident
        if resident:
            self.data = as_index(np.ascontiguousarray(part), self.device).to(self.device)
        else:
            self.part = part
            self._offsets = (np.arange(self.rows) * L)[:, None] + np.arange(seq_len + 1)
            self._next: tuple[int, torch.Tensor] | None = None

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, targets) for chunk i of the epoch, each (rows, T)."""
        T, L = self.seq_len, self.stream_len
        if self.resident:
            idx = self.data.as_strided((self.rows, T), (L, 1), i * T)
            targets = self.data.as_strided((self.rows, T), (L, 1), i * T + 1)
            return idx, targets
        if self._next is not None and self._next[0] == i:
            chunk = self._next[1]
        else:
            chunk = self._gather(i)
        # Start the copy of the next chunk now, while the caller computes on this one.
        nxt = (i + 1) % self.steps_per_epoch
        self._next = (nxt, self._gather(nxt))
        return chunk[:, :-1], chunk[:, 1:]

    def carry(self, hidden: Hidden, i: int) -> Hidden:
        """The state chunk i starts from, given the one chunk i-1 left: the streams whose
        turn it is (blank_starts) start blank."""
        keep = None  # (rows, 1): False where a stream starts blank
        if self.keep is not None:
            keep = self.keep[i % len(self.keep)]
        if self.doc_keep is not None:
            # A view of a tensor already on the device: no copy, no wait for the host.
            keep = self.doc_keep[i] if keep is None else keep & self.doc_keep[i]
        if keep is None:
            return hidden
        return map_hidden(lambda h: torch.where(keep, h, 0.0), hidden)

    def _gather(self, i: int) -> torch.Tensor:
        host = as_index(self.part[self._offsets + i * self.seq_len], self.device)
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # on the host the memory map itself is the storage
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes * 4 < free  # ids are widened to int32 at most; leave room for the model


def blank_starts(reset_every: int, row_start: int, row_stop: int,
                 device: torch.device) -> torch.Tensor | None:
    """Which streams keep their state at each chunk: (K, rows, 1), False where stream b starts
    from a blank state at chunk i, that is where (i + b) % K == 0, b the global row.

    Every stream starts blank once every K chunks and 1/K of them do at each step, so the
    model never forgets how to start from nothing while most streams carry long context.
    It depends only on the chunk and the global row: the same on resume and with any number
    of processes. None when K is 0 (streams start blank only at each epoch's start).
    """
    if reset_every <= 0:
        return None
    chunk = torch.arange(reset_every)[:, None]
    rows = torch.arange(row_start, row_stop)[None, :]
    keep = (chunk + rows) % reset_every != 0
    return keep[:, :, None].to(device)


def document_starts(doc_starts: np.ndarray | None, stream_len: int, seq_len: int,
                    steps: int, row_start: int, row_stop: int,
                    device: torch.device) -> torch.Tensor | None:
    """Which streams keep their state at each chunk of the epoch, given where documents
    start: (steps, rows, 1), False where a document starts inside chunk i of stream b.
    Made once, on the device, so that a step reads it without a host sync. None for a
    corpus of one document."""
    if doc_starts is None or len(doc_starts) < 2:
        return None
    starts = np.asarray(doc_starts, dtype=np.int64)
    row, col = starts // stream_len, starts % stream_len
    chunk = col // seq_len
    inside = (row >= row_start) & (row < row_stop) & (chunk < steps) & (chunk > 0)
    keep = np.ones((steps, row_stop - row_start), dtype=bool)
    keep[chunk[inside], row[inside] - row_start] = False
    return torch.from_numpy(keep)[:, :, None].to(device)
