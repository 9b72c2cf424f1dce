import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.config_files import load_config
from charrnn.core.errors import CheckpointError
from charrnn.core.model import CharRNN
from charrnn.corpus.prepared import open_corpus
from charrnn.corpus.streams import stream_length
from charrnn.inference.evaluate import eval_streams, evaluate
from charrnn.training.optim import learning_rate
from charrnn.training.run import resume, train
from charrnn.training.trainer import Trainer
from charrnn.training.validator import Validator

SMALL = {"model.hidden_size": 32, "model.num_layers": 2, "model.dropout": 0.1,
         "train.batch_size": 4, "train.seq_len": 16, "train.eval_every": 10,
         "train.log_every": 5, "train.warmup_steps": 5, "train.decay_steps": 40,
         "train.eval_batch_size": 3}



def small_config(**extra):
    return load_config(overrides={**SMALL, **extra})


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed", "chars_per_s")}
            for line in lines]


# Both optimizer paths: the fused AdamW kernel (cuda, cpu) and the plain one (mps and others).
both_optimizers = pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])


@both_optimizers
def test_exact_resume(corpus, workdir, fused):
    data = open_corpus(corpus)
    full = train(small_config(**{"train.max_steps": 40}), data, runs_dir="runs", name="full",
                 echo=quiet, progress=False, fused=fused)
    half = train(small_config(**{"train.max_steps": 20}), data, runs_dir="runs", name="half",
                 echo=quiet, progress=False, fused=fused)
    assert half.step == 20
    resumed = resume(half.run_dir, {"train": {"max_steps": 40}}, echo=quiet, progress=False,
                     fused=fused)
    assert resumed.step == full.step == 40
    a, b = load_checkpoint(full.run_dir / "last.pt"), load_checkpoint(half.run_dir / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in pa:
            assert torch.equal(pa[key], pb[key])
    for ha, hb in zip(a["hidden"], b["hidden"]):
        assert torch.equal(ha, hb)
    assert a["best_val_loss"] == b["best_val_loss"]
    assert records(full.run_dir) == records(half.run_dir)
    assert (workdir / "runs" / "latest").resolve() == half.run_dir.resolve()


def test_resume_refuses_a_changed_model_shape(corpus, workdir):
    data = open_corpus(corpus)
    run = train(small_config(**{"train.max_steps": 10}), data, runs_dir="runs", echo=quiet, progress=False)
    with pytest.raises(CheckpointError, match="model.hidden_size is 32 in the checkpoint, 64 given"):
        resume(run.run_dir, {"model": {"hidden_size": 64}}, echo=quiet)
    with pytest.raises(CheckpointError, match="train.batch_size"):
        resume(run.run_dir, {"train": {"batch_size": 8}}, echo=quiet)


def naive_evaluate(model, array, B, W):
    """Each stream from a zero state in one pass over its W characters of burn-in (unscored)
    and its own L; the last one continues through the tail."""
    L = stream_length(len(array), B)
    ids = torch.from_numpy(array.astype(np.int64))
    total = 0.0
    with torch.no_grad():
        for b in range(B):
            begin = max(0, b * L - W)
            end = (b + 1) * L + 1 if b < B - 1 else len(array)
            logits, _ = model(ids[None, begin:end - 1])
            scored = logits[0, b * L - begin:]
            total += F.cross_entropy(scored, ids[b * L + 1:end], reduction="sum").item()
    return total / (len(array) - 1)


def test_evaluate_scores_every_character_once_with_its_burn_in(workdir):
    torch.manual_seed(0)
    V, T = 7, 5
    model = CharRNN(V, 16, 2).eval()
    array = np.random.default_rng(0).integers(0, V, 203).astype(np.uint8)
    for B, W in [(4, 0), (4, 20), (3, 7), (4, 50)]:
        got = evaluate(model, array, batch_size=B, seq_len=T, device="cpu", context=W)
        assert got == pytest.approx(naive_evaluate(model, array, B, W), rel=1e-5), (B, W)
    # Streams are capped so that each is at least as long as its burn-in.
    assert eval_streams(203, 32, 20) == 10
    assert eval_streams(203, 32, 500) == 1
    got = evaluate(model, array, batch_size=32, seq_len=T, device="cpu", context=20)
    assert got == pytest.approx(naive_evaluate(model, array, 10, 20), rel=1e-5)
    # One stream is the plain full pass over the text.
    ids = torch.from_numpy(array.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
    one = F.cross_entropy(logits[0], ids[1:]).item()
    assert evaluate(model, array, 1, T, "cpu") == pytest.approx(one, rel=1e-5)


def test_learning_rate_schedule():
    cfg = load_config(overrides={"train.lr": 1.0, "train.min_lr": 0.1, "train.warmup_steps": 10}).train
    assert learning_rate(0, cfg, 0.0) == pytest.approx(0.1)
    assert learning_rate(9, cfg, 0.0) == pytest.approx(1.0)
    assert learning_rate(50, cfg, 0.5) == pytest.approx(0.55)
    assert learning_rate(100, cfg, 1.0) == pytest.approx(0.1)
    assert learning_rate(100, cfg, None) == 1.0


@both_optimizers
def test_non_finite_steps_are_skipped_and_stop_training(corpus, workdir, fused, monkeypatch):
    data = open_corpus(corpus)
    good = train(small_config(**{"train.max_steps": 10}), data, runs_dir="runs", echo=quiet, progress=False)
    saved = (good.run_dir / "last.pt").read_bytes()
    state = load_checkpoint(good.run_dir / "last.pt")

    from charrnn.training import trainer as trainer_module
    real = trainer_module.cross_entropy
    monkeypatch.setattr(trainer_module, "cross_entropy",
                        lambda logits, targets: real(logits, targets) * float("nan"))

    from charrnn.core.checkpoint import config_of
    cfg = config_of(state)
    cfg = replace(cfg, train=replace(cfg.train, max_steps=100, max_bad_steps=3))
    trainer = Trainer(cfg, data, run_dir=good.run_dir, state=state, echo=quiet, progress=False,
                        fused=fused)
    result = trainer.run()
    assert result.reason == "diverged" and result.step == 15  # noticed at the first log
    assert trainer.state.skipped == 5
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key  # no update reached the weights
    for before, now in zip(state["optimizer"]["state"].values(),
                           trainer.optimizer.state_dict()["state"].values()):
        for key in before:  # nor the moments, nor the step count
            assert torch.equal(before[key], now[key]), key
    assert all(torch.isfinite(h).all() for h in trainer.hidden)
    assert (good.run_dir / "last.pt").read_bytes() == saved


def test_keep_bounds_periodic_checkpoints(corpus, workdir):
    data = open_corpus(corpus)
    run = train(small_config(**{"train.max_steps": 30, "train.keep": 2, "train.save_every": 5}),
                data, runs_dir="runs", echo=quiet, progress=False)
    names = sorted(p.name for p in run.run_dir.glob("*.pt"))
    assert names == ["best.pt", "last.pt", "step-00000025.pt", "step-00000030.pt"]


def test_gathered_batches_train_like_resident_ones(corpus, workdir):
    data = open_corpus(corpus)
    cfg = small_config(**{"train.max_steps": 12, "model.dropout": 0.0})
    a = train(cfg, data, runs_dir="runs", name="a", echo=quiet, progress=False, resident=True)
    b = train(cfg, data, runs_dir="runs", name="b", echo=quiet, progress=False, resident=False)
    sa, sb = load_checkpoint(a.run_dir / "last.pt"), load_checkpoint(b.run_dir / "last.pt")
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key])


def test_time_spent_evaluating_counts_toward_max_time(corpus, workdir, monkeypatch):
    # An evaluation that crosses the time limit ends the run at that step: no extra step and
    # no second evaluation of the same weights.
    data = open_corpus(corpus)
    slow_eval = Validator.loss

    def evaluate_slowly(self, model, abort=None):
        time.sleep(1.5)
        return slow_eval(self, model, abort)

    monkeypatch.setattr(Validator, "loss", evaluate_slowly)
    cfg = small_config(**{"train.max_time": "1s", "train.eval_every": 5, "train.max_steps": 0})
    result = train(cfg, data, runs_dir="runs", name="timed", echo=quiet, progress=False)
    evals = [r["step"] for r in records(result.run_dir) if "val_loss" in r]
    assert result.step == 5 and evals == [5]


def test_init_from_starts_from_the_checkpoint_weights(corpus, workdir):
    data = open_corpus(corpus)
    first = train(small_config(**{"train.max_steps": 8}), data, runs_dir="runs", name="first", echo=quiet,
                  progress=False)
    source = load_checkpoint(first.run_dir / "last.pt")["model"]
    cfg = small_config(**{"train.max_steps": 8, "train.init_from": str(first.run_dir)})
    tuned = Trainer(cfg, data, echo=quiet, progress=False)
    for key, value in tuned.model.state_dict().items():
        assert torch.equal(value, source[key]), key
    fresh = Trainer(small_config(**{"train.max_steps": 8}), data, echo=quiet, progress=False)
    assert not torch.equal(fresh.model.head.weight, source["head.weight"])


def test_eval_chars_scores_a_prefix_of_the_validation_split(corpus, workdir):
    data = open_corpus(corpus)
    cfg = small_config(**{"train.max_steps": 6, "train.eval_chars": 300})
    trainer = Trainer(cfg, data, echo=quiet, progress=False)
    trainer.run(final_eval=False)
    loss, _ = trainer.validator.validate(trainer.model)
    val = data.split("val")
    assert len(val) > 300
    t = cfg.train
    assert loss == pytest.approx(evaluate(trainer.model, val[:300], t.eval_batch_size, t.seq_len, "cpu"))
    assert loss != pytest.approx(evaluate(trainer.model, val, t.eval_batch_size, t.seq_len, "cpu"))


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_last_and_exits_with_the_conventional_status(corpus, workdir, signum, status):
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--max-time", "5m",
           "--hidden-size", "32", "--batch-size", "4", "--seq-len", "16", "--name", "run",
           "--set", "train.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("step 3 "):
            break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    state = load_checkpoint(workdir / "runs" / "run" / "last.pt")
    assert state["step"] >= 3
    assert "interrupted" in out


def test_patience_stops_after_evaluations_without_a_new_best(corpus, workdir):
    scores = iter([3.0, 2.5, 2.6, 2.7, 2.4])
    data = open_corpus(corpus)
    cfg = small_config(**{"train.max_steps": 100, "train.eval_every": 5, "train.patience": 2})
    trainer = Trainer(cfg, data, run_dir=None, echo=quiet, progress=False)
    trainer.validator.loss = lambda model, abort=None: next(scores)
    result = trainer.run()
    assert (result.reason, result.step, result.best_step) == ("early_stop", 20, 10)
    assert result.best_val_loss == 2.5
    assert trainer.checkpoint_state()["stale_evals"] == 2


def test_without_patience_a_run_goes_on(corpus, workdir):
    data = open_corpus(corpus)
    cfg = small_config(**{"train.max_steps": 20, "train.eval_every": 5})

    scores = iter([3.0, 3.1, 3.2, 3.3, 3.4])
    trainer = Trainer(cfg, data, echo=quiet, progress=False)
    trainer.validator.loss = lambda model, abort=None: next(scores)
    result = trainer.run()
    assert result.reason == "max_steps" and result.best_step == 5


def test_sizing_advice():
    from charrnn.core.config import ModelConfig
    from charrnn.training.setup import sizing_advice

    assert "far larger" in sizing_advice(5_000_000, 100_000, ModelConfig())
    assert "--dropout" in sizing_advice(5_000_000, 100_000, ModelConfig())
    assert "far smaller" in sizing_advice(10_000, 1_000_000, ModelConfig())
    assert "good fit" in sizing_advice(800_000, 1_000_000, ModelConfig())
