"""Drawing characters: the Gumbel-max `Picker`, and a request's noise drawn in blocks.

    noise = Noise(B, V, length, temperature, generator, device)
    picker = Picker(V, temperature, top_k)
    picker(logits, noise.next(), out)          # one character for each of the B streams

A draw never reads a value back to the host, and the random numbers of a block of
characters are drawn at once, at the start of the block, whether or not the block is used to
its end: which characters a seed gives depends on the request alone (its B, V and length),
never on how its steps are run or which other requests share them.
"""

from __future__ import annotations

import torch

BLOCK = 64  # characters per block of noise, fewer when B x V is large
BLOCK_FLOATS = 1 << 22  # the most floats of noise one block holds


class Picker:
    """Draws the next ids (B,) from logits (B, V), writing them into a given tensor.

    A draw is argmax(logits / T + g) with g ~ Gumbel(0, 1) per entry (the Gumbel-max trick):
    it picks i with probability softmax(logits / T)_i, in two element-wise ops and without
    torch.multinomial's validity check, which reads a value back to the host (a
    synchronisation on GPU) on every call. The caller supplies g, so that the random numbers
    can be drawn in blocks, outside a CUDA graph. The draw is row by row (add, top-k mask,
    argmax), so rows of many requests drawn in one call give the bits each gives alone.
    """

    def __init__(self, vocab_size: int, temperature: float, top_k: int):
        self.temperature = temperature
        self.top_k = top_k if top_k and top_k < vocab_size else 0
        self.key = (temperature, self.top_k)  # rows with one key can be drawn in one call

    def __call__(self, logits: torch.Tensor, gumbel: torch.Tensor | None,
                 out: torch.Tensor) -> torch.Tensor:
        """gumbel: Gumbel(0, 1) draws shaped like logits, overwritten (None at temperature
        0); out: the ids (B,)."""
        if self.temperature == 0:
            return torch.argmax(logits, dim=-1, out=out)
        scores = gumbel.add_(logits, alpha=1.0 / self.temperature)
        if self.top_k:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            scores.masked_fill_(logits < kth, float("-inf"))
        return torch.argmax(scores, dim=-1, out=out)


def gumbel_(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Fill t with Gumbel(0, 1) draws: -log(E), E ~ Exp(1)."""
    return t.exponential_(generator=generator).log_().neg_()


def pick(logits: torch.Tensor, temperature: float, top_k: int,
         generator: torch.Generator | None) -> torch.Tensor:
    """Next ids (B,) from logits (B, V): argmax at temperature 0, else a draw."""
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    noise = gumbel_(torch.empty(logits.shape, device=logits.device), generator)
    return Picker(logits.shape[-1], temperature, top_k)(logits.float(), noise, out)


def block_size(B: int, V: int, length: int) -> int:
    """Characters per block of random numbers: BLOCK, fewer when B x V is large."""
    return max(1, min(BLOCK, length, BLOCK_FLOATS // (B * V)))


class Noise:
    """One request's Gumbel noise: (block, B, V) drawn from its generator at the start of
    each block. `next()` gives the noise of the next character (B, V), or None at
    temperature 0 (the argmax, which needs none)."""

    def __init__(self, B: int, V: int, length: int, temperature: float,
                 generator: torch.Generator, device):
        self.generator = generator
        self.block = block_size(B, V, length)
        self.table = (torch.zeros(self.block, B, V, device=device) if temperature > 0
                      else None)
        # Views made once: indexing a tensor on every step costs as much as a small op.
        self.rows = self.table.unbind(0) if self.table is not None else ()
        self.k = 0  # the position in the block

    def fill(self) -> None:
        """A new block of noise (the start of a block)."""
        if self.table is not None:
            gumbel_(self.table, self.generator)

    def next(self) -> torch.Tensor | None:
        if self.table is None:
            return None
        if self.k == 0:
            self.fill()
        row = self.rows[self.k]
        self.k = (self.k + 1) % self.block
        return row
