"""`charrnn prepare` of a directory of many small files: MB/s and peak memory.

    python scripts/bench_prepare_many.py                     # 10k, 30k and 100k files
    python scripts/bench_prepare_many.py --files 100000 --keep /tmp/many

Writes N small text files (0.5-4 KB each, C-header-like lines, in directories of 1,000)
under a temporary directory, reads them once so that the page cache holds them, then runs
`prepare` on them in a fresh process and reports its wall time, MB/s, its CPU time (user
and system, start-up included: what a shared machine does not inflate) and peak resident
memory (ru_maxrss of that process). For reference, the same bytes as one file. Memory
should stay flat as the file count grows: the per-file record is a few numpy entries.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from charrnn.corpus.prepare import prepare
started = time.perf_counter()
meta = prepare([sys.argv[1]], sys.argv[2])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
    "peak_mb": usage.ru_maxrss / 1024, "documents": meta.get("documents", 1),
    "chars": meta["chars"]}))
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


def run_prepare(source: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--keep", type=Path, help="build the trees here and keep them")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    rows = []
    try:
        for n in args.files:
            root = base / f"tree{n}"
            if not root.exists():
                make_tree(root, n)
            warm(root)
            mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
            got = run_prepare(root, base / f"out{n}")
            rows.append((f"{n:,} files", mb, got))
            one = base / f"one{n}.txt"
            with open(one, "wb") as f:
                for p in sorted(root.rglob("*.h")):
                    f.write(p.read_bytes())
            rows.append((f"  same bytes, one file", mb, run_prepare(one, base / f"outone{n}")))
            one.unlink()
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'input':<24} {'MB':>7} {'seconds':>8} {'MB/s':>6} {'CPU s':>6} {'MB/CPU s':>8} "
          f"{'peak MB':>8} {'documents':>10}")
    for name, mb, got in rows:
        cpu = got.get("cpu", float("nan"))
        print(f"{name:<24} {mb:7.1f} {got['seconds']:8.2f} {mb / got['seconds']:6.1f} "
              f"{cpu:6.2f} {mb / cpu:8.1f} {got['peak_mb']:8.0f} {got['documents']:>10,}")


if __name__ == "__main__":
    main()
