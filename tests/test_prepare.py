import io
import json

import numpy as np
import pytest
from conftest import make_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.core.errors import DataError
from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData
from charrnn.corpus.text import TextOptions
from charrnn.corpus.vocab import Vocab


def decoded(out, split):
    data = PreparedData(out)
    return data.vocab.decode(data.split(split).tolist())


def test_splits_are_contiguous_with_validation_last(tmp_path):
    text = make_text(10_000)
    (tmp_path / "c.txt").write_text(text)
    meta = prepare([str(tmp_path / "c.txt")], tmp_path / "out", val_frac=0.1)
    n_train = int(len(text) * 0.9)  # nanoGPT's shakespeare_char split
    assert meta["splits"] == {"train": n_train, "val": len(text) - n_train, "test": 0}
    assert decoded(tmp_path / "out", "train") == text[:n_train]
    assert decoded(tmp_path / "out", "val") == text[n_train:]
    assert meta["dtype"] == "uint8"
    assert not (tmp_path / "out" / "test.bin").exists()


def test_test_split_follows_validation(tmp_path):
    text = make_text(10_000)
    (tmp_path / "c.txt").write_text(text)
    meta = prepare([str(tmp_path / "c.txt")], tmp_path / "out", val_frac=0.1, test_frac=0.05)
    s = meta["splits"]
    assert sum(s.values()) == len(text)
    assert decoded(tmp_path / "out", "val") == text[s["train"]:s["train"] + s["val"]]
    assert decoded(tmp_path / "out", "test") == text[-s["test"]:]


def test_large_vocabulary_uses_uint16_little_endian(tmp_path):
    text = "".join(chr(0x4E00 + i % 600) for i in range(5000))
    (tmp_path / "zh.txt").write_text(text, encoding="utf-8")
    meta = prepare([str(tmp_path / "zh.txt")], tmp_path / "out")
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 600
    raw = np.fromfile(tmp_path / "out" / "train.bin", dtype="<u2")
    vocab = Vocab.load(tmp_path / "out" / "vocab.json")
    assert vocab.decode(raw.tolist()) == text[:len(raw)]


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64])
def test_chunk_boundaries_do_not_matter(tmp_path, chunk_bytes):
    # Multi-byte characters and \r\n pairs cut across chunk boundaries.
    text = "ab\r\ncé\r\n紅樓\r\r\n🎉x\r\n" * 20
    (tmp_path / "c.txt").write_bytes(text.encode("utf-8"))
    prepare([str(tmp_path / "c.txt")], tmp_path / "small", chunk_bytes=chunk_bytes)
    prepare([str(tmp_path / "c.txt")], tmp_path / "big")
    for split in ("train", "val"):
        assert decoded(tmp_path / "small", split) == decoded(tmp_path / "big", split)
    whole = decoded(tmp_path / "big", "train") + decoded(tmp_path / "big", "val")
    assert whole == text.replace("\r\n", "\n")


def test_text_options(tmp_path):
    (tmp_path / "c.txt").write_bytes("Héllo Wörld\r\n".encode() * 50)
    meta = prepare([str(tmp_path / "c.txt")], tmp_path / "o",
                   options=TextOptions(lower=True, unidecode=True, keep_crlf=True))
    vocab = Vocab.load(tmp_path / "o" / "vocab.json")
    assert set(vocab.chars) == set("hello world\r\n")
    assert meta["options"]["unidecode"] is True


def test_several_files_and_directories(tmp_path):
    (tmp_path / "books" / "sub").mkdir(parents=True)
    (tmp_path / "books" / "a.txt").write_text("aaaa\n" * 100)
    (tmp_path / "books" / "sub" / "b.txt").write_text("bbbb\n" * 100)
    (tmp_path / "books" / "skip.md").write_text("zzzz\n" * 100)
    meta = prepare([str(tmp_path / "books")], tmp_path / "o", glob="*.txt")
    assert meta["files"] == meta["documents"] == 2 and len(meta["sources"]) == 1
    text = decoded(tmp_path / "o", "train") + decoded(tmp_path / "o", "val")
    assert text == "aaaa\n" * 100 + "bbbb\n" * 100


def test_stdin(tmp_path, monkeypatch):
    text = make_text(3000)

    class FakeStdin:
        buffer = io.BytesIO(text.encode())

    monkeypatch.setattr("sys.stdin", FakeStdin)
    meta = prepare(["-"], tmp_path / "o")
    assert meta["sources"][0]["path"] == "-" and meta["chars"] == len(text)
    assert not list((tmp_path / "o").glob(".stdin-*"))
    assert meta["sources"][0]["bytes"] == len(text)


def test_reuse_vocabulary_with_unk(tmp_path):
    (tmp_path / "a.txt").write_text("abc abc\n" * 50)
    (tmp_path / "b.txt").write_text("abz abz\n" * 50)
    prepare([str(tmp_path / "a.txt")], tmp_path / "a")
    vocab = Vocab.load(tmp_path / "a" / "vocab.json")
    with pytest.raises(DataError, match="not in the given vocabulary.*'z'.*--unk"):
        prepare([str(tmp_path / "b.txt")], tmp_path / "b", vocab=vocab)
    prepare([str(tmp_path / "b.txt")], tmp_path / "b", vocab=vocab, unk="c")
    assert Vocab.load(tmp_path / "b" / "vocab.json") == vocab
    assert set(decoded(tmp_path / "b", "train")) == set("abc \n")


def test_invalid_utf8_names_file_and_offset(tmp_path):
    data = b"hello world\n" * 10 + b"\xff\xfe" + b"more\n"
    (tmp_path / "bad.txt").write_bytes(data)
    with pytest.raises(DataError, match=r"bad.txt: bytes at offset 120 are not valid utf-8.*--encoding"):
        prepare([str(tmp_path / "bad.txt")], tmp_path / "o", chunk_bytes=7)
    assert not (tmp_path / "o" / "meta.json").exists()
    meta = prepare([str(tmp_path / "bad.txt")], tmp_path / "o",
                   options=TextOptions(encoding="latin-1"))
    assert meta["chars"] == len(data)


@pytest.mark.parametrize("content, message", [
    (b"", "corpus is empty"),
    (b"\n\n\n\n", "only whitespace"),
    (b"ab", "too short to split"),
])
def test_unusable_corpora(tmp_path, content, message):
    (tmp_path / "c.txt").write_bytes(content)
    with pytest.raises(DataError, match=message):
        prepare([str(tmp_path / "c.txt")], tmp_path / "o")
    assert not (tmp_path / "o" / "meta.json").exists()


@pytest.mark.parametrize("val, test", [(0.0, 0.0), (1.0, 0.0), (-0.1, 0.0), (0.5, 0.5)])
def test_bad_fractions(tmp_path, val, test):
    (tmp_path / "c.txt").write_text(make_text(1000))
    with pytest.raises(DataError, match="frac"):
        prepare([str(tmp_path / "c.txt")], tmp_path / "o", val_frac=val, test_frac=test)


def test_failed_prepare_keeps_previous_dataset(tmp_path):
    (tmp_path / "c.txt").write_text(make_text(2000))
    prepare([str(tmp_path / "c.txt")], tmp_path / "o")
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    (tmp_path / "c.txt").write_bytes(b"fine text " * 50 + b"\xc3\x28")
    with pytest.raises(DataError):
        prepare([str(tmp_path / "c.txt")], tmp_path / "o")
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before


def test_meta_records_sources(tmp_path):
    (tmp_path / "c.txt").write_text("abcabc\n" * 100)
    meta = prepare([str(tmp_path / "c.txt")], tmp_path / "o")
    on_disk = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert on_disk == meta
    import hashlib
    assert meta["sources"][0]["sha256"] == hashlib.sha256((tmp_path / "c.txt").read_bytes()).hexdigest()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_prepare_or_fail_cleanly(tmp_path, data):
    src = tmp_path / "c.bin"
    src.write_bytes(data)
    out = tmp_path / "o"
    try:
        meta = prepare([str(src)], out)
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        return
    vocab = Vocab.load(out / "vocab.json")
    text = decoded(out, "train") + decoded(out, "val")
    assert text == data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    assert len(vocab) == meta["vocab_size"] == len(set(text))
