"""Faults injected on purpose: crafted checkpoints and prepared directories, concurrent
writers, data changing under a job, writes that fail, signals during a save, links planted
in a run, values out of range. Each must end in one line, a non-zero exit and nothing lost."""

import copy
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_clean_error, make_text, quiet, run, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.errors import CharRNNError, CheckpointError, DataError
from charrnn.core.files import DirectoryLock, atomic_write
from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData, open_corpus
from charrnn.inference.trained import model_from_checkpoint
from charrnn.training.metrics_file import MetricsLog, MetricsRecord
from charrnn.training.run import train
from charrnn.training.trainer import Trainer

CHARRNN = [sys.executable, "-m", "charrnn"]



@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A tiny run trained once for the module: corpus.txt, data/corpus/ and runs/good/."""
    root = tmp_path_factory.mktemp("trained")
    (root / "corpus.txt").write_text(make_text(20_000), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        r = run("train", "corpus.txt", *TINY, "--name", "good")
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def trained(trained_once, corpus, workdir):
    """runs/good in this test's own directory, a copy of the module's run that the test may
    damage, beside corpus.txt prepared here as training it would have (its checkpoints still
    name the module's prepared data, the same text, which no test changes)."""
    open_corpus(corpus)
    shutil.copytree(trained_once / "runs", workdir / "runs", symlinks=True)
    return workdir / "runs" / "good"


def crafted(trained, workdir, change, name="crafted"):
    """A copy of the run with its last.pt changed by `change(state)`."""
    state = load_checkpoint(trained / "last.pt")
    change(state)
    run_dir = workdir / "runs" / name
    run_dir.mkdir()
    torch.save(state, run_dir / "last.pt")
    return run_dir


# ----------------------------------------------------------------------------------------
# 1. files we read are validated before use


def _first_moment(state):
    return next(iter(state["optimizer"]["state"].values()))


CHECKPOINT_FAULTS = {
    "optimizer moment of the wrong shape": (
        lambda s: _first_moment(s).__setitem__("exp_avg", torch.zeros(3)), "optimizer state"),
    "optimizer state for no parameter": (
        lambda s: s["optimizer"]["state"].__setitem__(99, {}), "for no parameter"),
    "optimizer setting not a number": (
        lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", "fast"), "setting lr"),
    "config is None": (lambda s: s.__setitem__("config", None), "no config"),
    "hidden state of the wrong shape": (
        lambda s: s.__setitem__("hidden", [torch.zeros(1, 2, 3)] * 2), "hidden state"),
    "random state damaged": (
        lambda s: s["rng"].__setitem__("torch", torch.zeros(7, dtype=torch.uint8)),
        "random state is damaged"),
    "random state missing": (lambda s: s.__setitem__("rng", None), "no valid random state"),
    "weights of the wrong shape": (
        lambda s: s["model"].__setitem__("head.bias", torch.zeros(2)), "head.bias has shape"),
    "weights not finite": (
        lambda s: s["model"]["head.weight"].fill_(float("nan")), "NaN or infinite"),
    "step negative": (lambda s: s.__setitem__("step", -4), "step is -4"),
    "vocabulary not characters": (
        lambda s: s.__setitem__("vocab", {"chars": [1, 2]}), "vocabulary"),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_crafted_checkpoints_are_refused_on_resume(trained, workdir, fault):
    change, message = CHECKPOINT_FAULTS[fault]
    run_dir = crafted(trained, workdir, change)
    before = snapshot(workdir)
    assert_clean_error(run("train", "--resume", run_dir), message)
    assert snapshot(workdir) == before


@pytest.mark.parametrize("fault", ["weights of the wrong shape", "weights not finite",
                                   "config is None", "vocabulary not characters"])
def test_crafted_checkpoints_are_refused_by_sample(trained, workdir, fault):
    change, message = CHECKPOINT_FAULTS[fault]
    run_dir = crafted(trained, workdir, change)
    assert_clean_error(run("sample", run_dir), message)


def test_a_wrong_moment_never_reaches_the_fused_kernel(trained, workdir):
    # Before the checks this was a segmentation fault inside _fused_adam: run it in a
    # process of its own so that a crash shows as a crash.
    change, _ = CHECKPOINT_FAULTS["optimizer moment of the wrong shape"]
    run_dir = crafted(trained, workdir, change)
    proc = subprocess.run(CHARRNN + ["train", "--resume", str(run_dir)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "optimizer state" in proc.stderr


@pytest.mark.parametrize("content, message", [
    (b"x", "not a readable checkpoint"),
    (None, "no valid format version"),
])
def test_damaged_checkpoint_files_get_the_right_message(workdir, content, message):
    path = workdir / "c.pt"
    if content is None:
        torch.save({"kind": "charrnn", "format_version": "2"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                   st.text(max_size=3), st.lists(st.integers(0, 3), max_size=3),
                   st.builds(torch.zeros, st.integers(0, 4)))


def _paths(obj, prefix=()):
    """Every key path into nested dicts and lists."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _replace(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    if isinstance(obj, tuple):
        return False
    obj[path[-1]] = value
    return True


@pytest.fixture(scope="module")
def good_state(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    (root / "c.txt").write_text(make_text(6000), encoding="utf-8")
    data = open_corpus(root / "c.txt", root / "data")
    cfg_args = {"model": {"hidden_size": 8, "num_layers": 1},
                "train": {"batch_size": 2, "seq_len": 8, "max_steps": 3, "eval_every": 3}}
    from charrnn.core.config_files import build_config
    result = train(build_config(cfg_args), data, runs_dir=root / "runs", echo=quiet,
                   progress=False)
    return load_checkpoint(result.run_dir / "last.pt"), data


@settings(max_examples=int(os.environ.get("FAULT_EXAMPLES", 60)), deadline=None,
          derandomize="FAULT_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_damaged_part_of_a_checkpoint_is_refused_or_harmless(good_state, data):
    state, prepared = good_state
    state = copy.deepcopy(state)
    # Model sizes are left out: a larger model that fits in memory is no fault, only slow to
    # build (sizes beyond the memory are refused in test_values_out_of_range_are_refused).
    paths = sorted((p for p in _paths(state) if p[:2] != ("config", "model")), key=repr)
    path = data.draw(st.sampled_from(paths))
    if not _replace(state, path, data.draw(LEAVES)):
        return
    from charrnn.core.checkpoint import config_of
    for attempt in (lambda: model_from_checkpoint(state),
                    lambda: Trainer(config_of(state), prepared, state=state, echo=quiet,
                                    progress=False)):
        try:
            attempt()
        except CharRNNError:
            pass  # refused with a message: fine; anything else fails the test


META_FAULTS = {
    "not an object": (lambda m: [1, 2], "not a JSON object"),
    "unknown dtype": (lambda m: {**m, "dtype": "float64"}, "dtype 'float64'"),
    "vocab_size disagrees": (lambda m: {**m, "vocab_size": 3}, "vocab_size 3"),
    "splits not counts": (lambda m: {**m, "splits": {"train": "many"}}, "'splits'"),
    "options not ours": (lambda m: {**m, "options": {"lower": "yes"}}, "'options'"),
    "version as text": (lambda m: {**m, "format_version": "1"}, "format '1'"),
}


@pytest.mark.parametrize("fault", list(META_FAULTS))
def test_crafted_meta_json_is_refused(corpus, workdir, fault):
    change, message = META_FAULTS[fault]
    prepare([str(corpus)], "data/corpus")
    meta = json.loads(Path("data/corpus/meta.json").read_text())
    Path("data/corpus/meta.json").write_text(json.dumps(change(meta)))
    assert_clean_error(run("train", "data/corpus", *TINY), message)
    assert not Path("runs").exists()


def test_a_vocabulary_shorter_than_the_ids_is_refused(corpus, workdir):
    prepare([str(corpus)], "data/corpus")
    vocab = json.loads(Path("data/corpus/vocab.json").read_text())
    meta = json.loads(Path("data/corpus/meta.json").read_text())
    vocab = {"chars": vocab["chars"][:-3]}
    meta["vocab_size"] = len(vocab["chars"])
    Path("data/corpus/vocab.json").write_text(json.dumps(vocab))
    Path("data/corpus/meta.json").write_text(json.dumps(meta))
    assert_clean_error(run("train", "data/corpus", *TINY), "ids beyond its vocabulary")


@settings(max_examples=int(os.environ.get("FAULT_EXAMPLES", 60)), deadline=None,
          derandomize="FAULT_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["format_version", "vocab_size", "dtype", "byteorder", "chars",
                            "splits", "options", "val_frac"]),
       value=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                    st.text(max_size=4)),
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=6))
def test_any_damaged_meta_json_is_refused_or_harmless(tmp_path_factory, key, value):
    root = tmp_path_factory.mktemp("meta")
    (root / "c.txt").write_text(make_text(3000), encoding="utf-8")
    prepare([str(root / "c.txt")], root / "d")
    meta = json.loads((root / "d" / "meta.json").read_text())
    meta[key] = value
    (root / "d" / "meta.json").write_text(json.dumps(meta))
    try:
        data = PreparedData(root / "d")
        for split in ("train", "val"):
            ids = data.split(split)
            assert int(ids.max()) < len(data.vocab)
    except DataError:
        pass


# ----------------------------------------------------------------------------------------
# 2. one writer per thing


def test_concurrent_preparers_of_one_output_take_turns(workdir):
    big = workdir / "big.txt"
    big.write_text(make_text(3_000_000), encoding="utf-8")
    procs = [subprocess.Popen(CHARRNN + ["prepare", str(big), "-o", "data/big"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    data = PreparedData("data/big")
    assert sum(len(data.split(s)) for s in ("train", "val")) == 3_000_000
    assert sorted(p.name for p in Path("data/big").iterdir()) == [
        ".lock", "meta.json", "train.bin", "val.bin", "vocab.json"]


def test_a_second_trainer_of_a_run_is_refused_naming_the_holder(trained, workdir):
    before = (trained / "last.pt").read_bytes()
    with DirectoryLock(trained, "run directory"):
        assert_clean_error(run("train", "--resume", trained, "--max-steps", "40"),
                           "is in use by process", str(os.getpid()))
    assert (trained / "last.pt").read_bytes() == before
    r = run("train", "--resume", trained, "--max-steps", "30")  # free again
    assert r.exit_code == 0, r.output


# ----------------------------------------------------------------------------------------
# 3. the data under a running job


@pytest.mark.parametrize("change", ["new character", "longer", "same size, other text"])
def test_a_source_changed_between_passes_is_refused(corpus, workdir, monkeypatch, change):
    import charrnn.corpus.prepare as prep

    prepare([str(corpus)], "data/corpus")
    before = snapshot(workdir / "data")
    count = prep.count

    def count_then_change(sources, *args):
        result = count(sources, *args)
        text = corpus.read_text()
        if change == "new character":
            text += "Zürich"
        elif change == "longer":
            text += text[:500]
        else:
            text = text[::-1]
        corpus.write_text(text)
        return result

    monkeypatch.setattr(prep, "count", count_then_change)
    with pytest.raises(DataError, match="changed while it was being prepared"):
        prepare([str(corpus)], "data/corpus")
    assert snapshot(workdir / "data") == before


def test_a_split_truncated_under_a_running_job_changes_nothing(corpus, workdir):
    data = open_corpus(corpus)
    from test_train import small_config
    trainer = Trainer(small_config(**{"train.max_steps": 12}), data, echo=quiet, progress=False)
    for split in ("train", "val"):
        os.truncate(data.root / f"{split}.bin", 10)
    result = trainer.run()
    assert result.reason == "max_steps" and math.isfinite(result.best_val_loss)
    with pytest.raises(DataError, match="has 10 bytes"):
        PreparedData(data.root).split("train")
    with pytest.raises(DataError, match="has 10 bytes"):
        PreparedData(data.root).split("train", mapped=True)


def test_a_vocabulary_that_is_not_text_changes_nothing(corpus, workdir):
    prepare([str(corpus)], "data/corpus")
    before = snapshot(workdir / "data")
    Path("bad.json").write_text('{"chars": ["a", "\\ud800"]}')
    assert_clean_error(run("prepare", corpus, "--vocab", "bad.json", "--unk", "a",
                           "-o", "data/corpus"), "surrogate")
    assert snapshot(workdir / "data") == before


def test_interrupted_stdin_leaves_no_spool_file(workdir, monkeypatch):
    import tempfile

    spool = workdir / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))

    class Endless:
        def __init__(self):
            self.reads = 0

        def read(self, n=-1):
            self.reads += 1
            if self.reads > 3:
                raise KeyboardInterrupt
            return b"a" * 4096

    monkeypatch.setattr("sys.stdin", type("S", (), {"buffer": Endless()})())
    with pytest.raises(KeyboardInterrupt):
        prepare(["-"], "data/stdin")
    assert list(spool.iterdir()) == []


# ----------------------------------------------------------------------------------------
# 4. writes that fail


def test_a_file_size_limit_during_a_save_keeps_the_last_checkpoint(trained, workdir):
    before = (trained / "last.pt").read_bytes()
    limit = len(before) // 2

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(CHARRNN + ["train", "--resume", str(trained), "--max-steps", "30"],
                          capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "could not write" in err and "Traceback" not in err, err
    assert (trained / "last.pt").read_bytes() == before
    assert not list(trained.glob(".*.tmp"))


def test_a_full_disk_under_the_metrics_stops_with_one_line(corpus, workdir):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(CharRNNError, match="no space left"):
        with MetricsLog(Path("/dev/full")) as log:
            log.write(MetricsRecord(step=1))


@pytest.mark.parametrize("failure, message", [
    (OSError(28, "No space left on device"), "no space left"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos"), "write failed"),
    (PermissionError(13, "Permission denied"), "Permission denied"),
])
def test_failed_writes_are_one_line_and_keep_the_old_file(workdir, failure, message):
    Path("f").write_bytes(b"good")

    def fail(f):
        f.write(b"half")
        raise failure

    with pytest.raises(CharRNNError, match=message):
        atomic_write("f", fail)
    assert Path("f").read_bytes() == b"good" and sorted(os.listdir()) == ["f"]


def test_a_vanished_run_directory_is_one_line(workdir):
    with pytest.raises(CharRNNError, match="could not write"):
        atomic_write(workdir / "gone" / "last.pt", lambda f: f.write(b"x"))


def test_a_signal_during_a_write_waits_for_the_file(workdir):
    got = []
    previous = signal.signal(signal.SIGINT, lambda *a: got.append(Path("f").read_bytes()))
    try:
        def write(f):
            f.write(b"first half ")
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            f.write(b"second half")

        atomic_write("f", write)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert got and got[0] == b"first half second half"  # handled once the file was complete


def test_stale_temporary_files_go_when_the_run_continues(trained, workdir):
    stale = trained / ".best.pt.k2j3h4.tmp"
    stale.write_bytes(b"\0" * 1000)
    r = run("train", "--resume", trained, "--max-steps", "25")
    assert r.exit_code == 0, r.output
    assert not stale.exists()


# ----------------------------------------------------------------------------------------
# 5. nothing outside the run is touched


def test_links_in_a_run_are_replaced_not_followed(trained, workdir):
    outside = workdir / "outside"
    outside.mkdir()
    for name in ("config.toml", "metrics.jsonl"):
        (outside / name).write_text("mine\n")
        (trained / name).unlink()
        (trained / name).symlink_to(outside / name)
    r = run("train", "--resume", trained, "--max-steps", "30")
    assert r.exit_code == 0, r.output
    for name in ("config.toml", "metrics.jsonl"):
        assert (outside / name).read_text() == "mine\n"
        assert not (trained / name).is_symlink() and (trained / name).stat().st_size > 0


def test_a_regular_file_named_latest_is_left_alone(corpus, workdir):
    Path("runs").mkdir()
    Path("runs/latest").write_text("my notes\n")
    r = run("train", corpus, *TINY, "--name", "a")
    assert r.exit_code == 0, r.output
    assert Path("runs/latest").read_text() == "my notes\n"


# ----------------------------------------------------------------------------------------
# 6. values


VALUE_CASES = [
    (["train", "corpus.txt", "--seed", str(2**70)], "train.seed"),
    (["train", "corpus.txt", "--max-epochs", "nan"], "train.max_epochs must be a finite"),
    (["train", "corpus.txt", "--max-epochs", "inf"], "train.max_epochs must be a finite"),
    (["train", "corpus.txt", "--set", "train.weight_decay=nan"], "train.weight_decay"),
    (["train", "corpus.txt", "--device", "bogus"], "train.device"),
    (["train", "corpus.txt", "--hidden-size", "2000000"], "needs about"),
    (["train", "corpus.txt", "--batch-size", "100000000", "--hidden-size", "8"],
     "needs about"),
    (["sample", "runs/good", "-t", "inf"], "--temperature"),
    (["sample", "runs/good", "--seed", str(2**64)], "--seed"),
    (["sample", "runs/good", "--device", "bogus"], "--device"),
    (["sample", "runs/good", "--num-samples", "10000000000"], "needs about"),
]


@pytest.mark.parametrize("args, message", VALUE_CASES, ids=[" ".join(c[0][2:]) for c in VALUE_CASES])
def test_values_out_of_range_are_refused(trained, workdir, args, message):
    before = snapshot(workdir)
    assert_clean_error(run(*args), message)
    assert snapshot(workdir) == before


def test_the_parameter_estimate_is_exact():
    from charrnn.core.config import ModelConfig
    from charrnn.core.model import CharRNN, parameter_count

    for cell in ("lstm", "gru", "rnn"):
        for embed in (0, 5):
            cfg = ModelConfig(cell=cell, hidden_size=12, num_layers=3, embed_dim=embed)
            model = CharRNN.from_config(17, cfg)
            assert parameter_count(17, cfg) == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------
# 8. nothing that charrnn did not write is replaced or deleted


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a device node")
def test_an_output_path_that_is_a_device_is_refused(two_runs_for_plot, workdir):
    node = workdir / "null"
    os.mknod(node, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))  # like /dev/null
    r = run("plot", two_runs_for_plot, "-o", node)
    assert_clean_error(r, "not a regular file")
    assert __import__("stat").S_ISCHR(os.lstat(node).st_mode)


@pytest.mark.parametrize("kind", ["fifo", "directory", "link to a device", "link to a file"])
def test_outputs_replace_only_regular_files(two_runs_for_plot, workdir, kind):
    target = workdir / "out.png"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "link to a device":
        target.symlink_to("/dev/null")
    else:
        (workdir / "real.png").write_bytes(b"keep")
        target.symlink_to(workdir / "real.png")
    before = os.lstat(target)
    r = run("plot", two_runs_for_plot, "-o", target)
    assert_clean_error(r, "will not replace")
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    if kind == "link to a file":
        assert (workdir / "real.png").read_bytes() == b"keep"


def test_plot_to_stdout(two_runs_for_plot, workdir):
    r = run("plot", two_runs_for_plot, "-o", "-")
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes.startswith(b"\x89PNG")


@pytest.fixture
def two_runs_for_plot(trained):
    """A run to plot: the module's trained one, copied."""
    return trained


@pytest.mark.parametrize("foreign", ["test.bin", "notes.txt", ".staging-mine/keep.txt"])
def test_prepare_refuses_a_directory_that_is_not_a_preparation(corpus, workdir, foreign):
    out = workdir / "p"
    (out / foreign).parent.mkdir(parents=True)
    (out / foreign).write_text("mine")
    before = snapshot(out)
    assert_clean_error(run("prepare", corpus, "-o", out), "not empty", "choose another -o")
    assert snapshot(out) == before


def test_prepare_replaces_its_own_preparation_and_staging_only(corpus, workdir):
    out = workdir / "p"
    assert run("prepare", corpus, "-o", out, "--test-frac", "0.1").exit_code == 0
    stale = out / ".staging-dead"  # a killed preparer's, with our marker
    stale.mkdir()
    (stale / ".charrnn-staging").touch()
    r = run("prepare", corpus, "-o", out)  # again, without a test split
    assert r.exit_code == 0, r.output
    assert not stale.exists() and not (out / "test.bin").exists()
    assert PreparedData(out).meta["splits"]["test"] == 0


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", "latest", ""])
def test_a_run_name_is_one_plain_name(corpus, workdir, name):
    r = run("train", corpus, *TINY, "--name", name)
    assert_clean_error(r, "is not a run name")
    assert not (workdir / "x").exists() and not (workdir / "runs").exists()


def test_a_kill_at_any_instant_leaves_a_resumable_run(corpus, workdir):
    """SIGKILL a training process at spread-out instants of its first saves; --resume then
    continues, or says that the run has no checkpoint yet. No temporary file survives a
    resume attempt."""
    args = CHARRNN + ["train", str(corpus), *TINY, "--max-steps", "6",
                      "--set", "train.eval_every=1", "--set", "train.log_every=1"]
    for k, delay in enumerate([1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]):
        name = f"k{k}"
        proc = subprocess.Popen(args + ["--name", name], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        run_dir = workdir / "runs" / name
        if not run_dir.exists():
            continue  # killed before the run began
        r = run("train", "--resume", run_dir, "--max-steps", "6")
        if not any((run_dir / n).exists() for n in ("last.pt", "best.pt")):
            assert_clean_error(r, "no checkpoint yet")
        else:
            assert r.exit_code == 0, r.output
            assert load_checkpoint(run_dir / "last.pt")["step"] == 6
        assert not list(run_dir.glob(".*.tmp"))


# ----------------------------------------------------------------------------------------
# 9. every file we read is untrusted: damaged logs, configs that are not UTF-8


DAMAGED_LINES = ['{"step": -Infinity}', '{"step": NaN, "val_loss": 1.0}',
                 "[" * 100_000 + "]" * 100_000, '{"step": 3, "val_loss": Infinity}',
                 '{"step": "5"}', "[1, 2]", '{"step": 1e400}', '{"step": 2.5}', "not json"]


def test_damaged_metrics_lines_are_skipped_and_counted(corpus, workdir):
    first = run("train", corpus, *TINY, "--name", "m", "--max-steps", "10")
    assert first.exit_code == 0, first.output
    log = workdir / "runs" / "m" / "metrics.jsonl"
    log.write_text(log.read_text() + "\n".join(DAMAGED_LINES) + "\n")
    r = run("plot", "runs/m", "-o", "m.png")
    assert r.exit_code == 0, r.output
    assert f"skipped {len(DAMAGED_LINES)} damaged line(s)" in r.output
    r = run("train", "--resume", "runs/m", "--max-steps", "20")  # truncates, then curves
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output
    assert all(json.loads(line)["step"] >= 0 for line in log.read_text().splitlines())


def test_a_config_that_is_not_utf8_is_one_line(corpus, workdir):
    (workdir / "latin.toml").write_bytes("[train]\n# caf\xe9\nlr = 0.01\n".encode("latin-1"))
    assert_clean_error(run("train", corpus, "-c", "latin.toml"), "not UTF-8")
    os.mkfifo(workdir / "fifo.toml")  # would block a reader forever
    assert_clean_error(run("train", corpus, "-c", "fifo.toml"), "not a regular file")


# ----------------------------------------------------------------------------------------
# 10. what users type is data: names are literal, optional output never stops training


def test_a_dollar_in_a_corpus_name_is_literal_text(workdir):
    corpus = workdir / "price $x$ and $\\alpha$.txt"
    corpus.write_text(make_text(20_000))
    r = run("train", corpus, *TINY, "--name", "d")
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output
    assert (workdir / "runs" / "d" / "curves.png").stat().st_size > 0


def test_a_failing_curve_refresh_warns_once_and_training_goes_on(corpus, workdir, monkeypatch):
    import charrnn.training.plot as plot

    def broken(*args, **kwargs):
        raise ValueError("drawing failed")

    monkeypatch.setattr(plot, "plot_runs", broken)
    r = run("train", corpus, *TINY, "--name", "w")
    assert r.exit_code == 0, r.output
    assert r.output.count("curves.png is not refreshed any more (drawing failed)") == 1
    assert load_checkpoint(workdir / "runs" / "w" / "last.pt")["step"] == 20


# ----------------------------------------------------------------------------------------
# 11. numbers that hold, messages that do not mislead


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0", "-1m", "1e400"])
def test_durations_are_finite_and_positive(corpus, workdir, value):
    assert_clean_error(run("train", corpus, *TINY, "--max-time", value), "max_time")
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("lr", ["1e4", "1e308"])
def test_dynamic_evaluation_that_diverges_says_so(trained, workdir, lr):
    (workdir / "t.txt").write_text(make_text(3000, seed=4))
    for extra in ([], ["--json"]):
        r = run("eval", trained, "t.txt", "--dynamic", "--dynamic-lr", lr, *extra)
        assert_clean_error(r, "diverged at character", "lower --dynamic-lr")


def test_the_one_hot_table_counts_in_the_memory_estimate():
    from charrnn.core.config import ModelConfig
    from charrnn.core.model import model_bytes, parameter_count

    cfg = ModelConfig(hidden_size=8, num_layers=1)
    V = 64_000
    assert model_bytes(V, cfg) >= 4 * V * V  # 16 GB of identity table
    assert model_bytes(V, cfg) > 4 * parameter_count(V, cfg) + 4 * V * V - 1
    assert model_bytes(V, ModelConfig(hidden_size=8, num_layers=1, embed_dim=16)) < 4 * V * V


@pytest.mark.parametrize("stop, message", [("", "is empty"), ("\\q", "bad escape"),
                                           ("ab\\", "bad escape")])
def test_bad_stop_strings(trained, workdir, stop, message):
    assert_clean_error(run("sample", trained, "--stop", stop, "-n", "5"), message)


def test_a_closed_pipe_is_a_normal_end(trained, workdir):
    proc = subprocess.Popen(CHARRNN + ["sample", str(trained), "-n", "200000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # as `| head -c 10` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Error" not in err and b"Traceback" not in err, err


def test_two_models_to_eval_get_a_message_about_models(trained, workdir):
    assert_clean_error(run("eval", trained, trained), "is a model, not a text")


def test_latest_pointing_at_a_deleted_run_names_it(trained, workdir):
    other = run("train", workdir / "corpus.txt", *TINY, "--name", "other")
    assert other.exit_code == 0
    shutil.rmtree(workdir / "runs" / "other")  # latest -> other, now gone
    r = run("sample", "-n", "5")
    assert_clean_error(r, "points at other, which is gone", "good")


def test_an_endless_input_with_unknown_characters_fails_at_its_first_chunk(trained, workdir):
    """`eval - < /dev/zero` once read for ever; now the first chunk names the character."""
    proc = subprocess.run(CHARRNN + ["eval", str(trained), "-"], stdin=open("/dev/zero", "rb"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "'\\x00'" in proc.stderr and "Traceback" not in proc.stderr


def test_special_files_where_a_regular_file_is_expected_do_not_hang(trained, workdir):
    os.mkfifo(workdir / "prime.fifo")
    assert_clean_error(run("sample", trained, "--prime-file", "prime.fifo"), "not a regular file")
    log = trained / "metrics.jsonl"
    log.unlink()
    os.mkfifo(log)  # read under the run's lock on resume
    assert_clean_error(run("train", "--resume", trained, "--max-steps", "25"),
                       "not a regular file")
