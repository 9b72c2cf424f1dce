"""The novelty check: matching statistics against a brute force, the report, the cached
index, --max-copy's redraws and the command's errors."""

import itertools
import random
import sys

import numpy as np
import pytest
from conftest import TINY, assert_clean_error, make_text, run
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData
from charrnn.corpus.vocab import Vocab
from charrnn.novelty import (
    copied_spans,
    in_memory_index,
    matching,
    matching_statistics,
    novelty_report,
    open_index,
)
from charrnn.novelty.redraw import draw_novel
from charrnn.novelty.report import NoveltyReport

ABSENT = matching.ABSENT


def brute_force(text, ids):
    """ms[i] by trying every length: the longest ids[i:i+L] that is a substring of text."""
    haystack = "".join(chr(65 + c) for c in text)
    needle = "".join(chr(65 + c) if c >= 0 else "\0" for c in ids)
    ms = []
    for i in range(len(needle)):
        length = 0
        while i + length < len(needle) and needle[i:i + length + 1] in haystack:
            length += 1
        ms.append(length)
    return np.array(ms, dtype=np.int64)


def check_locations(text, ids, ms, where):
    for i, length in enumerate(ms.tolist()):
        if length:
            assert list(text[where[i]:where[i] + length]) == list(ids[i:i + length])
        else:
            assert where[i] == -1


texts = st.lists(st.integers(0, 3), min_size=1, max_size=120)
queries = st.lists(st.integers(-1, 4), max_size=60)


def as_ids(values, alphabet=4):
    """-1 and values beyond the alphabet: characters T cannot hold."""
    return np.array([v if 0 <= v < alphabet else ABSENT for v in values], dtype=np.int64)


@settings(max_examples=150, deadline=None)
@given(texts, queries, st.integers(1, 12))
def test_matching_statistics_equal_brute_force(text, query, repeat):
    text = np.array((text * repeat)[:200], dtype=np.uint8)  # repeat: repetitive texts
    ids = as_ids(query)
    ms, where = matching_statistics(in_memory_index(text), ids)
    assert ms.tolist() == brute_force(text, ids).tolist()
    check_locations(text, ids, ms, where)


@settings(max_examples=100, deadline=None)
@given(texts, queries, st.integers(3, 40), st.integers(1, 8), st.integers(2, 5),
       st.integers(1, 6))
def test_blocks_and_pyramid_are_exact_up_to_the_overlap(text, query, block, overlap, fanout,
                                                         window):
    """Small blocks and windows: the interval walks over the pyramid, and a position's best
    over the blocks is exact up to the overlap."""
    text = np.array(text * 3, dtype=np.uint8)
    ids = as_ids(query)
    old = matching.WINDOW
    matching.WINDOW = window
    try:
        index = in_memory_index(text, block_chars=block, overlap=overlap, fanout=fanout)
        ms, where = matching_statistics(index, ids)
    finally:
        matching.WINDOW = old
    truth = brute_force(text, ids)
    assert (ms <= truth).all() and (ms >= np.minimum(truth, overlap)).all()
    check_locations(text, ids, ms, where)


def test_edge_cases():
    text = np.array([0] * 50, dtype=np.uint8)  # one repeated character
    index = in_memory_index(text)
    ms, where = matching_statistics(index, np.zeros(0, dtype=np.int64))
    assert len(ms) == len(where) == 0
    ms, _ = matching_statistics(index, np.zeros(80, dtype=np.int64))
    assert ms.tolist() == [min(50, 80 - i) for i in range(80)]
    ms, where = matching_statistics(index, np.array([ABSENT, 1, 0, ABSENT]))  # absent from T
    assert ms.tolist() == [0, 0, 1, 0] and where.tolist()[:2] == [-1, -1]
    text = np.frombuffer(make_text(3000).encode(), dtype=np.uint8).copy()
    ms, where = matching_statistics(in_memory_index(text), text.astype(np.int64))  # equal to T
    assert ms.tolist() == list(range(len(text), 0, -1)) and where[0] == 0


# ----------------------------------------------------------------------------------------
# the report


def shakespeare_like(n=20_000):
    text = make_text(n, seed=3)
    vocab = Vocab.from_text(text)
    return text, vocab, in_memory_index(np.array(vocab.encode(text), dtype=np.uint8), vocab)


def test_an_embedded_passage_is_found_with_its_location():
    text, _, index = shakespeare_like()
    rng = random.Random(1)
    noise = lambda k: "".join(rng.choice("xyzqj") for _ in range(k))
    passage = text[5000:5080]
    report = novelty_report(index, noise(60) + passage + noise(60))
    assert report.longest >= 80 and passage in report.span
    assert text[report.offset:report.offset + report.longest] == report.span
    assert report.offset <= 5000 <= report.offset + report.longest - 80
    assert report.line == text[:report.offset].count("\n") + 1
    assert report.shares[20] >= 80 / 200 and report.verdict.startswith("copies in part")
    assert report.lines()[1].startswith("  longest copied span: ")


def test_random_characters_copy_no_span_of_20():
    _, vocab, index = shakespeare_like()
    rng = random.Random(2)
    report = novelty_report(index, "".join(rng.choice(vocab.chars) for _ in range(3000)))
    assert report.longest < 20 and report.shares == {20: 0.0, 50: 0.0}
    assert report.verdict.startswith("new: no span of 20")
    assert novelty_report(index, "").longest == 0
    assert novelty_report(index, "\u00e9\u4e2d").to_dict()["longest"] == 0  # not in T at all


# ----------------------------------------------------------------------------------------
# the copied stretches (what `serve` returns for highlighting)


def naive_copied_spans(ms, min_chars):
    """Span by span, left to right: [i, i + ms[i]) of min_chars+ characters joins the
    stretch before it when it starts inside it, else starts a new one."""
    out = []
    for i, length in enumerate(ms):
        if length < min_chars:
            continue
        if out and i < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], i + length))
        else:
            out.append((i, i + length))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=80), st.integers(1, 6))
def test_copied_spans_equal_a_naive_merge(values, min_chars):
    """Any ms (not only matching statistics: spans inside spans too)."""
    n = len(values)
    ms = np.array([min(v, n - i) for i, v in enumerate(values)], dtype=np.int64)
    spans = copied_spans(ms, min_chars)
    assert spans == naive_copied_spans(ms.tolist(), min_chars)
    covered = np.zeros(n, dtype=bool)
    for i, length in enumerate(ms.tolist()):
        if length >= min_chars:
            covered[i:i + length] = True
    assert sum(end - start for start, end in spans) == covered.sum()
    assert all(covered[start:end].all() for start, end in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # sorted and disjoint


def test_copied_spans_merge_overlaps_and_keep_touching_copies_apart():
    assert copied_spans(np.array([3, 2, 1, 3, 2, 1]), 3) == [(0, 3), (3, 6)]
    assert copied_spans(np.array([4, 3, 3, 2, 1, 0]), 3) == [(0, 5)]
    assert copied_spans(np.array([2, 1, 0]), 3) == [] == copied_spans(np.zeros(0), 20)


@settings(max_examples=100, deadline=None)
@given(texts, st.lists(st.integers(0, 4), max_size=80), st.integers(1, 12),
       st.integers(1, 8))
def test_report_spans_equal_a_brute_force_against_the_text(text, query, repeat, min_chars):
    """The report's stretches of a text against T, by substring search over strings."""
    train = "".join("abcd"[c] for c in (text * repeat)[:200])
    vocab = Vocab(list("abcd"))
    index = in_memory_index(np.array(vocab.encode(train), dtype=np.uint8), vocab)
    sample = "".join("abcde"[v] for v in query)  # e: a character T does not hold
    longest = [0] * len(sample)
    for i in range(len(sample)):
        while (i + longest[i] < len(sample)
               and sample[i:i + longest[i] + 1] in train):
            longest[i] += 1
    report = novelty_report(index, sample, spans=(min_chars, min_chars + 10))
    assert report.copied == naive_copied_spans(longest, min_chars)
    assert report.copied_min == min_chars
    assert report.to_dict()["copied_spans"] == [list(c) for c in report.copied]
    copied = sum(end - start for start, end in report.copied)
    assert report.shares[min_chars] == (copied / len(sample) if sample else 0.0)


def test_an_embedded_passage_is_one_copied_stretch():
    text, _, index = shakespeare_like()
    passage = "".join(random.Random(3).choice("xyzqj") for _ in range(60))
    report = novelty_report(index, passage + text[5000:5080] + passage)
    [(start, end)] = report.copied
    assert start <= 60 and end >= 140 and report.copied_min == 20
    assert report.to_dict()["copied_spans_min"] == 20


# ----------------------------------------------------------------------------------------
# the cache in a prepared directory


def test_index_is_cached_and_rebuilt_when_the_split_changes(workdir):
    (workdir / "a.txt").write_text(make_text(5000, seed=1))
    prepare(["a.txt"], "data/a")
    first = open_index(PreparedData("data/a"))
    again = open_index(PreparedData("data/a"))
    assert first.built and not again.built
    assert (again.sa == first.sa).all() and isinstance(again.sa.base, np.memmap)
    (workdir / "a.txt").write_text(make_text(5000, seed=2))
    prepare(["a.txt"], "data/a")
    changed = open_index(PreparedData("data/a"))
    assert changed.built and not (changed.text[:100] == first.text[:100]).all()
    prepare(["a.txt"], "data/a")  # the same text again: a new file, the same checksum
    assert not open_index(PreparedData("data/a")).built
    assert not list((workdir / "data/a/novelty").glob(".*.tmp"))


# ----------------------------------------------------------------------------------------
# --max-copy


def fake_report(longest):
    return NoveltyReport(10, longest, "x" * longest, 0, 0, 1, {20: 0.0, 50: 0.0})


def test_redraw_until_every_sample_passes_or_the_tries_run_out():
    draws = iter([[30, 5, 40], [25, 60], [3, 50], [45]])  # the longest span of each draw

    def draw(k):
        batch = next(draws)
        assert len(batch) == k  # only the samples still over are redrawn
        return [str(longest) for longest in batch]

    result = draw_novel(draw, lambda text: fake_report(int(text)), 3, max_copy=20, tries=4)
    assert [r.longest for r in result.reports] == [3, 5, 40]  # sample 3: least copying kept
    assert result.redraws == 5 and result.redrawn == 2 and result.failed == [2]
    notes = result.notes(many=True)
    assert notes[0].startswith("novelty: redrew 2 of 3 samples 5 times")
    assert "no draw of sample 3 passed in 4 tries; kept the one that copies least" in notes[1]


@pytest.fixture
def trained(corpus):
    r = run("train", corpus, *TINY, "--name", "m")
    assert r.exit_code == 0, r.output
    return corpus


def test_sample_novelty_and_max_copy(trained):
    r = run("sample", "-n", "60", "--seed", "3", "--novelty")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("novelty: ") == 2  # the index is built, then the report
    assert "novelty:" not in r.stdout and "copied:" in r.stderr
    # Every character of the model occurs in T: a copy of at most 0 characters never passes.
    r = run("sample", "-n", "60", "--seed", "3", "--max-copy", "0", "--tries", "3",
            "--num-samples", "2", "--stop", ".")
    assert r.exit_code == 0, r.output
    assert "redrew 2 of 2 samples 4 times" in r.stderr
    assert "no draw of sample 2 passed in 3 tries" in r.stderr
    again = run("sample", "-n", "60", "--seed", "3", "--max-copy", "0", "--tries", "3",
                "--num-samples", "2", "--stop", ".")
    assert again.stdout == r.stdout and r.stdout.count("--- sample") == 2
    r = run("sample", "-n", "60", "--seed", "3", "--max-copy", "1000", "--novelty")
    assert "redrew" not in r.stderr and "copied:" in r.stderr


def test_novelty_command(trained, workdir):
    (workdir / "s.txt").write_text(trained.read_text()[:300] + "\nqqqqq")
    r = run("novelty", "s.txt")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("s.txt: largely copied")
    r = run("novelty", "runs/m", "s.txt", "--json", "--data", "data/corpus", "--span", "30")
    assert r.exit_code == 0, r.output
    assert '"longest": 300' in r.stdout and '"30": ' in r.stdout


def test_novelty_errors(trained, workdir, monkeypatch):
    (workdir / "s.txt").write_text("hello")
    assert_clean_error(run("novelty", "runs/m"), "is a model")
    assert_clean_error(run("novelty", "missing.txt", "--data", "data/corpus"), "not found")
    assert_clean_error(run("novelty", "s.txt", "--data", "runs"), "not a prepared directory")
    assert_clean_error(run("novelty", "s.txt", "--span", "0"), "--span")
    assert_clean_error(run("sample", "--max-copy", "-1"), "--max-copy")
    (workdir / "data/corpus").rename(workdir / "elsewhere")
    assert_clean_error(run("novelty", "s.txt"), "point at it with --data DIR")
    assert_clean_error(run("sample", "--novelty"), "point at it with --data DIR")
    monkeypatch.setitem(sys.modules, "pydivsufsort", None)
    assert_clean_error(run("novelty", "s.txt", "--data", "elsewhere"),
                       "pip install -e '.[novelty]'", "pip install pydivsufsort")


def test_redraw_goes_through_the_sampler_and_a_seed_gives_the_same_samples():
    import torch

    from charrnn.core.model import CharRNN
    from charrnn.corpus.vocab import Vocab
    from charrnn.inference.sample import Sampler
    from charrnn.novelty.redraw import redraw

    vocab = Vocab(list("ab\n"))
    torch.manual_seed(0)
    model = CharRNN(len(vocab), 8, 1, "gru").eval()
    judge = lambda text: fake_report(text.count("a"))  # noqa: E731  "copies" = its a's

    def run():
        return redraw(Sampler(model, vocab, seed=3), 12, "b", (), judge, 3, max_copy=2, tries=4)

    first, again = run(), run()
    assert first.texts == again.texts and len(first.texts) == 3
    alone = Sampler(model, vocab, seed=3).texts(12, "b", 3)  # the first draw, as the sampler's
    for text, drawn in zip(first.texts, alone):
        assert text.count("a") <= drawn.count("a")  # a redraw is kept only when it copies less
