"""Building the arrays of a suffix index over a text of ids, one block at a time.

    blocks = block_ranges(len(ids))                      # [(start, end), ...]
    arrays = MemorySink(layout_of(blocks, ids.dtype))    # or index.py's file
    build_blocks(lambda a, b: ids[a:b].copy(), blocks, arrays)

For each block of the text: its suffix array (pydivsufsort's divsufsort), the inverse
permutation, and the LCP array (pydivsufsort's Kasai); after all blocks, a pyramid of LCP
minima. All of them sit side by side in one rank space: block b's suffixes take the ranks
[offset_b, offset_b + len_b), `sa` holds positions of the whole text, `isa` is indexed by
offset_b + (position - start_b), and each block's last LCP entry is -1, a wall that no
search for an interval crosses.

Why blocks: a suffix array takes 4 bytes per character and its construction about 13, so a
1 GB split would need 13 GB at once. Blocks of BLOCK_CHARS characters keep a build near
1 GB whatever the split's size. Neighbouring blocks share OVERLAP characters, so every
span of up to OVERLAP characters lies whole inside some block: the longest match of a
position, the best over all blocks, is exact up to OVERLAP characters (a longer copy is
found at least that long). A split of at most BLOCK_CHARS + OVERLAP characters is one
block, and everything about it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import CharRNNError
from ..core.extras import install_hint

BLOCK_CHARS = 1 << 26  # 64 Mi characters: one block's build peaks near 1 GB
OVERLAP = 1000         # characters shared by neighbouring blocks: spans up to this are exact
FANOUT = 64            # LCP entries per minimum, level to level, in the pyramid


def require_pydivsufsort():
    """The suffix-array library, or one line saying how to install it."""
    try:
        import pydivsufsort
    except ImportError:
        raise CharRNNError("the novelty check needs pydivsufsort: "
                           + install_hint("novelty")) from None
    return pydivsufsort


def block_ranges(n: int, block_chars: int = BLOCK_CHARS,
                 overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """(start, end) of each block: starts every block_chars characters, each block reaching
    `overlap` characters into the next; a last piece that the previous block already
    covers is left out."""
    starts = [0] + list(range(block_chars, max(n - overlap, 0), block_chars))
    return [(s, min(s + block_chars + overlap, n)) for s in starts]


@dataclass
class Layout:
    """Where each array lies in the rank space and, for a file, in bytes."""
    blocks: list[tuple[int, int]]
    dtype: np.dtype                     # of sa, isa, lcp and the pyramid
    fanout: int = FANOUT
    level_sizes: list[int] = field(default_factory=list)  # pyramid levels 1, 2, ...

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)
        size, self.level_sizes = self.ranks, []
        while size > self.fanout:
            size = -(-size // self.fanout)
            self.level_sizes.append(size)

    @property
    def ranks(self) -> int:
        return sum(end - start for start, end in self.blocks)

    @property
    def offsets(self) -> np.ndarray:
        """The first rank of each block."""
        sizes = [end - start for start, end in self.blocks]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def layout_of(blocks: list[tuple[int, int]], fanout: int = FANOUT) -> Layout:
    total = sum(end - start for start, end in blocks)
    # Ranks and positions fit int32 up to 2 Gi characters; beyond, int64.
    dtype = np.int32 if total + 1 < 2**31 else np.int64
    return Layout(blocks, dtype, fanout)


class MemorySink:
    """The arrays in memory (small texts, tests)."""

    def __init__(self, layout: Layout):
        n = layout.ranks
        self.arrays = {name: np.empty(n, layout.dtype) for name in ("sa", "isa", "lcp")}

    def put(self, name: str, start: int, values: np.ndarray) -> None:
        self.arrays[name][start:start + len(values)] = values


def build_blocks(read_block, layout: Layout, sink, bar=None) -> list[np.ndarray]:
    """Build every block into `sink` (put(name, first rank, values)); returns the pyramid's
    levels 1, 2, ... (level 0 is the LCP array itself). `read_block(start, end)` gives that
    piece of the text as a writable contiguous array (divsufsort takes no read-only one)."""
    divsufsort = require_pydivsufsort()
    big = np.iinfo(layout.dtype).max
    level1 = np.full(layout.level_sizes[0] if layout.level_sizes else 0, big, layout.dtype)
    for (start, end), offset in zip(layout.blocks, layout.offsets.tolist()):
        piece = read_block(start, end)
        length = end - start
        sa = divsufsort.divsufsort(piece)
        if bar:
            bar.update(length // 2)
        lcp = divsufsort.kasai(piece, sa).astype(layout.dtype, copy=False)
        del piece
        lcp[-1] = -1  # the block's wall: no interval reaches into the next block
        sink.put("lcp", offset, lcp)
        _fold_minima(level1, lcp, offset, layout.fanout)
        del lcp
        if bar:
            bar.update(length // 3)
        isa = np.empty(length, layout.dtype)
        isa[sa] = np.arange(offset, offset + length, dtype=layout.dtype)
        sink.put("isa", offset, isa)
        del isa
        sa = sa.astype(layout.dtype, copy=False)
        sa += start
        sink.put("sa", offset, sa)
        del sa
        if bar:
            bar.update(length - length // 2 - length // 3)
    levels = [level1] if layout.level_sizes else []
    while len(levels) < len(layout.level_sizes):
        levels.append(_minima(levels[-1], layout.fanout, big))
    return levels


def _fold_minima(level1: np.ndarray, lcp: np.ndarray, offset: int, fanout: int) -> None:
    """Fold a block's LCP entries into the level-1 minima of the groups they fall in (a
    group may straddle two blocks)."""
    if not len(level1):
        return
    head = offset % fanout
    padded = np.concatenate([np.full(head, np.iinfo(lcp.dtype).max, lcp.dtype), lcp])
    first = offset // fanout
    mins = _minima(padded, fanout, np.iinfo(lcp.dtype).max)
    np.minimum(level1[first:first + len(mins)], mins, out=level1[first:first + len(mins)])


def _minima(values: np.ndarray, fanout: int, fill: int) -> np.ndarray:
    """The minimum of each run of `fanout` values (the last run padded with `fill`)."""
    tail = -len(values) % fanout
    if tail:
        values = np.concatenate([values, np.full(tail, fill, values.dtype)])
    return values.reshape(-1, fanout).min(axis=1)
