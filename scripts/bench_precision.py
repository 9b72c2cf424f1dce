"""Row 13 of scripts/bench.py: bf16 on this CPU against fp32, side by side in one run.

    python scripts/bench.py --rows 13            # about 8 minutes on 2 cores
    python scripts/bench.py --rows 13 --quick    # a smoke run

The training step (charrnn's loop in each precision, and the bare bf16 step with the same
cast), the quality at equal steps from the same seed, evaluation, the single-stream sampling
product, and what `auto` picks, here and on a CPU without bf16 units (simulated by turning
the capability check off).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from bench_quality import quiet

from charrnn.core import precision as plan
from charrnn.core.config_files import load_config
from charrnn.core.model import CharRNN
from charrnn.core.precision import native_bf16, resolve_precision
from charrnn.inference.evaluate import evaluate
from charrnn.training.run import train


def precision_cpu_rows(row, data, device: torch.device, tmp: Path, quick: bool, overhead):
    """`overhead`: bench.py's training_overhead (charrnn step and bare step, interleaved)."""
    row("13 bf16 on CPU", "native bf16 units here (oneDNN's check)", str(native_bf16(device)))
    _step_rows(row, data, device, quick, overhead)
    _quality_rows(row, data, device, tmp, quick)
    _eval_row(row, data, device)
    _matvec_row(row)
    _auto_rows(row, data, device)


def _step_rows(row, data, device, quick, overhead):
    steps, rounds = (3, 2) if quick else (8, 3)
    cpu = load_config("configs/cpu.toml")
    shapes = [("lstm", cpu.model.hidden_size, 2, cpu.train.batch_size, cpu.train.seq_len),
              ("gru", cpu.model.hidden_size, 2, cpu.train.batch_size, cpu.train.seq_len),
              ("lstm", 512, 2, 64, 100)]
    for cell, H, L, B, T in shapes:
        fp32, bare32 = overhead(data, cell, H, L, B, T, steps, rounds, device, "fp32")
        bf16, bare16 = overhead(data, cell, H, L, B, T, steps, rounds, device, "bf16")
        row("", f"{L}x{H} {cell.upper()} B={B} T={T}: charrnn step fp32 / bf16 chars/s; "
            f"bf16 step / bare bf16 step",
            f"{fp32:,.0f} / {bf16:,.0f} = {bf16 / fp32:.2f}x; {bf16 / bare16:.3f}",
            ">= 1.6x; >= 0.95" if cell == "lstm" else "")


def _quality_rows(row, data, device, tmp, quick):
    steps = 150 if quick else 1000
    for cell in ("lstm", "gru"):
        losses, speeds = {}, {}
        for setting in ("fp32", "bf16"):
            cfg = load_config("configs/cpu.toml", {
                "model.cell": cell, "train.max_time": "", "train.max_steps": steps,
                "train.decay_steps": steps, "train.eval_every": steps,
                "train.precision": setting, "train.device": str(device)})
            t0 = time.perf_counter()
            result = train(cfg, data, runs_dir=tmp / "bf16-runs", name=f"{cell}-{setting}",
                           echo=quiet, progress=False)
            speeds[setting] = steps * cfg.train.batch_size * cfg.train.seq_len / (
                time.perf_counter() - t0)
            losses[setting] = result.last_val_loss
        diff = losses["bf16"] - losses["fp32"]
        row("", f"cpu.toml shapes, {cell.upper()}, {steps} steps, same seed: val loss fp32 / "
            f"bf16 (chars/s incl. eval)",
            f"{losses['fp32']:.4f} / {losses['bf16']:.4f} ({speeds['fp32']:,.0f} / "
            f"{speeds['bf16']:,.0f})", f"|{diff:+.4f}| <= 0.01")


def _eval_row(row, data, device):
    torch.manual_seed(0)
    model = CharRNN(len(data.vocab), 512, 2, "lstm").to(device).eval()
    val = data.split("val")
    times, scores = {}, {}
    for _ in range(2):  # the first round warms up
        for dtype in (None, torch.bfloat16):
            model.recurrent_dtype = dtype
            t0 = time.perf_counter()
            scores[dtype] = evaluate(model, val, 128, 100, device)
            times[dtype] = time.perf_counter() - t0
    row("", "eval, 2x512 LSTM (untrained), whole validation split, B=128: chars/s fp32 / "
        "bf16; score difference",
        f"{len(val) / times[None]:,.0f} / {len(val) / times[torch.bfloat16]:,.0f} = "
        f"{times[None] / times[torch.bfloat16]:.2f}x; "
        f"{scores[torch.bfloat16] - scores[None]:+.4f} nats/char", "<= 0.01")


def _matvec_row(row):
    """Single-stream sampling: each character is a (1, 2H) x (2H, 4H) product per layer."""
    figures = []
    for H in (256, 512):
        x, w = torch.randn(1, 2 * H), torch.randn(2 * H, 4 * H)
        pairs = {"fp32": (x, w), "bf16": (x.bfloat16(), w.bfloat16())}
        best = {}
        for _ in range(5):
            for name, (a, b) in pairs.items():
                t0 = time.perf_counter()
                for _ in range(300):
                    torch.mm(a, b)
                best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
        figures.append(f"H={H}: {best['fp32'] / best['bf16']:.2f}x")
    row("", "sampling, one stream: the step's LSTM product (1 x 2H) x (2H x 4H), bf16 speed "
        "/ fp32", "; ".join(figures), ">= 1.3x, else sampling stays fp32")


def _auto_rows(row, data, device):
    for cell in ("lstm", "gru"):
        model = CharRNN(len(data.vocab), 256, 2, cell)
        p = resolve_precision("auto", device, cell, lambda: plan.measure_speedup(
            model.rnn, 32, 64, device))
        row("", f"auto here, cpu.toml shapes, {cell.upper()}", p.describe(device))
    real = plan.native_bf16
    plan.native_bf16 = lambda device: False  # a CPU without bf16 units
    try:
        p = resolve_precision("auto", device, "lstm")
        forced = resolve_precision("bf16", device, "lstm")
    finally:
        plan.native_bf16 = real
    row("", "auto / --precision bf16 on a CPU without bf16 units (check turned off)",
        f"{p.describe(device)} / {forced.why}")
