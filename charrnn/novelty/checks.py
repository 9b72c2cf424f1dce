"""The novelty cache as untrusted input: its header against a schema, its arrays spot-checked.

    problem = header_problem(info, expected_header(n, text_dtype, newline_id, "train"))
    problem = spot_problem(index)        # None, or what is wrong in a few words

Anyone who can write to a prepared directory can write DIR/novelty/. A header with a dtype
of int8 or a fanout of 1 once hung the search, one with swapped offsets or an index.bin of
zeros gave wrong answers without a word. So index.json must be exactly the header a build
of this split would write now (every field, with its JSON type: 64.0 is not 64), its
checksum and file identity well-formed; and the arrays that index.bin holds are checked
on each open at a few hundred random ranks: sa in its block, isa[sa[r]] == r, neighbouring
suffixes in order with their LCP, the LCP pyramid and the newline counts. When anything is
off, index.py says so in one line and builds the index again.
"""

from __future__ import annotations

import json
import re

import numpy as np

from .build import FANOUT, OVERLAP, block_ranges, layout_of

FORMAT_VERSION = 1
KIND = "charrnn novelty index"
LINE_EVERY = 1 << 16  # characters per newline count: a line number is one short count away
SAMPLES = 300  # ranks spot-checked per open: a few milliseconds on any size of index
COMPARED = 256  # characters compared per pair of neighbouring suffixes
IDENTITY = ("bytes", "mtime_ns", "ctime_ns", "inode")


def expected_header(chars: int, text_dtype: np.dtype, newline_id: int | None,
                    split: str) -> dict:
    """index.json as a build of a split of `chars` characters writes it, less the split's
    checksum and identity: the layout, where each array lies, the file's size."""
    layout = layout_of(block_ranges(chars))
    item = layout.dtype.itemsize
    sizes = {"lines": (-(-chars // LINE_EVERY) + 1) * 8, "sa": layout.ranks * item,
             "isa": layout.ranks * item, "lcp": layout.ranks * item}
    sizes.update({f"level{j + 1}": s * item for j, s in enumerate(layout.level_sizes)})
    offsets = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))[:-1].tolist()))
    return {
        "format_version": FORMAT_VERSION, "kind": KIND,
        "split": {"name": split, "chars": chars, "dtype": np.dtype(text_dtype).name},
        "blocks": [list(b) for b in layout.blocks], "overlap": OVERLAP,
        "fanout": FANOUT, "dtype": layout.dtype.name, "level_sizes": layout.level_sizes,
        "newline_id": newline_id, "line_every": LINE_EVERY,
        "offsets": offsets, "file_bytes": int(sum(sizes.values())),
    }


def header_problem(info, expected: dict) -> str | None:
    """What is wrong with a read index.json, in a few words, or None."""
    if not isinstance(info, dict):
        return "index.json is not a JSON object"
    split = info.get("split")
    if not isinstance(split, dict):
        return "index.json has no split"
    sha, identity = split.get("sha256"), split.get("identity")
    if not isinstance(sha, str) or not re.fullmatch("[0-9a-f]{64}", sha):
        return "the split's checksum is not a sha256"
    if not isinstance(identity, dict) or set(identity) != set(IDENTITY) or not all(
            type(v) is int and v >= 0 for v in identity.values()):
        return "the split's file identity is malformed"
    got = {**info, "split": {k: v for k, v in split.items() if k not in ("sha256", "identity")}}
    for key in sorted(set(got) | set(expected)):
        if _canonical(got.get(key)) != _canonical(expected.get(key)):
            return f"{key} is {_short(got.get(key))}, a build writes {_short(expected.get(key))}"
    return None


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if value is not None else "missing"
    return text if len(text) <= 40 else text[:37] + "..."


# ----------------------------------------------------------------------------------------
# the arrays, spot-checked


def spot_problem(ix, samples: int = SAMPLES, seed: int = 0) -> str | None:
    """What is wrong with an opened index's arrays at `samples` random ranks, or None."""
    rng = np.random.default_rng(seed)
    walls = ix.offsets + (ix.ends - ix.starts) - 1
    if np.any(np.asarray(ix.lcp[walls]) != -1):
        return "a block's last LCP entry is not its wall (-1)"
    ranks = np.unique(rng.integers(0, ix.layout.ranks, size=samples))
    block = np.searchsorted(ix.offsets, ranks, side="right") - 1
    start, end, first = ix.starts[block], ix.ends[block], ix.offsets[block]
    pos = np.asarray(ix.sa[ranks], dtype=np.int64)
    if np.any((pos < start) | (pos >= end)):
        return "sa holds positions outside their blocks"
    if np.any(np.asarray(ix.isa[first + pos - start], dtype=np.int64) != ranks):
        return "isa is not the inverse of sa"
    for r, b in zip(ranks.tolist(), block.tolist()):
        problem = _pair_problem(ix, r, int(ix.offsets[b]), int(ix.starts[b]), int(ix.ends[b]))
        if problem:
            return problem
    return _pyramid_problem(ix, rng) or _lines_problem(ix, rng)


def _pair_problem(ix, r: int, first: int, start: int, end: int) -> str | None:
    """Suffixes r and r + 1 of a block in order, sharing exactly lcp[r] characters."""
    lcp = int(ix.lcp[r])
    if r == first + (end - start) - 1:
        return None if lcp == -1 else "a block's last LCP entry is not its wall (-1)"
    p, q = int(ix.sa[r]), int(ix.sa[r + 1])
    if not start <= q < end or lcp < 0 or lcp > min(end - p, end - q):
        return "an LCP entry is out of range"
    k = min(lcp, COMPARED)
    if not np.array_equal(ix.text[p:p + k], ix.text[q:q + k]):
        return "neighbouring suffixes do not share their LCP"
    if lcp < COMPARED:
        if q + lcp == end or (p + lcp < end and ix.text[p + lcp] >= ix.text[q + lcp]):
            return "suffixes are out of order"
    return None


def _pyramid_problem(ix, rng) -> str | None:
    """A few minima of the pyramid's first level against the LCP entries they cover."""
    if len(ix.levels) < 2:
        return None
    level1, fanout = ix.levels[1], ix.layout.fanout
    for g in rng.integers(0, len(level1), size=min(16, len(level1))).tolist():
        if int(level1[g]) != int(np.min(ix.lcp[g * fanout:(g + 1) * fanout])):
            return "the LCP pyramid does not match the LCP array"
    return None


def _lines_problem(ix, rng) -> str | None:
    """A few newline counts against the text they count."""
    counts = ix.line_counts
    groups = len(counts) - 1
    if len(counts) == 0 or int(counts[0]) != 0:
        return "the newline counts do not start at 0"
    for g in rng.integers(0, groups, size=min(4, groups)).tolist():
        piece = ix.text[g * LINE_EVERY:(g + 1) * LINE_EVERY]
        newlines = 0 if ix.newline_id is None else np.count_nonzero(piece == ix.newline_id)
        if int(counts[g + 1]) - int(counts[g]) != newlines:
            return "the newline counts do not match the text"
    return None
