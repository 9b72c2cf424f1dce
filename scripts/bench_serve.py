"""Benchmark of `charrnn serve`: streaming clients against the real server on 127.0.0.1.

    python scripts/bench_serve.py                        # a random 2x256 GRU (the cpu preset's
                                                         # shape), 1/8/32/64 clients, 5 min soak
    python scripts/bench_serve.py --soak 30s             # a short soak, to check it works
    python scripts/bench_serve.py --target runs/latest   # a trained model instead

It starts `charrnn serve --port 0` as a subprocess and measures, in one run:
- the in-process speed of `charrnn sample` (one stream, this process) on the same model;
- for 1, 8, 32 and 64 concurrent streaming clients (httpx): aggregate chars/s, time to the
  first character (p50, p99), and the slowest client's chars/s against the mean;
- how many of 32 concurrent seeded requests got exactly the text they get alone;
- a soak: 16 clients for --soak (default 5 min) mixing streams, whole answers, sessions
  and scores, counting errors and sampling the server's RSS and its stream/session counts;
- hostile clients (scripts/bench_serve_hostile.py): stalled connections, partial bodies,
  and a small generate beside long scores and 1 MiB primes.
`--parts speed,soak,hostile` picks which (default: all). Every loop is bounded in count
and in time. The goals (docs/benchmarks.md) are ratios
within one run: 32 clients >= 12x one client, slowest >= 0.5x mean, soak 0 errors and RSS
growth <= 5% after warm-up, one client >= 0.9x in-process sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.config import parse_duration
from charrnn.core.model import CharRNN
from charrnn.core.runs import find_checkpoint
from charrnn.corpus.vocab import Vocab
from charrnn.inference.sample import Sampler
from charrnn.inference.stepper import Stepper
from charrnn.inference.trained import model_from_checkpoint, save_model

ALPHABET = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-&"))
REQUEST_TIMEOUT = 300  # seconds: no single request of this benchmark should come near it
MAX_SESSIONS = 64  # fewer than the soak's clients use, so that the bound is exercised


def processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def random_checkpoint(path: Path, cell: str, hidden_size: int, num_layers: int) -> Path:
    """A random model of the given shape over a 65-character alphabet, saved as training
    saves one; speed does not depend on what the weights have learnt."""
    torch.manual_seed(0)
    model = CharRNN(len(ALPHABET), hidden_size, num_layers, cell)
    return save_model(path, model, Vocab(ALPHABET))


def sample_speed(checkpoint: Path, length: int, repeats: int = 3) -> float:
    """chars/s of `charrnn sample`'s generation loop for one stream, in this process."""
    model, vocab, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    best = 0.0
    for seed in range(repeats):
        sampler = Sampler(model, vocab, temperature=1.0, seed=seed)
        started = time.perf_counter()
        n = sum(len(pieces[0]) for pieces in sampler.generate(length))
        best = max(best, n / (time.perf_counter() - started))
    return best


def step_costs(checkpoint: Path, sizes=(1, 32, 64), repeats: int = 300) -> dict:
    """Seconds per batched step of the model for B streams: t(32) / t(1) bounds what 32
    clients can gain over one (at best 32 x t(1) / t(32))."""
    model, _, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    costs = {}
    with torch.inference_mode():
        for B in sizes:
            stepper = Stepper(model, B)
            for _ in range(20):
                stepper.step()
            started = time.perf_counter()
            for _ in range(repeats):
                stepper.step()
            costs[B] = (time.perf_counter() - started) / repeats
    return costs


# ----------------------------------------------------------------------------------------
# the server


class Server:
    def __init__(self, checkpoint: Path, max_streams: int, max_length: int, extra=(),
                 preexec=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", str(checkpoint), "--port", "0",
             "--max-streams", str(max_streams), "--max-length", str(max_length),
             "--max-sessions", str(MAX_SESSIONS), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)
        lines: queue.Queue = queue.Queue()
        self.logged = 0  # bytes of output: the log's growth under attack

        def read():
            for line in self.proc.stdout:
                self.logged += len(line)
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 120
        self.url = None
        while self.url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith("serving on "):
                self.url = line.split()[2].rstrip("/")

    def log_bytes(self) -> int:
        return self.logged

    def limits(self) -> dict:
        return httpx.get(self.url + "/v1/model", timeout=30).json()["limits"]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------------------
# clients


async def stream_one(client: httpx.AsyncClient, body: dict) -> dict:
    """One streaming request: its text, when it started, its first character and its end."""
    started = time.perf_counter()
    first = None
    text, done = [], None
    async with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "text":
                    first = first or time.perf_counter()
                    text.append(data["text"])
                elif event == "done":
                    done = data
                elif event == "error":
                    raise RuntimeError(data["error"])
    if done is None:
        raise RuntimeError("no final event")
    return {"text": "".join(text), "start": started, "first": first or time.perf_counter(),
            "end": time.perf_counter()}


async def concurrent(url: str, n: int, length: int, seed0: int = 0) -> list[dict]:
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) as c:
        return await asyncio.gather(*[stream_one(c, {"length": length, "seed": seed0 + i,
                                                     "temperature": 1.0})
                                      for i in range(n)])


def summarize(results: list[dict]) -> dict:
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    rates = [len(r["text"]) / (r["end"] - r["start"]) for r in results]
    ttfc = sorted(r["first"] - r["start"] for r in results)
    return {"clients": len(results), "aggregate": sum(len(r["text"]) for r in results) / wall,
            "mean": statistics.mean(rates), "slowest": min(rates),
            "ttfc_p50": ttfc[len(ttfc) // 2],
            "ttfc_p99": ttfc[min(len(ttfc) - 1, round(0.99 * (len(ttfc) - 1)))]}


async def soak(server: Server, clients: int, seconds: float, length: int) -> dict:
    """`clients` loops of mixed requests for `seconds`; RSS and counts sampled meanwhile."""
    errors, requests, samples = [], 0, []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4)

    async def client_loop(i: int, c: httpx.AsyncClient):
        nonlocal requests
        rng = random.Random(i)
        while time.monotonic() < deadline:
            # 8 sessions per client: more than the server keeps (--max-sessions 64), so the
            # store's bound is exercised and some sessions are found gone (404: made again)
            session = f"soak-{i}-{rng.randrange(8)}"
            kind = rng.random()
            try:
                if kind < 0.5:
                    await stream_one(c, {"length": rng.randint(length // 4, length)})
                elif kind < 0.7:
                    r = await c.post("/v1/generate", json={"length": rng.randint(50, 300),
                                                            "num_samples": rng.randint(1, 3)})
                    r.raise_for_status()
                elif kind < 0.9:
                    r = await c.post("/v1/generate", json={"session": session, "prime": " ",
                                                            "length": rng.randint(20, 100)})
                    if r.status_code == 404:  # never made, or pushed out: make it
                        r = await c.post("/v1/sessions", json={"session": session})
                    r.raise_for_status()
                else:
                    r = await c.post("/v1/score", json={"text": "the quick brown fox " * 20})
                    r.raise_for_status()
                requests += 1
            except Exception as e:  # counted: the goal is none
                errors.append(f"{type(e).__name__}: {e}"[:200])

    async def sampler(c: httpx.AsyncClient):
        while time.monotonic() < deadline:
            health = (await c.get("/healthz")).json()
            samples.append((time.monotonic(), server.rss_mb(), health["streams"],
                            health["sessions"]))
            await asyncio.sleep(min(5.0, max(0.5, seconds / 60)))

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT,
                                 limits=limits) as c:
        await asyncio.gather(sampler(c), *[client_loop(i, c) for i in range(clients)])
    warm = [s for s in samples if s[0] - started >= 0.2 * seconds]  # after warm-up
    base = warm[0][1] if warm else samples[0][1]
    return {"seconds": seconds, "clients": clients, "requests": requests, "errors": errors,
            "rss_start": samples[0][1], "rss_warm": base, "rss_end": samples[-1][1],
            "rss_growth": samples[-1][1] / base - 1,
            "max_streams_seen": max(s[2] for s in samples),
            "max_sessions_seen": max(s[3] for s in samples), "max_sessions": MAX_SESSIONS}


# ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="checkpoint or run directory (default: a random model)")
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--length", type=int, default=5000,
                        help="characters per client (long enough that the time to the first "
                             "character is a small part of a stream)")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--soak", default="5m", help="soak duration (e.g. 30s, 5m; 0 = none)")
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--parts", default="speed,soak,hostile",
                        help="which measurements: speed (clients 1..64), soak, hostile")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    parts = set(args.parts.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = (find_checkpoint(args.target) if args.target else random_checkpoint(
            Path(tmp) / "model.pt", args.cell, args.hidden_size, args.num_layers))
        print(f"processor: {processor()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        print(f"model: {checkpoint}")
        inproc = sample_speed(checkpoint, args.length)
        print(f"in-process sample: {inproc:,.0f} chars/s (one stream)")
        costs = step_costs(checkpoint)
        print("batched step: " + ", ".join(f"B={b} {1e6 * t:,.0f} us" for b, t in costs.items())
              + f"; so 32 clients can reach at most {32 * costs[1] / costs[32]:.1f}x one")
        rows, matched, soak_result, hostile = {}, None, None, None
        if parts & {"speed", "soak"}:
            rows, matched, soak_result = speed_and_soak(args, checkpoint, counts, parts)
        if "hostile" in parts:
            import bench_serve_hostile  # this directory: the script's own

            hostile = bench_serve_hostile.run_all(
                lambda extra, preexec=None: Server(checkpoint, 64, 5000, extra, preexec),
                " ".join(ALPHABET[i % len(ALPHABET)] for i in range(5000))[:10_000])
    report(rows, inproc, matched, soak_result, costs, hostile)


def speed_and_soak(args, checkpoint: Path, counts: list[int], parts: set):
    server = Server(checkpoint, max_streams=max(counts) + 32,
                    max_length=max(args.length, 5000))
    rows, matched, soak_result = {}, None, None
    try:
        asyncio.run(concurrent(server.url, 1, 200))  # warm-up
        for n in counts if "speed" in parts else ():
            results = asyncio.run(concurrent(server.url, n, args.length))
            rows[n] = summarize(results)
            if n == 32:
                together = [r["text"] for r in results]
            r = rows[n]
            print(f"{n:3d} clients: {r['aggregate']:9,.0f} chars/s aggregate, "
                  f"first char p50 {1e3 * r['ttfc_p50']:6.1f} ms p99 "
                  f"{1e3 * r['ttfc_p99']:6.1f} ms, slowest/mean "
                  f"{r['slowest'] / r['mean']:.2f}", flush=True)
        if 32 in rows:
            alone = [asyncio.run(concurrent(server.url, 1, args.length, seed0=i))[0]["text"]
                     for i in range(32)]
            matched = sum(a == b for a, b in zip(alone, together))
            print(f"32 concurrent seeded requests matching their text alone: {matched}/32")
        seconds = parse_duration(args.soak, "--soak") if args.soak not in ("0", "") else 0
        if seconds and "soak" in parts:
            soak_result = s = asyncio.run(soak(server, args.soak_clients, seconds, 500))
            print(f"soak: {s['clients']} clients, {s['seconds']:.0f} s, {s['requests']:,} "
                  f"requests, {len(s['errors'])} errors, RSS {s['rss_start']:.0f} -> "
                  f"{s['rss_warm']:.0f} (warm) -> {s['rss_end']:.0f} MB "
                  f"({100 * s['rss_growth']:+.1f}% after warm-up), streams <= "
                  f"{s['max_streams_seen']}, sessions <= {s['max_sessions_seen']} "
                  f"(bound {MAX_SESSIONS})")
            for e in s["errors"][:5]:
                print("  error:", e)
    finally:
        server.stop()
    return rows, matched, soak_result


def report(rows: dict, inproc: float, matched, soak_result, costs: dict, hostile) -> None:
    one = rows.get(1)
    print("\ngoals (ratios in this run):")
    if one and 32 in rows:
        ratio = rows[32]["aggregate"] / one["aggregate"]
        print(f"  32 clients / 1 client aggregate: {ratio:.1f}x (goal >= 12x; the step's own "
              f"ceiling here {32 * costs[1] / costs[32]:.1f}x)")
        print(f"  slowest / mean at 32 clients: {rows[32]['slowest'] / rows[32]['mean']:.2f} "
              f"(goal >= 0.5)")
    if one:
        print(f"  1 client / in-process sample: {one['aggregate'] / inproc:.2f} (goal >= 0.9)")
    if soak_result:
        print(f"  soak errors: {len(soak_result['errors'])} (goal 0), RSS growth after "
              f"warm-up: {100 * soak_result['rss_growth']:+.1f}% (goal <= 5%), sessions "
              f"{soak_result['max_sessions_seen']} <= {MAX_SESSIONS}")
    if matched is not None:
        print(f"  seeded requests matching alone: {matched}/32")
    if hostile:
        h = hostile["heavy"]
        print(f"  20-char generate beside 6 looping 10,000-char scores / alone: "
              f"{h['with_scores_s'] / h['alone_s']:.1f}x; beside 1 MiB primes and scores: "
              f"{h['with_primes_and_scores_s'] / h['alone_s']:.1f}x")
        for name in ("stalled", "stalled_1024_files"):
            st = hostile[name]
            print(f"  {st['stalled']:,} stalled connections ({st['files'] or 'default'} files): "
                  f"a client's generate {st['held_s']:.2f} s (alone {st['alone_s']:.2f} s), "
                  f"{st['closed']:,} closed by the server after the header timeout, log "
                  f"+{st['log_bytes']:,} bytes")
        b = hostile["bodies"]
        print(f"  {b['connections']} partial bodies: RSS {b['rss_before']:.0f} -> "
              f"{b['rss_held']:.0f} (held) -> {b['rss_after']:.0f} MB (after)")
    print(json.dumps({"in_process": inproc, "step_costs": costs, "rows": rows, "matched": matched,
                      "soak": soak_result and {k: v for k, v in soak_result.items()
                                               if k != "errors"}, "hostile": hostile}))


if __name__ == "__main__":
    main()
