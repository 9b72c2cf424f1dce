"""`charrnn prepare` of a directory of many small files: MB/s and peak memory.

    python scripts/bench_prepare_many.py                     # 10k, 30k and 100k files
    python scripts/bench_prepare_many.py --files 100000 --keep /tmp/many --before e032ff3

Writes N small text files (0.5-4 KB each, C-header-like lines, in directories of 1,000)
under a temporary directory, reads them once so that the page cache holds them, then runs
`prepare` on them in a fresh process and reports its wall time, MB/s, its CPU time (user
and system of `prepare` alone: what other jobs on a shared machine inflate least) and
peak resident memory (ru_maxrss of that process). For reference, the same bytes as one
file. Memory should stay flat as the file count grows: the per-file record is a few
numpy entries.

With --before REV, the charrnn package of that git revision (git archive, into a
temporary directory) runs on the same trees, in turn with this one, --repeat times:
each row is the median of its runs, so that before and after meet the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
if len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])  # the package of another revision
import charrnn
from charrnn.corpus.prepare import prepare
cpu = time.process_time()
started = time.perf_counter()
meta = prepare([sys.argv[1]], sys.argv[2])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu": time.process_time() - cpu,
    "peak_mb": usage.ru_maxrss / 1024, "documents": meta.get("documents", 1),
    "chars": meta["chars"], "package": charrnn.__file__}))
"""

WORDS = ("int unsigned long struct static inline const void return define ifndef endif "
         "include size_t u32 u64 __be16 ETH_ALEN skb dev flags len data buf").split()


def make_tree(root: Path, n_files: int, seed: int = 0) -> int:
    """n_files text files under root; returns their total bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(n_files):
        folder = root / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        lines = [f"/* file {i} */", f"#ifndef _F{i}_H", f"#define _F{i}_H"]
        size = rng.randint(500, 4000)
        while sum(len(x) + 1 for x in lines) < size:
            lines.append("\t" + " ".join(rng.choices(WORDS, k=rng.randint(2, 9))) + ";")
        text = "\n".join(lines + ["#endif"]) + "\n"
        (folder / f"f{i:06d}.h").write_text(text)
        total += len(text)
    return total


def warm(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def run_prepare(source: Path, out: Path, package: Path | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    extra = [str(package)] if package is not None else []
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), str(out), *extra],
                          capture_output=True, text=True, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    if package is not None and not got["package"].startswith(str(package)):
        raise SystemExit(f"the --before run imported {got['package']}, not {package}")
    return got


def median(runs: list[dict]) -> dict:
    """The median of the runs' times and peaks (the rest is the same in each)."""
    return {k: statistics.median(r[k] for r in runs) if k in ("seconds", "cpu", "peak_mb")
            else runs[0][k] for k in runs[0]}


def export(rev: str, into: Path) -> Path:
    """The charrnn package of git revision `rev`, unpacked under `into`."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", rev, "charrnn"], cwd=repo,
                             capture_output=True, check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def bench(base: Path, n: int, before: Path | None, repeat: int) -> list:
    root = base / f"tree{n}"
    if not root.exists():
        make_tree(root, n)
    warm(root)
    mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    rows, runs = [], {"after": []}
    if before is not None:
        runs["before"] = []
    for _ in range(repeat):  # in turn, so that both meet the same load
        for code in runs:
            runs[code].append(run_prepare(root, base / f"out{n}",
                                          before if code == "before" else None))
    rows += [(f"{n:,} files", code, mb, median(runs[code]))
             for code in ("before", "after") if code in runs]
    one = base / f"one{n}.txt"
    with open(one, "wb") as f:
        for p in sorted(root.rglob("*.h")):
            f.write(p.read_bytes())
    rows.append(("  same bytes, one file", "after", mb, run_prepare(one, base / f"outone{n}")))
    one.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--keep", type=Path, help="build the trees here and keep them")
    parser.add_argument("--before", metavar="REV",
                        help="also run the charrnn package of this git revision")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each, in turn; a row is their median")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-before-"))
    rows = []
    try:
        before = export(args.before, scratch) if args.before else None
        for n in args.files:
            rows += bench(base, n, before, args.repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (other jobs count: CPU s is the "
          f"figure they inflate least)")
    print(f"{'input':<24} {'code':<7} {'MB':>7} {'seconds':>8} {'MB/s':>6} {'CPU s':>6} "
          f"{'MB/CPU s':>8} {'peak MB':>8} {'documents':>10}")
    for name, code, mb, got in rows:
        print(f"{name:<24} {code:<7} {mb:7.1f} {got['seconds']:8.2f} "
              f"{mb / got['seconds']:6.1f} {got['cpu']:6.2f} {mb / got['cpu']:8.1f} "
              f"{got['peak_mb']:8.0f} {got['documents']:>10,}")


if __name__ == "__main__":
    main()
