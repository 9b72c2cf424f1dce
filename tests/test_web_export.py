"""`charrnn export --web`: the static page in a real browser, and the failures that must
leave nothing half-written.

The browser tests serve the exported folder with `python -m http.server` on 127.0.0.1 and
drive Debian's chromium (never a downloaded browser) with Playwright. onnxruntime-web comes
from `npm pack` into a cache (~/.cache/charrnn-test), once; without npm or the registry,
or without chromium, those tests are skipped with one line. The page's greedy text is
checked against `charrnn sample -t 0`, its bits per character against `charrnn eval`, its
first logits against PyTorch, and its address bar, phone width and requests as users meet
them. Set CHARRNN_SCREENSHOTS=DIR to keep the screenshots."""

import json
import os
import queue
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import onnx
import pytest
import torch

from charrnn.core.checkpoint import load_checkpoint
from charrnn.export import exporter, quantize, runtime
from charrnn.export.runtime import CDN, INTEGRITY, VERSION, integrity, npm_pack, runtime_files
from charrnn.export.verify import session_for
from charrnn.export.web import MANIFEST
from charrnn.inference.trained import model_from_checkpoint

from conftest import assert_clean_error, make_text, run, snapshot
from test_export import TEXT, random_checkpoint

pytest_plugins = ["browser"]  # the `browser` fixture
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charrnn-test" / "npm"
PRIME = "The lazy "
SCORED = "The quick brown fox jumps over the lazy dog.\nA dog sat there.\n"


@pytest.fixture(scope="module")
def tarball():
    path = npm_pack(CACHE)
    if path is None:
        pytest.skip(f"no onnxruntime-web: npm pack {runtime.PACKAGE}@{VERSION} failed "
                    f"(npm missing or the registry unreachable)")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GRU briefly trained through the CLI: greedy text with some structure."""
    root = tmp_path_factory.mktemp("trained")
    (root / "corpus.txt").write_text(make_text(20_000), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        r = run("train", "corpus.txt", "--model", "gru", "--hidden-size", "32", "--num-layers",
                "2", "--batch-size", "8", "--seq-len", "32", "--max-steps", "60", "--lr",
                "0.01", "--set", "train.eval_every=60", "--set", "train.log_every=60",
                "--name", "tiny", "-q")
    assert r.exit_code == 0, r.output
    return root / "runs" / "tiny"


# ----------------------------------------------------------------------------------------
# the runtime's pinned files


def test_pinned_hashes_are_the_npm_package_s(tarball):
    with tarfile.open(tarball) as tar:
        for name, want in INTEGRITY.items():
            assert integrity(tar.extractfile(f"package/dist/{name}").read()) == want
    assert set(runtime_files(tarball)) == set(INTEGRITY)


def test_a_runtime_of_another_version_is_refused(tmp_path, workdir):
    dist = tmp_path / "dist"
    dist.mkdir()
    for name in INTEGRITY:
        (dist / name).write_bytes(b"not the pinned file")
    ckpt = random_checkpoint(tmp_path / "m.pt", cell="gru")
    assert_clean_error(run("export", ckpt, "--web", "site", "--runtime", dist),
                       f"is not onnxruntime-web {VERSION}'s")
    assert_clean_error(run("export", ckpt, "--web", "site", "--runtime", tmp_path / "none"),
                       "no such file or folder")
    assert not (workdir / "site").exists()


# ----------------------------------------------------------------------------------------
# failing cleanly


def test_a_folder_with_other_files_is_refused_and_a_site_replaced(tmp_path, workdir):
    ckpt = random_checkpoint(tmp_path / "m.pt", cell="gru")
    (workdir / "mine").mkdir()
    (workdir / "mine" / "notes.txt").write_text("keep me")
    before = snapshot(workdir)
    assert_clean_error(run("export", ckpt, "--web", "mine"), "notes.txt",
                       "did not write")
    assert_clean_error(run("export", ckpt, "--web", "."), "holds the current folder")
    assert snapshot(workdir) == before
    r = run("export", ckpt, "--web", "site")  # new; then again over itself
    assert r.exit_code == 0, r.output
    first = json.loads((workdir / "site" / MANIFEST).read_text())
    assert sorted(p.relative_to(workdir / "site").as_posix()
                  for p in (workdir / "site").rglob("*")) == first["files"]
    assert first["runtime"]["script"]["url"] == CDN + runtime.SCRIPT
    r = run("export", ckpt, "--web", "site")
    assert r.exit_code == 0, r.output
    (workdir / "site" / "extra.html").write_text("someone's")
    before = snapshot(workdir)
    assert_clean_error(run("export", ckpt, "--web", "site"), "extra.html")
    assert snapshot(workdir) == before
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []


def test_missing_extra(tmp_path, workdir, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "m.pt", cell="gru")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    before = snapshot(workdir)
    assert_clean_error(run("export", ckpt, "--web", "site"), "pip install")
    assert snapshot(workdir) == before


def test_a_failed_onnx_check_writes_nothing_and_keeps_a_site(tmp_path, workdir, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "m.pt", cell="gru")
    assert run("export", ckpt, "--web", "site").exit_code == 0
    before = snapshot(workdir)
    monkeypatch.setattr(exporter, "max_logit_difference", lambda model, data: 0.5)
    assert_clean_error(run("export", ckpt, "--web", "site"), "does not match PyTorch",
                       "the previous site is kept")
    assert_clean_error(run("export", ckpt, "--web", "new"), "nothing written")
    assert snapshot(workdir) == before


def test_int8_that_changes_the_greedy_text_is_refused(tmp_path, workdir, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "m.pt", cell="lstm")
    monkeypatch.setattr(quantize, "greedy_ids", lambda data, model, n: [hash(data)] * n)
    before = snapshot(workdir)
    assert_clean_error(run("export", ckpt, "--web", "site", "--quantize", "int8"),
                       "changes this model's greedy text at character 1 of 1,000",
                       "without --quantize")
    assert snapshot(workdir) == before


def test_runtime_without_web_is_a_usage_error(tmp_path, workdir):
    r = run("export", random_checkpoint(tmp_path / "m.pt"), "--runtime", "x.tgz")
    assert r.exit_code == 2 and "--web" in r.output
    r = run("export", tmp_path / "m.pt", "--web", "site", "-o", "m.onnx")
    assert r.exit_code == 2 and "give one" in r.output


# ----------------------------------------------------------------------------------------
# the page, in a browser


class StaticServer:
    """`python -m http.server 0` on 127.0.0.1 in a subprocess; the port read from its line."""

    def __init__(self, directory, seconds=30):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
             "--directory", str(directory)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        try:
            line = lines.get(timeout=seconds)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"no static server after {seconds} s") from None
        self.url = "http://127.0.0.1:%s/" % re.search(r"port (\d+)", line).group(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def site(trained, tarball, tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "site"
    r = run("export", trained, "--web", out, "--runtime", tarball, "-q")
    assert r.exit_code == 0, r.output
    assert re.search(rf"wrote .*site/ \(\d+ files, [\d.]+ MB, with onnxruntime-web {VERSION}\)",
                     r.output)
    server = StaticServer(out)
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def page(browser, site):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.problems = []  # errors on the console or in the page, and requests to elsewhere
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("request", lambda r: r.url.startswith((site, "blob:" + site[:-1], "data:"))
            or page.problems.append(r.url))
    yield page
    page.close()


def opened(page, site, query=""):
    """The page at `site` with `query`, once its model is loaded."""
    page.goto(site + query)
    page.wait_for_selector("#generate:enabled")
    return page


def finished(page):
    page.wait_for_function("window.charrnn && window.charrnn.last !== null")
    return page.evaluate("window.charrnn.last")


def test_a_shared_link_generates_the_greedy_text_of_charrnn_sample(page, site, trained):
    query = "prime=The%20lazy%20&temperature=0&length=1000&seed=1&run=1"
    page.goto(f"{site}?{query}")
    done = finished(page)
    assert done["finish"] == "length" and done["chars"] == 1000
    want = run("sample", trained, "-t", "0", "-n", "1000", "-p", PRIME, "-q")
    assert want.exit_code == 0, want.output
    assert PRIME + page.text_content("#output") + "\n" == want.stdout
    assert page.text_content("#prime-shown") == PRIME
    assert page.input_value("#temperature") == "0" and page.input_value("#seed") == "1"
    assert "run=1" in page.url and "seed=1" in page.url
    assert page.problems == []


def test_a_stop_string_ends_the_text_as_in_charrnn_sample(page, site, trained):
    full = run("sample", trained, "-t", "0", "-n", "1000", "-p", PRIME, "-q").stdout
    stop = full[len(PRIME) + 100:len(PRIME) + 103]  # greedy text goes on past it
    typed = stop.replace("\\", "\\\\").replace("\n", "\\n")  # as a user writes it
    opened(page, site, "?prime=The%20lazy%20&temperature=0&length=1000")
    page.fill("#stops", typed)
    page.evaluate("window.charrnn.last = null")
    page.click("#generate")
    assert finished(page)["finish"] == "stop"
    want = run("sample", trained, "-t", "0", "-n", "1000", "-p", PRIME, "--stop", typed, "-q")
    assert PRIME + page.text_content("#output") + "\n" == want.stdout
    assert page.text_content("#output").endswith(stop)


def test_first_logits_match_pytorch(page, site, trained):
    model, vocab, _ = model_from_checkpoint(load_checkpoint(trained / "best.pt"))
    got = np.array(opened(page, site).evaluate("text => window.charrnn.logits(text)", SCORED))
    with torch.no_grad():
        want, _ = model(torch.tensor([vocab.encode(SCORED)]))
    assert got.shape == (len(SCORED), len(vocab))
    assert np.abs(got - want[0].numpy()).max() < 1e-4


def test_score_matches_charrnn_eval_with_top_guesses_on_hover(page, site, trained, tmp_path):
    opened(page, site).click("#tab-score")
    page.fill("#score-text", SCORED)
    page.click("#score")
    page.wait_for_selector("#scored .c")
    assert page.locator("#scored .c").count() == len(SCORED) - 1
    assert page.text_content("#scored") == SCORED
    (tmp_path / "t.txt").write_text(SCORED)
    r = run("eval", trained, tmp_path / "t.txt", "--batch-size", "1", "--json", "-q")
    assert r.exit_code == 0, r.output
    want = json.loads(r.stdout)["files"][0]["bpc"]
    got = float(page.get_attribute("#scored", "data-bits-per-char"))
    assert abs(got - want) < 1e-3, (got, want)
    page.hover("#scored .c >> nth=5")
    assert page.is_visible("#tip") and page.locator("#tip tr").count() == 5
    assert page.problems == []


def test_the_address_bar_follows_the_settings_and_stop_stops(page, site):
    opened(page, site, "?length=1000&seed=4")
    page.fill("#prime", "A dog")
    page.fill("#temperature", "0.5")
    page.fill("#seed", "")
    # The address bar follows each input as it is handled: wait for the last one.
    page.wait_for_function("!location.href.includes('seed=')")
    assert "?prime=A%20dog&temperature=0.5&top_k=0&length=1000" in page.url
    assert "seed=" not in page.url and "run=" not in page.url
    page.fill("#length", "100000")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#output').textContent.length > 0")
    page.click("#stop")
    page.wait_for_selector("#gen-status:text-matches('^stopped')")
    assert re.search(r"seed=\d+&run=1", page.url)  # the seed drawn, so that the link repeats it
    assert 0 < len(page.text_content("#output")) < 100_000
    assert page.problems == []


def test_screenshots_at_desktop_and_phone_width(page, site, tmp_path):
    keep = Path(os.environ.get("CHARRNN_SCREENSHOTS", tmp_path))
    keep.mkdir(parents=True, exist_ok=True)
    page.goto(f"{site}?prime=The%20&temperature=0.6&length=400&seed=3&run=1")
    finished(page)
    page.screenshot(path=keep / "web-1280.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=keep / "web-390.png", full_page=True)
    assert (keep / "web-390.png").stat().st_size > 10_000
    assert page.problems == []  # nothing was loaded from outside 127.0.0.1


@pytest.fixture(scope="module")
def documents_site(tarball, tmp_path_factory):
    """A GRU briefly trained on a directory of files (a model with an end-of-document
    mark), exported."""
    root = tmp_path_factory.mktemp("documents")
    for i in range(40):
        (root / "docs").mkdir(exist_ok=True)
        (root / "docs" / f"{i:02d}.txt").write_text(f"# note {i}\n" + make_text(400, seed=i))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        r = run("prepare", "docs", "-o", "data")
        assert r.exit_code == 0, r.output
        r = run("train", "data", "--model", "gru", "--hidden-size", "32", "--batch-size", "8",
                "--seq-len", "32", "--max-steps", "40", "--lr", "0.01", "--set",
                "train.eval_every=40", "--name", "docs", "-q")
        assert r.exit_code == 0, r.output
        r = run("export", root / "runs" / "docs", "--web", root / "site", "--runtime",
                tarball, "-q")
        assert r.exit_code == 0, r.output
    server = StaticServer(root / "site")
    yield root / "runs" / "docs", server.url
    server.stop()


@pytest.mark.parametrize("prime", ["", "note\n# "])
def test_a_model_of_documents_starts_where_documents_start(page, documents_site, prime):
    """No prime: after the end-of-document mark, as `charrnn sample`; a typed line break is
    the line break, not the mark, which shows as one."""
    trained, url = documents_site
    page.goto(f"{url}?prime={quote(prime)}&temperature=0&length=300&seed=1&run=1")
    done = finished(page)
    assert done["chars"] == 300
    want = run("sample", trained, "-t", "0", "-n", "300", "-p", prime, "-q")
    assert want.exit_code == 0, want.output
    assert prime + page.text_content("#output") + "\n" == want.stdout


def test_a_typed_line_break_is_read_as_a_line_break_not_the_mark(page, documents_site):
    trained, url = documents_site
    model, vocab, _ = model_from_checkpoint(load_checkpoint(trained / "best.pt"))
    text = "note 3\n# note"
    assert vocab.end is not None and "\n" in vocab
    got = np.array(opened(page, url).evaluate("t => window.charrnn.logits(t)", text))
    with torch.no_grad():
        want, _ = model(torch.tensor([vocab.encode(text)]))
    assert np.abs(got - want[0].numpy()).max() < 1e-4


def test_an_int8_page_computes_what_onnxruntime_does(browser, tarball, tmp_path, monkeypatch):
    """The int8 operators (DynamicQuantizeLSTM, MatMulInteger) in onnxruntime-web give the
    logits of onnxruntime's CPU build. Random weights have near-ties that int8 reorders,
    so export's greedy check is told to pass (its refusal is tested above)."""
    ckpt = random_checkpoint(tmp_path / "m.pt", cell="lstm")
    monkeypatch.setattr(quantize, "greedy_ids", lambda data, model, n: [0] * n)
    r = run("export", ckpt, "--web", tmp_path / "site", "--runtime", tarball,
            "--quantize", "int8", "-q")
    assert r.exit_code == 0, r.output
    assert "int8: " in r.output and "the same 1,000 greedy characters" in r.output
    data = (tmp_path / "site" / "model.onnx").read_bytes()
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load_from_string(data).graph.node}
    text = TEXT[:300]
    model, vocab, _ = model_from_checkpoint(load_checkpoint(ckpt))
    state = {name: np.zeros((2, 1, model.hidden_size), np.float32) for name in ("h", "c")}
    want = session_for(data).run(None, {"ids": np.array([vocab.encode(text)]), **state})[0][0]
    server = StaticServer(tmp_path / "site")
    page = browser.new_page()
    try:
        got = np.array(opened(page, server.url).evaluate("t => window.charrnn.logits(t)", text))
        assert np.abs(got - want).max() < 1e-4
        assert "int8 weights" in page.text_content("#model")
    finally:
        page.close()
        server.stop()


def test_the_cdn_files_pass_their_integrity_check_and_a_changed_one_fails(
        browser, trained, tarball, tmp_path):
    """The default site names the CDN; here the CDN's URLs are answered with the npm
    package's files (the machine has no CDN), so the pinned hashes meet the real bytes."""
    r = run("export", trained, "--web", tmp_path / "site", "-q")
    assert r.exit_code == 0, r.output
    files = runtime_files(tarball)
    server = StaticServer(tmp_path / "site")
    try:
        for tamper, want in ((False, r"^\d+×\d+ GRU"), (True, "did not load: .*integrity hash")):
            page = browser.new_page()
            # One more new line: still valid JavaScript, but not the bytes the hash names.
            body = {name: data + b"\n" if tamper and name == runtime.SCRIPT else data
                    for name, data in files.items()}
            page.route(CDN + "*", lambda route: route.fulfill(
                body=body[route.request.url.rsplit("/", 1)[1]],
                headers={"Access-Control-Allow-Origin": "*"},
                content_type="text/javascript" if route.request.url.endswith("mjs") else
                "application/wasm"))
            page.goto(server.url)
            page.wait_for_selector("#model.error" if tamper else "#generate:enabled",
                                   timeout=30_000)
            assert re.search(want, page.text_content("#model"))
            page.close()
    finally:
        server.stop()
