"""The default run on a machine that is not quiet: the figures of docs/benchmarks.md,
"The default run on a shared machine". Every figure is a whole `charrnn` process, as a user
runs it; "busy" means one other CPU-bound process runs beside it (`sh -c 'while :; do :;
done'`, killed when the measurement ends and bounded by `timeout` in any case).

    .venv/bin/python scripts/bench_busy.py --data ../shared/data            # ~15 minutes
    .venv/bin/python scripts/bench_busy.py --data ../shared/data --parts threads,decisions

Parts:
  decisions  the same command without -c run 5 times, busy: identical config.toml and plan
  threads    training speed of the cpu preset, quiet and busy, by thread setting; eval of
             10 KB by thread setting, busy
  cadence    seconds from the start to the first validation line, tiny Shakespeare and a
             50 MB corpus, both presets; then Ctrl-C: seconds until the process has ended,
             and whether last.pt is there
  budget     --max-time 60s: wall time from the start of training to the end, quiet and busy
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROWS: list[tuple[str, str, str]] = []


def row(part: str, what: str, figure: str) -> None:
    ROWS.append((part, what, figure))
    print(f"{part:<10} {what:<72} {figure}", flush=True)


@contextlib.contextmanager
def busy(on: bool, seconds: float = 900):
    """One CPU-bound neighbour for the block (and never longer than `seconds`)."""
    if not on:
        yield
        return
    hog = subprocess.Popen(["timeout", str(int(seconds)), "sh", "-c", "while :; do :; done"],
                           start_new_session=True)
    time.sleep(0.3)
    try:
        yield
    finally:
        os.killpg(hog.pid, signal.SIGKILL)
        hog.wait()


class Run:
    """A charrnn process whose output lines are timed as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None):
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, **(env or {})},
                                     start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def wait_for(self, pattern: str, timeout: float) -> float | None:
        """Seconds from the start to the first line matching `pattern` (None: not in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if re.search(pattern, line):
                    return at
            if self.proc.poll() is not None and not self.reader.is_alive():
                return None
            time.sleep(0.05)
        return None

    def finish(self, timeout: float = 900) -> float:
        """Seconds from the start to the end of the process."""
        self.proc.wait(timeout=timeout)
        self.reader.join(5)
        return time.monotonic() - self.started

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def speed(output: str) -> float:
    m = re.search(r"([\d,]+) chars/s; ", output)
    return float(m.group(1).replace(",", "")) if m else float("nan")


# ----------------------------------------------------------------------------------------


def decisions(work: Path, corpus: Path):
    configs, plans = set(), set()
    with busy(True):
        for i in range(5):
            run = Run(["train", str(corpus), "--max-steps", "1", "--name", f"same{i}",
                       "--set", "train.eval_chars=2000", "--runs", "runs-same"], work)
            run.finish()
            out = run.text()
            plans.add(next((l for l in out.splitlines() if "precision" in l), "?")
                      .split("precision", 1)[-1])
            configs.add((work / f"runs-same/same{i}/config.toml").read_text()
                        .replace(f"same{i}", ""))
    row("decisions", "distinct config.toml / precision plans over 5 busy runs, no -c",
        f"{len(configs)} / {len(plans)}")


def threads(work: Path, corpus: Path, rounds: int, steps: int = 60):
    settings = {"default (1 thread, passive wait)": {},
                "2 threads, passive wait": {"OMP_NUM_THREADS": "2"},
                "2 threads, libgomp's spinning wait (before)": {"OMP_NUM_THREADS": "2",
                                                                "GOMP_SPINCOUNT": "300000"}}
    figures: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):
        for loaded in (False, True):
            for name, env in settings.items():
                with busy(loaded):
                    run = Run(["train", str(corpus), "-c", "cpu", "--max-steps", str(steps),
                               "--set", "train.eval_chars=2000", "--runs", "runs-threads"],
                              work, env)
                    run.finish()
                figures.setdefault((name, loaded), []).append(speed(run.text()))
    best_quiet = max(statistics.median(figures[(n, False)]) for n in settings)
    for name in settings:
        quiet, loaded = (statistics.median(figures[(name, b)]) for b in (False, True))
        row("threads", f"cpu preset training, {name}: quiet / busy chars/s",
            f"{quiet:,.0f} / {loaded:,.0f} ({loaded / quiet:.2f} of quiet; quiet "
            f"{quiet / best_quiet:.2f} of the best)")
    text = work / "ten_kb.txt"
    text.write_text(corpus.read_text(encoding="utf-8")[:10_000], encoding="utf-8")
    model = next((work / "runs-threads").glob("*/last.pt"))
    for name, env in settings.items():
        times = []
        for _ in range(rounds):
            with busy(True):
                run = Run(["eval", str(model), str(text), "-q"], work, env)
                times.append(run.finish())
        row("threads", f"eval of 10 KB, busy, {name}: wall seconds (process)",
            f"{statistics.median(times):.1f}")


def cadence(work: Path, corpora: dict[str, Path]):
    for label, path in corpora.items():
        for preset in ("cpu", "cpu-bf16"):
            run = Run(["train", str(path), "-c", preset, "--max-time", "10m",
                       "--runs", "runs-cadence"], work)
            first = run.wait_for(r"\| val loss", 240)
            time.sleep(3)  # Ctrl-C while training, a few seconds after that
            pressed = time.monotonic()
            run.proc.send_signal(signal.SIGINT)
            try:
                run.proc.wait(timeout=60)
                ended = time.monotonic() - pressed
            except subprocess.TimeoutExpired:
                run.kill()
                ended = float("inf")
            run.reader.join(5)
            saved = "saving last.pt" in run.text()
            row("cadence", f"{label}, -c {preset}: first validation line / Ctrl-C to exit",
                f"{first if first is None else round(first, 1)} s / {ended:.1f} s"
                f"{'' if saved else ' (no last.pt!)'}")
    # Ctrl-C in the middle of a validation: the 50 MB corpus at steps, a full split.
    path = list(corpora.values())[-1]
    run = Run(["train", str(path), "-c", "cpu", "--eval-every", "5", "--log-every", "1",
               "--set", "train.eval_chars=3000000", "--runs", "runs-cadence"], work)
    run.wait_for(r"^step 5 \|", 300)
    time.sleep(2)
    pressed = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    run.proc.wait(timeout=120)
    run.reader.join(5)
    row("cadence", "Ctrl-C during a validation of 3 M characters: to exit",
        f"{time.monotonic() - pressed:.1f} s"
        f"{' (abandoned)' if 'validation abandoned' in run.text() else ''}")


def budget(work: Path, corpus: Path):
    for loaded in (False, True):
        with busy(loaded):
            run = Run(["train", str(corpus), "-c", "cpu", "--max-time", "60s",
                       "--runs", "runs-budget"], work)
            started = run.wait_for(r"^stops at:", 300)
            total = run.finish()
        last = run.text().strip().splitlines()[-1]
        row("budget", f"--max-time 60s, {'busy' if loaded else 'quiet'}: start of training to "
            f"exit / whole process", f"{total - started:.1f} s / {total:.1f} s  ({last[:60]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data", help="folder with tinyshakespeare.txt")
    ap.add_argument("--parts", default="decisions,threads,cadence,budget")
    ap.add_argument("--rounds", type=int, default=2, help="repeats of each thread setting")
    ap.add_argument("--steps", type=int, default=60, help="training steps per thread setting")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    shakespeare = data / "tinyshakespeare.txt"
    import torch

    from charrnn.core.cpu import cpu_budget, cpu_model, cpu_flags
    bf16 = "avx512_bf16" in cpu_flags()
    print(f"{cpu_model()}, {cpu_budget().describe()}, avx512_bf16: {bf16}; torch "
          f"{torch.__version__}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="charrnn-busy-") as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")
        if "decisions" in parts:
            decisions(work, shakespeare)
        if "threads" in parts:
            threads(work, shakespeare, args.rounds, args.steps)
        if "cadence" in parts:
            big = work / "big.txt"
            with open(big, "w", encoding="utf-8") as f:
                texts = [p.read_text(encoding="utf-8") for p in sorted(data.glob("*.txt"))
                         if p.name in ("andersen.txt", "war_and_peace.txt", "timemachine.txt",
                                       "tinyshakespeare.txt")]
                while f.tell() < 50_000_000:
                    for t in texts:
                        f.write(t)
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "charrnn", "prepare", str(big), "-o",
                            str(work / "big")], check=True, capture_output=True)
            row("cadence", f"prepare of the {big.stat().st_size / 1e6:.0f} MB corpus (before "
                "the runs below)", f"{time.monotonic() - started:.1f} s")
            cadence(work, {"tiny Shakespeare (1.1 MB)": shakespeare,
                           f"{big.stat().st_size / 1e6:.0f} MB corpus": work / "big"})
        if "budget" in parts:
            budget(work, shakespeare)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| part | measurement | figure |\n|---|---|---|")
    for part, what, figure in ROWS:
        print(f"| {part} | {what} | {figure} |")


if __name__ == "__main__":
    main()
