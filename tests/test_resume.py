"""Restarting: resume through runs/latest, time budgets across resumes, rerunning the same
command with --resume, presets from anywhere, and reuse of prepared corpora."""

import json
import os
import signal
import threading

import pytest
from conftest import TINY, assert_clean_error, make_text, quiet, run

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.config import RESUMABLE
from charrnn.core.config_files import load_config
from charrnn.core.errors import CheckpointError
from charrnn.core.runs import find_checkpoint
from charrnn.corpus.prepared import open_corpus
from charrnn.training.optim import learning_rate, run_progress
from charrnn.training.run import resume, resume_config, train

SMALL = {"model.hidden_size": 16, "train.batch_size": 4, "train.seq_len": 8,
         "train.eval_every": 1000, "train.log_every": 1, "train.warmup_steps": 2}



def test_resume_through_the_latest_link_keeps_the_link(corpus, workdir):
    r = run("train", corpus, *TINY, "--name", "first")
    assert r.exit_code == 0, r.output
    latest = workdir / "runs" / "latest"
    r = run("train", "--resume", "runs/latest", "--max-steps", "30")
    assert r.exit_code == 0, r.output
    assert os.readlink(latest) == "first"  # not a link to itself
    assert load_checkpoint(workdir / "runs" / "first" / "last.pt")["step"] == 30
    r = run("train", "--resume", "runs/latest", "--max-steps", "40")
    assert r.exit_code == 0, r.output
    assert run("sample", "-n", "5").exit_code == 0


def test_a_runs_directory_means_its_latest_run(corpus, workdir):
    assert run("train", corpus, *TINY, "--name", "a").exit_code == 0
    assert find_checkpoint("runs").resolve() == workdir / "runs" / "a" / "best.pt"
    r = run("sample", "runs", "-n", "5", "--seed", "1")
    assert r.exit_code == 0, r.output


def test_the_time_budget_is_the_runs_total_across_resumes():
    # The schedule follows the recorded training time: a resumed run continues the decay.
    cfg = load_config(overrides={"train.lr": 1.0, "train.min_lr": 0.0, "train.warmup_steps": 0,
                                 "train.max_time": "100s"}).train
    before = learning_rate(50, cfg, run_progress(50, 49.0, cfg, None, 100.0))
    after = learning_rate(51, cfg, run_progress(51, 50.0, cfg, None, 100.0))
    assert after <= before < 0.52


def test_an_interrupted_timed_run_resumes_with_what_is_left(corpus, workdir):
    data = open_corpus(corpus)
    cfg = load_config(overrides={**SMALL, "train.max_time": "4s"})
    # Ctrl-C 1.5 s into training (timed from its last start-up line, not from the imports
    # and set-up before it, which a busy machine slows).
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))

    def echo(line):
        if line.startswith("stops at"):
            timer.start()

    first = train(cfg, data, runs_dir="runs", name="t", echo=echo, progress=True)
    assert first.reason == "interrupted" and 1.4 < first.elapsed < 3, first
    second = resume(first.run_dir, echo=quiet, progress=False)
    assert second.reason == "max_time" and 3.5 <= second.elapsed < 5  # the total, not 1.5 + 4
    records = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").open()]
    lrs = [r["lr"] for r in records if "lr" in r and r["step"] > cfg.train.warmup_steps]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # the decay goes on: no jump back up
    # A run whose budget is spent trains nothing more; a new --max-time is a new total.
    assert resume(first.run_dir, echo=quiet, progress=False).step == second.step
    more = resume(first.run_dir, {"train": {"max_time": "6s"}}, echo=quiet, progress=False)
    assert 5.5 <= more.elapsed < 7 and more.step > second.step


def test_the_same_command_with_resume_continues(corpus, workdir):
    (workdir / "job.toml").write_text('[model]\nhidden_size = 32\n[train]\nbatch_size = 4\n'
                                      'seq_len = 16\nmax_steps = 20\neval_every = 10\n')
    job = ["train", corpus, "-c", "job.toml", "--name", "job"]
    assert run(*job).exit_code == 0
    r = run(*job, "--resume", "runs/job", "--max-steps", "30")
    assert r.exit_code == 0, r.output
    assert "stopped at step 30" in r.output
    # A setting the checkpoint fixes may be repeated, not changed.
    (workdir / "other.toml").write_text('[model]\nhidden_size = 64\n')
    r = run("train", corpus, "-c", "other.toml", "--resume", "runs/job")
    assert_clean_error(r, "model.hidden_size is 32 in the checkpoint, 64 in other.toml")
    r = run(*job, "--resume", "runs/job", "--hidden-size", "48")
    assert_clean_error(r, "model.hidden_size is 32 in the checkpoint, 48 given")


def test_resume_config_applies_only_explicit_resumable_keys():
    saved = load_config(overrides={"model.hidden_size": 32, "train.lr": 0.01})
    requested = load_config(overrides={"model.hidden_size": 32, "train.lr": 0.002,
                                       "train.max_steps": 9})
    cfg = resume_config(saved, requested, {"model.hidden_size", "train.lr"})
    assert (cfg.model.hidden_size, cfg.train.lr, cfg.train.max_steps) == (32, 0.002, 0)
    assert "lr" in RESUMABLE and "batch_size" not in RESUMABLE
    with pytest.raises(CheckpointError, match="train.batch_size"):
        resume_config(saved, load_config(overrides={"train.batch_size": 3}), {"train.batch_size"})


def test_presets_by_name_from_any_directory(corpus, workdir):
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    r = run("train", corpus, "-c", "tiny", "--max-steps", "3", "--name", "p")
    assert r.exit_code == 0, r.output
    config = (elsewhere / "runs" / "p" / "config.toml").read_text()
    assert "hidden_size = 64" in config  # tiny.toml's
    assert_clean_error(run("train", corpus, "-c", "huge"), "shipped presets: cpu, cpu-bf16, gpu, tiny")


def test_a_corpus_prepared_with_another_vocabulary_is_not_reused(workdir):
    (workdir / "a.txt").write_text(make_text(5000, seed=1) + "XYZ")
    (workdir / "b.txt").write_text(make_text(5000, seed=2) + "_")
    assert run("train", "a.txt", *TINY, "--name", "a").exit_code == 0
    r = run("train", "b.txt", *TINY, "--init-from", "runs/a", "--unk", "X", "--name", "tuned")
    assert r.exit_code == 0, r.output
    tuned_vocab = json.loads((workdir / "data" / "b" / "vocab.json").read_text())
    r = run("train", "b.txt", *TINY, "--name", "fresh")
    assert r.exit_code == 0, r.output
    assert "preparing" in r.output
    fresh = json.loads((workdir / "data" / "b" / "vocab.json").read_text())
    assert "_" in fresh["chars"] and fresh != tuned_vocab


def test_the_end_of_run_line(corpus, workdir):
    r = run("train", corpus, *TINY)
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("stopped at step 20 (max_steps) after ")
    assert "at step 20" in line and "chars/s" in line
    r = run("train", corpus, *TINY, "--set", "train.eval_every=1000", "--max-steps", "3",
            "--set", "train.log_every=1000")
    assert "not evaluated" not in r.output and "inf" not in r.output  # final eval ran


def test_the_first_interval_after_a_resume_averages_only_its_own_steps(corpus, workdir):
    from dataclasses import replace

    from charrnn.core.checkpoint import config_of
    from charrnn.training.trainer import Trainer

    class Recording(Trainer):
        losses = {}

        def train_step(self, lr):
            loss, bad = super().train_step(lr)
            self.losses[self.state.step + 1] = loss.item()
            return loss, bad

    data = open_corpus(corpus)
    cfg = load_config(overrides={"model.hidden_size": 16, "train.batch_size": 4,
                                 "train.seq_len": 16, "train.max_steps": 15,
                                 "train.log_every": 10, "train.eval_every": 100})
    first = train(cfg, data, runs_dir="runs", name="r", echo=quiet, progress=False)
    state = load_checkpoint(first.run_dir / "last.pt")
    resumed = config_of(state)
    resumed = replace(resumed, train=replace(resumed.train, max_steps=20))
    trainer = Recording(resumed, data, run_dir=first.run_dir, state=state, echo=quiet,
                        progress=False)
    trainer.run()
    [record] = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()
                if json.loads(line).get("step") == 20 and "train_loss" in line]
    own = [trainer.losses[s] for s in range(16, 21)]
    assert record["train_loss"] == pytest.approx(sum(own) / len(own), rel=1e-5)
