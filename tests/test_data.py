import numpy as np
import pytest
import torch

from charrnn.core.errors import DataError
from charrnn.corpus.prepared import PreparedData, open_corpus
from charrnn.corpus.streams import Streams


def test_stream_b_starts_at_b_times_L():
    array = np.arange(1001, dtype=np.int64).astype(np.uint16)  # id = offset (mod 2^16)
    B, T = 4, 10
    streams = Streams(array, B, T)
    L = streams.stream_len
    assert L == (len(array) - 1) // B
    idx, targets = streams.batch(0)
    assert idx.shape == (B, T)
    assert idx[:, 0].tolist() == [b * L for b in range(B)]
    assert torch.equal(targets.long(), idx.long() + 1)


def test_consecutive_steps_are_consecutive_text():
    array = (np.arange(2000) % 251).astype(np.uint8)
    streams = Streams(array, batch_size=3, seq_len=7)
    rows = [torch.cat([streams.batch(i)[0][b] for i in range(streams.steps_per_epoch)])
            for b in range(3)]
    L = streams.stream_len
    for b, row in enumerate(rows):
        expected = array[b * L: b * L + len(row)]
        assert row.tolist() == expected.tolist()


def test_batches_are_views_of_the_corpus():
    streams = Streams((np.arange(500) % 200).astype(np.uint8), 5, 8)
    idx, _ = streams.batch(3)
    assert idx.untyped_storage().data_ptr() == streams.data.untyped_storage().data_ptr()


def test_gathered_batches_equal_resident_views():
    array = (np.arange(3000) % 97).astype(np.uint16)
    resident = Streams(array, 6, 9, resident=True)
    gathered = Streams(array, 6, 9, resident=False)
    for i in [0, 1, 2, 5, 1, resident.steps_per_epoch - 1]:
        for a, b in zip(resident.batch(i), gathered.batch(i)):
            assert torch.equal(a, b)


def test_rows_of_a_rank_are_the_same_layout():
    array = (np.arange(4000) % 97).astype(np.uint8)
    whole = Streams(array, 8, 10)
    half = Streams(array, 8, 10, row_start=4, row_stop=8)
    assert torch.equal(whole.batch(2)[0][4:], half.batch(2)[0])
    assert torch.equal(whole.batch(2)[1][4:], half.batch(2)[1])


def test_too_short_suggests_a_batch_size():
    with pytest.raises(DataError, match=r"--batch-size 9 or less"):
        Streams(np.zeros(100, dtype=np.uint8), 32, 11)


def test_open_corpus_prepares_once_and_reuses(corpus, workdir):
    first = open_corpus(corpus)
    mtime = (workdir / "data" / "corpus" / "meta.json").stat().st_mtime_ns
    second = open_corpus(corpus)
    assert second.root == first.root
    assert (workdir / "data" / "corpus" / "meta.json").stat().st_mtime_ns == mtime
    corpus.write_text(corpus.read_text() + "changed text\n")
    third = open_corpus(corpus)
    assert third.meta["chars"] == first.meta["chars"] + len("changed text\n")


def test_open_corpus_errors(workdir):
    with pytest.raises(DataError, match="corpus not found: nope.txt"):
        open_corpus("nope.txt")
    (workdir / "somedir").mkdir()
    with pytest.raises(DataError, match="not a prepared dataset"):
        open_corpus("somedir")
    with pytest.raises(DataError, match="no meta.json"):
        PreparedData(workdir / "somedir")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_resident_streams_on_the_host_share_the_array(dtype):
    # On CPU the encoded split (read or mapped) is the storage: no widened copy.
    array = (np.arange(5000) % 300 % np.iinfo(dtype).max).astype(dtype)
    streams = Streams(array, 4, 16, device="cpu")
    assert streams.resident
    assert np.shares_memory(streams.data.numpy(), array)
    idx, targets = streams.batch(3)
    L = streams.stream_len
    assert idx.long()[:, 0].tolist() == [int(array[b * L + 3 * 16]) for b in range(4)]
