"""The playground page in a real browser: Debian's chromium, headless, driven by Playwright
(never a downloaded browser), against a real `charrnn serve` on 127.0.0.1 at phone width.
It types a prime, generates and watches the text grow and finish, stops a generation, then
scores a text and finds its characters coloured, with the top 5 guesses on hover; last, with
the novelty box ticked, it finds the copied text marked and summed up."""

import re

import pytest
from browser import playwright_or_skip
from test_serve import NOVELTY_PRIME, ServerProcess, novelty_model, wait_until

pytest_plugins = ["browser"]
expect = playwright_or_skip().expect
PHONE = {"width": 375, "height": 740}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The model of test_serve's novelty tests: its greedy text is in its training text.
    model, _ = novelty_model(tmp_path_factory.mktemp("model"))
    s = ServerProcess(model, "--max-length", 1_000_000, "--novelty")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def page(browser, server):
    page = browser.new_page(viewport=PHONE)
    page.set_default_timeout(20_000)
    page.problems = []  # console errors (a CSP violation is one) and outside requests
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("request", lambda r: r.url.startswith(server.url)
            or r.url.startswith("data:") or page.problems.append(r.url))
    page.goto(server.url + "/")
    yield page
    page.close()


def test_the_default_length_is_the_servers(page, server):
    default = server.client.get("/v1/model").json()["defaults"]["length"]
    assert default == 500
    expect(page.locator("#length")).to_have_value(str(default))  # once the model is read


def test_generate_streams_text_that_grows_and_finishes(page):
    # Waits go through locators: the page's Content-Security-Policy forbids the eval that
    # wait_for_function would need.
    expect(page.locator("#model")).to_contain_text("2×32 LSTM")
    # Record every length the text passes through, to see it grow rather than appear.
    page.evaluate("""() => {
        window.lengths = [];
        new MutationObserver(() => window.lengths.push(
            document.querySelector('#output .generated').textContent.length))
          .observe(document.querySelector('#output .generated'),
                   {childList: true, characterData: true, subtree: true});
    }""")
    page.fill("#prime", "the ")
    page.fill("#length", "30000")
    page.fill("#seed", "7")
    page.click("#generate")
    # 30,000 characters take 15 s at the 2,000/s of two busy cores: expect's 5 s is too short.
    expect(page.locator("#gen-status")).to_have_text(re.compile(r"^done: length"),
                                                      timeout=120_000)
    assert page.text_content("#output .prime") == "the "
    assert len(page.text_content("#output .generated")) == 30000
    lengths = page.evaluate("window.lengths")
    assert len(set(lengths)) > 2 and lengths == sorted(lengths)  # it grew, piece by piece
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.problems == []


STOP_LINES = ["\\n\\n", "a\\tb", "\\x41\\101\\7", "\\u00e9\\U0001F600", "\\\\ \\' \\\"",
              "\\a\\b\\f\\v\\r", "plain é", "\\q", "end\\", "\\x4", "\\U00110000"]


def test_stop_strings_are_unescaped_as_the_command_line_does(page):
    from charrnn.cli.common import unescape
    from charrnn.core.errors import CharRNNError

    for line in STOP_LINES:
        try:
            want = unescape(line, "--stop")
        except CharRNNError:
            want = None
        got = page.evaluate("""line => {
            try { return unescapeStop(line); } catch (e) { return null; }
        }""", line)
        assert got == want, line
    assert "not understood here" in page.evaluate("""() => {
        try { unescapeStop("\\\\N{BULLET}"); } catch (e) { return e.message; }
    }""")


def test_stop_ends_a_generation(page, server):
    page.fill("#length", "1000000")
    page.click("#generate")
    expect(page.locator("#gen-status")).to_have_text(re.compile(r"^\d+ characters"))
    page.click("#stop")
    expect(page.locator("#gen-status")).to_have_text(re.compile(r"^stopped after \d+"))
    assert wait_until(lambda: server.client.get("/healthz").json()["streams"] == 0)
    assert page.is_enabled("#generate") and not page.is_enabled("#stop")
    assert page.problems == []


def test_score_colours_each_character_with_top_guesses_on_hover(page):
    page.click("#tab-score")
    text = "the quick brown fox jumps over a lazy dog.\nthe king"
    page.fill("#score-text", text)
    page.click("#score")
    page.wait_for_selector("#scored .c")
    assert page.locator("#scored .c").count() == len(text) - 1  # the first has no prediction
    assert page.text_content("#scored") == text
    colour = page.evaluate("getComputedStyle(document.querySelector('#scored .c')).backgroundColor")
    assert colour not in ("", "rgba(0, 0, 0, 0)", "transparent")
    page.hover("#scored .c >> nth=5")
    assert page.is_visible("#tip")
    assert page.locator("#tip tr").count() == 5
    assert "bits per character" in page.text_content("#score-status")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.problems == []


def test_novelty_marks_the_copied_text(page):
    page.click("#tab-generate")
    page.check("#novelty")
    page.fill("#prime", NOVELTY_PRIME)
    page.fill("#temperature", "0")  # greedy: the continuation the training text holds
    page.fill("#length", "300")
    page.click("#generate")
    expect(page.locator("#gen-status")).to_have_text(re.compile(r"^done: length"))
    expect(page.locator("#novelty-summary")).to_have_text(re.compile(
        r"^Longest copied span: 300 characters \(line [\d,]+ of the training text\) · "
        r"100\.0% of the text in copied spans of 20\+$"))
    marks = page.locator("#output .generated mark.copied")
    assert marks.count() == 1 and len(marks.text_content()) == 300
    assert len(page.text_content("#output .generated")) == 300  # marked, not changed
    colour = page.evaluate(
        "getComputedStyle(document.querySelector('mark.copied')).backgroundColor")
    assert colour not in ("", "rgba(0, 0, 0, 0)", "transparent")
    page.uncheck("#novelty")  # a plain generation clears the summary
    page.click("#generate")
    expect(page.locator("#gen-status")).to_have_text(re.compile(r"^done: length"))
    assert page.locator("#output mark").count() == 0 and page.is_hidden("#novelty-summary")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.problems == []


def test_stop_at_end_is_offered_only_for_a_model_of_documents(page):
    expect(page.locator("#model")).to_contain_text("2×32 LSTM")
    expect(page.locator("#stop-at-end")).to_be_disabled()
    expect(page.locator("#stop-at-end-hint")).to_have_text("(a model trained on many files)")
