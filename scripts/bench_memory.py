"""Rows 4, 6 and 7 of scripts/bench.py: memory and throughput of prepare, memory over a
long training run, and both on a corpus of a gigabyte. Run through bench.py
(`--rows 4,6,7`).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_quality import quiet

from charrnn.core.config_files import load_config
from charrnn.training.trainer import Trainer


def build_corpus(sources: list[Path], target_mb: float, out: Path) -> Path:
    blob = b"".join(p.read_bytes() for p in sources)
    with open(out, "wb") as f:
        written = 0
        while written < target_mb * 1e6:
            f.write(blob)
            written += len(blob)
    return out


PROBE_PROLOGUE = """
import sys, threading, time

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB

import torch, charrnn.training.trainer  # imported before the mark is reset

# The interpreter's high-water mark is set by importing torch; reset it (Linux >= 4.0) so that
# the peak seen afterwards is the probed work's own. Where that is refused, poll the resident size.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    polled = None
except OSError:
    polled = [status("VmRSS")]
    def poll():
        while True:
            polled[0] = max(polled[0], status("VmRSS"))
            time.sleep(0.002)
    threading.Thread(target=poll, daemon=True).start()
base = status("VmRSS")

def peak():
    return status("VmHWM") if polled is None else polled[0]
"""

PEAK_PROBE = PROBE_PROLOGUE + """
from charrnn.corpus.prepare import prepare
t = time.perf_counter()
prepare([sys.argv[1]], sys.argv[2])
t = time.perf_counter() - t
print(t, base, peak())
"""


def prepare_in_subprocess(path: Path, out: Path) -> tuple[float, float]:
    """(MB/s, peak resident memory in MB above the idle interpreter with charrnn imported)."""
    out_text = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(path), str(out)],
                              capture_output=True, text=True, check=True).stdout
    seconds, base, peak = (float(v) for v in out_text.split())
    return path.stat().st_size / 1e6 / seconds, (peak - base) / 1024


def prepare_rows(row, shared: Path, tmp: Path, quick):
    ascii_sources = [shared / n for n in ("tinyshakespeare.txt", "andersen.txt", "timemachine.txt")]
    sizes = (20, 50) if quick else (50, 200)
    results = []
    for mb in sizes:
        path = build_corpus(ascii_sources, mb, tmp / f"ascii{mb}.txt")
        rate, peak = prepare_in_subprocess(path, tmp / f"ascii{mb}")
        results.append((mb, rate, peak))
        path.unlink()
    for mb, rate, peak in results:
        row("4 prepare" if mb == sizes[0] else "",
            f"ASCII corpus, {mb} MB: throughput / peak memory above baseline",
            f"{rate:,.0f} MB/s / {peak:,.0f} MB", ">= 50 MB/s")
    row("", "peak memory, larger / smaller corpus", f"{results[1][2] / max(results[0][2], 1):.2f}x "
        f"for {sizes[1] / sizes[0]:.0f}x the text", "flat")
    cjk = build_corpus([shared / "hongloumeng_zh.txt"], 10 if quick else 50, tmp / "zh.txt")
    rate, peak = prepare_in_subprocess(cjk, tmp / "zh")
    row("", f"Chinese (4,345 characters), {cjk.stat().st_size / 1e6:.0f} MB",
        f"{rate:,.0f} MB/s / {peak:,.0f} MB", ">= 10 MB/s")


# ----------------------------------------------------------------------------------------
# 6. memory over a long run


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def memory_row(row, data, steps):
    cfg = load_config(overrides={"model.hidden_size": 128, "train.batch_size": 32,
                                 "train.seq_len": 64, "train.max_steps": steps,
                                 "train.eval_every": steps // 4, "train.log_every": 50})
    trainer = Trainer(cfg, data, echo=quiet, progress=False)
    samples, done = [], threading.Event()

    def watch():
        while not done.is_set():
            samples.append((trainer.state.step, rss_mb()))
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    trainer.run()
    done.set()
    thread.join()
    early = max(r for s, r in samples if s <= steps // 10)
    late = max(r for s, r in samples)
    row("6 memory", f"peak RSS by step {steps // 10} / over all {steps} steps (2x128 LSTM)",
        f"{early:,.0f} MB / {late:,.0f} MB", "no growth")


# ----------------------------------------------------------------------------------------
# 7. scale: a 1 GB corpus, and 1 vs 2 processes


TRAIN_PROBE = PROBE_PROLOGUE + """
from charrnn.core.checkpoint import load_checkpoint, save_checkpoint
from charrnn.core.config_files import load_config
from charrnn.core.device import resolve_device
from charrnn.core.errors import CharRNNError
from charrnn.core.precision import autocast, resolve_precision
from charrnn.corpus.prepared import PreparedData
from charrnn.inference.trained import model_from_checkpoint
from charrnn.training.trainer import Trainer
base_anon = status("RssAnon")
data = PreparedData(sys.argv[1], mapped={"read": False, "mapped": True}[sys.argv[3]])
cfg = load_config("configs/cpu.toml", overrides={
    "train.max_steps": int(sys.argv[2]), "train.max_time": "", "train.eval_every": 10 ** 9,
    "train.eval_chars": 200_000, "train.log_every": 10})
trainer = Trainer(cfg, data, echo=lambda *a, **k: None, progress=False)
t = time.perf_counter()
result = trainer.run()
t = time.perf_counter() - t
print(t, base, base_anon, peak(), status("RssAnon"), result.last_val_loss)
"""


def scale_rows(row, shared: Path, tmp: Path, quick):
    mb = 200 if quick else 1000
    sources = [shared / n for n in ("tinyshakespeare.txt", "andersen.txt", "timemachine.txt")]
    path = build_corpus(sources, mb, tmp / "big.txt")
    rate, prep_peak = prepare_in_subprocess(path, tmp / "big")
    path.unlink()
    row("7 scale", f"{mb:,} MB corpus: prepare throughput / peak memory above baseline",
        f"{rate:,.0f} MB/s / {prep_peak:,.0f} MB", "bounded")
    steps = 30 if quick else 100

    def train_memory(data_dir, how):
        """(peak RSS above baseline, private memory at the end above baseline) in MB."""
        out = subprocess.run([sys.executable, "-c", TRAIN_PROBE, str(data_dir), str(steps), how],
                             capture_output=True, text=True, check=True).stdout
        seconds, base, base_anon, peak, anon, val = (float(v) for v in out.split())
        return (peak - base) / 1024, (anon - base_anon) / 1024

    split_mb = (tmp / "big" / "train.bin").stat().st_size / 1e6
    for how, label, goal in (("read", "read into memory (the default)", "+ split size"),
                             ("mapped", "memory-mapped (splits over 1/4 of free memory)",
                              "no growth")):
        (small_peak, small_anon), (big_peak, big_anon) = (
            train_memory(tmp / "shakespeare", how), train_memory(tmp / "big", how))
        row("", f"train {steps} steps of cpu.toml, {label}, {split_mb:,.0f} MB split / 1 MB "
            "split: peak RSS above baseline", f"{big_peak:,.0f} MB / {small_peak:,.0f} MB", goal)
        row("", "  of which private (not pages of a file)",
            f"{big_anon:,.0f} MB / {small_anon:,.0f} MB")
    shutil.rmtree(tmp / "big")
