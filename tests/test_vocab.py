import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.core.errors import DataError
from charrnn.corpus.vocab import Vocab


@given(st.text(min_size=1))
def test_round_trip_any_unicode(text):
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.chars == sorted(set(text))  # code-point order, whatever the order seen
    assert sum(vocab.counts) == len(text)


def test_round_trip_astral_and_combining(tmp_path):
    text = "e\u0301 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🎉 紅樓夢 Ё\n"
    vocab = Vocab.from_text(text)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.counts == vocab.counts
    assert loaded.decode(loaded.encode(text)) == text


@pytest.mark.parametrize("n, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                      (65536, np.uint16), (65537, np.uint32)])
def test_smallest_dtype(n, dtype):
    points = [p for p in range(0x100, 0x100 + n + 2048) if not 0xD800 <= p <= 0xDFFF][:n]
    assert Vocab([chr(p) for p in points]).dtype == dtype


def test_encode_unknown_lists_characters():
    vocab = Vocab.from_text("abc")
    with pytest.raises(DataError, match="'x', 'y'"):
        vocab.encode("axyx")
    assert vocab.missing("axyx") == ["x", "y"]


def test_lookup_table_matches_index():
    vocab = Vocab.from_text("héllo 世界")
    table = vocab.lookup_table()
    for c, i in vocab.index.items():
        assert table[ord(c)] == i
    assert table[ord("z")] == -1
