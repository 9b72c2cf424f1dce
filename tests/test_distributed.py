"""DDP through torchrun with the gloo backend on CPU: the same code path as several GPUs."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import make_text, run

from charrnn.core.checkpoint import load_checkpoint
from charrnn.corpus.prepare import prepare

ARGS = ["--hidden-size", "32", "--batch-size", "8", "--seq-len", "16", "--dropout", "0",
        "--set", "train.eval_every=10", "--set", "train.log_every=5",
        "--set", "train.decay_steps=30", "--set", "train.eval_batch_size=4"]


def charrnn(nproc, *args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "charrnn"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "charrnn"]
    out = subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def losses(run_dir, key):
    return [json.loads(line)[key] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if key in line]


@pytest.fixture
def prepared(workdir):
    (workdir / "c.txt").write_text(make_text(30_000))
    prepare(["c.txt"], workdir / "data" / "c")
    return "data/c"


@pytest.mark.slow
def test_two_processes_match_one_and_either_checkpoint_resumes_on_the_other(prepared, workdir):
    charrnn(1, "train", prepared, *ARGS, "--max-steps", 20, "--name", "one", cwd=workdir)
    out = charrnn(2, "train", prepared, *ARGS, "--max-steps", 20, "--name", "two", cwd=workdir)
    assert out.count("device: cpu") == 1  # only rank 0 talks
    one, two = workdir / "runs" / "one", workdir / "runs" / "two"
    assert losses(two, "train_loss") == pytest.approx(losses(one, "train_loss"), rel=1e-4)
    assert losses(two, "val_loss") == pytest.approx(losses(one, "val_loss"), rel=1e-4)
    a, b = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    # The hidden state of all 8 streams is gathered into the checkpoint.
    assert b["hidden"][0].shape == a["hidden"][0].shape == (2, 8, 32)
    torch.testing.assert_close(a["hidden"][0], b["hidden"][0], rtol=1e-4, atol=1e-5)

    # A checkpoint holds every stream whatever wrote it, so it resumes on any number of
    # processes: the 1-process run continues on 2, the 2-process run on 1, and they agree.
    charrnn(2, "train", "--resume", one, "--max-steps", 30, cwd=workdir)
    charrnn(1, "train", "--resume", two, "--max-steps", 30, cwd=workdir)
    assert [load_checkpoint(r / "last.pt")["step"] for r in (one, two)] == [30, 30]
    assert len(losses(one, "train_loss")) == 6  # steps 5, 10, ..., 30: one log across the resume
    assert losses(one, "train_loss") == pytest.approx(losses(two, "train_loss"), rel=1e-4)


@pytest.mark.slow
def test_a_signal_stops_every_process_at_one_step_and_rank_0_saves(prepared, workdir):
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "charrnn", "train", prepared, *ARGS, "--max-time", "10m", "--name", "sig",
           "--set", "train.log_every=1"]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.stdout.readline().startswith("step 5 "):
            break
    # As a scheduler does: the signal to the whole process group, launcher and workers.
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert "interrupted at step" in out, out + err
    state = load_checkpoint(workdir / "runs" / "sig" / "last.pt")
    assert state["step"] >= 5
    assert f"interrupted at step {state['step']}" in out  # the step rank 0 saved at
    # The run continues from there on one process (this one: nothing to compare it with).
    r = run("train", "--resume", "runs/sig", "--max-steps", state["step"] + 5)
    assert r.exit_code == 0, r.output
    assert load_checkpoint(workdir / "runs" / "sig" / "last.pt")["step"] == state["step"] + 5
