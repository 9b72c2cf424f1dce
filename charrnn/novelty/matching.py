"""Matching statistics of a text against an indexed training text.

    ms, where = matching_statistics(index, ids)
    # ms[i]: the length of the longest prefix of ids[i:] that occurs in the training text,
    # where[i]: a position of the training text where it occurs (-1 when ms[i] == 0)

The algorithm is the classic one over a suffix array (SA), its inverse (ISA) and its LCP
array, in time linear in the text (times a log of the training text's size), never a
search per position. It walks along the text keeping (i, d, [lo, hi)): the SA interval of
the suffixes of T that start with ids[i:i+d].
  - Extend: the suffixes in the interval are sorted by their character at depth d, so those
    that continue with ids[i+d] are a sub-interval, found by a k-ary search. While the
    interval holds one suffix, up to EXTEND characters are compared at once instead.
  - When the next character cannot be matched, ms[i] = d. Since ids[i+1:i+d] occurs
    (it follows the match of ids[i:]), ms[i+1] >= d - 1: one suffix starting with it is
    T[p+1:] for a p in the interval, whose rank is ISA[p + 1], and its interval is widened
    from that rank to where the LCP array drops below d - 1 (a look at WINDOW entries each
    side, and where the interval is wider, the same over a pyramid of LCP minima).
Each step either extends the match or moves i on, and d falls by at most one per move, so
there are at most 2 n steps in all (plus one restart per lane, below), each costing
O(log N) reads of the index for a training text of N characters: O(n log N) in all,
whatever the lengths of the copied spans.

In Python a step costs a few microseconds of interpreter time, so the walk runs for many
pieces of the text at once: the text is cut into chunks, each chunk is a lane that starts
afresh (d = 0) at its first position, and every numpy operation advances all lanes by one
step. A lane exists per chunk and per block of the index (build.py), and a position's
result is its best over the blocks.
"""

from __future__ import annotations

import numpy as np

from .index import SuffixIndex

EXTEND = 32        # characters compared at once along a single suffix
WINDOW = 128       # entries of the LCP array (or a level of its pyramid) read at once
MIN_CHUNK = 8      # characters per lane at least: each lane pays one restart
MAX_LANES = 2048   # lanes at most per block: beyond, memory traffic outweighs the overhead
END, ABSENT = -1, -2  # past a suffix's end in T; past the text's end or not in T's alphabet


def matching_statistics(index: SuffixIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ms, where) for a text of ids (ids < 0: characters T cannot hold, matching nothing)."""
    index.check_intact()  # a mapped file truncated in place: one error, not a SIGBUS
    n, blocks = len(ids), len(index.starts)
    best = np.zeros((blocks, n), dtype=np.int64)
    where = np.full((blocks, n), -1, dtype=np.int64)
    if n == 0:
        return best[0], where[0]
    padded = np.full(n + EXTEND + 1, ABSENT, dtype=np.int64)
    padded[:n] = ids
    chunk = max(MIN_CHUNK, -(-n // MAX_LANES))
    firsts = np.arange(0, n, chunk, dtype=np.int64)
    b = np.repeat(np.arange(blocks), len(firsts))
    lanes = _Lanes(index, padded, b, np.tile(firsts, blocks),
                   np.tile(np.minimum(firsts + chunk, n), blocks))
    while lanes.size:
        lanes.step(best, where)
    top = best.argmax(axis=0)
    cols = np.arange(n)
    return best[top, cols], where[top, cols]


class _Lanes:
    """The state of every lane, one entry per lane: position i, depth d, interval [lo, hi)
    and the lane's block (its first rank, end of ranks, first and end position in T)."""

    def __init__(self, index, padded, block, first, stop):
        self.index, self.s = index, padded
        self.block, self.i, self.stop = block, first, stop
        self.rank0 = index.offsets[block]
        self.start, self.end = index.starts[block], index.ends[block]
        self.rank_end = self.rank0 + (self.end - self.start)
        self.d = np.zeros(len(block), dtype=np.int64)
        self.lo, self.hi = self.rank0.copy(), self.rank_end.copy()

    @property
    def size(self) -> int:
        return len(self.i)

    def step(self, best, where) -> None:
        """Advance every lane by one step: extend its match by a character (or a run of
        them), or record the match and move on (_finish). The three kinds of lane are taken
        in this order, since each can turn a lane into the next kind within the step."""
        fail = np.zeros(self.size, dtype=bool)
        one = np.flatnonzero(self.hi - self.lo == 1)
        if one.size:
            self._extend_single(one, fail)
        fresh = np.flatnonzero((self.d == 0) & (self.hi - self.lo > 1))
        if fresh.size:
            self._start(fresh, fail)
        many = np.flatnonzero((self.d > 0) & (self.hi - self.lo > 1))
        many = many[~np.isin(many, fresh)] if fresh.size else many
        if many.size:
            self._narrow(many, fail)
        done = np.flatnonzero(fail)
        if done.size:
            self._finish(done, best, where)

    def _extend_single(self, one, fail) -> None:
        """Lanes `one` have one suffix left: compare EXTEND characters along it at once."""
        d = self.d[one]
        k = np.arange(EXTEND)
        pos = (self.index.sa[self.lo[one]] + d)[:, None] + k
        theirs = _chars(self.index.text, pos, self.end[one][:, None])
        ours = self.s[(self.i[one] + d)[:, None] + k]
        same = theirs == ours
        run = np.where(same.all(axis=1), EXTEND, same.argmin(axis=1))
        self.d[one] += run
        fail[one] = run < EXTEND

    def _start(self, fresh, fail) -> None:
        """Lanes `fresh` are at depth 0 over the whole block: each character's interval is
        known (_first_ranks)."""
        c = self.s[self.i[fresh]]
        ranks = _first_ranks(self.index)
        known = (c >= 0) & (c < ranks.shape[1] - 1)
        row, col = self.block[fresh], np.where(known, c, 0)
        sub_lo = np.where(known, ranks[row, col], 0)
        sub_hi = np.where(known, ranks[row, col + 1], 0)
        self._narrow_to(fresh, sub_lo, sub_hi, fail)

    def _narrow(self, many, fail) -> None:
        """Lanes `many` hold several suffixes: the sub-interval that continues with the next
        character, its two bounds found in one search."""
        d = self.d[many]
        c = self.s[self.i[many] + d]
        lo, hi = self.lo[many], self.hi[many]
        sub_lo, sub_hi = _lower_bounds(self.index, np.concatenate([lo, lo]),
                                       np.concatenate([hi, hi]), np.concatenate([d, d]),
                                       np.concatenate([c, c + 1]),
                                       np.concatenate([self.end[many]] * 2)).reshape(2, -1)
        self._narrow_to(many, sub_lo, sub_hi, fail)

    def _narrow_to(self, lanes, sub_lo, sub_hi, fail) -> None:
        """Lanes whose sub-interval is not empty take it and go one character deeper; the
        others keep their interval and fail."""
        found = sub_lo < sub_hi
        self.lo[lanes] = np.where(found, sub_lo, self.lo[lanes])
        self.hi[lanes] = np.where(found, sub_hi, self.hi[lanes])
        self.d[lanes] += found
        fail[lanes] = ~found

    def _finish(self, f, best, where) -> None:
        """Lanes `f` cannot extend: record their match, move on one position, and start
        from the interval of the match without its first character."""
        ix = self.index
        d, i = self.d[f], self.i[f]
        p = ix.sa[self.lo[f]].astype(np.int64)
        best[self.block[f], i] = d
        where[self.block[f], i] = np.where(d > 0, p, -1)
        self.i[f] = i + 1
        shorter = np.maximum(d - 1, 0)
        lo, hi = self.rank0[f].copy(), self.rank_end[f].copy()
        k = np.flatnonzero(shorter > 0)
        if k.size:
            g = f[k]
            r = ix.isa[self.rank0[g] + p[k] + 1 - self.start[g]].astype(np.int64)
            lo[k], hi[k] = _widen(ix, r, shorter[k])
        self.lo[f], self.hi[f], self.d[f] = lo, hi, shorter
        if (self.i[f] >= self.stop[f]).any():
            keep = self.i < self.stop
            for name in ("block", "i", "stop", "rank0", "start", "end", "rank_end", "d",
                         "lo", "hi"):
                setattr(self, name, getattr(self, name)[keep])


def _first_ranks(ix: SuffixIndex) -> np.ndarray:
    """ranks[b, c]: the first rank of block b whose suffix starts with c or above (blocks
    x alphabet + 1), found once per index by the search below."""
    ranks = getattr(ix, "_first_ranks", None)
    if ranks is None:
        size = len(ix.vocab) if ix.vocab is not None else int(ix.text.max()) + 1
        blocks = len(ix.starts)
        lo = np.repeat(ix.offsets, size + 1)
        hi = np.repeat(ix.offsets + (ix.ends - ix.starts), size + 1)
        chars = np.tile(np.arange(size + 1, dtype=np.int64), blocks)
        ranks = _lower_bounds(ix, lo, hi, np.zeros_like(lo), chars,
                              np.repeat(ix.ends, size + 1)).reshape(blocks, size + 1)
        ix._first_ranks = ranks
    return ranks


def _chars(text: np.ndarray, pos: np.ndarray, end: np.ndarray) -> np.ndarray:
    """text[pos] as int64, END where pos is at or past the end of the suffix's block."""
    inside = pos < end
    return np.where(inside, text[np.minimum(pos, len(text) - 1)], np.int64(END))


def _lower_bounds(ix: SuffixIndex, lo, hi, d, target, end) -> np.ndarray:
    """Per lane, the first rank in [lo, hi) whose character at depth d is >= target (hi if
    none): a k-ary search, K probes per lane per round, K larger when lanes are few."""
    lo, hi = lo.copy(), hi.copy()
    active = np.flatnonzero(lo < hi)
    while active.size:
        K = int(np.clip(2048 // active.size, 2, 64))
        a, h = lo[active], hi[active]
        step = -(-(h - a) // K)
        probes = a[:, None] + step[:, None] * np.arange(K)
        inside = probes < h[:, None]
        ranks = np.minimum(probes, (h - 1)[:, None])
        chars = _chars(ix.text, ix.sa[ranks] + d[active][:, None], end[active][:, None])
        below = ((chars < target[active][:, None]) & inside).sum(axis=1)
        last = a + (below - 1) * step
        lo[active] = np.where(below > 0, last + 1, a)
        hi[active] = np.where(below > 0, np.minimum(last + step, h), a)
        active = active[lo[active] < hi[active]]
    return lo


def _widen(ix: SuffixIndex, r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interval of ranks around r whose suffixes share t >= 1 characters with r's:
    bounded by the nearest LCP entries below t on each side (lcp[k] compares k and k+1)."""
    fanout = ix.layout.fanout
    lo = _previous_below(ix.levels, fanout, r, t) + 1
    hi = _next_below(ix.levels, fanout, r, t) + 1
    return lo, hi


# The two searches below look at WINDOW entries of a level of the pyramid of LCP minima
# (levels[j + 1][g] is the minimum of levels[j][g * fanout:(g + 1) * fanout]); where none
# is below t, they go up a level, past the groups already seen, and so cover WINDOW
# entries, then WINDOW * fanout, ...; from the entry found they go down to level 0 through
# the first (or last) entry below t of each group. With WINDOW >= fanout no entry is
# skipped on the way up.


def _next_below(levels: list[np.ndarray], fanout: int, r: np.ndarray,
                t: np.ndarray) -> np.ndarray:
    """Per lane, the smallest k >= r with lcp[k] < t (there is one: the last entry is -1)."""
    width = max(WINDOW, fanout)
    out, todo, pos = np.empty_like(r), np.arange(len(r)), r.copy()
    for j, level in enumerate(levels):
        at = pos[todo][:, None] + np.arange(width)
        low = level[np.minimum(at, len(level) - 1)] < t[todo][:, None]
        hit = low.any(axis=1)
        lanes = todo[hit]
        g = at[hit, low[hit].argmax(axis=1)]
        out[lanes] = _descend(levels, fanout, j, g, t[lanes], first=True)
        todo = todo[~hit]
        if not todo.size:
            break
        pos[todo] = (pos[todo] + width) // fanout
    return out


def _previous_below(levels: list[np.ndarray], fanout: int, r: np.ndarray,
                    t: np.ndarray) -> np.ndarray:
    """Per lane, the largest k < r with lcp[k] < t, or -1."""
    width = max(WINDOW, fanout)
    out, todo, end = np.full_like(r, -1), np.arange(len(r)), r.copy()
    for j, level in enumerate(levels):
        at = end[todo][:, None] - width + np.arange(width)
        low = (level[np.maximum(at, 0)] < t[todo][:, None]) & (at >= 0)
        hit = low.any(axis=1)
        lanes = todo[hit]
        g = at[hit, width - 1 - low[hit][:, ::-1].argmax(axis=1)]
        out[lanes] = _descend(levels, fanout, j, g, t[lanes], first=False)
        # A window that reached the start without a hit: nothing below t before r.
        todo = todo[~hit & (at[:, 0] > 0)]
        if not todo.size:
            break
        end[todo] = (end[todo] - width) // fanout + 1
    return out


def _descend(levels, fanout: int, j: int, g: np.ndarray, t: np.ndarray,
             first: bool) -> np.ndarray:
    """From entries g of level j, each below t, down to level 0: the first (or last) entry
    below t of each group on the way."""
    for below in levels[j - 1::-1] if j else ():
        at = g[:, None] * fanout + np.arange(fanout)
        inside = at < len(below)
        low = (below[np.minimum(at, len(below) - 1)] < t[:, None]) & inside
        g = at[np.arange(len(g)), low.argmax(axis=1) if first
               else fanout - 1 - low[:, ::-1].argmax(axis=1)]
    return g


def naive_matching_statistics(text: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ms by brute force, a substring search per position and length (for checks and the
    benchmark): bytes.find over the ids as big-endian bytes, taking aligned hits only."""
    width = np.dtype(text.dtype).itemsize
    dtype = f">u{width}"
    haystack = np.asarray(text).astype(dtype).tobytes()
    ms = np.zeros(len(ids), dtype=np.int64)
    for i in range(len(ids)):
        length = 0
        while i + length < len(ids) and ids[i + length] >= 0:
            needle = np.asarray(ids[i:i + length + 1]).astype(dtype).tobytes()
            at = haystack.find(needle)
            while at >= 0 and at % width:
                at = haystack.find(needle, at + 1)
            if at < 0:
                break
            length += 1
        ms[i] = length
    return ms
