"""The first hour of a new user: the default run, defaults in --help, which model answered,
preparations that keep their vocabulary, help that renders, hints for typos."""

import re
from pathlib import Path

import pytest
from conftest import TINY, assert_clean_error, make_text, run

from charrnn.cli.train import DEFAULT_PATIENCE, _default_run
from charrnn.training.trainer import Trainer


def test_without_a_config_the_preset_for_the_device_runs_until_it_stops_improving():
    said = []
    name, overrides = _default_run({}, said.append)
    assert name == "cpu"  # no GPU on the machines the suite runs on
    assert overrides["train.patience"] == DEFAULT_PATIENCE and overrides["train.max_time"] == ""
    assert "cpu preset" in said[0] and "-c tiny|cpu|gpu|FILE" in said[0]
    name, overrides = _default_run({"train.max_steps": 7}, said.append)
    assert "train.patience" not in overrides and "limits given" in said[1]


def test_the_default_run_through_the_command_line(corpus, workdir):
    r = run("train", corpus, "--max-steps", "2", "--hidden-size", "16", "--name", "d")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("config: the cpu preset")
    assert "model: 2x16 GRU" in r.output  # cpu.toml's cell


def test_every_train_option_shows_its_default():
    out = run("train", "--help").output
    out = out[out.index("Options:"):]
    for flag, default in [("--hidden-size", "256"), ("--num-layers", "2"), ("--lr", "0.002"),
                          ("--reset-every", "16"), ("--eval-every", "500"),
                          ("--log-every", "50")]:
        block = out[out.index(flag):out.index(flag) + 200]
        assert re.search(rf"\[default:\s+{re.escape(default)}\]", block), (flag, block)


@pytest.mark.parametrize("command", ["prepare", "train", "sample", "eval", "plot"])
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
