"""The default run on a machine that is not quiet: threads, decisions cached instead of
timed again, validation by training time on a fixed sample, budgets and Ctrl-C that hold,
progress lines on any terminal."""

import os
import pty
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_error, make_text, run

import charrnn.core.precision as plan
import charrnn.training.validator as validator_module
from charrnn.core.config import Config, TrainConfig
from charrnn.core.config_files import load_config
from charrnn.core.cpu import CpuBudget, apply_threads, cpu_budget, describe_threads
from charrnn.core.errors import ConfigError
from charrnn.core.model import CharRNN
from charrnn.core.usercache import UserCache
from charrnn.corpus.prepared import open_corpus
from charrnn.inference.evaluate import Abandoned, evaluate
from charrnn.training.run import train
from charrnn.training.state import TrainingState
from charrnn.training.validator import MIN_SAMPLE, Validator, sample_chars

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------------------
# threads


def _fake_machine(root: Path, siblings: list[str], cgroup: str, files: dict[str, str]):
    for cpu, text in enumerate(siblings):
        d = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        d.mkdir(parents=True)
        (d / "thread_siblings_list").write_text(text + "\n")
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cpu_budget_counts_cores_not_hyperthreads_and_honours_a_quota(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    _fake_machine(tmp_path / "a", ["0,2", "1,3", "0,2", "1,3"], "0::/job\n",
                  {"job/cpu.max": "150000 100000\n"})
    budget = cpu_budget(str(tmp_path / "a/sys"), str(tmp_path / "a/proc"))
    assert (budget.logical, budget.physical, budget.quota) == (4, 2, 1.5)
    assert budget.usable == 1 and budget.default_threads() == 1
    _fake_machine(tmp_path / "b", ["0", "1", "2", "3"], "3:cpu,cpuacct:/box\n",
                  {"cpu,cpuacct/box/cpu.cfs_quota_us": "-1\n",
                   "cpu,cpuacct/box/cpu.cfs_period_us": "100000\n"})
    budget = cpu_budget(str(tmp_path / "b/sys"), str(tmp_path / "b/proc"))
    assert (budget.physical, budget.quota, budget.default_threads()) == (4, None, 3)


@pytest.mark.parametrize("physical, quota, threads", [
    (1, None, 1), (2, None, 1), (3, None, 2), (8, None, 7), (64, None, 16), (8, 2.5, 1),
    (8, 4.0, 3)])
def test_the_default_leaves_a_core_to_the_neighbours(physical, quota, threads):
    assert CpuBudget(physical, physical, quota).default_threads() == threads


def test_threads_come_from_the_flag_then_the_environment_then_the_default(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_threads(0) == 2 and describe_threads(2, 0).endswith("(OMP_NUM_THREADS)")
        monkeypatch.delenv("OMP_NUM_THREADS")
        budget = CpuBudget(2, 2, None)
        assert apply_threads(0, budget) == 1
        assert "the default for 2 cores" in describe_threads(1, 0, budget)
        with pytest.raises(ConfigError, match="--threads"):
            apply_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_train_eval_and_sample_take_threads_and_say_so(workdir):
    (workdir / "t.txt").write_text(make_text(6000))
    r = run("train", "t.txt", "-c", "tiny", "--max-steps", "2", "--threads", "1", "--name", "a")
    assert r.exit_code == 0, r.output
    assert "device: cpu, 1 thread (--threads)" in r.output
    assert "threads = 1" in (workdir / "runs/a/config.toml").read_text()
    assert run("eval", "runs/a", "t.txt", "--threads", "1", "-q").exit_code == 0
    assert run("sample", "runs/a", "-n", "5", "--threads", "1", "-q").exit_code == 0
    r = run("sample", "runs/a", "--threads", "-2")
    assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------------------
# the precision measurement, cached


def test_the_bf16_ratio_is_measured_once_per_machine_and_shape(tmp_path):
    cache, calls = UserCache("precision", tmp_path), []

    def measure(*args):
        calls.append(args)
        return 1.62

    rnn = torch.nn.GRU(8, 16, 2, batch_first=True)
    first = plan.cached_speedup(rnn, 32, 64, CPU, cache, measure)
    again = plan.cached_speedup(rnn, 32, 64, CPU, cache, measure)
    assert (first.ratio, first.cached, again.ratio, again.cached) == (1.62, False, 1.62, True)
    assert len(calls) == 1
    wider = torch.nn.GRU(8, 32, 2, batch_first=True)
    plan.cached_speedup(wider, 32, 64, CPU, cache, measure)
    assert len(calls) == 2  # another shape is measured on its own


def test_an_implausible_ratio_is_measured_again_and_never_cached(tmp_path):
    cache, figures = UserCache("precision", tmp_path), iter([8.46, 1.7, 9.0, 0.1])
    rnn = torch.nn.GRU(8, 16, 1, batch_first=True)
    found = plan.cached_speedup(rnn, 4, 8, CPU, cache, lambda *a: next(figures))
    assert found.ratio == 1.7 and found.reliable  # 8.46x was a timing upset
    other = torch.nn.GRU(8, 24, 1, batch_first=True)
    found = plan.cached_speedup(other, 4, 8, CPU, cache, lambda *a: next(figures))
    assert not found.reliable
    assert cache.get(plan.speedup_key(other, 4, 8, CPU)) is None


def test_auto_says_where_its_figure_came_from(monkeypatch):
    monkeypatch.setattr(plan, "native_bf16", lambda device: True)
    monkeypatch.setattr(plan, "bf16_kernel_works", lambda device, cell: True)
    cached = plan.resolve_precision("auto", CPU, "gru", lambda: plan.Speedup(1.6, cached=True))
    assert cached.name == "bf16" and "1.60x faster on this machine (cached)" in cached.why
    upset = plan.resolve_precision("auto", CPU, "gru", lambda: plan.Speedup(9.0, reliable=False))
    assert upset.name == "fp32" and "upset" in upset.why


def test_the_cpu_bf16_preset_keeps_bf16_when_asked_for_by_name():
    assert load_config("cpu-bf16").train.precision == "bf16"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"k": "x", "j": NaN}',
                                     b"\xff\xfe", b'{"k": true}'])
def test_a_damaged_cache_reads_as_empty_and_is_replaced(tmp_path, content):
    cache = UserCache("precision", tmp_path)
    cache.path.write_bytes(content)
    assert cache.get("k") is None
    assert cache.put("k", 1.5) and cache.get("k") == 1.5


def test_a_fifo_in_place_of_the_cache_is_not_read(tmp_path):
    cache = UserCache("precision", tmp_path)
    os.mkfifo(cache.path)
    assert cache.get("k") is None  # returns at once: nothing opens it for reading
    assert not cache.put("k", 1.0)


# ----------------------------------------------------------------------------------------
# validation by training time, on a fixed sample


def test_eval_every_takes_steps_or_a_duration():
    assert TrainConfig(eval_every="500").eval_every == 500
    assert TrainConfig(eval_every=" 60S ").eval_every == "60s"
    assert TrainConfig(eval_every="1m30s").eval_seconds == 90
    assert TrainConfig(eval_every=200).eval_seconds == 0
    for bad in ("0", 0, "soon", "-5s", ""):
        with pytest.raises(ConfigError, match="eval_every"):
            TrainConfig(eval_every=bad)
    cfg = load_config(None, {"train.eval_every": "45s"})
    assert 'eval_every = "45s"' in cfg.to_toml()


def test_the_validation_sample_is_fixed_by_the_model_and_device_not_by_a_timing():
    steps, timed = TrainConfig(eval_every=500), TrainConfig(eval_every="60s")
    flops = 1.4e6  # the cpu preset's 2x256 GRU
    assert sample_chars(steps, 5_000_000, flops, "cpu") == 5_000_000
    cpu = sample_chars(timed, 5_000_000, flops, "cpu")
    assert MIN_SAMPLE <= cpu < 200_000
    assert cpu == sample_chars(timed, 5_000_000, flops, "cpu")
    assert sample_chars(timed, 5_000_000, flops, "cuda") > cpu
    assert sample_chars(timed, 50_000, flops, "cpu") == 50_000  # a small split stays whole
    assert sample_chars(timed, 5_000_000, 1e12, "cpu") == MIN_SAMPLE
    assert sample_chars(replace(timed, eval_chars=1234), 5_000, flops, "cpu") == 1234


def test_a_timed_cadence_evaluates_by_the_clock_and_waits_longer_when_evaluation_is_slow():
    state = TrainingState()
    validator = Validator(TrainConfig(eval_every="60s"), state, val=range(1000))
    state.elapsed = 59.0
    assert not validator.due(1)
    state.elapsed = 60.0
    assert validator.due(2)
    validator.record(1.0, seconds=0.5)
    validator.seconds = 12.0  # a busy machine: 12 s for one evaluation
    validator.since = 60.0
    state.elapsed = 121.0
    assert not validator.due(3)  # it waits 10x its evaluation's time: 120 s
    state.elapsed = 180.0
    assert validator.due(4)


def test_the_final_evaluation_is_budgeted_before_the_first_one():
    cfg = TrainConfig(eval_every="60s", eval_batch_size=4, eval_context=100)
    validator = Validator(cfg, TrainingState(), val=range(9_700))
    # 4 streams, 3 of them with a burn-in of 100 characters, at half the training speed
    assert validator.to_come(True, train_chars_per_s=1_000) == pytest.approx(5.0)
    assert validator.to_come(False, train_chars_per_s=1_000) == 0.0


def _tiny(**train) -> Config:
    return load_config("tiny", {"model.hidden_size": 16, "train.batch_size": 4,
                                "train.seq_len": 16, **{f"train.{k}": v for k, v in train.items()}})


def test_a_run_evaluates_by_training_time(workdir):
    (workdir / "t.txt").write_text(make_text(8000))
    lines = []
    result = train(_tiny(max_steps=6, eval_every="0.001s", log_every=100),
                   open_corpus("t.txt"), name="timed", echo=lines.append, progress=True)
    evals = [line for line in lines if "val loss" in line]
    # Due at once after the first step; after that the cadence stretches to keep validation
    # to a tenth of the time, and the last step is evaluated as the run ends.
    assert evals[0].startswith("step 1 |") and evals[-1].startswith("step 6 |")
    assert any(line.startswith("validation: every 0.001s of training time") for line in lines)
    assert result.best_step is not None


def test_an_evaluation_abandoned_restores_training_mode():
    model = CharRNN(5, 8, 1, "gru")
    model.train()
    with pytest.raises(Abandoned):
        evaluate(model, torch.randint(5, (3000,)).numpy(), 4, 16, CPU, abort=lambda: True)
    assert model.training


def test_ctrl_c_during_a_validation_abandons_it_and_saves_last_pt(workdir, monkeypatch):
    (workdir / "t.txt").write_text(make_text(8000))
    real = validator_module.evaluate

    def interrupted_evaluation(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C arrives mid-evaluation
        return real(*args, **kwargs)

    monkeypatch.setattr(validator_module, "evaluate", interrupted_evaluation)
    lines = []
    result = train(_tiny(max_steps=50, eval_every=3), open_corpus("t.txt"), name="c",
                   echo=lines.append, progress=True)
    assert result.reason == "interrupted" and result.step == 3
    assert any("validation abandoned" in line for line in lines)
    assert result.last_val_loss is None  # nothing was recorded from the half evaluation
    assert (workdir / "runs/c/last.pt").is_file()


# ----------------------------------------------------------------------------------------
# progress on any terminal


PROGRESS = """
import sys
from charrnn.training.progress import Progress
p = Progress(True, 0, 10, print)
p.report(5, 1.25, None, 1000.0, 3.0, 4.0)
p.close()
"""


@pytest.mark.parametrize("columns", [0, 100])
def test_progress_lines_appear_on_a_terminal_of_any_width(columns):
    main, child = pty.openpty()
    if columns:
        import fcntl
        import struct
        import termios
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", PROGRESS], stdin=child, stdout=child,
                            stderr=child, close_fds=True)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(main)
    text = out.decode(errors="replace")
    assert "loss 1.2500" in text, text
    if columns == 0:
        assert "step 5 | loss 1.2500" in text  # the plain line, as on a pipe


def test_bad_threads_in_a_config_file_is_one_line(workdir):
    (workdir / "t.txt").write_text(make_text(4000))
    (workdir / "c.toml").write_text("[train]\nthreads = -1\n")
    assert_clean_error(run("train", "t.txt", "-c", "c.toml"), "train.threads")
