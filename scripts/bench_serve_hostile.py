"""The hostile-client part of scripts/bench_serve.py: stalled connections, partial bodies,
and heavy requests beside a small one, against a real `charrnn serve` on 127.0.0.1.

    python scripts/bench_serve.py --parts hostile      # only this part

Every loop is bounded in count and in time. What each measures (docs/benchmarks.md):
- stalled: N connections that send half their headers and stop; a legitimate request's
  latency while they are held, and how many the server has closed after its header
  timeout; once at the default open-file limit, once under a limit of 1,024 files (the log's
  growth counted there);
- bodies: 300 connections holding a body one byte short of --max-body; the server's RSS
  before, while they are held and after they leave;
- heavy: a 20-character generate alone, then while 6 clients loop on 10,000-character
  scores, and while 3 clients loop on 1 MiB primes and 3 on those scores (each refused or
  served); the ratio of the median (and the worst) to alone is the figure.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import statistics
import threading
import time

import httpx

HEADER_TIMEOUT = 5  # seconds: the servers here are started with --header-timeout 5s
SMALL = {"prime": "the ", "length": 20, "temperature": 1.0}


def connect_stalled(url: str, n: int, deadline: float) -> list[socket.socket]:
    host, port = url[len("http://"):].split(":")
    socks = []
    while len(socks) < n and time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        except OSError:
            break
    return socks


def closed_count(socks: list[socket.socket]) -> int:
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def small_latency(url: str, tries: int = 3, worst: bool = False) -> float:
    """Median (or worst) seconds of a fresh client's 20-character generate, a new
    connection each."""
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                c.post("/v1/generate", json=SMALL).raise_for_status()
            times.append(time.perf_counter() - started)
        except httpx.HTTPError:
            times.append(float("inf"))
    return max(times) if worst else statistics.median(times)


def stalled(make_server, n: int, files: int | None = None) -> dict:
    """`n` stalled connections; `files`: the server's open-file limit."""
    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    server = make_server(["--header-timeout", f"{HEADER_TIMEOUT}s"],
                         preexec=few_files if files is not None else None)
    try:
        alone = small_latency(server.url)
        log_before = server.log_bytes()
        started = time.monotonic()
        socks = connect_stalled(server.url, n, started + 60)
        opened = time.monotonic() - started
        held = small_latency(server.url)
        time.sleep(max(0.0, started + opened + HEADER_TIMEOUT + 3 - time.monotonic()))
        closed = closed_count(socks)
        for s in socks:
            s.close()
        return {"stalled": len(socks), "files": files, "open_seconds": opened,
                "alone_s": alone, "held_s": held, "closed": closed,
                "log_bytes": server.log_bytes() - log_before}
    finally:
        server.stop()


def bodies(make_server, n: int = 300) -> dict:
    server = make_server([])
    try:
        cap = server.limits()["max_body"]
        host, port = server.url[len("http://"):].split(":")
        head = (f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                f"\r\nContent-Length: {cap}\r\n\r\n").encode()
        body = b'{"text": "' + b"a" * (cap - 20)
        small_latency(server.url, tries=1)  # the model's own first allocations, before
        before = server.rss_mb()
        socks, deadline = [], time.monotonic() + 60
        while len(socks) < n and time.monotonic() < deadline:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(head + body)
            socks.append(s)
        time.sleep(1.0)
        held = server.rss_mb()
        latency = small_latency(server.url)
        for s in socks:
            s.close()
        time.sleep(2.0)
        return {"connections": len(socks), "body_bytes": len(body), "rss_before": before,
                "rss_held": held, "rss_after": server.rss_mb(), "small_while_held_s": latency}
    finally:
        server.stop()


async def _loop(url: str, body: dict | bytes, stop: float, counts: dict) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        while time.monotonic() < stop:
            path = "/v1/score" if isinstance(body, dict) and "text" in body else "/v1/generate"
            try:
                if isinstance(body, bytes):
                    r = await c.post(path, content=body,
                                     headers={"Content-Type": "application/json"})
                else:
                    r = await c.post(path, json=body)
                counts[r.status_code] = counts.get(r.status_code, 0) + 1
            except httpx.HTTPError as e:
                counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1


def _with_load(url: str, bodies_: list, seconds: float) -> tuple[float, dict]:
    """A small generate's median latency while `bodies_` loop, one client each."""
    counts: dict = {}
    stop = time.monotonic() + seconds

    async def all_loops():
        await asyncio.wait_for(asyncio.gather(*[_loop(url, b, stop, counts) for b in bodies_]),
                               seconds + 120)

    thread = threading.Thread(target=lambda: asyncio.run(all_loops()))
    thread.start()
    deadline = time.monotonic() + seconds / 2  # the scores under way (primes never run)
    scores = sum(isinstance(b, dict) for b in bodies_)
    while (running := httpx.get(url + "/healthz", timeout=30).json()["streams"]) < scores \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    counts["scores_running"] = running
    latency = (small_latency(url, tries=7), small_latency(url, tries=3, worst=True))
    thread.join(seconds + 150)
    return latency, counts


def heavy(make_server, text: str, seconds: float = 15) -> dict:
    server = make_server([])
    try:
        small_latency(server.url, tries=1)  # warm-up
        alone = small_latency(server.url, tries=5)
        (scores, scores_worst), score_counts = _with_load(server.url, [{"text": text}] * 6,
                                                          seconds)
        huge = b'{"prime": "' + b"a" * ((1 << 20) - 100) + b'"}'  # 1 MiB, just under 1 MiB
        (mixed, mixed_worst), mixed_counts = _with_load(server.url,
                                                        [huge, {"text": text}] * 3, seconds)
        return {"alone_s": alone, "with_scores_s": scores, "with_scores_worst_s": scores_worst,
                "score_answers": score_counts, "with_primes_and_scores_s": mixed,
                "with_primes_and_scores_worst_s": mixed_worst, "mixed_answers": mixed_counts}
    finally:
        server.stop()


def run_all(make_server, text: str) -> dict:
    results = {}
    for name, part in (("stalled", lambda: stalled(make_server, 1500)),
                       ("stalled_1024_files", lambda: stalled(make_server, 1050, files=1024)),
                       ("bodies", lambda: bodies(make_server)),
                       ("heavy", lambda: heavy(make_server, text))):
        results[name] = r = part()
        print(f"hostile {name}: " + ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
            flush=True)
    return results
