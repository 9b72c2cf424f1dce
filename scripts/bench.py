"""charrnn benchmark: every figure measured side by side in one run, as ratios.

    ./scripts/bench.sh                                     # ~10 minutes on 2 CPU cores (sets up .venv)
    .venv/bin/python scripts/bench.py                      # the same, in an existing .venv
    .venv/bin/python scripts/bench.py --quick              # a smoke run, ~3 minutes
    .venv/bin/python scripts/bench.py --data ../shared/data --write docs/benchmarks.md
    .venv/bin/python scripts/bench.py --device cuda        # rows 1, 3, 5 with gpu.toml shapes
    .venv/bin/python scripts/bench.py --rows 3             # only the sampling rows

Rows: training overhead against the bare fused step; the tutorial way of training; sampling
against the bare per-step kernel; prepare throughput and peak memory; evaluation speed;
memory across a long run; a 1 GB corpus; 1 vs 2 processes; and, asked for by number, the
5-minute quality run (9), the precision settings at equal steps (10), dynamic
evaluation (11), blank-state starts in training (12) and bf16 on the CPU (13). The CPU and GPU tables are kept
in separate blocks of the markdown file. Ratios are what to read: both sides run in the same process,
interleaved, so machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from charrnn.core.cpu import quiet_openmp

quiet_openmp()  # before torch loads: the OpenMP wait the charrnn command runs with

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from charrnn.core.config_files import load_config  # noqa: E402
from charrnn.core.device import resolve_device  # noqa: E402
from charrnn.core.precision import autocast, resolve_precision  # noqa: E402
from charrnn.core.errors import CharRNNError  # noqa: E402
from charrnn.core.model import CharRNN  # noqa: E402
from charrnn.corpus.prepare import prepare  # noqa: E402
from charrnn.corpus.prepared import PreparedData  # noqa: E402
from charrnn.inference.evaluate import evaluate  # noqa: E402
from charrnn.training.budget import Budget  # noqa: E402
from charrnn.training.trainer import Trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import memory_row, prepare_rows, scale_rows  # noqa: E402
from bench_quality import (  # noqa: E402
    blank_start_rows,
    dynamic_rows,
    precision_rows,
    quality_rows,
    quiet,
)
from bench_precision import precision_cpu_rows  # noqa: E402
from bench_sampling import sampling_rows, sync  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []  # (row, measurement, figure, goal)


def row(name, what, figure, goal=""):
    ROWS.append((name, what, figure, goal))
    print(f"{name:<28} {what:<58} {figure:<26} {goal}", flush=True)


# ----------------------------------------------------------------------------------------
# 1. training overhead


def bare_step_timer(model, B, T, V, device, amp_dtype, lr=1e-3):
    """The fused kernel step alone: pre-built tensors, no batching, no carry, no clipping."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    x = torch.randint(V, (B, T), dtype=torch.int32, device=device)
    y = torch.randint(V, (B, T), device=device)

    def step():
        with autocast(device, amp_dtype):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def training_overhead(data, cell, hidden, layers, B, T, steps, rounds, device,
                      precision="fp32"):
    cfg = load_config(overrides={
        "model.cell": cell, "model.hidden_size": hidden, "model.num_layers": layers,
        "train.batch_size": B, "train.seq_len": T, "train.eval_every": 10 ** 9,
        "train.log_every": 10, "train.warmup_steps": 5, "train.device": str(device),
        "train.precision": precision})
    trainer = Trainer(cfg, data, echo=quiet, progress=True)
    model = CharRNN.from_config(len(data.vocab), cfg.model).to(device)
    # The bare step computes in the trainer's plan: the same kernels, without the loop.
    model.recurrent_dtype = trainer.precision.cast
    bare = bare_step_timer(model, B, T, len(data.vocab), device, trainer.precision.autocast)
    bare()  # warm up
    real_t, bare_t = [], []
    for _ in range(rounds):
        # The real loop, progress reports included (echoed to nowhere), then the bare one.
        trainer.cfg = replace(cfg, train=replace(cfg.train, max_steps=trainer.state.step + steps))
        # The budget reads its limits when it is made: a new one for this round's steps.
        trainer.budget = Budget(trainer.cfg.train, trainer.steps_per_epoch, trainer.state)
        sync(device)
        t0 = time.perf_counter()
        trainer.run(final_eval=False)
        sync(device)
        real_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(steps):
            bare()
        sync(device)
        bare_t.append(time.perf_counter() - t0)
    chars = B * T * steps
    real, bare_ = chars / min(real_t), chars / min(bare_t)
    return real, bare_


def training_rows(data, quick, device):
    steps, rounds = (3, 2) if quick else (8, 3)
    if device.type == "cuda":
        g = load_config("configs/gpu.toml")
        m, t = g.model, g.train
        shapes = [(m.cell, m.hidden_size, m.num_layers, t.batch_size, t.seq_len, "gpu.toml"),
                  ("lstm", 512, 2, 64, 100, ""), ("gru", m.hidden_size, m.num_layers,
                                                  t.batch_size, t.seq_len, "")]
        steps *= 4
    else:
        shapes = [("lstm", 512, 2, 64, 100, ""), ("lstm", 128, 2, 64, 100, ""),
                  ("gru", 512, 2, 64, 100, "")]
    for k, (cell, hidden, layers, B, T, note) in enumerate(shapes):
        n = steps * (8 if hidden == 128 else 1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        real, bare = training_overhead(data, cell, hidden, layers, B, T, n, rounds, device)
        label = f"{layers}x{hidden} {cell.upper()}" + (f" ({note})" if note else "")
        row("1 training overhead" if k == 0 else "",
            f"{label}, B={B} T={T}: charrnn step / bare fused step",
            f"{real:,.0f} / {bare:,.0f} chars/s = {real / bare:.3f}", ">= 0.95" if k == 0 else "")
        if device.type == "cuda" and k == 0:
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
            row("", f"{label}: peak GPU memory (trainer and bare step together)",
                f"{peak:,.0f} MiB")


# ----------------------------------------------------------------------------------------
# 2. the usual tutorial approach


def tutorial_training(data, cfg, seconds, seed=0):
    """One random chunk at a time, batch 1, one-hot built on the host, state reset each chunk."""
    torch.manual_seed(seed)
    V, T = len(data.vocab), cfg.train.seq_len
    model = CharRNN.from_config(V, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    train = np.asarray(data.split("train"))
    rng = np.random.default_rng(seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        i = int(rng.integers(0, len(train) - T - 1))
        chunk = train[i:i + T + 1].astype(np.int64)
        x = F.one_hot(torch.from_numpy(chunk[:-1]), V).float()[None]  # built on the host
        y = torch.from_numpy(chunk[1:])
        out, _ = model.rnn(x)  # fresh zero state every chunk
        loss = F.cross_entropy(model.head(out)[0], y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        steps += 1
    elapsed = time.perf_counter() - start
    val = evaluate(model, data.split("val"), 32, T, "cpu")
    return steps * T / elapsed, val


def charrnn_training(data, cfg, seconds):
    cfg = load_config(overrides={**{f"model.{k}": v for k, v in vars(cfg.model).items()},
                                 **{f"train.{k}": v for k, v in vars(cfg.train).items()},
                                 "train.max_time": f"{seconds}s", "train.max_steps": 0,
                                 "train.eval_every": 10 ** 9})
    trainer = Trainer(cfg, data, echo=quiet, progress=False)
    t0 = time.perf_counter()
    result = trainer.run()
    elapsed = time.perf_counter() - t0
    return result.step * cfg.train.batch_size * cfg.train.seq_len / elapsed, result.last_val_loss


# ----------------------------------------------------------------------------------------
# 3. sampling


def ddp_rows(tmp: Path, data_dir: Path, quick):
    """Training throughput of cpu.toml with 1 process (2 threads) and 2 gloo processes
    (1 thread each) on the same total batch."""
    steps = 60 if quick else 200
    args = ["train", str(data_dir), "-c", "configs/cpu.toml", "--max-steps", str(steps),
            "--set", "train.max_time=", "--set", "train.eval_every=1000000",
            "--set", "train.log_every=20", "--set", "train.eval_chars=10000", "--quiet"]
    rates = {}
    for nproc in (1, 2):
        name = f"ddp{nproc}"
        env = {**os.environ, "OMP_NUM_THREADS": str(2 // nproc)}
        cmd = ([sys.executable, "-m", "charrnn"] if nproc == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", "-m", "charrnn"])
        subprocess.run(cmd + args + ["--out", str(tmp / "runs"), "--name", name],
                       env=env, check=True, capture_output=True, text=True)
        logs = [json.loads(line) for line in
                (tmp / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        speeds = sorted(r["chars_per_s"] for r in logs if "chars_per_s" in r)[1:]  # not the first
        rates[nproc] = speeds[len(speeds) // 2]
    row("8 processes (DDP, gloo)", "cpu.toml, B=32 in total: chars/s 1 process x 2 threads / "
        "2 processes x 1 thread", f"{rates[1]:,.0f} / {rates[2]:,.0f} = {rates[2] / rates[1]:.2f}x",
        "same total batch")


# ----------------------------------------------------------------------------------------


ALL_ROWS = {"cpu": "1,2,3,4,5,6,7,8", "cuda": "1,3,5"}  # 9-13 train for minutes: ask for them


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
                        help="directory with tinyshakespeare.txt, andersen.txt, timemachine.txt, hongloumeng_zh.txt")
    parser.add_argument("--quick", action="store_true", help="fewer steps and smaller inputs")
    parser.add_argument("--device", default="cpu",
                        help="cpu (every row) or cuda (rows 1, 3 and 5 with gpu.toml shapes)")
    parser.add_argument("--rows", help="comma-separated row numbers (default: all for the device)")
    parser.add_argument("--write", help="markdown file to update ('' = none; default "
                        "docs/benchmarks.md, or none when --rows picks some rows)")
    args = parser.parse_args()
    shared = Path(args.data)
    if not (shared / "tinyshakespeare.txt").exists():
        sys.exit(f"bench: {shared}/tinyshakespeare.txt not found; pass --data DIR")
    try:
        device = resolve_device(args.device)
    except CharRNNError as e:
        sys.exit(f"bench: {e}")
    wanted = {int(r) for r in (args.rows or ALL_ROWS[device.type]).split(",")}
    quick = args.quick
    started = time.perf_counter()
    print(machine(device))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare([str(shared / "tinyshakespeare.txt")], tmp / "shakespeare")
        data = PreparedData(tmp / "shakespeare")
        if 1 in wanted:
            training_rows(data, quick, device)
        if 2 in wanted:
            cfg = load_config("configs/cpu.toml")
            seconds = 20 if quick else 120
            ours_rate, ours_val = charrnn_training(data, cfg, seconds)
            tut_rate, tut_val = tutorial_training(data, cfg, seconds)
            row("2 vs tutorial training", f"cpu.toml model, {seconds} s each: chars/s charrnn / tutorial",
                f"{ours_rate:,.0f} / {tut_rate:,.0f} = {ours_rate / tut_rate:.1f}x")
            row("", "validation loss after the same time (nats/char)",
                f"{ours_val:.3f} vs {tut_val:.3f}")
        if 3 in wanted:
            sampling_rows(row, data, quick, device, tmp)
        if 4 in wanted:
            prepare_rows(row, shared, tmp, quick)
        if 5 in wanted:
            evaluation_row(data, device)
        if 6 in wanted:
            memory_row(row, data, 400 if quick else 2000)
        if 7 in wanted:
            scale_rows(row, shared, tmp, quick)
        if 8 in wanted:
            ddp_rows(tmp, tmp / "shakespeare", quick)
        if 9 in wanted:
            quality_rows(row, data, device, tmp, quick)
        if 10 in wanted:
            precision_rows(row, data, device, tmp, quick)
        if 11 in wanted:
            dynamic_rows(row, shared, device, tmp, quick)
        if 12 in wanted:
            blank_start_rows(row, shared, device, tmp, quick)
        if 13 in wanted:
            precision_cpu_rows(row, data, device, tmp, quick, training_overhead)
    total = time.perf_counter() - started
    print(f"total {total / 60:.1f} min")
    if args.write is None:
        args.write = "" if args.rows else "docs/benchmarks.md"
    if args.write:
        write_markdown(Path(args.write), total, quick, device, args.rows)


def evaluation_row(data, device):
    torch.manual_seed(0)
    if device.type == "cuda":
        m = load_config("configs/gpu.toml").model
        shape, B, T = (m.hidden_size, m.num_layers, m.cell), 128, 128
    else:
        shape, B, T = (512, 2, "lstm"), 128, 100
    model = CharRNN(len(data.vocab), *shape).to(device).eval()
    val = data.split("val")
    amp = resolve_precision("auto", device).autocast
    evaluate(model, val[:10_000], B, T, device, amp)  # warm up (cuDNN plans)
    sync(device)
    t0 = time.perf_counter()
    evaluate(model, val, B, T, device, amp)
    row("5 evaluation", f"{shape[1]}x{shape[0]} {shape[2].upper()}, whole validation split, "
        f"B={B} T={T}", f"{len(val) / (time.perf_counter() - t0):,.0f} chars/s")


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = (f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, cuDNN "
           f"{torch.backends.cudnn.version()}); " if device.type == "cuda" else "")
    return (f"{gpu}{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch "
            f"threads; Python {platform.python_version()}, torch {torch.__version__}")


def write_markdown(path: Path, seconds: float, quick: bool, device: torch.device,
                   rows: str | None) -> None:
    """Replace this device's table between its markers (CPU and GPU tables are kept apart)."""
    # One block per device, and one per selection of rows: the GPU check's stages write theirs.
    tag = ("bench" if device.type == "cpu" else f"bench-{device.type}") + (
        f"-rows-{rows.replace(',', '-')}" if rows else "")
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    flags = (" --quick" if quick else "") + (f" --device {device.type}" if device.type != "cpu"
                                            else "") + (f" --rows {rows}" if rows else "")
    lines = [start, f"Machine: {machine(device)}. Run: `python scripts/bench.py{flags}`, "
             f"{seconds / 60:.1f} minutes, {time.strftime('%Y-%m-%d')}.", "",
             "| row | measurement | figure | goal |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in ROWS]
    lines.append(end)
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
