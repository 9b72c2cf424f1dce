"""Benchmark of the novelty check: index build speed and peak memory, and query speed beside
a brute force, on synthetic training splits; and, given a trained model, how much its
samples copy at several temperatures.

    python scripts/bench_novelty.py                      # 1 MB and 100 MB splits
    python scripts/bench_novelty.py --sizes 1 100 1000   # and 1 GB (about 15 GB of disk under --tmp)
    python scripts/bench_novelty.py --sizes --model runs/shakespeare   # copying per temperature

A split of N MB is made by shuffling the lines of real corpora from ../shared/data (tiny
Shakespeare, Andersen, The Time Machine) and repeating them: natural text whose lines recur
in new orders. Queries are passages of War and Peace, which the split does not hold (the
matches a model's sample would have), and a passage of the split itself (a copy). Each
build and each query set runs in a child process, so that its peak memory (ru_maxrss,
above the interpreter with charrnn and numpy imported) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SOURCES = ("tinyshakespeare.txt", "andersen.txt", "timemachine.txt")


def processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    import platform
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def synthetic_text(path: Path, size: int, data: Path) -> None:
    """`size` bytes of the corpora's lines, shuffled anew for each repetition."""
    lines = b"".join((data / name).read_bytes() for name in SOURCES).split(b"\n")
    rng, written = random.Random(0), 0
    with open(path, "wb") as f:
        while written < size:
            rng.shuffle(lines)
            block = b"\n".join(lines)[:size - written]
            f.write(block)
            written += len(block)


# ----------------------------------------------------------------------------------------
# what the child processes run


def child_build(root: str) -> dict:
    from charrnn.corpus.prepared import PreparedData
    from charrnn.novelty import open_index
    base = _rss()
    started = time.perf_counter()
    index = open_index(PreparedData(root))
    return {"seconds": time.perf_counter() - started, "chars": index.n,
            "peak_mb": (_peak() - base) / 2**20, "blocks": len(index.starts)}


def child_query(root: str, data: str, naive_chars: int) -> dict:
    import numpy as np

    from charrnn.corpus.prepared import PreparedData
    from charrnn.novelty import (
        matching_statistics,
        naive_matching_statistics,
        open_index,
    )
    from charrnn.novelty.report import encode
    base, anon = _rss(), _anon()
    index = open_index(PreparedData(root))
    novel = Path(data, "war_and_peace.txt").read_text(encoding="utf-8").replace("\r\n", "\n")
    novel = novel[200_000:]
    copy = index.vocab.decode(np.asarray(index.text[index.n // 2:index.n // 2 + 500]))
    out = {}

    def speed(name, text, repeat):
        ids = encode(index.vocab, text)
        matching_statistics(index, ids)  # the first call pages the index in
        started = time.perf_counter()
        for _ in range(repeat):
            ms, _ = matching_statistics(index, ids)
        out[name] = {"chars_per_s": repeat * len(ids) / (time.perf_counter() - started),
                     "mean_ms": float(ms.mean()), "max_ms": int(ms.max())}
        out["anon_mb"] = max(out.get("anon_mb", 0), (_anon() - anon) / 2**20)

    speed("sample 500", novel[:500], 20)
    speed("copy 500", copy, 20)
    speed("text 100k", novel[:100_000], 1)
    if naive_chars:
        ids = encode(index.vocab, novel[:naive_chars])
        started = time.perf_counter()
        naive = naive_matching_statistics(index.text, ids)
        out["naive"] = {"chars_per_s": len(ids) / (time.perf_counter() - started)}
        assert (naive == matching_statistics(index, ids)[0]).all()
    out["peak_mb"] = (_peak() - base) / 2**20
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _anon() -> int:
    """Resident memory of the process's own (anonymous) pages, not of mapped files."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def _peak() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_child(function: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_novelty as b; print(json.dumps(b.{function}(*{args!r})))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode:
        sys.exit(f"{function} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------
# the rows


def split_rows(sizes, data: Path, tmp: Path) -> list[str]:
    from charrnn.corpus.prepare import prepare
    rows = []
    for mb in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"novelty-{mb:g}mb-", dir=tmp))
        try:
            text = work / "text.txt"
            synthetic_text(text, int(mb * 1e6 / 0.999), data)  # train: the first 99.9%
            prepare([str(text)], work / "prepared", val_frac=0.001)
            text.unlink()
            build = in_child("child_build", str(work / "prepared"))
            naive = 200 if mb <= 1 else 20 if mb <= 100 else 0  # the brute force is O(n |T|)
            query = in_child("child_query", str(work / "prepared"), str(data), naive)
            disk = (work / "prepared" / "novelty" / "index.bin").stat().st_size
        finally:
            shutil.rmtree(work, ignore_errors=True)
        s, c, t = (query[k]["chars_per_s"] for k in ("sample 500", "copy 500", "text 100k"))
        brute = f"{query['naive']['chars_per_s']:,.0f}" if "naive" in query else "—"
        rows.append(f"| {build['chars'] / 1e6:,.0f} MB ({build['blocks']} block"
                    f"{'s' if build['blocks'] > 1 else ''}) | {build['chars'] / 1e6 / build['seconds']:.1f} "
                    f"| {build['peak_mb']:,.0f} MB | {disk / 2**30:.2f} GiB | {s:,.0f} | {c:,.0f} "
                    f"| {t:,.0f} | {brute} | {query['peak_mb']:,.0f} MB ({query['anon_mb']:,.0f} MB) |")
        print(rows[-1], flush=True)
    return rows


def temperature_rows(model: str, temperatures, samples: int, length: int) -> list[str]:
    """How much samples copy, per temperature: `samples` samples of `length` characters."""
    import numpy as np

    from charrnn.inference.sample import Sampler
    from charrnn.inference.trained import load_model
    from charrnn.novelty import novelty_report
    from charrnn.novelty.source import training_index
    trained = load_model(model)
    net, vocab = trained.model, trained.vocab
    index = training_index(state=trained.state)
    rows = []
    for t in temperatures:
        texts = Sampler(net, vocab, t, seed=1).texts(length, "", samples)
        reports = [novelty_report(index, text) for text in texts]
        longest = np.array([r.longest for r in reports])
        rows.append(f"| {t} | {np.median(longest):.0f} | {longest.max()} "
                    f"| {np.mean([r.shares[20] for r in reports]):.1%} "
                    f"| {np.mean([r.shares[50] for r in reports]):.1%} "
                    f"| {np.mean(longest >= 50):.0%} |")
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="*", default=[1, 100],
                        help="training split sizes in MB (1000 for 1 GB)")
    parser.add_argument("--data", type=Path, default=DATA, help="the corpora (../shared/data)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the splits and their indexes are made, then deleted")
    parser.add_argument("--model", help="a run or checkpoint: copying per temperature")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.2, 0.5, 0.8, 1.0])
    parser.add_argument("--samples", type=int, default=20, help="samples per temperature")
    parser.add_argument("--length", type=int, default=500, help="characters per sample")
    args = parser.parse_args()
    # The machine may be shared: its load says how far the figures are from an idle one.
    print(f"processor: {processor()}; load average at start: {os.getloadavg()[0]:.1f}")
    if args.sizes:
        print("| split | build MB/s | build peak | index on disk | 500-char sample, chars/s "
              "| 500-char copy, chars/s | 100k-char text, chars/s | brute force, chars/s "
              "| query peak (own pages) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        split_rows(args.sizes, args.data, args.tmp)
    if args.model:
        print(f"\n{args.samples} samples of {args.length} characters per temperature, seed 1")
        print("| temperature | median longest span | longest | in spans of 20+ "
              "| in spans of 50+ | samples with a span of 50+ |")
        print("|---:|---:|---:|---:|---:|---:|")
        temperature_rows(args.model, args.temperatures, args.samples, args.length)


if __name__ == "__main__":
    main()
