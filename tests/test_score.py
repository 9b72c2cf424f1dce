"""charrnn eval and the scoring library: static and dynamic evaluation."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_clean_error, make_text, run

from charrnn.core.checkpoint import load_checkpoint
from charrnn.inference.score import dynamic_score, read_ids, score_ids
from charrnn.inference.trained import model_from_checkpoint


@pytest.fixture
def trained(corpus, workdir):
    r = run("prepare", corpus, "--test-frac", "0.1")
    assert r.exit_code == 0, r.output
    r = run("train", "data/corpus", *TINY, "--name", "good")
    assert r.exit_code == 0, r.output
    return workdir / "runs" / "good"


def naive_nats(model, ids):
    """One stream over the whole text in one call: every prediction, full context."""
    x = torch.as_tensor(ids.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(x[None, :-1])
    return F.cross_entropy(logits[0], x[1:]).item()


def test_the_validation_split_scores_as_training_reported(trained):
    state = load_checkpoint(trained / "last.pt")
    assert state["last_eval_step"] == state["step"]  # evaluated at the end
    r = run("eval", trained / "last.pt", "data/corpus", "--split", "val", "--json")
    assert r.exit_code == 0, r.output
    [scored] = json.loads(r.output)["files"]
    assert scored["nats"] == pytest.approx(state["last_val_loss"], abs=1e-4)
    # Default split of a directory with a test split: the test split.
    r = run("eval", trained / "last.pt", "data/corpus", "--json")
    assert json.loads(r.output)["files"][0]["name"] == "data/corpus:test"


def test_a_text_file_scores_every_prediction_once(trained, workdir):
    text = make_text(3000, seed=9)
    (workdir / "a.txt").write_text(text)
    r = run("eval", trained, "a.txt", "--json", "--batch-size", "1")
    assert r.exit_code == 0, r.output
    [scored] = json.loads(r.output)["files"]
    model, vocab, options = model_from_checkpoint(load_checkpoint(trained / "best.pt"))
    ids = np.array(vocab.encode(text))
    assert scored["chars"] == len(text) - 1
    assert scored["nats"] == pytest.approx(naive_nats(model, ids), rel=1e-5)
    assert scored["bpc"] == pytest.approx(scored["nats"] / math.log(2))
    assert scored["perplexity"] == pytest.approx(math.exp(scored["nats"]))
    # Cut into streams for speed: every prediction is still scored once.
    r = run("eval", trained, "a.txt", "--json", "--batch-size", "7")
    [scored] = json.loads(r.output)["files"]
    assert scored["chars"] == len(text) - 1 and scored["streams"] == 5  # 2,999 // 512
    # The streams were capped, and the text says so.
    r = run("eval", trained, "a.txt", "--batch-size", "7")
    assert "5 stream(s), not 7" in r.output


def test_several_files_and_a_total(trained, workdir):
    (workdir / "a.txt").write_text(make_text(2000, seed=1))
    (workdir / "b.txt").write_text(make_text(500, seed=2))
    r = run("eval", "a.txt", "b.txt", "--json")  # the latest run
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    a, b = out["files"]
    assert out["total"]["chars"] == a["chars"] + b["chars"]
    pooled = (a["nats"] * a["chars"] + b["nats"] * b["chars"]) / (a["chars"] + b["chars"])
    assert out["total"]["nats"] == pytest.approx(pooled)
    text = run("eval", "a.txt", "b.txt")
    assert text.exit_code == 0 and "total:" in text.output and "bits/char" in text.output


def test_standard_input(trained, workdir):
    text = make_text(1000, seed=4)
    (workdir / "a.txt").write_text(text)
    from_file = json.loads(run("eval", "a.txt", "--json").output)["files"][0]
    from_stdin = json.loads(run("eval", "-", "--json", input=text).output)["files"][0]
    assert from_stdin["name"] == "<stdin>" and from_stdin["nats"] == pytest.approx(from_file["nats"])


def test_unknown_characters_are_listed_or_skipped(trained, workdir):
    text = make_text(1000, seed=5)
    (workdir / "odd.txt").write_text(text[:500] + "Ω€" + text[500:] + "Ω")
    (workdir / "clean.txt").write_text(text)
    assert_clean_error(run("eval", "odd.txt"), "'Ω'", "'€'", "--unknown skip")
    skipped = json.loads(run("eval", "odd.txt", "--unknown", "skip", "--json").output)["files"][0]
    # The old spelling still works, and is not shown in --help.
    old = json.loads(run("eval", "odd.txt", "--unk", "skip", "--json").output)["files"][0]
    assert old["skipped"] == 3
    assert "--unk " not in run("eval", "--help").output
    clean = json.loads(run("eval", "clean.txt", "--json").output)["files"][0]
    assert skipped["skipped"] == 3
    assert skipped["chars"] == clean["chars"] and skipped["nats"] == pytest.approx(clean["nats"])


def test_text_goes_through_the_models_text_options(corpus, workdir):
    r = run("train", corpus, *TINY, "--lower", "--name", "lower")
    assert r.exit_code == 0, r.output
    text = make_text(800, seed=6)
    (workdir / "upper.txt").write_text(text.upper())
    (workdir / "lower.txt").write_text(text.lower())
    up = json.loads(run("eval", "runs/lower", "upper.txt", "--json").output)["files"][0]
    low = json.loads(run("eval", "runs/lower", "lower.txt", "--json").output)["files"][0]
    assert up["nats"] == pytest.approx(low["nats"])


def test_dynamic_evaluation_adapts_and_leaves_the_checkpoint_alone(trained, workdir):
    (workdir / "rep.txt").write_text("the lazy dog jumps over the quick fox.\n" * 60)
    before = (trained / "best.pt").read_bytes()
    r = run("eval", trained, "rep.txt", "--dynamic", "--dynamic-lr", "0.05", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["dynamic"][0]["nats"] < out["files"][0]["nats"] - 0.1  # it learned the text
    assert (trained / "best.pt").read_bytes() == before
    text = run("eval", trained, "rep.txt", "--dynamic")
    assert "dynamic (lr 0.1) " in text.output


def test_dynamic_scores_each_chunk_before_learning_from_it(trained):
    model, vocab, options = model_from_checkpoint(load_checkpoint(trained / "best.pt"))
    ids = np.array(vocab.encode(make_text(1500, seed=8)), dtype=np.uint8)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    # With a vanishing rate nothing adapts: the static score of one stream.
    still = dynamic_score(model, ids, 16, "cpu", lr=1e-12)
    assert still.nats == pytest.approx(score_ids(model, ids, 1, 16, "cpu").nats, rel=1e-5)
    dynamic_score(model, ids, 16, "cpu", lr=0.1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_bad_eval_inputs(trained, workdir):
    assert_clean_error(run("eval", "missing.txt"), "not found")
    assert_clean_error(run("eval", trained), "is a model: give the text to score")
    (workdir / "one.txt").write_text("a")
    assert_clean_error(run("eval", "one.txt"), "nothing to score")
    assert_clean_error(run("eval", "one.txt", "--dynamic-lr", "nan"), "--dynamic-lr")
    assert_clean_error(run("eval", "one.txt", "--batch-size", "0"), "--batch-size")


def test_read_ids_streams_the_file(trained, workdir, tmp_path):
    model, vocab, options = model_from_checkpoint(load_checkpoint(trained / "best.pt"))
    text = make_text(5000, seed=3)
    (tmp_path / "t.txt").write_text(text.replace("\n", "\r\n"))
    with open(tmp_path / "t.txt", "rb") as raw:
        ids, skipped = read_ids(raw, "t.txt", options, vocab)
    assert skipped == 0 and vocab.decode(ids.tolist()) == text  # CRLF as in training
