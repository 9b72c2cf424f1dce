"""Files on disk as hostile input: checkpoints whose header lies, outputs that would replace
an input, run listings and plots of damaged runs, names with terminal escapes in them."""

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import assert_clean_error, run, snapshot

from charrnn.core.checkpoint import load_checkpoint, save_checkpoint
from charrnn.core.errors import CheckpointError
from charrnn.core.escape import shown
from charrnn.core.model import CharRNN
from charrnn.core.outputs import OutputError, guard_output
from charrnn.corpus.vocab import Vocab
from charrnn.inference.trained import model_checkpoint
from charrnn.serve.loaded import LoadedModel, Watcher

CHARS = list("abcde \n")
RECORDS = [{"step": s, "elapsed": s / 10, "train_loss": 2.0 - s / 100,
            **({"val_loss": 2.1 - s / 100} if s % 10 == 0 else {})} for s in range(1, 41)]


def tiny_state(hidden_size=8, num_layers=1, **changes):
    """A checkpoint as the library writes one (inference/trained.py), with `changes`."""
    model = CharRNN(len(CHARS), hidden_size, num_layers, "gru")
    state = model_checkpoint(model, Vocab(CHARS), step=40, best_val_loss=1.7)
    state.update(changes)
    return state


def make_run(path, state=None, records=RECORDS):
    path.mkdir(parents=True)
    save_checkpoint(path / "best.pt", state or tiny_state())
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def claims(**model):
    """A checkpoint whose config claims another model than its tensors hold."""
    state = tiny_state()
    state["config"]["model"].update(model)
    return state


# Each: a checkpoint that once crashed, hung or allocated; the words of its one line.
BAD_CHECKPOINTS = {
    "integer top-level key": (lambda: {**tiny_state(), 7: 1}, "key that is not text"),
    "integer weight keys": (lambda: tiny_state(model={0: torch.zeros(3)}), "key that is not text"),
    "integer config sections": (lambda: tiny_state(config={"model": 5}), "unusable config"),
    "integer vocabulary": (lambda: tiny_state(vocab={"chars": 5}), "no usable vocabulary"),
    "huge claimed model": (lambda: claims(hidden_size=200_000), "claims a 1x200,000 GRU"),
    "very many layers": (lambda: claims(num_layers=1_000_000), "4,000,002 weight tensors"),
}


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_a_lying_checkpoint_is_one_line_before_any_allocation(workdir, kind, monkeypatch):
    make, words = BAD_CHECKPOINTS[kind]
    save_checkpoint(workdir / "bad.pt", make())
    (workdir / "t.txt").write_text("abc abc\n")
    built = []
    monkeypatch.setattr(CharRNN, "from_config", lambda *a: built.append(a))
    for command in (["sample", "bad.pt", "-n", "5"], ["eval", "bad.pt", "t.txt"],
                    ["export", "bad.pt", "-o", "bad.onnx"]):
        assert_clean_error(run(*command), words)
    assert not built and not (workdir / "bad.onnx").exists()


def test_a_checkpoint_that_would_run_code_is_called_so(workdir):
    class Payload:  # os is a module torch blocks: its message says "unsupported GLOBAL"
        def __reduce__(self):
            return (os.system, ("true",))

    (workdir / "evil.pt").write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(workdir / "evil.pt")


# ----------------------------------------------------------------------------------------
# serve --watch: any file, one warning, and the next good one is loaded


def test_the_watcher_survives_every_bad_file_and_reloads_a_good_one(workdir, monkeypatch):
    run_dir = make_run(workdir / "runs" / "w")
    current = LoadedModel.load(run_dir / "best.pt", torch.device("cpu"))
    warnings, loaded = [], []
    watcher = Watcher(run_dir, workdir / "runs", current, loaded.append, warnings.append)
    bad = [make() for make, _ in BAD_CHECKPOINTS.values()]
    for k, state in enumerate(bad):
        save_checkpoint(run_dir / "best.pt", state)
        assert watcher.poll() is None
        assert watcher.poll() is None  # the same bad file: no second warning
        assert len(warnings) == k + 1 and "still serving the previous model" in warnings[-1]
    (run_dir / "best.pt").write_bytes(os.urandom(5000))
    assert watcher.poll() is None and len(warnings) == len(bad) + 1
    # A failure no check foresaw (torch itself running out of memory) is one warning too.
    save_checkpoint(run_dir / "best.pt", tiny_state(step=41))
    monkeypatch.setattr("charrnn.serve.loaded.load_checkpoint",
                        lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    assert watcher.poll() is None and "MemoryError" in warnings[-1]
    monkeypatch.undo()
    save_checkpoint(run_dir / "best.pt", tiny_state(step=99))
    new = watcher.poll()
    assert new is not None and new.step == 99 and loaded == [new]
    assert all("\n" not in w for w in warnings)


def test_the_watch_thread_outlives_an_error_in_its_poll(workdir, monkeypatch):
    run_dir = make_run(workdir / "runs" / "w")
    current = LoadedModel.load(run_dir / "best.pt", torch.device("cpu"))
    warned, polled = [], threading.Event()
    watcher = Watcher(run_dir, workdir / "runs", current, print, warned.append, interval=0.01)

    def poll():
        polled.set()
        raise RuntimeError("surprise")

    monkeypatch.setattr(watcher, "poll", poll)
    watcher.start()
    try:
        assert polled.wait(30)
        for _ in range(3000):  # bounded: until a warning or three, the thread still alive
            if len(warned) >= 2:
                break
            threading.Event().wait(0.01)
        assert len(warned) >= 2 and watcher.is_alive()
    finally:
        watcher.stop()
        watcher.join(30)
    assert "RuntimeError: surprise" in warned[0]


# ----------------------------------------------------------------------------------------
# the output guard


def test_export_never_replaces_the_checkpoint_it_exports(workdir):
    make_run(workdir / "runs" / "r")
    before = snapshot(workdir / "runs")
    for out in ("runs/r/best.pt", "runs/r/metrics.jsonl", "runs/r/config.toml"):
        assert_clean_error(run("export", "runs/r", "-o", out), "would")
    (workdir / "link").symlink_to(workdir / "runs" / "r")
    assert_clean_error(run("export", "runs/r", "-o", "link/best.pt"), "which this command reads")
    os.link(workdir / "runs" / "r" / "best.pt", workdir / "hard.pt")
    assert_clean_error(run("export", "runs/r/best.pt", "-o", "hard.pt"), "reads")
    assert snapshot(workdir / "runs") == before


def test_export_refuses_a_trailing_slash(workdir):
    make_run(workdir / "runs" / "r")
    (workdir / "x").mkdir()
    assert_clean_error(run("export", "runs/r", "-o", "x/out.onnx/"), "names a directory")
    assert list((workdir / "x").iterdir()) == []


def test_plot_never_replaces_the_metrics_it_draws(workdir):
    make_run(workdir / "runs" / "r")
    make_run(workdir / "runs" / "s")
    before = snapshot(workdir / "runs")
    for out in ("runs/r/metrics.jsonl", "runs/s/best.pt", "runs/r/"):
        assert_clean_error(run("plot", "runs/r", "-o", out))
    os.link(workdir / "runs" / "r" / "metrics.jsonl", workdir / "m.png")
    assert_clean_error(run("plot", "runs/r", "-o", "m.png"), "which this command reads")
    assert snapshot(workdir / "runs") == before


def test_the_guard_protects_prepared_directories_and_passes_plain_files(workdir):
    data = workdir / "data"
    (data / "novelty").mkdir(parents=True)
    (data / "meta.json").write_text("{}")
    for name in ("train.bin", "vocab.json", "meta.json", "novelty/index.bin"):
        with pytest.raises(OutputError, match="would replace"):
            guard_output(data / name)
    assert guard_output(data / "notes.png") == data / "notes.png"
    assert guard_output("-") == guard_output("-")


# ----------------------------------------------------------------------------------------
# runs and plot over damaged runs


def test_runs_lists_the_others_and_marks_a_bad_run(workdir):
    make_run(workdir / "runs" / "good")
    make_run(workdir / "runs" / "bad", {**tiny_state(), 7: 1})
    r = run("runs")
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert "damaged: has a key that is not text" in rows["bad"]
    assert "1x8 GRU" in rows["good"]


def test_names_with_terminal_escapes_are_printed_escaped(workdir):
    name = "evil\x1b]52;c;aGk=\x07\x1b[2J\rrun"
    make_run(workdir / "runs" / name, records=RECORDS + [{"step": 41, "note\x1b[31m": 1}])
    r = run("runs")
    assert r.exit_code == 0 and "\x1b" not in r.output and "\r" not in r.output
    assert shown(name) in r.stdout and "\\x1b]52" in r.stdout
    r = run("plot", f"runs/{name}", "-o", "out\x1b[1m.png")
    assert r.exit_code == 0 and "\x1b" not in r.output


def test_a_step_of_ten_to_the_300_is_skipped_and_counted(workdir):
    make_run(workdir / "runs" / "r", records=RECORDS + [{"step": 10**300, "val_loss": 1.0},
                                                        {"step": 1e308, "train_loss": 1.0}])
    r = run("runs")
    assert r.exit_code == 0 and "0000000000" not in r.output
    assert "2 record(s) with out-of-range numbers" in r.stderr
    widths = {len(line) for line in r.stdout.splitlines()[:2]}
    assert max(widths) < 130
    r = run("plot", "runs/r", "-o", "r.png")
    assert r.exit_code == 0, r.output
    assert "2 record(s) with out-of-range numbers" in r.stderr


def test_plot_and_runs_refuse_a_fifo_metrics_file(workdir):
    run_dir = make_run(workdir / "runs" / "f")
    (run_dir / "metrics.jsonl").unlink()
    os.mkfifo(run_dir / "metrics.jsonl")
    assert_clean_error(run("plot", run_dir, "-o", "f.png"), "not a regular file")
    r = run("runs")
    assert r.exit_code == 0 and "not a regular file" in r.stderr


def test_plot_thins_a_long_metrics_file_and_reads_an_endless_line_in_bounds(workdir):
    from charrnn.training.plot import read_curves

    records = [{"step": s, "train_loss": 1.0 + 1 / s} for s in range(1, 50_001)]
    run_dir = make_run(workdir / "runs" / "long", records=records)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write("x" * 3_000_000 + "\n" + json.dumps({"step": 50_001, "train_loss": 1.0}) + "\n")
    curves, reader = read_curves(run_dir, limit=1000)
    steps = [s for s, _, _ in curves["train"]]
    assert 1000 <= len(steps) < 2000 and steps == sorted(steps)
    assert steps[0] == 1 and steps[-1] > 45_000  # spread over the whole run
    assert reader.damaged == 1


def test_running_out_of_memory_while_reading_names_the_file(workdir, monkeypatch):
    run_dir = make_run(workdir / "runs" / "m")
    monkeypatch.setattr("charrnn.training.metrics_file.MetricsRecord.from_json",
                        lambda line: (_ for _ in ()).throw(MemoryError()))
    assert_clean_error(run("plot", run_dir, "-o", "m.png"), "out of memory while reading",
                       "metrics.jsonl")


def test_shown_escapes_controls_only():
    assert shown("café ☕ tab\there") == "café ☕ tab\\there"
    assert shown("\x1b[2J\r\x9b\u202e") == "\\x1b[2J\\r\\x9b\\u202e"
    assert shown(os.fsdecode(b"bad\xff")) == "bad\\udcff"


def test_file_names_in_prepare_eval_novelty_and_errors_are_escaped(workdir):
    pytest.importorskip("pydivsufsort")
    from conftest import make_text

    corpus = workdir / "c\x1b[2J.txt"
    corpus.write_text(make_text(20_000))
    r = run("prepare", corpus)
    assert r.exit_code == 0 and "\x1b" not in r.output and "c\\x1b[2J" in r.output
    text = workdir / "t\x1b]52;c;x\x07.txt"
    text.write_text("abc abc\n" * 20)
    save_checkpoint(workdir / "m.pt", tiny_state())
    r = run("eval", "m.pt", text)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "t\\x1b]52;c;x\\x07.txt" in r.output
    r = run("novelty", "--data", "data/c\x1b[2J", text, "-q")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "t\\x1b]52" in r.output
    assert_clean_error(run("sample", "gone\x1b[2J\r.pt"), "gone\\x1b[2J\\r.pt")


CTRL_C_AT_IMPORT = """
import builtins
real = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "torch":
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupted
from charrnn.cli import main
"""


def test_ctrl_c_during_start_up_imports_is_one_line():
    r = subprocess.run([sys.executable, "-c", CTRL_C_AT_IMPORT], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 130 and r.stderr == "interrupted\n", r.stderr


def test_prepare_from_stdin_removes_its_spool_on_sigterm(tmp_path):
    spool = tmp_path / "tmp"
    spool.mkdir()
    env = {**os.environ, "TMPDIR": str(spool)}
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "prepare", "-", "-o",
                             str(tmp_path / "out")], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"some text on standard input\n" * 1000)
        proc.stdin.flush()  # left open: the spool waits for more
        for _ in range(1200):  # bounded: until the spool file is there
            if list(spool.glob(".stdin-*.tmp")) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert list(spool.glob(".stdin-*.tmp")), "the spool never appeared"
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        proc.kill()
        proc.stdin.close()
        proc.wait()
    assert proc.returncode != 0
    assert list(spool.iterdir()) == [] and b"Traceback" not in proc.stderr.read()
