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


def ids_of(out):
    data = PreparedData(out)
    return np.concatenate([data.split(s) for s in ("train", "val", "test")
                           if data.meta["splits"][s]])


def whole(out):
    return PreparedData(out).vocab.decode(ids_of(out).tolist())


def document(out, i):
    """Document i's text, checking that it starts with the end-of-document mark."""
    data = PreparedData(out)
    docs, ids = data.documents(), ids_of(out)
    assert ids[docs.start[i]] == data.vocab.end
    return data.vocab.decode(ids[docs.start[i] + 1:docs.end(i)].tolist())


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
    assert whole(tmp_path / "o") == "".join(texts.values())
    assert data.vocab.counts[data.vocab.end] == 30
    for i, (rel, body) in enumerate(texts.items()):
        assert docs.name(i) == rel and docs.line[i] == 1
        assert document(tmp_path / "o", i) == body


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
    assert meta["documents"] == len(docs) == 20 * len(expected)
    got = [(document(tmp_path / "o", i), int(docs.line[i])) for i in range(len(expected))]
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
    ("x" * 5000 + "ab\n", r"nearly all \(5,000 of 5,003 characters\) 'x'"),
])
def test_a_corpus_of_one_symbol_is_refused(tmp_path, content, shown):
    from charrnn.corpus.text import TextOptions
    (tmp_path / "c.txt").write_text(content, encoding="utf-16")
    with pytest.raises(DataError, match=f"corpus is {shown}.*nothing for a model to learn"):
        prepare([str(tmp_path / "c.txt")], tmp_path / "o", options=TextOptions(encoding="utf-16"))


# ----------------------------------------------------------------------------------------
# the end-of-document mark and blank starts


def test_the_mark_round_trips_and_old_vocabularies_have_none(tmp_path):
    from charrnn.corpus.vocab import END, Vocab
    from charrnn.inference.trained import vocab_of
    vocab = Vocab(list("ab\n"), [3, 2, 1], end_count=4)
    assert len(vocab) == 4 and vocab.end == 3 and vocab.chars[3] == END
    assert vocab.to_dict() == {"chars": list("ab\n"),
                               "counts": [3, 2, 1], "end_of_document": {"id": 3, "count": 4}}
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == vocab
    assert vocab.decode([0, 3, 1]) == "ab" and vocab.decode([0, 3], end="|") == "a|"
    assert vocab_of({"vocab": vocab.to_dict(counts=False)}).end == 3
    old = vocab_of({"vocab": {"chars": list("ab\n")}})  # a checkpoint from before
    assert old.end is None and len(old) == 3 and old.decode([0, 1]) == "ab"
    with pytest.raises(DataError):
        Vocab(["a", END])  # not a character of text


def test_document_starts_blank_the_streams_where_they_start():
    import torch
    from charrnn.corpus.streams import Streams
    L_total, B, T = 1000, 4, 10
    starts = np.array([0, 5, 37, 260, 261, 499, 750, 990])
    streams = Streams(np.zeros(L_total, np.uint8), B, T, doc_starts=starts)
    L, steps = streams.stream_len, streams.steps_per_epoch
    for i in range(steps):
        naive = {b for b in range(B) if any(
            i > 0 and s // L == b and (s % L) // T == i for s in starts.tolist())}
        got = {b for b in range(B) if not streams.doc_keep[i, b, 0]}
        assert got == naive, i
    parts = [Streams(np.zeros(L_total, np.uint8), B, T, row_start=a, row_stop=a + 2,
                     doc_starts=starts).doc_keep for a in (0, 2)]
    assert torch.equal(torch.cat(parts, dim=1), streams.doc_keep)
    assert Streams(np.zeros(L_total, np.uint8), B, T, doc_starts=starts[:1]).doc_keep is None


def test_training_starts_each_document_blank(tmp_path):
    from charrnn.core.config_files import load_config
    from charrnn.core.model import hidden_tensors
    from charrnn.training.trainer import Trainer
    make_tree(tmp_path / "src", 60)
    prepare([str(tmp_path / "src")], tmp_path / "o")
    data = PreparedData(tmp_path / "o")
    cfg = load_config(overrides={
        "model.hidden_size": 16, "model.num_layers": 1, "train.batch_size": 4,
        "train.seq_len": 16, "train.reset_every": 0, "train.log_every": 1000,
        "train.eval_every": 1000})
    trainer = Trainer(cfg, data, echo=lambda *a, **k: None, progress=False)
    L, T = trainer.streams.stream_len, 16
    starts = data.documents().start[data.documents().split == 0].tolist()
    seen, model = [], trainer.wrapped

    def forward(idx, hidden):
        h = hidden_tensors(hidden)[0]
        seen.append({b for b in range(h.size(1)) if not h[:, b].any()})
        return model(idx, hidden)

    trainer.wrapped = forward
    for _ in range(trainer.steps_per_epoch):
        trainer.train_step(1e-3)
        trainer.state.step += 1
    for i in range(1, len(seen)):
        assert seen[i] == {s // L for s in starts if (s % L) // T == i and s // L < 4}, i


def mark_model(vocab_size, end):
    """A model that always predicts the end-of-document mark."""
    import torch
    from charrnn.core.model import CharRNN
    model = CharRNN(vocab_size, hidden_size=8, num_layers=1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-20.0)
        model.head.bias[end] = 20.0
    return model


def test_sampling_starts_after_the_mark_and_stops_at_the_end():
    import torch
    from charrnn.corpus.vocab import Vocab
    from charrnn.inference.sample import Sampler
    vocab = Vocab(list("ab\n"), end_count=1)
    model = mark_model(len(vocab), vocab.end)
    sampler = Sampler(model, vocab, seed=1)
    _, hidden = sampler._prime("", 1)
    _, expected = model(torch.tensor([[vocab.end]]))
    assert torch.equal(hidden[0], expected[0])  # the state after the mark alone
    assert sampler.texts(20) == ["\n" * 20]  # each end shows as a line break
    assert Sampler(model, vocab, seed=1, stop_at_end=True).texts(20, num_samples=2) == ["", ""]
    with pytest.raises(Exception, match="no end-of-document mark"):
        Sampler(mark_model(3, 0), Vocab(list("ab\n")), stop_at_end=True)


# ----------------------------------------------------------------------------------------
# reports that name files


def test_novelty_names_the_file_and_line_of_a_planted_passage(tmp_path):
    pytest.importorskip("pydivsufsort")
    from charrnn.novelty.report import novelty_report
    from charrnn.novelty.source import training_index
    rng = np.random.default_rng(3)
    files = {}
    for i in range(40):
        lines = ["".join(rng.choice(list("abcdefghij klm"), 30)) for _ in range(12)]
        files[f"sub{i % 4}/f{i:02d}.txt"] = "\n".join(lines) + "\n"
        (tmp_path / "src" / f"sub{i % 4}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / f"sub{i % 4}" / f"f{i:02d}.txt").write_text(files[f"sub{i % 4}/f{i:02d}.txt"])
    meta = prepare([str(tmp_path / "src")], tmp_path / "o", val_frac=0.1)
    docs = PreparedData(tmp_path / "o").documents()
    train_files = [docs.name(i) for i in range(len(docs)) if docs.split[i] == 0]
    target = train_files[len(train_files) // 2]
    body = files[target]
    passage = body[body.index("\n", 100) + 1:][:70]  # starts a line, spans two
    sample = "zz" + passage + "zz"
    report = novelty_report(training_index(tmp_path / "o"), sample)
    # brute force: every place the passage occurs in the training files
    found = [(name, files[name][:at].count("\n") + 1) for name in train_files
             for at in [files[name].find(report.span)] if at >= 0]
    assert report.longest >= 70 and found == [report.source]
    assert report.source[0] == target
    assert f"{target}:{report.source[1]} in the training files" in "\n".join(report.lines())
    assert report.to_dict()["source"] == {"path": target, "line": report.source[1]}
    assert meta["documents"] == 40


# ----------------------------------------------------------------------------------------
# from the command line


def test_a_directory_from_prepare_to_eval(tmp_path, monkeypatch):
    import json
    from conftest import TINY, run
    monkeypatch.chdir(tmp_path)
    texts = make_tree(tmp_path / "src", 30)
    (tmp_path / "src" / "blob.bin").write_bytes(b"\0\1\2" * 100)
    r = run("prepare", "src", "-o", "data/src")
    assert r.exit_code == 0, r.output
    assert "documents: 30 (each file)" in r.output
    assert "skipped 1 file(s) that are binary or not utf-8 text: blob.bin" in r.output
    r = run("train", "data/src", *TINY, "--name", "docs")
    assert r.exit_code == 0, r.output
    assert "documents: 30 (each file), each starting from a blank state" in r.output
    r = run("runs")
    assert "src (30 docs)" in r.output
    r = run("sample", "runs/docs", "-n", "300", "--stop-at-end", "--seed", "1", "-q")
    assert r.exit_code == 0 and "\udfff" not in r.output
    r = run("eval", "runs/docs", "src", "--json", "-q")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [f["name"] for f in out["files"]] == [f"src/{rel}" for rel in texts]
    assert [f["chars"] for f in out["files"]] == [len(t) for t in texts.values()]
    assert out["total"]["chars"] == sum(len(t) for t in texts.values())
    r = run("eval", "runs/docs", "src")
    assert "src/d0/f000.txt: " in r.output and "total: " in r.output
    assert "1 file(s) left out" in r.stderr


def test_serve_starts_after_the_mark_and_stops_at_the_end(tmp_path):
    from test_serve import ServerProcess
    from charrnn.core.config import Config, ModelConfig
    from charrnn.corpus.vocab import Vocab
    from charrnn.inference.trained import save_model
    vocab = Vocab(list("ab\n"), end_count=1)
    model = mark_model(len(vocab), vocab.end)
    cfg = Config(model=ModelConfig(hidden_size=8, num_layers=1))
    save_model(tmp_path / "m.pt", model, vocab, cfg, step=1, best_val_loss=2.0)
    server = ServerProcess(tmp_path / "m.pt")
    try:
        post = server.client.post
        assert server.client.get("/v1/model").json()["end_of_document"] is True
        answer = post("/v1/generate", json={"length": 10, "seed": 1}).json()
        assert answer["samples"][0]["text"] == "\n" * 10
        answer = post("/v1/generate", json={"length": 10, "seed": 1, "num_samples": 2,
                                            "stop_at_end": True}).json()
        assert [s["text"] for s in answer["samples"]] == ["", ""]
        assert {s["finish_reason"] for s in answer["samples"]} == {"stop"}
    finally:
        server.stop()


def test_the_export_metadata_of_a_model_of_documents(tmp_path):
    from charrnn.corpus.text import TextOptions
    from charrnn.corpus.vocab import Vocab
    from charrnn.export import metadata
    vocab = Vocab(list("ab\n"), end_count=1)
    meta = metadata.model_metadata(mark_model(len(vocab), vocab.end), vocab, TextOptions())
    assert meta["vocab"] == ["a", "b", "\n", "\n"] and meta["end_of_document"] == 3
    metadata.to_json(meta).encode("utf-8")  # no lone surrogate: it encodes


def test_files_are_read_as_they_are_alone(tmp_path):
    """Each file's text in a directory is what it is as a single file: no \\r\\n made of
    two files, a byte-order mark removed from each, any alphabet, any size."""
    (tmp_path / "src").mkdir()
    parts = {"a.txt": "ends with cr\r".encode(), "b.txt": "\nstarts with nl\r\n".encode(),
             "c.txt": "\ufeffZürich ✓ 😀\n".encode(), "d.txt": ("long line\n" * 3000).encode()}
    for name, data in parts.items():
        (tmp_path / "src" / name).write_bytes(data)
    prepare([str(tmp_path / "src")], tmp_path / "o", chunk_bytes=4096)
    for i, name in enumerate(parts):
        assert document(tmp_path / "o", i) == (
            parts[name].decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n"))


def test_test_split_is_whole_documents_too(tmp_path):
    make_tree(tmp_path / "src", 40)
    meta = prepare([str(tmp_path / "src")], tmp_path / "o", val_frac=0.1, test_frac=0.1)
    docs = PreparedData(tmp_path / "o").documents()
    sizes, starts = meta["splits"], docs.start.tolist()
    assert meta["split_by"] == "documents" and sizes["test"] > 0
    assert sizes["train"] in starts and sizes["train"] + sizes["val"] in starts
    assert sorted(set(docs.split.tolist())) == [0, 1, 2]


def test_prepare_flags_from_the_command_line(tmp_path, monkeypatch):
    from conftest import assert_clean_error, run
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "src", 12)
    (tmp_path / "src" / "core").write_bytes(b"\0" * 64)
    assert_clean_error(run("prepare", "src", "--strict", "-o", "data/s"),
                       "core looks like a binary file", "--strict")
    (tmp_path / "tweets.txt").write_text("".join(f"tweet number {i}\n" for i in range(200)))
    r = run("prepare", "tweets.txt", "--split-on", "line")
    assert r.exit_code == 0, r.output
    assert "documents: 200 (each line); validation: whole documents" in r.output


def test_a_file_that_stops_decoding_half_way_leaves_nothing_in_the_spool(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("first file\n" * 50)
    (tmp_path / "src" / "b.txt").write_bytes(b"good text\n" * 2000 + b"\xff\xfe bad")
    (tmp_path / "src" / "c.txt").write_text("last file\n" * 50)
    meta = prepare([str(tmp_path / "src")], tmp_path / "o", chunk_bytes=1000)
    assert meta["skipped_shown"] == ["b.txt"] and meta["documents"] == 2
    assert whole(tmp_path / "o") == "first file\n" * 50 + "last file\n" * 50
