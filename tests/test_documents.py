"""Corpora of many files: documents, the validation split by documents, files that are not
text, and corpora of one symbol."""

import numpy as np
import pytest

from charrnn.core.errors import DataError
from charrnn.corpus.documents import LineStarts
from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData


def decoded(out, split):
    data = PreparedData(out)
    return data.vocab.decode(data.split(split).tolist())


def whole(out):
    data = PreparedData(out)
    return "".join(data.vocab.decode(data.split(s).tolist())
                   for s in ("train", "val", "test") if data.meta["splits"][s])


def make_tree(root, n=30):
    texts = {}
    for i in range(n):
        rel = f"d{i % 3}/f{i:03d}.txt"
        texts[rel] = f"/* file {i} */\n" + "word " * (5 + i % 7) + "\n"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(texts[rel])
    return dict(sorted(texts.items()))


def test_each_file_is_a_document_with_its_path_and_offsets(tmp_path):
    texts = make_tree(tmp_path / "src")
    meta = prepare([str(tmp_path / "src")], tmp_path / "o", val_frac=0.2)
    data = PreparedData(tmp_path / "o")
    docs = data.documents()
    assert meta["documents"] == len(docs) == data.n_documents == 30
    assert docs.paths() == list(texts)
    text = whole(tmp_path / "o")
    for i, (rel, body) in enumerate(texts.items()):
        assert docs.name(i) == rel and docs.line[i] == 1
        assert text[docs.start[i]:docs.end(i)] == body


def test_validation_is_whole_documents_at_the_end(tmp_path):
    texts = make_tree(tmp_path / "src")
    meta = prepare([str(tmp_path / "src")], tmp_path / "o", val_frac=0.2)
    assert meta["split_by"] == "documents"
    docs = PreparedData(tmp_path / "o").documents()
    n_train = meta["splits"]["train"]
    assert n_train in docs.start.tolist()  # the cut falls between two documents
    first_val = docs.start.tolist().index(n_train)
    assert docs.split.tolist() == [0] * first_val + [1] * (30 - first_val)
    assert decoded(tmp_path / "o", "val") == "".join(list(texts.values())[first_val:])
    assert 0.1 <= meta["splits"]["val"] / meta["chars"] <= 0.4


def test_few_documents_of_unequal_size_are_cut_by_characters(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.txt").write_text("a big book\n" * 500)
    (tmp_path / "src" / "small.txt").write_text("a note\n")
    meta = prepare([str(tmp_path / "src")], tmp_path / "o", val_frac=0.1)
    assert meta["split_by"] == "characters" and meta["documents"] == 2


def test_a_single_file_is_one_document_as_before(tmp_path):
    (tmp_path / "c.txt").write_text("To be, or not to be\n" * 50)
    meta = prepare([str(tmp_path / "c.txt")], tmp_path / "o")
    assert "documents" not in meta and not (tmp_path / "o" / "documents.npz").exists()
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")) == [
        "meta.json", "train.bin", "val.bin", "vocab.json"]
    docs = PreparedData(tmp_path / "o").documents()
    assert len(docs) == 1 and docs.name(0) == "c.txt" and docs.start.tolist() == [0]


@pytest.mark.parametrize("split_on, expected", [
    ("line", [("one\n", 1), ("two\n\n", 2), ("three\n\n", 4)]),
    ("blankline", [("one\ntwo\n\n", 1), ("three\n\n", 4)]),
])
def test_split_on_lines_and_paragraphs(tmp_path, split_on, expected):
    body = "one\ntwo\n\nthree\n\n"
    (tmp_path / "t.txt").write_text(body * 20)
    meta = prepare([str(tmp_path / "t.txt")], tmp_path / "o", split_on=split_on,
                   chunk_bytes=5)  # boundaries across chunks
    docs = PreparedData(tmp_path / "o").documents()
    text = whole(tmp_path / "o")
    assert meta["documents"] == len(docs) == 20 * len(expected)
    got = [(text[docs.start[i]:docs.end(i)], int(docs.line[i])) for i in range(len(expected))]
    assert got == expected
    assert docs.line[len(expected)] == 6  # the second copy starts on line 6
    assert set(docs.source.tolist()) == {0} and docs.name(0) == "t.txt"


def test_line_starts_match_a_naive_split():
    rng = np.random.default_rng(0)
    cps = rng.choice(np.array([10, 97, 98], np.uint32), size=500, p=[0.3, 0.35, 0.35])
    for split_on, need in (("line", 1), ("blankline", 2)):
        starts = LineStarts(split_on)
        got = np.concatenate([starts.feed(cps[i:i + 7])[0] for i in range(0, 500, 7)])
        naive = [0] + [p for p in range(1, 500) if cps[p] != 10
                       and all(p - k >= 0 and cps[p - k] == 10 for k in range(1, need + 1))]
        assert got.tolist() == naive


# ----------------------------------------------------------------------------------------
# files that are not text


def test_binary_and_undecodable_files_in_a_directory_are_skipped(tmp_path):
    texts = make_tree(tmp_path / "src", 12)
    (tmp_path / "src" / "a.out").write_bytes(b"\x7fELF\0\0\x01" + b"text" * 100)
    (tmp_path / "src" / "d1" / "latin.txt").write_bytes(b"caf\xe9\n" * 10)
    meta = prepare([str(tmp_path / "src")], tmp_path / "o")
    assert meta["skipped"] == 2 and meta["files"] == meta["documents"] == 12
    assert meta["skipped_shown"] == ["a.out", "d1/latin.txt"]
    assert whole(tmp_path / "o") == "".join(texts.values())
    with pytest.raises(DataError, match="a.out looks like a binary file.*--strict"):
        prepare([str(tmp_path / "src")], tmp_path / "o2", strict=True)


def test_a_binary_file_as_the_corpus_is_named_binary(tmp_path):
    (tmp_path / "ls").write_bytes(b"\x7fELF\x02\x01\x01\0\0\0" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="ls looks like a binary file") as e:
        prepare([str(tmp_path / "ls")], tmp_path / "o")
    assert "latin-1" not in str(e.value)


def test_utf16_text_is_not_taken_for_binary(tmp_path):
    (tmp_path / "w.txt").write_bytes("wide text here\n".encode("utf-16") * 20)
    from charrnn.corpus.text import TextOptions
    meta = prepare([str(tmp_path / "w.txt")], tmp_path / "o",
                   options=TextOptions(encoding="utf-16"))
    assert meta["chars"] > 0


@pytest.mark.parametrize("content, shown", [
    ("\0" * 3000, "only"),           # with an encoding that reads NUL as text
    ("x" * 5000 + "ab\n", "99.9"),
])
def test_a_corpus_of_one_symbol_is_refused(tmp_path, content, shown):
    from charrnn.corpus.text import TextOptions
    (tmp_path / "c.txt").write_text(content, encoding="utf-16")
    with pytest.raises(DataError, match=f"corpus is {shown}.*nothing for a model to learn"):
        prepare([str(tmp_path / "c.txt")], tmp_path / "o", options=TextOptions(encoding="utf-16"))
