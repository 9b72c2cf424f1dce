"""`charrnn serve` as a client sees it: a real server process on 127.0.0.1 (a free port),
driven over HTTP with httpx. Streaming and whole answers, sessions, the same text as
`charrnn sample`, every kind of bad request, clients that leave, the limits, the API key,
--watch and the shutdown; then the parts that need no server (sessions store, address)."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import assert_clean_error, make_text, random_model_file, run

from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData
from charrnn.corpus.vocab import Vocab
from charrnn.serve.limits import exposure_warning, is_loopback
from charrnn.serve.sessions import BusySession, SessionStore

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

VOCAB = Vocab.from_text(make_text(5_000))
START_SECONDS = 60  # a loaded machine can take long to import torch; a healthy start is ~3 s


def tiny_checkpoint(path, seed=0, step=1, cell="lstm", H=32, data_root=None):
    """A random 2-layer model over the test vocabulary, saved the way training saves one;
    weights scaled up so that its text is not a flat distribution. `data_root`: the
    prepared directory it records as its training data."""
    return random_model_file(path, VOCAB, cell, H, 2, seed=seed, scale=3.0, step=step,
                             best_val_loss=2.0, data_root=data_root)


NOVELTY_PRIME = "the king "


def novelty_model(folder):
    """A tiny model and a prepared training text that holds the model's greedy continuation
    of NOVELTY_PRIME between other text: asked for that continuation, the model copies;
    at temperature 1 it mostly does not. Returns (checkpoint, prepared directory)."""
    model = tiny_checkpoint(folder / "m.pt")
    r = run("sample", model, "-p", NOVELTY_PRIME, "-t", "0", "-n", 300, "-q")
    assert r.exit_code == 0, r.output
    greedy = r.stdout[len(NOVELTY_PRIME):-1]
    (folder / "corpus.txt").write_text(make_text(3000, seed=5) + greedy + make_text(3000, seed=6))
    prepare([str(folder / "corpus.txt")], folder / "data")  # validation: the last 10%
    return tiny_checkpoint(model, data_root=folder / "data"), folder / "data"


def training_text(data_root):
    data = PreparedData(data_root)
    return data.vocab.decode(data.split("train").tolist())


def brute_copied(text, train, min_chars=20):
    """The copied stretches of `text` by brute force: at each position the longest prefix
    found in `train` by substring search, spans of min_chars+ merged where they overlap."""
    merged = []
    for i in range(len(text)):
        length = 0
        while i + length < len(text) and text[i:i + length + 1] in train:
            length += 1
        if length < min_chars:
            continue
        if merged and i < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], i + length)
        else:
            merged.append([i, i + length])
    return merged


class ServerProcess:
    """`charrnn serve ... --port 0` in a subprocess; the address read from its first line."""

    def __init__(self, *args, env=None, preexec=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", *map(str, args), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})}, preexec_fn=preexec)
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = None
        deadline = time.monotonic() + START_SECONDS
        while self.url is None:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"no server after {START_SECONDS} s: {self.output}")
            if line is None:
                raise RuntimeError(f"the server exited: {''.join(self.output)}")
            if line.startswith("serving on "):
                self.url = line.split()[2].rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, fragment, seconds=15):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(fragment in line for line in self.output):
                return True
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def events(response):
    """The server-sent events of a streaming response: (event, data) pairs."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def stream(client, **body):
    """A whole streaming request: the text of each sample and the final event."""
    texts = {}
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for event, data in events(r):
            if event == "text":
                texts[data["index"]] = texts.get(data["index"], "") + data["text"]
            elif event == "done":
                return texts, data
    raise AssertionError("the stream ended without a final event")


def wait_until(check, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


LONG = 1_000_000  # characters: a stream still running when the test looks at it (seconds)
LIMITS = ["--max-length", LONG, "--max-samples", 4, "--max-streams", 6, "--max-prime", 5000,
          "--max-text", 400, "--max-body", 8192, "--max-sessions", 3]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.pt")


@pytest.fixture(scope="module")
def server(model_path):
    s = ServerProcess(model_path, *LIMITS)
    yield s
    s.stop()


@pytest.fixture
def client(server):
    yield server.client
    # every test leaves the server idle for the next one
    assert wait_until(lambda: server.client.get("/healthz").json()["streams"] == 0)


# ----------------------------------------------------------------------------------------
# generating


def test_start_up_lines_name_the_address_model_and_limits(server):
    text = "".join(server.output)
    assert "serving on http://127.0.0.1:" in text
    assert "size: 2x32 LSTM" in text and f"vocabulary of {len(VOCAB)} characters" in text
    assert "step 1, best validation loss 2.0000 nats/char" in text
    assert "limits: body 8 KiB, prime 5,000 chars" in text and "streams at once 6" in text


def test_streaming_and_whole_answers_give_the_same_text(client):
    body = {"prime": "the ", "length": 200, "temperature": 0.8, "seed": 5}
    whole = client.post("/v1/generate", json=body)
    assert whole.status_code == 200
    answer = whole.json()
    [sample] = answer["samples"]
    assert sample["finish_reason"] == "length" and sample["chars"] == 200
    texts, done = stream(client, **body)
    assert texts[0] == sample["text"] and len(texts[0]) == 200
    assert done["samples"] == [{"index": 0, "finish_reason": "length", "chars": 200}]
    assert done["seed"] == 5 and answer["prime"] == "the "


@pytest.mark.parametrize("settings, flags", [
    ({"prime": "the quick", "temperature": 0.8, "seed": 3},
     ["-p", "the quick", "-t", "0.8", "--seed", "3"]),
    ({"temperature": 1.0, "top_k": 5, "seed": 11}, ["--top-k", "5", "--seed", "11"]),
    ({"prime": "a", "temperature": 0, "seed": 1}, ["-p", "a", "-t", "0", "--seed", "1"]),
    ({"prime": "king", "seed": 2, "num_samples": 3, "stop": [".\n"]},
     ["-p", "king", "--seed", "2", "--num-samples", "3", "--stop", ".\\n"]),
    # a prime longer than one chunk of the fused kernel (Sampler.PRIME_CHUNK)
    ({"prime": make_text(4500, seed=1), "seed": 9}, ["-p", make_text(4500, seed=1), "--seed", "9"]),
])
def test_same_text_as_charrnn_sample(client, model_path, settings, flags):
    length = 300
    r = run("sample", model_path, "-n", length, "-q", *flags)
    assert r.exit_code == 0, r.output
    prime = settings.get("prime", "")
    answer = client.post("/v1/generate", json={**settings, "length": length})
    assert answer.status_code == 200, answer.text
    samples = answer.json()["samples"]
    if len(samples) == 1:
        assert r.stdout == prime + samples[0]["text"] + "\n"
    else:
        assert r.stdout == "".join(f"--- sample {s['index'] + 1} ---\n{prime}{s['text']}\n"
                                   for s in samples)
    texts, _ = stream(client, **settings, length=length)
    assert [texts.get(s["index"], "") for s in samples] == [s["text"] for s in samples]


def test_a_bf16_step_serves_many_streams_and_says_so(model_path):
    """--step-precision bf16: the batched step in bf16, reported by /v1/model; on a CPU
    without bf16 units the start-up says it is emulated."""
    import torch

    from charrnn.core.precision import native_bf16

    s = ServerProcess(model_path, "--step-precision", "bf16")
    try:
        assert s.client.get("/v1/model").json()["step_precision"] == "bf16"
        answer = s.client.post("/v1/generate", json={"prime": "the ", "length": 120,
                                                     "num_samples": 3, "seed": 4})
        assert answer.status_code == 200, answer.text
        assert [x["chars"] for x in answer.json()["samples"]] == [120, 120, 120]
        emulated = "bf16 is emulated" in "".join(s.output)
        assert emulated == (not native_bf16(torch.device("cpu")))
    finally:
        s.stop()


def test_stop_strings_end_each_sample(client):
    answer = client.post("/v1/generate", json={"prime": "the", "length": 500, "seed": 4,
                                               "num_samples": 3, "stop": ["e", "o"]}).json()
    for s in answer["samples"]:
        assert s["finish_reason"] == "stop" and s["text"][-1] in "eo"
        assert "e" not in s["text"][:-1] and "o" not in s["text"][:-1]


def test_concurrent_requests_each_get_their_own_seeded_text(client):
    bodies = [{"prime": "the ", "length": 60, "seed": seed} for seed in range(4)]
    alone = [client.post("/v1/generate", json=b).json()["samples"][0]["text"] for b in bodies]
    results = [None] * len(bodies)

    def go(i):
        results[i] = stream(client, **bodies[i])[0][0]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Batched rows round differently from a lone row in the last bits, which could in
    # principle flip a near-tie late in a text; the first characters must agree.
    assert [r[:20] for r in results] == [a[:20] for a in alone]
    assert len(set(results)) == len(bodies)


# ----------------------------------------------------------------------------------------
# sessions


def test_a_session_continues_from_its_state(client):
    assert client.post("/v1/sessions", json={"session": "doc"}).status_code == 201
    first = client.post("/v1/generate", json={"session": "doc", "prime": "the ", "length": 30,
                                              "temperature": 0}).json()["samples"][0]["text"]
    texts, done = stream(client, session="doc", prime=" and", length=30, temperature=0)
    assert done["session"] == "doc"
    # The same as one request that reads everything so far (greedy: no draws to differ).
    whole = client.post("/v1/generate", json={"prime": "the " + first + " and", "length": 30,
                                              "temperature": 0}).json()["samples"][0]["text"]
    assert texts[0] == whole
    fresh = client.post("/v1/generate", json={"prime": " and", "length": 30,
                                              "temperature": 0}).json()["samples"][0]["text"]
    assert fresh != whole
    info = client.get("/v1/sessions/doc").json()
    assert info["chars"] == len("the ") + 30 + len(" and") + 30 and info["requests"] == 2
    assert info["bytes"] == 2 * 32 * 2 * 4  # layers x H x (h and c) floats
    assert client.delete("/v1/sessions/doc").status_code == 200
    r = client.post("/v1/generate", json={"session": "doc", "length": 5})
    assert r.status_code == 404 and "unknown session 'doc'" in r.json()["error"]


def test_a_session_runs_one_request_at_a_time(client):
    client.post("/v1/sessions", json={"session": "busy"})
    with client.stream("POST", "/v1/generate", json={"session": "busy", "length": LONG,
                                                     "stream": True}) as r:
        it = events(r)  # kept: a closed iterator would close the response
        next(it)
        again = client.post("/v1/generate", json={"session": "busy", "length": 5})
        assert again.status_code == 409 and "busy" in again.json()["error"]
    assert wait_until(lambda: not client.get("/v1/sessions/busy").json()["busy"])
    # the request whose client went away left the session as it was
    assert client.get("/v1/sessions/busy").json()["chars"] == 0


def test_the_session_store_is_bounded(client):
    for name in ("s1", "s2", "s3", "s4"):
        assert client.post("/v1/sessions", json={"session": name}).status_code == 201
    assert client.get("/v1/sessions/s1").status_code == 404  # the least recently used went
    assert client.get("/healthz").json()["sessions"] == 3
    named = client.post("/v1/sessions", headers={"Content-Type": "application/json"}).json()[
        "session"]  # a name made up by the server, for a POST without a body
    assert client.get(f"/v1/sessions/{named}").status_code == 200


def test_session_store_expiry_and_eviction_order():
    store = SessionStore(max_sessions=2, ttl=10, state_bytes=8)
    a, b = store.create("a", 1), store.create("b", 1)
    store.get("a")  # a is now the most recently used
    store.create("c", 1)
    assert store.peek("b") is None and store.peek("a") is a
    a.busy = True
    with pytest.raises(BusySession):
        store.delete("a")
    assert store.sweep(now=a.last_used + 11) == 1  # c expired, a is busy
    a.busy = False
    assert store.sweep(now=a.last_used + 11) == 1 and len(store) == 0
    assert b is not None and store.bytes == 0


# ----------------------------------------------------------------------------------------
# bad requests: 4xx with {"error": ...}, never a 500


BAD = [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, "empty"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"length": NaN}', 400, "NaN"),
    (b"\xff\xfe{", 400, "malformed JSON"),
    (b"[" * 100_000, 413, "--max-body"),
    (json.dumps({"length": "50"}).encode(), 422, "'length' must be an integer, got a string"),
    (json.dumps({"length": True}).encode(), 422, "'length' must be an integer"),
    (json.dumps({"length": 2.5}).encode(), 422, "'length' must be an integer"),
    (json.dumps({"temperature": 5000}).encode(), 422, "'temperature' must be 0"),
    (json.dumps({"temperature": -1}).encode(), 422, "'temperature' must be 0"),
    (json.dumps({"top_k": -2}).encode(), 422, "'top_k'"),
    (json.dumps({"seed": -1}).encode(), 422, "'seed'"),
    (json.dumps({"seed": 2**70}).encode(), 422, "'seed'"),
    (json.dumps({"max_tokens": 5}).encode(), 422, "unknown field 'max_tokens'"),
    (json.dumps({"prime": "naïve ß"}).encode(), 422,
     "characters the model does not know: 'ï', 'ß'"),
    (json.dumps({"stop": "x"}).encode(), 422, "'stop' must be a list of strings"),
    (json.dumps({"stop": ["é"]}).encode(), 422, "'stop' has characters"),
    (json.dumps({"stop": [""]}).encode(), 422, "'stop' string"),
    (json.dumps({"length": LONG + 1}).encode(), 422, "limit of 1,000,000 characters (--max-length)"),
    (json.dumps({"length": 0}).encode(), 422, "'length' must be at least 1"),
    (json.dumps({"num_samples": 5}).encode(), 422, "limit of 4 (--max-samples)"),
    (json.dumps({"prime": "a" * 5001}).encode(), 422, "limit of 5,000 (--max-prime)"),
    (json.dumps({"session": "nope"}).encode(), 404, "unknown session 'nope'"),
    (json.dumps({"session": "x", "num_samples": 2}).encode(), 422, "num_samples' must be 1"),
    (json.dumps({"stream": "yes"}).encode(), 422, "'stream' must be a boolean"),
    (json.dumps({"novelty": 1}).encode(), 422, "'novelty' must be a boolean"),
    (json.dumps({"novelty": True}).encode(), 422, "start the server with --novelty"),
    (json.dumps({"stop_at_end": True}).encode(), 422, "no end-of-document mark"),
]


@pytest.mark.parametrize("body, status, fragment", BAD)
def test_bad_generate_requests(client, body, status, fragment):
    r = client.post("/v1/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/v1/score", {"text": "a"}, 422, "at least 2 characters"),
    ("POST", "/v1/score", {"text": "x" * 401}, 422, "--max-text"),
    ("POST", "/v1/score", {"text": "€uro"}, 422, "'€'"),
    ("POST", "/v1/score", {}, 422, "'text' is missing"),
    ("POST", "/v1/score", {"text": 5}, 422, "'text' must be a string"),
    ("POST", "/v1/sessions", {"session": ""}, 422, "'session' must be 1 to 200"),
    ("GET", "/v1/sessions/none", None, 404, "unknown session 'none'"),
    ("GET", "/v1/nothing", None, 404, "no such route"),
    ("GET", "/v1/generate", None, 405, "GET is not allowed"),
])
def test_bad_requests_to_other_routes(client, method, path, body, status, fragment):
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


# ----------------------------------------------------------------------------------------
# scoring, clients that leave, limits


def test_score_gives_bits_per_character_and_top_guesses(client, model_path, tmp_path):
    text = make_text(300, seed=3)
    result = client.post("/v1/score", json={"text": text}).json()
    assert result["scored"] == len(text) - 1
    chars = result["characters"]
    assert "".join(c["char"] for c in chars) == text and chars[0]["bits"] is None
    assert all(len(c["top"]) == 5 for c in chars[1:])
    mean = sum(c["bits"] for c in chars[1:]) / (len(text) - 1)
    assert mean == pytest.approx(result["bits_per_char"], abs=1e-3)
    (tmp_path / "t.txt").write_text(text)
    r = run("eval", model_path, tmp_path / "t.txt", "--json")
    [file] = json.loads(r.stdout)["files"]  # the same figure as `charrnn eval`
    assert result["nats_per_char"] == pytest.approx(file["nats"], abs=1e-4)


def test_a_client_that_leaves_mid_stream_frees_its_stream(client, server):
    with client.stream("POST", "/v1/generate", json={"length": LONG, "stream": True}) as r:
        it = events(r)
        for _ in range(3):
            next(it)
        assert client.get("/healthz").json()["streams"] == 1
    assert wait_until(lambda: client.get("/healthz").json()["streams"] == 0)
    time.sleep(0.2)  # the worker drops it at its next turn, which may be under way
    steps = client.get("/healthz").json()["steps"]
    time.sleep(0.3)
    assert client.get("/healthz").json()["steps"] == steps  # the worker stopped stepping it


def test_a_client_that_gives_up_on_a_whole_answer_frees_its_stream(client, server):
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/generate", json={"length": LONG}, timeout=0.5)
    # far sooner than the million characters would take: it was dropped, not finished
    assert wait_until(lambda: client.get("/healthz").json()["streams"] == 0, seconds=3)


def test_too_many_streams_get_503_with_retry_after(client):
    with client.stream("POST", "/v1/generate", json={"length": LONG, "num_samples": 4,
                                                     "stream": True}) as a:
        it = events(a)
        next(it)
        r = client.post("/v1/generate", json={"length": 10, "num_samples": 3})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "--max-streams" in r.json()["error"]
        assert client.post("/v1/generate", json={"length": 10, "num_samples": 2}).status_code == 200


# ----------------------------------------------------------------------------------------
# the novelty check: serve --novelty, "novelty": true


@pytest.fixture(scope="module")
def novelty_server(tmp_path_factory):
    model, data_root = novelty_model(tmp_path_factory.mktemp("novelty"))
    s = ServerProcess(model, "--novelty")
    yield s, training_text(data_root)
    s.stop()


def test_novelty_marks_a_copied_sample(novelty_server):
    server, train = novelty_server
    assert server.wait_for_line("novelty: requests with \"novelty\": true are checked")
    info = server.client.get("/v1/model").json()["novelty"]
    assert info == {"training_chars": len(train), "copied_spans_min": 20}
    # Greedy from the prime: the very continuation the training text holds.
    body = {"prime": NOVELTY_PRIME, "length": 300, "temperature": 0, "novelty": True}
    [sample] = server.client.post("/v1/generate", json=body).json()["samples"]
    text, report = sample["text"], sample["novelty"]
    assert report["chars"] == 300 and report["longest"] == 300
    assert report["copied_spans"] == [[0, 300]] and report["copied_spans_min"] == 20
    assert train[report["offset"]:report["offset"] + 300] == text == report["span"]
    assert report["shares"] == {"20": 1.0, "50": 1.0}
    assert report["verdict"].startswith("largely copied")
    texts, done = stream(server.client, **body)  # the same report in the final event
    assert texts[0] == text and done["samples"][0]["novelty"] == report
    plain = server.client.post("/v1/generate", json={**body, "novelty": False}).json()
    assert "novelty" not in plain["samples"][0]


def test_novelty_spans_match_a_brute_force(novelty_server):
    server, train = novelty_server
    # Near the greedy path: samples that copy part of it, and leave it.
    body = {"prime": NOVELTY_PRIME, "length": 200, "seed": 4, "num_samples": 3,
            "novelty": True, "temperature": 0.3}
    whole = server.client.post("/v1/generate", json=body).json()["samples"]
    assert any(0 < s["novelty"]["shares"]["20"] < 1 for s in whole)
    texts, done = stream(server.client, **body)
    for sample, streamed in zip(whole, done["samples"]):
        text, report = sample["text"], sample["novelty"]
        assert texts.get(sample["index"], "") == text and streamed["novelty"] == report
        assert report["chars"] == len(text)
        assert report["copied_spans"] == brute_copied(text, train)
        copied = sum(end - start for start, end in report["copied_spans"])
        assert report["shares"]["20"] == pytest.approx(copied / len(text))
        if report["longest"]:
            start = report["start"]
            assert text[start:start + report["longest"]] == report["span"] in train


def test_novelty_start_up_problems_are_one_line(model_path, workdir, monkeypatch):
    assert_clean_error(run("serve", model_path, "--novelty"),
                       "does not record its training data", "--data DIR")
    assert_clean_error(run("serve", model_path, "--novelty", "--data", "nowhere"),
                       "--data nowhere is not a prepared directory")
    assert_clean_error(run("serve", model_path, "--data", "nowhere"), "add --novelty")
    moved = tiny_checkpoint(workdir / "moved.pt", data_root=workdir / "gone")
    assert_clean_error(run("serve", moved, "--novelty"), "is not there (moved or deleted)",
                       "--data DIR")
    (workdir / "c.txt").write_text(make_text(2000))
    prepare(["c.txt"], "data/c")
    monkeypatch.setitem(sys.modules, "pydivsufsort", None)  # as if not installed
    assert_clean_error(run("serve", model_path, "--novelty", "--data", "data/c"),
                       "pip install -e '.[novelty]'")


# ----------------------------------------------------------------------------------------
# the API key, --watch, the shutdown


def test_api_key(model_path):
    s = ServerProcess(model_path, env={"CHARRNN_API_KEY": "sesame"})
    try:
        assert s.client.get("/v1/model").status_code == 401
        r = s.client.post("/v1/generate", json={"length": 5},
                          headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        ok = s.client.get("/v1/model", headers={"Authorization": "Bearer sesame"})
        assert ok.status_code == 200 and ok.json()["cell"] == "lstm"
        assert s.client.get("/healthz").status_code == 200  # health and the page stay open
        assert s.client.get("/").status_code == 200
        assert "access-control-allow-origin" not in ok.headers  # CORS off by default
        started = time.monotonic()
        assert s.stop(signal.SIGINT) == 0 and time.monotonic() - started < 5  # Ctrl-C
    finally:
        s.stop()


def test_watch_loads_a_new_best_and_shutdown_ends_streams(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tiny_checkpoint(run_dir / "best.pt", seed=0, step=100)
    s = ServerProcess(run_dir, "--watch", "--cors", "http://example.org")
    try:
        assert s.client.get("/v1/model").json()["step"] == 100
        s.client.post("/v1/sessions", json={"session": "old"})
        s.client.post("/v1/generate", json={"session": "old", "length": 5})
        with s.client.stream("POST", "/v1/generate",
                             json={"length": 200, "stream": True, "seed": 1}) as r:
            it = events(r)
            next(it)
            tiny_checkpoint(run_dir / "best.pt", seed=1, step=200)  # renamed into place
            assert wait_until(lambda: s.client.get("/v1/model").json()["step"] == 200)
            assert s.wait_for_line("reloaded model:")
            # the request in flight finishes, on the model it started with
            done = next(data for event, data in it if event == "done")
            assert done["samples"][0]["chars"] == 200
        # a session's state belongs to the model that made it
        r = s.client.post("/v1/generate", json={"session": "old", "length": 5})
        assert r.status_code == 409 and "replaced" in r.json()["error"]
        r = s.client.get("/v1/model", headers={"Origin": "http://example.org"})
        assert r.headers["access-control-allow-origin"] == "http://example.org"
        # Shutdown: an open stream gets its final event and the process ends within 5 s.
        with s.client.stream("POST", "/v1/generate", json={"length": 5000 - 1,
                                                           "stream": True}) as r:
            it = events(r)
            next(it)
            started = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            last = [data for event, data in it if event == "done"]
            assert last and last[0]["samples"][0]["finish_reason"] == "shutdown"
        assert s.proc.wait(5) == 0 and time.monotonic() - started < 5
        assert s.wait_for_line("stopped")
    finally:
        s.stop()


# ----------------------------------------------------------------------------------------
# no server needed


def test_without_the_extra_one_line_names_the_install_command(monkeypatch, model_path):
    for name in [m for m in sys.modules if m.startswith(("uvicorn", "charrnn.serve.server",
                                                          "charrnn.serve.app"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import fails as if not installed
    assert_clean_error(run("serve", model_path), "pip install -e '.[serve]'", "pip install starlette uvicorn")


def test_address_problems_are_one_line(model_path, workdir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_clean_error(run("serve", model_path, "--port", port), "Address already in use",
                           "choose another --port")
    r = run("serve", "missing.pt", "--host", "0.0.0.0")  # warns, then fails before binding
    warning, error = r.stderr.strip().split("\n")
    assert warning.startswith("warning: listening on 0.0.0.0 without an API key")
    assert error.startswith("Error: checkpoint or run directory not found") and r.exit_code == 1
    r = run("serve", model_path, "--max-streams", 0)  # click's usage error
    assert r.exit_code == 2 and "'--max-streams': 0 is not in the range" in r.stderr


def test_which_addresses_are_safe():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("0.0.0.0", "key") is None
    assert "CHARRNN_API_KEY" in exposure_warning("0.0.0.0", None)
