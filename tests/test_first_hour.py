"""The first hour of a new user: the default run, defaults in --help, which model answered,
preparations that keep their vocabulary, help that renders, hints for typos."""

import importlib
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_clean_error, make_text, run

import charrnn.core.precision as precision_module
from charrnn.cli.train import DEFAULT_PATIENCE, _default_run
from charrnn.core.presets import choose_preset
from charrnn.training.trainer import Trainer


CPU = torch.device("cpu")


@pytest.mark.parametrize("units, amx, chars, preset", [
    (False, False, 1_000_000, "cpu"), (True, False, 1_000_000, "cpu-bf16"),
    (True, False, 4_700_000, "cpu"), (True, True, 1_000_000, "cpu"),
    (True, False, None, "cpu")])
def test_the_default_preset_follows_from_facts_never_from_a_timing(monkeypatch, units, amx,
                                                                   chars, preset):
    def no_timing(*args, **kwargs):
        raise AssertionError("the preset must not depend on a timing")

    monkeypatch.setattr(precision_module, "measure_speedup", no_timing)
    monkeypatch.setattr(precision_module, "cached_speedup", no_timing)
    name, why = choose_preset(CPU, chars, bf16_units=units, amx=amx)
    assert name == preset and why
    assert choose_preset(torch.device("cuda"), chars)[0] == "gpu"


def test_without_a_config_the_preset_runs_until_it_stops_improving(monkeypatch):
    cli_train = importlib.import_module("charrnn.cli.train")  # the module, not the command
    monkeypatch.setattr(cli_train, "choose_preset", lambda device, chars: ("cpu", "no GPU"))
    said = []
    name, overrides = _default_run({}, said.append, None)
    assert name == "cpu"  # no GPU on the machines the suite runs on
    assert overrides["train.patience"] == DEFAULT_PATIENCE and overrides["train.max_time"] == ""
    assert "the cpu preset" in said[0] and "-c tiny|cpu|cpu-bf16|gpu|FILE" in said[0]
    name, overrides = _default_run({"train.max_steps": 7}, said.append, None)
    assert "train.patience" not in overrides and "limits given" in said[1]


def test_the_default_run_through_the_command_line_sizes_the_preset_by_the_text(
        corpus, workdir, monkeypatch):
    cli_train = importlib.import_module("charrnn.cli.train")  # the module, not the command
    seen = []

    def choose(device, chars):
        seen.append(chars)
        return "cpu", "no GPU here"

    monkeypatch.setattr(cli_train, "choose_preset", choose)
    r = run("train", corpus, "--max-steps", "2", "--hidden-size", "16", "--name", "d")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("preparing") and lines[1].startswith("config: the cpu preset")
    assert "model: 2x16 GRU" in r.output  # cpu.toml's cell
    assert seen == [18_000]  # the training split of the 20,000 characters


def test_every_train_option_shows_its_default():
    out = run("train", "--help").output
    out = out[out.index("Options:"):]
    for flag, default in [("--hidden-size", "256"), ("--num-layers", "2"), ("--lr", "0.002"),
                          ("--reset-every", "16"), ("--eval-every", "500"),
                          ("--log-every", "50")]:
        block = out[out.index(flag):out.index(flag) + 200]
        assert re.search(rf"\[default:\s+{re.escape(default)}\]", block), (flag, block)


@pytest.mark.parametrize("command", ["prepare", "train", "sample", "eval", "plot", "runs"])
def test_help_renders_as_written(command):
    out = run(command, "--help").output
    prose = out[:out.index("Options:")]
    for line in prose.splitlines():
        if not line.strip().startswith("charrnn") and not line.startswith("Usage"):
            assert not re.search(r"\S {3,}\S", line), line  # no stray runs of spaces
    if command == "sample":
        assert "--stop '\\n\\n'" in out


def test_latest_is_the_new_run_from_its_start_and_sample_says_which(corpus, workdir,
                                                                    monkeypatch):
    assert run("train", corpus, *TINY, "--name", "old").exit_code == 0
    seen = []
    original = Trainer.run

    def recording(self, *args, **kwargs):
        seen.append(Path("runs/latest").resolve().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", recording)
    assert run("train", corpus, *TINY, "--name", "new").exit_code == 0
    assert seen == ["new"]
    r = run("sample", "-n", "5")
    assert r.exit_code == 0 and "model: runs/new/best.pt, step 20" in r.stderr
    assert "model:" not in run("sample", "-n", "5", "-q").stderr


def test_a_latest_run_without_a_checkpoint_yet_says_so(corpus, workdir):
    (workdir / "runs" / "fresh").mkdir(parents=True)
    (workdir / "runs" / "fresh" / "config.toml").write_text("")
    (workdir / "runs" / "latest").symlink_to("fresh")
    assert_clean_error(run("sample"), "has no checkpoint yet", "wait for it")


def test_prepare_never_silently_replaces_another_vocabulary(workdir):
    (workdir / "a.txt").write_text(make_text(5000))
    (workdir / "b.txt").write_text(make_text(5000).upper() + "\u00e9\u00e8")
    assert run("prepare", "a.txt", "-o", "data/x").exit_code == 0
    before = (workdir / "data/x/vocab.json").read_text()
    assert_clean_error(run("prepare", "b.txt", "-o", "data/x"), "another vocabulary",
                       "choose another -o", "--vocab data/x/vocab.json")
    assert (workdir / "data/x/vocab.json").read_text() == before
    # The same text again (another split) is fine: the vocabulary is the same.
    assert run("prepare", "a.txt", "-o", "data/x", "--test-frac", "0.1").exit_code == 0


def test_a_typo_in_a_config_key_gets_a_suggestion(corpus, workdir):
    assert_clean_error(run("train", corpus, "--set", "model.hiden_size=3"),
                       "did you mean hidden_size?")
    (workdir / "t.toml").write_text("[train]\nmax_time = 3m\n")
    assert_clean_error(run("train", corpus, "-c", "t.toml"), 'quote the value: max_time = "3m"')


def test_plot_with_no_run_draws_the_latest(corpus, workdir):
    pytest.importorskip("matplotlib")
    assert run("train", corpus, *TINY, "--name", "p").exit_code == 0
    r = run("plot", "-o", "latest.png")
    assert r.exit_code == 0, r.output
    assert (workdir / "latest.png").read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------------------
# progress outside train, the list of runs, the time left


class CountingBar:
    """A bar that records what it is told."""

    def __init__(self):
        self.total, self.done = None, 0

    def update(self, n):
        self.done += n

    def reset(self, total=None):
        self.total, self.done = total, 0


@pytest.mark.parametrize("batch_size", [1, 4])
def test_eval_progress_counts_every_character_it_reads(batch_size):
    import numpy as np
    import torch

    from charrnn.core.model import CharRNN
    from charrnn.inference.evaluate import evaluate
    from charrnn.inference.score import dynamic_score

    torch.manual_seed(0)
    model = CharRNN(vocab_size=7, hidden_size=8, num_layers=1, cell="gru")
    ids = np.random.default_rng(0).integers(0, 7, 997).astype(np.uint8)
    bar = CountingBar()
    evaluate(model, ids, batch_size, 16, "cpu", context=50, bar=bar)
    assert bar.total == bar.done
    # every prediction once, plus each stream's burn-in but the first one's
    assert bar.total >= len(ids) - 1 and (batch_size == 1) == (bar.total == len(ids) - 1)
    bar = CountingBar()
    dynamic_score(model, ids, 16, "cpu", bar=bar)
    assert bar.done == len(ids) - 1


def _on_a_terminal(*args, cwd):
    """Run charrnn with stderr on a pseudo-terminal: (exit code, what the terminal got)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    import threading

    primary, secondary = pty.openpty()
    # A terminal of 24 x 100: with no size, tqdm draws a bar of no width.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    got = []

    def drain():
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:
                return
            if not data:
                return
            got.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    p = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=secondary, timeout=120)
    os.close(secondary)
    reader.join(10)
    os.close(primary)
    return p.returncode, b"".join(got).decode("utf-8", "replace")


def test_eval_and_many_samples_show_a_bar_on_a_terminal_and_not_under_q(corpus, workdir):
    assert run("train", corpus, *TINY, "--name", "t").exit_code == 0
    # A short text: the bar is the point, not the score (dynamic evaluation of the whole
    # corpus took most of this test's time).
    (workdir / "short.txt").write_text(make_text(2000, seed=3), encoding="utf-8")
    code, shown = _on_a_terminal("eval", "short.txt", "--dynamic", cwd=workdir)
    assert code == 0 and "eval short.txt" in shown and "dynamic short.txt" in shown
    assert "char/s" in shown
    code, shown = _on_a_terminal("eval", "short.txt", "-q", cwd=workdir)
    assert code == 0 and "char/s" not in shown
    code, shown = _on_a_terminal("sample", "--num-samples", "3", "-n", "300", cwd=workdir)
    assert code == 0 and "3 samples" in shown and "model: " in shown
    code, shown = _on_a_terminal("sample", "--num-samples", "3", "-n", "300", "-q", cwd=workdir)
    assert code == 0 and shown.strip() == ""


def test_runs_lists_every_run_with_its_figures(workdir):
    import json

    (workdir / "a.txt").write_text(make_text(20_000, seed=1), encoding="utf-8")
    (workdir / "b.txt").write_text(make_text(20_000, seed=2), encoding="utf-8")
    assert run("train", "a.txt", *TINY, "--name", "ra").exit_code == 0
    assert run("train", "b.txt", *TINY[:-5], "40", *TINY[-4:], "--name", "rb").exit_code == 0
    listed = json.loads(run("runs", "--json").output)
    assert [r["name"] for r in listed] == ["ra", "rb"]  # oldest first
    ra, rb = listed
    assert (ra["corpus"], rb["corpus"]) == ("a", "b") and rb["latest"] and not ra["latest"]
    assert (ra["steps"], rb["steps"]) == (20, 40) and rb["model"] == "2x32 GRU"
    for r in listed:  # the best validation loss of the whole run, from its metrics
        lines = (workdir / "runs" / r["name"] / "metrics.jsonl").read_text().splitlines()
        losses = [json.loads(x)["val_loss"] for x in lines if "val_loss" in x]
        assert r["best_val_loss"] == min(losses) and r["training_seconds"] > 0
    by_loss = [r["name"] for r in json.loads(run("runs", "--json", "--sort", "loss").output)]
    assert by_loss == [r["name"] for r in sorted(listed, key=lambda r: r["best_val_loss"])]
    only_a = json.loads(run("runs", "--json", "--corpus", "A").output)
    assert [r["name"] for r in only_a] == ["ra"]
    table = run("runs").output.splitlines()
    assert table[0].split()[:3] == ["run", "corpus", "model"]
    assert table[2].startswith("*") and "rb" in table[2] and "40" in table[2]
    # A damaged checkpoint does not hide the run or stop the listing.
    (workdir / "runs" / "ra" / "last.pt").write_bytes(b"not a checkpoint")
    (workdir / "runs" / "ra" / "best.pt").write_bytes(b"not a checkpoint")
    r = run("runs")
    assert r.exit_code == 0 and "ra: last.pt is damaged" in r.stderr and "rb" in r.stdout
    assert_clean_error(run("runs", "--runs", "elsewhere"), "no runs directory elsewhere")


def test_time_left_counts_the_final_evaluation_and_the_limit_says_training_time():
    from charrnn.core.config import TrainConfig
    from charrnn.training.budget import Budget
    from charrnn.training.setup import limits_line
    from charrnn.training.state import TrainingState

    state = TrainingState(step=90)
    budget = Budget(TrainConfig(max_steps=100), 1000, state)
    assert budget.time_left(10.0) == pytest.approx(1.0)
    assert budget.time_left(10.0, to_come=58.0) == pytest.approx(59.0)
    line = limits_line(TrainConfig(max_time="3m", patience=5))
    assert "3m of training time" in line and "final evaluation fits inside" in line
    assert "5 evaluations" in line
    assert "until Ctrl-C" in limits_line(TrainConfig(patience=0))


# ----------------------------------------------------------------------------------------
# what a new user tripped over


def test_the_bar_puts_the_time_left_first_and_updates_the_val_bpc(monkeypatch):
    import io
    import sys

    from charrnn.training.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    with Progress(True, 0, 4000) as progress:
        progress.report(1800, 1.2345, None, 27_120.0, 60.0, 192.0)
        assert progress.postfix == ["3m12s left", "loss 1.2345", "27,120 chars/s"]
        progress.show_val(2.11)
        assert progress.postfix == ["3m12s left", "loss 1.2345", "val bpc 2.110",
                                    "27,120 chars/s"]
        progress.bar.refresh()
    line = screen.getvalue().split("\r")[-2]
    assert line.index("left") < line.index("loss") < line.index("val bpc")


def test_a_run_that_died_before_saving_is_told_apart_from_one_still_starting(workdir):
    from charrnn.core.errors import CheckpointError
    from charrnn.core.files import DirectoryLock
    from charrnn.core.runs import find_checkpoint

    run_dir = workdir / "runs" / "dead"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text("")
    with DirectoryLock(run_dir, "run directory"):
        with pytest.raises(CheckpointError, match="no checkpoint yet.*wait for it"):
            find_checkpoint(run_dir)
    with pytest.raises(CheckpointError, match="no training is running in it"):
        find_checkpoint(run_dir)


def test_a_resume_with_its_time_spent_says_which_flag_gives_more(corpus, workdir):
    unlimited = [a if a != "20" else "100000" for a in TINY]  # the time limit comes first
    assert run("train", corpus, *unlimited, "--name", "t", "--max-time", "1s").exit_code == 0
    r = run("train", "--resume", "runs/t", "--max-steps", "200000")
    assert r.exit_code == 0, r.output
    assert "nothing to train" in r.output and "larger --max-time" in r.output


def test_train_goes_on_when_its_output_is_closed(corpus, workdir):
    import subprocess
    import sys

    # Two steps: the closed output is met at the first line, and the run must still finish.
    command = [sys.executable, "-m", "charrnn", "train", str(corpus), *TINY, "--max-steps", "2",
               "--name", "p"]
    # `true` reads nothing and is gone long before charrnn has imported torch.
    p = subprocess.run(f"{' '.join(command)} | true", shell=True, cwd=workdir,
                       capture_output=True, text=True, timeout=300)
    assert "an output was closed; training goes on" in p.stderr
    assert "Traceback" not in p.stderr
    assert (workdir / "runs" / "p" / "last.pt").is_file()  # the run finished and saved
    # The same with stderr into the same closed pipe: still trains to the end, silently.
    p = subprocess.run(f"{' '.join(command[:-1])} q 2>&1 | true", shell=True, cwd=workdir,
                       capture_output=True, text=True, timeout=300)
    assert (workdir / "runs" / "q" / "last.pt").is_file()


def test_a_bad_escape_is_shown_as_typed(corpus, workdir):
    assert run("train", corpus, *TINY, "--name", "t").exit_code == 0
    assert_clean_error(run("sample", "--stop", "a\\q"), "--stop 'a\\q': bad escape at '\\q'")
