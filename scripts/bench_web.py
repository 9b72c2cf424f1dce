"""The exported web page (`charrnn export --web`) measured in headless Chromium: single-stream
sampling speed in the page, next to onnxruntime's Python CPU build on one thread for the
same file, and the site's size with and without the runtime, raw and gzipped.

    python scripts/bench_web.py                     # 2x256 and 2x512 GRUs, random weights
    python scripts/bench_web.py --sizes 256 --length 5000 --rounds 5
    python scripts/bench_web.py --quantize int8     # the int8 site beside the fp32 one

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

from charrnn.core.model import CharRNN, describe_model
from charrnn.corpus.text import TextOptions
from charrnn.corpus.vocab import Vocab
from charrnn.export.runtime import VERSION, npm_pack
from charrnn.export.verify import session_for
from charrnn.export.web import export_web

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


def native_speed(path: Path, length: int, rounds: int) -> float:
    """Best chars/s of onnxruntime's CPU build on one thread: the page's loop in Python."""
    session = session_for(str(path), threads=1)
    shape = next(i.shape for i in session.get_inputs() if i.name == "h")
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(rounds):
        h = np.zeros((shape[0], 1, shape[2]), np.float32)
        ids = np.zeros((1, 1), np.int64)
        started = time.perf_counter()
        for _ in range(length):
            logits, h = session.run(None, {"ids": ids, "h": h})
            ids[0, 0] = int(np.argmax(logits[0, -1] + rng.gumbel(size=logits.shape[-1])))
        best = max(best, length / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--length", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quantize", choices=["int8"])
    args = parser.parse_args()
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
            model = CharRNN(len(vocab), hidden, 2, "gru")
            for quantize in [None, *([args.quantize] if args.quantize else [])]:
                rows.append(measure(browser, model, vocab, Path(tmp), tarball, quantize, args))
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


def measure(browser, model, vocab, tmp: Path, tarball, quantize, args) -> dict:
    name = describe_model(model) + (f", {quantize}" if quantize else "")
    label = name.replace(" ", "_").replace(",", "")
    bare, full = tmp / f"{label}-cdn", tmp / f"{label}-local"
    export_web(model, vocab, TextOptions(), bare, quantize=quantize)
    export_web(model, vocab, TextOptions(), full, runtime=tarball, quantize=quantize)
    server = StaticServer(full)
    try:
        page = page_speed(browser, server.url, args.length, args.rounds)
    finally:
        server.stop()
    return {"name": name, "page": page,
            "native": native_speed(full / "model.onnx", args.length, args.rounds),
            "bare": site_sizes(bare), "full": site_sizes(full)}


if __name__ == "__main__":
    main()
