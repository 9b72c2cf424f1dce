"""`charrnn serve` against hostile browsers and slow clients: a real server process on
127.0.0.1, driven with httpx and raw sockets, every loop bounded. The Host check, JSON-only
bodies, bodies refused before parsing, the deadlines and caps on connections and on bodies
being read, a log that cannot be flooded, scores and streams sharing the worker, the
session store's order; then the parts that need no server (hosts, the log's rate limit,
the worker's choice of who reads next)."""

import asyncio
import contextlib
import json
import logging
import resource
import socket
import threading
import time
import types

import pytest
from conftest import assert_clean_error, make_text, run
from test_serve import ServerProcess, events, tiny_checkpoint, wait_until

from charrnn.serve.hosts import allowed_hosts, split_host
from charrnn.serve.jobs import ScoreJob
from charrnn.serve.limits import Limits
from charrnn.serve.logs import RateLimit
from charrnn.serve.sessions import SessionStore
from charrnn.serve.worker import Worker

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

LONG = 1_000_000
CAP = 12  # --max-connections of the server below
GUARDED = ["--header-timeout", "2s", "--body-timeout", "2s", "--max-connections", CAP,
           "--max-body", 300_000, "--max-buffered", 600_000, "--max-text", 120_000,
           "--max-length", LONG, "--max-streams", 16, "--max-sessions", 3,
           "--allowed-host", "lab.example.org", "--allowed-host", ".proxy.example"]
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.pt")


@pytest.fixture(scope="module")
def server(model_path):
    s = ServerProcess(model_path, *GUARDED)
    yield s
    s.stop()


def fresh(server, **kwargs):
    """A client of its own: its connection is not one that the tests' stalls push out."""
    return httpx.Client(base_url=server.url, timeout=30, **kwargs)


def health(server) -> dict:
    with fresh(server) as c:
        return c.get("/healthz").json()


def connect(server, data: bytes = b"") -> socket.socket:
    host, port = server.url[len("http://"):].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def answer(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before it closed `sock`; None if still open after `seconds`."""
    sock.settimeout(0.1)
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    return None


def request_head(path="/v1/generate", body_bytes=None, kind="application/json", extra=""):
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n{extra}"
    if body_bytes is not None:
        head += f"Content-Length: {body_bytes}\r\n"
    return (head + "\r\n").encode()


# ----------------------------------------------------------------------------------------
# browsers: the Host check and JSON-only bodies


@pytest.mark.parametrize("host, status", [
    ("evil.example", 403), ("evil.example:8000", 403), ("localhost.evil.example", 403),
    ("127.0.0.1", 200), ("localhost", 200), ("LOCALHOST:1234", 200),
    ("lab.example.org", 200), ("x.lab.example.org", 403),
    ("proxy.example", 200), ("a.b.proxy.example:443", 200),
    ("192.168.1.4", 403), ("[::1]", 403),  # addresses it does not listen on
])
def test_only_the_servers_own_names_are_answered(server, host, status):
    with fresh(server) as c:
        for method, path, body in (("GET", "/v1/model", None), ("GET", "/", None),
                                   ("POST", "/v1/generate", {"length": 3})):
            r = c.request(method, path, json=body, headers={"Host": host})
            assert r.status_code == status, (method, path, r.text)
    if status == 403:
        error = r.json()["error"]
        assert f"host '{split_host(host).lower()}' is not this server's" in error.lower()
        assert "--allowed-host" in error


@pytest.mark.parametrize("headers, content", [
    ({"Content-Type": "text/plain"}, json.dumps({"length": 3})),
    ({"Content-Type": "application/x-www-form-urlencoded"}, "length=3"),
    ({"Content-Type": "multipart/form-data; boundary=x"}, "--x--"),
    ({}, json.dumps({"length": 3})),
])
def test_a_body_that_is_not_json_does_no_work(server, headers, content):
    with fresh(server) as c:
        c.post("/v1/sessions", json={"session": "mine"})
        assert c.post("/v1/generate", json={"session": "mine", "length": 4}).status_code == 200
        before = c.get("/healthz").json()
        for path, body in (("/v1/generate", content), ("/v1/score", content),
                           ("/v1/sessions", json.dumps({"session": "mine"}))):
            r = c.post(path, content=body, headers=headers)
            assert r.status_code == 415, r.text
            assert "Content-Type: application/json" in r.json()["error"]
        after = c.get("/healthz").json()
        assert (after["generate"], after["score"]) == (before["generate"], before["score"])
        assert c.get("/v1/sessions/mine").json()["chars"] > 0  # not reset
        # the same requests as JSON are fine, a charset included
        r = c.post("/v1/generate", content=json.dumps({"length": 3}),
                   headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200 and len(r.json()["samples"][0]["text"]) == 3


# ----------------------------------------------------------------------------------------
# bodies: refused before parsing


def test_an_oversized_body_is_refused_from_its_content_length(server):
    sock = connect(server, request_head(body_bytes=1 << 20))  # the headers, no body at all
    try:
        got = answer(sock, 10)
        assert got is not None and got.startswith(b"HTTP/1.1 413"), got
        assert b"--max-body" in got
    finally:
        sock.close()


def test_a_client_still_sending_a_refused_body_reads_the_refusal(server):
    body = b'{"prime": "' + b"a" * (1 << 20) + b'"}'  # refused from its Content-Length
    statuses = []

    async def client():  # httpx's async client reads the answer only once it has sent
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            for _ in range(10):
                try:
                    statuses.append((await c.post("/v1/generate", content=body,
                                                  headers=JSON)).status_code)
                except httpx.TransportError as e:  # a reset: the answer was lost
                    statuses.append(type(e).__name__)

    async def clients():
        await asyncio.gather(*[client() for _ in range(3)])

    asyncio.run(clients())
    assert statuses == [413] * 30  # closing at once lost about half of them


def test_an_oversized_body_is_refused_while_it_streams(server):
    sock = connect(server, request_head(extra="Transfer-Encoding: chunked\r\n"))
    try:
        chunk = b'{"prime": "' + b"a" * 100_000
        for _ in range(4):  # 400 KB over a 300 KB limit; the body never ends
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        got = answer(sock, 10)
        assert got is not None and got.startswith(b"HTTP/1.1 413"), got
    finally:
        sock.close()


def test_the_default_body_limit_is_what_the_fields_need():
    limits = Limits()
    assert 6 * limits.max_prime <= limits.max_body < 100 << 10  # a 1 MiB prime: 413
    assert Limits(max_prime=50_000).max_body > 6 * 50_000
    assert Limits(max_body=1234).max_body == 1234


def test_an_unknown_field_is_not_echoed_whole(server):
    with fresh(server) as c:
        r = c.post("/v1/generate", json={"x" * 100_000: 1})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error.startswith("unknown field 'xxxx") and "(100,000 characters)" in error
    assert len(error) < 300
    with fresh(server) as c:
        r = c.get("/v1/" + "y" * 10_000)  # nor a path
    assert r.status_code == 404 and len(r.json()["error"]) < 200


def test_a_key_that_no_client_can_send_is_refused_at_start_up(model_path, monkeypatch):
    assert_clean_error(run("serve", model_path, "--api-key", "clé"), "printable ASCII")
    monkeypatch.setenv("CHARRNN_API_KEY", "tab\there")
    assert_clean_error(run("serve", model_path), "CHARRNN_API_KEY", "printable ASCII")


# ----------------------------------------------------------------------------------------
# slow and stalled clients


def trickle(sock, piece: bytes, seconds: float) -> bytes | None:
    """Send `piece` every 0.3 s (a client that is never quite silent) until the server
    closes the connection, for `seconds` at most; what it sent, or None if it did not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(piece)
        except OSError:
            return b""
        got = answer(sock, 0.3)
        if got is not None:
            return got
    return None


def test_a_stalled_request_is_closed_after_its_deadline(server):
    before = health(server)["timed_out"]
    headers = connect(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    body = connect(server, request_head(body_bytes=1000) + b'{"prime": "')
    try:
        # bytes keep coming, but the deadlines (2 s) are not extended by them
        assert trickle(headers, b"X-A: b\r\n", 20) == b""
        assert trickle(body, b"a", 20) is not None
    finally:
        headers.close()
        body.close()
    assert health(server)["timed_out"] >= before + 2
    with fresh(server) as c:
        assert c.get("/v1/model").status_code == 200


def test_past_the_connection_cap_stalled_ones_go_and_a_client_gets_through(server):
    before = health(server)["pushed_out"]
    stalled = [connect(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(3 * CAP)]
    try:
        with fresh(server) as c:
            assert c.get("/v1/model").status_code == 200
        state = health(server)
        assert state["pushed_out"] >= before + 2 * CAP  # the oldest stalled went first
        assert state["connections"] <= CAP
        still_open = [s for s in stalled if answer(s, 0.01) is None]
        assert len(still_open) <= CAP
    finally:
        for s in stalled:
            s.close()


def test_when_every_connection_is_running_a_request_a_new_one_gets_503(server):
    clients, running = [fresh(server) for _ in range(CAP)], []
    with contextlib.ExitStack() as streams:
        for c in clients:  # CAP connections, each streaming
            streams.enter_context(c)
            r = streams.enter_context(c.stream("POST", "/v1/generate",
                                               json={"length": LONG, "stream": True}))
            running.append(events(r))  # kept: a closed iterator would close the response
            next(running[-1])
        with fresh(server) as c:
            r = c.get("/healthz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "--max-connections" in r.json()["error"]
    assert wait_until(lambda: health(server)["streams"] == 0)


def test_bodies_being_read_are_capped_in_all(server):
    held, body = [], b'{"text": "' + b"a" * 250_000
    try:
        for n in (1, 2):  # 500 KB held under a cap of 600 KB
            held.append(connect(server, request_head("/v1/score", 290_000) + body))
            assert wait_until(lambda: health(server)["body_bytes"] >= n * 250_000)
        third = connect(server, request_head("/v1/score", 290_000) + body)
        got = answer(third, 10)
        third.close()
        assert got is not None and got.startswith(b"HTTP/1.1 503") and b"--max-buffered" in got
        assert all(answer(s, 0.05) is None for s in held)  # the first two are still read
    finally:
        for s in held:
            s.close()
    assert wait_until(lambda: health(server)["body_bytes"] == 0)


def test_the_log_is_not_flooded(server):
    for _ in range(100):  # each a malformed request, each logged by uvicorn
        sock = connect(server, b"NOT HTTP AT ALL\r\n\r\n")
        answer(sock, 5)
        sock.close()
    time.sleep(0.5)
    lines = [line for line in server.output if "Invalid HTTP request" in line]
    assert 1 <= len(lines) <= 2, lines


def test_out_of_files_the_server_stays_reachable_and_its_log_short(model_path):
    limit = 256

    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    s = ServerProcess(model_path, "--header-timeout", "30s", preexec=few_files)
    stalled = []
    try:
        cap = int(next(line for line in s.output if line.startswith("connections:"))
                  .split()[1].replace(",", ""))
        assert cap < limit
        lines = len(s.output)
        for _ in range(limit + 100):  # more than the process may open
            stalled.append(connect(s, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        with fresh(s) as c:
            assert c.get("/v1/model").status_code == 200
            assert c.post("/v1/generate", json={"length": 5}).status_code == 200
        time.sleep(0.5)
        assert len(s.output) - lines <= 10, s.output[lines:]  # a line per kind, no tracebacks
    finally:
        for sock in stalled:
            sock.close()
        s.stop()


# ----------------------------------------------------------------------------------------
# scores and streams share the worker


def scored(server, text, results):
    with fresh(server) as c:
        results.append(c.post("/v1/score", json={"text": text}).status_code)


def test_a_small_generate_completes_while_long_scores_run(server):
    results = []
    texts = [make_text(100_000, seed=s) for s in (1, 2)]
    threads = [threading.Thread(target=scored, args=(server, t, results)) for t in texts]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: health(server)["streams"] == 2, seconds=30)
        with fresh(server) as c:
            r = c.post("/v1/generate", json={"length": 20, "prime": "the "})
        assert r.status_code == 200 and r.json()["samples"][0]["chars"] == 20
        assert results == [] and health(server)["streams"] == 2  # both scores still running
    finally:
        for t in threads:
            t.join(120)
    assert results == [200, 200]


def test_a_score_completes_while_a_long_stream_runs(server):
    with fresh(server) as c, c.stream("POST", "/v1/generate",
                                      json={"length": LONG, "stream": True}) as r:
        it = events(r)
        next(it)
        with fresh(server) as other:
            result = other.post("/v1/score", json={"text": make_text(2000)})
        assert result.status_code == 200 and result.json()["scored"] == 1999
        assert health(server)["streams"] == 1  # the stream runs on
    assert wait_until(lambda: health(server)["streams"] == 0)


# ----------------------------------------------------------------------------------------
# the session store: least recently *used*


def test_the_session_evicted_is_the_one_generated_on_longest_ago(server):
    with fresh(server) as c:
        for name in ("a", "b", "c"):
            assert c.post("/v1/sessions", json={"session": name}).status_code == 201
        with c.stream("POST", "/v1/generate", json={"session": "a", "length": LONG,
                                                    "stream": True}) as r:
            it = events(r)
            next(it)  # a's generate starts first ...
            assert c.post("/v1/generate", json={"session": "b", "length": 3}).status_code == 200
        # ... and ends last (its client left): a was used most recently, then b; c never
        assert wait_until(lambda: not c.get("/v1/sessions/a").json()["busy"])
        c.post("/v1/sessions", json={"session": "d"})
        assert c.get("/v1/sessions/c").status_code == 404
        c.post("/v1/sessions", json={"session": "e"})
        assert c.get("/v1/sessions/b").status_code == 404
        assert c.get("/v1/sessions/a").status_code == 200


def test_session_store_order_is_the_last_use():
    store = SessionStore(max_sessions=2, ttl=60, state_bytes=8)
    a, b = store.create("a", 1), store.create("b", 1)
    store.get("a")  # a generate starts on a, then one on b
    store.get("b")
    store.use(b)  # b's ends, then a's
    store.use(a)
    store.peek("b")  # looking is not using
    store.create("c", 1)
    assert store.peek("b") is None and store.peek("a") is a
    store.use(b)  # a session no longer in the store is not brought back
    assert store.peek("b") is None and len(store) == 2
    assert store.sweep(now=a.last_used + 61) == 2


# ----------------------------------------------------------------------------------------
# no server needed


def test_which_hosts_are_allowed():
    local = allowed_hosts("127.0.0.1", "127.0.0.1", ["lab.example.org"])
    assert local.allows("127.0.0.1") and local.allows("localhost")
    assert local.allows("lab.example.org.")  # the root's dot aside
    assert not local.allows("evil.example") and not local.allows("10.0.0.1")
    every = allowed_hosts("0.0.0.0", "0.0.0.0")
    assert every.allows("10.0.0.1") and every.allows("[::1]") and every.allows("localhost")
    assert not every.allows("evil.example")
    named = allowed_hosts("box.local", "192.168.1.4")
    assert named.allows("box.local") and named.allows("192.168.1.4")
    assert not named.allows("localhost") and not named.allows("127.0.0.1")
    assert split_host("[::1]:80") == "[::1]" and split_host("h:80") == "h"
    assert split_host("::1") == "::1"


def test_the_log_writes_one_line_per_kind_per_interval():
    now = [0.0]
    limit = RateLimit(interval=60, clock=lambda: now[0])
    logger = logging.getLogger("test.ratelimit")

    def record(msg, *args, exc=None):
        exc_info = (type(exc), exc, None) if exc else None
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, exc_info)

    assert limit.filter(record("closed %s", "x"))
    assert sum(limit.filter(record("closed %s", i)) for i in range(1000)) == 0
    assert limit.filter(record("another kind"))
    now[0] = 61
    r = record("closed %s", "y")
    assert limit.filter(r) and "[1,000 more like this" in r.msg and r.msg.startswith("closed y")
    first = record("accept failed", exc=OSError(24, "Too many open files"))
    assert limit.filter(first) and first.exc_info  # the first traceback of a kind is kept
    now[0] = 200
    again = record("accept failed", exc=OSError(24, "Too many open files"))
    assert limit.filter(again) and again.exc_info is None and "OSError" in again.msg


class Reading(ScoreJob):
    """A job that only reads: `n` chunks, counted."""

    def __init__(self, n):
        self.n, self.read, self.cancelled, self.finished = n, 0, False, False
        self.loaded = types.SimpleNamespace(generation=1)

    def chunk_for(self, seconds):
        return 1

    def advance(self, chars=1):
        self.read += 1
        self.finished = self.read >= self.n
        return self.finished


def test_a_short_read_goes_within_two_turns_and_a_long_one_is_never_starved():
    worker = Worker(deliver=None, loop=None)
    long = [Reading(10_000) for _ in range(3)]
    worker._turn(long)
    for _ in range(99):
        worker._turn([])
    assert sorted(job.read for job in long) == [33, 33, 34]  # an equal share
    for _ in range(20):  # however many long ones are queued, a short one is next or next but one
        short = Reading(1)
        worker._turn([short])
        worker._turn([])
        assert short.finished
    # A short one arriving at every turn still leaves the long ones every other turn.
    before = sum(job.read for job in long)
    for _ in range(300):
        worker._turn([Reading(1)])
    assert sum(job.read for job in long) - before == 150


def test_a_request_ended_by_shutdown_fails_with_a_503_error():
    from charrnn.serve.jobs import Job
    worker = Worker(deliver=None, loop=None)
    job = Job(types.SimpleNamespace(generation=1), worker.outbox)
    worker._end_all([job])
    [(which, (kind, error))] = worker.outbox.take()
    assert which is job and kind == "error" and job.finished
    assert error.status == 503 and "shutting down" in str(error)
