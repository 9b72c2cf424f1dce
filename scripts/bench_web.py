"""The exported web page (`charrnn export --web`) measured in headless Chromium: single-stream
sampling speed in the page, next to onnxruntime's Python CPU build on one thread for the
same file, and the site's size with and without the runtime, raw and gzipped.

    python scripts/bench_web.py                     # 2x256 and 2x512 GRUs, random weights
    python scripts/bench_web.py --sizes 256 --length 5000 --rounds 5
    python scripts/bench_web.py --cell lstm --quantize int8   # int8 sites beside fp32 ones
    python scripts/bench_web.py --quality runs/NAME # int8's cost: nats/char on the val split

The page is served by `python -m http.server` on 127.0.0.1 and driven through its own form
(temperature 1, a new seed each round); the speed is the worker's own count of characters
over the time from the first draw to the last, so the prime and the page's start-up are
left out. The best of --rounds counts, since load from elsewhere on the machine only ever
slows a round. Needs npm (for `npm pack onnxruntime-web`), Debian's chromium and playwright.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from charrnn.core.checkpoint import data_root_of
from charrnn.core.model import CharRNN, describe_model
from charrnn.corpus.prepared import PreparedData
from charrnn.corpus.text import TextOptions
from charrnn.corpus.vocab import Vocab
from charrnn.export import quantize
from charrnn.export.exporter import checked_bytes
from charrnn.export.metadata import state_names
from charrnn.export.quantize import quantize_bytes
from charrnn.export.runtime import VERSION, npm_pack
from charrnn.export.verify import session_for
from charrnn.export.web import export_web
from charrnn.inference.trained import load_model

# 65 characters: the size of tiny Shakespeare's vocabulary.
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charrnn-test" / "npm"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def site_sizes(directory: Path) -> tuple[int, int]:
    """(bytes, bytes gzipped at level 6, as a web server sends them) over the site's files."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    raw = sum(p.stat().st_size for p in files)
    return raw, sum(len(gzip.compress(p.read_bytes(), 6)) for p in files)


class StaticServer:
    def __init__(self, directory: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
             "--directory", str(directory)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        line = self.proc.stdout.readline()
        self.url = "http://127.0.0.1:%s/" % re.search(r"port (\d+)", line).group(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def page_speed(browser, url: str, length: int, rounds: int) -> float:
    """Best chars/s of `rounds` generations in the page at temperature 1."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#generate:enabled", timeout=60_000)
    page.fill("#temperature", "1")
    page.fill("#length", str(length))
    best = 0.0
    for seed in range(rounds):
        page.fill("#seed", str(seed))
        page.evaluate("window.charrnn.last = null")
        page.click("#generate")
        page.wait_for_function("window.charrnn.last !== null", timeout=600_000)
        last = page.evaluate("window.charrnn.last")
        best = max(best, last["chars"] / last["seconds"])
    page.close()
    return best


def native_speed(path: Path, model, length: int, rounds: int) -> float:
    """Best chars/s of onnxruntime's CPU build on one thread: the page's loop in Python."""
    session = session_for(str(path), threads=1)
    shape = (model.num_layers, 1, model.hidden_size)
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(rounds):
        state = {name: np.zeros(shape, np.float32) for name in state_names(model.cell)}
        ids = np.zeros((1, 1), np.int64)
        started = time.perf_counter()
        for _ in range(length):
            logits, *new = session.run(None, {"ids": ids, **state})
            state = dict(zip(state, new))
            ids[0, 0] = int(np.argmax(logits[0, -1] + rng.gumbel(size=logits.shape[-1])))
        best = max(best, length / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--cell", choices=["gru", "lstm", "rnn"], default="gru")
    parser.add_argument("--length", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quantize", choices=["int8"])
    parser.add_argument("--quality", metavar="RUN",
                        help="Instead: a trained run's validation split scored by its fp32 "
                             "and int8 files in onnxruntime, and their greedy text compared")
    args = parser.parse_args()
    if args.quality:
        return quality(args.quality)
    tarball = npm_pack(CACHE)
    if tarball is None:
        sys.exit(f"needs npm: npm pack onnxruntime-web@{VERSION} failed")
    from playwright.sync_api import sync_playwright

    vocab = Vocab(list(CHARS))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        for hidden in args.sizes:
            torch.manual_seed(0)
            model = CharRNN(len(vocab), hidden, 2, args.cell)
            for kind in [None, *([args.quantize] if args.quantize else [])]:
                rows.append(measure(browser, model, vocab, Path(tmp), tarball, kind, args))
        version = browser.version
        browser.close()
    print(f"chromium {version} (headless), onnxruntime-web {VERSION} (wasm, 1 thread); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"temperature 1, {args.length:,} characters, best of {args.rounds}\n")
    print("| model | in the page, chars/s | onnxruntime (Python, 1 thread), chars/s | "
          "site without runtime | gzip | with --runtime | gzip |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['page']:,.0f} | {r['native']:,.0f} | "
              f"{r['bare'][0] / 1e6:.2f} MB | {r['bare'][1] / 1e6:.2f} MB | "
              f"{r['full'][0] / 1e6:.2f} MB | {r['full'][1] / 1e6:.2f} MB |")


def measure(browser, model, vocab, tmp: Path, tarball, kind, args) -> dict:
    name = describe_model(model) + (f", {kind}" if kind else "")
    label = name.replace(" ", "_").replace(",", "")
    bare, full = tmp / f"{label}-cdn", tmp / f"{label}-local"
    for directory, runtime in ((bare, None), (full, tarball)):
        export_web(model, vocab, TextOptions(), directory, runtime=runtime)
        if kind:
            # Speed and size only: random weights have near-ties that int8 reorders, so
            # they fail export's greedy check; the int8 file goes in by hand.
            model_file = directory / "model.onnx"
            model_file.write_bytes(quantize_bytes(model_file.read_bytes()))
    server = StaticServer(full)
    try:
        page = page_speed(browser, server.url, args.length, args.rounds)
    finally:
        server.stop()
    return {"name": name, "page": page,
            "native": native_speed(full / "model.onnx", model, args.length, args.rounds),
            "bare": site_sizes(bare), "full": site_sizes(full)}


# ----------------------------------------------------------------------------------------
# what int8 costs


def onnx_nats(data: bytes, ids: np.ndarray, model, chunk: int = 4096) -> float:
    """Mean nats/char of the file over `ids`, read in one stream from its start."""
    session = session_for(data)
    shape = (model.num_layers, 1, model.hidden_size)
    state = {name: np.zeros(shape, np.float32) for name in state_names(model.cell)}
    total = 0.0
    for start in range(0, len(ids) - 1, chunk):
        x = ids[start:start + chunk + 1].astype(np.int64)
        logits, *new = session.run(None, {"ids": x[None, :-1], **state})
        state = dict(zip(state, new))
        logp = torch.log_softmax(torch.from_numpy(logits[0]).double(), -1).numpy()
        total -= logp[np.arange(len(x) - 1), x[1:]].sum()
    return total / (len(ids) - 1)


def quality(run: str) -> None:
    trained = load_model(run)
    model, state = trained.model.eval(), trained.state
    val = PreparedData(data_root_of(state)).split("val")
    fp32, _ = checked_bytes(model, trained.vocab, trained.options, state)
    int8 = quantize_bytes(fp32)
    greedy = [quantize.greedy_ids(d, model, quantize.GREEDY_CHARS) for d in (fp32, int8)]
    same = next((i for i, (a, b) in enumerate(zip(*greedy)) if a != b), len(greedy[0]))
    nats = [onnx_nats(d, val, model) for d in (fp32, int8)]
    print(f"{trained.line}\n{describe_model(model)}, validation split {len(val):,} characters "
          f"(one stream from its start, onnxruntime CPU)\n")
    print("| weights | file | nats/char | bits/char | greedy text |")
    print("|---|---:|---:|---:|---|")
    print(f"| fp32 | {len(fp32) / 1e6:.2f} MB | {nats[0]:.4f} | {nats[0] / np.log(2):.4f} | |")
    print(f"| int8 | {len(int8) / 1e6:.2f} MB | {nats[1]:.4f} ({nats[1] - nats[0]:+.4f}) | "
          f"{nats[1] / np.log(2):.4f} | the same for {same:,} of {len(greedy[0]):,} characters |")


if __name__ == "__main__":
    main()
