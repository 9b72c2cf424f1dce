"""The playground's Cells view: POST /v1/cells against a real `charrnn serve` on
127.0.0.1, then the view in Debian's chromium (Playwright, never a downloaded browser):
paste a text, read it, pick a cell from the ranked list and by number."""

import os
import shutil

import numpy as np
import pytest
import torch
from test_serve import VOCAB, ServerProcess, tiny_checkpoint

from charrnn.core.checkpoint import load_checkpoint
from charrnn.inference.trained import model_from_checkpoint
from charrnn.neurons.record import Cells

TEXT = "The quick brown fox\njumps over the lazy dog.\n" * 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.pt")
    s = ServerProcess(model)
    s.model = model
    yield s
    s.stop()


def test_cells_ranks_and_gives_one_cells_values(server):
    r = server.client.post("/v1/cells", json={"text": TEXT})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["count"] == 2 * 2 * 32 and out["text"] == TEXT
    assert out["ranked"] and out["cell"] == out["ranked"][0]["cell"]
    # The values are the step-by-step cell's over the text, read from a zero state.
    model, _, _ = model_from_checkpoint(load_checkpoint(server.model))
    ids = torch.tensor([VOCAB.encode(TEXT)])
    values, _, _ = Cells(model).run(ids)
    np.testing.assert_allclose(out["values"], values[0, :, out["cell"]].numpy(), atol=1e-3)
    picked = server.client.post("/v1/cells", json={"text": TEXT, "cell": 5}).json()
    assert picked["cell"] == 5 and picked["name"] == "L1 c 5"
    np.testing.assert_allclose(picked["values"], values[0, :, 5].numpy(), atol=1e-3)


@pytest.mark.parametrize("body, fragment", [
    ({"text": TEXT, "cell": 128}, "'cell' must be 0 to 127"),
    ({"text": TEXT, "cell": "x"}, "'cell' must be"),
    ({"cell": 1}, "'text' is missing"),
    ({"text": "☃"}, "does not know"),
    ({"text": "a" * 5001}, "limit"),
])
def test_bad_cells_requests_are_refused(server, body, fragment):
    r = server.client.post("/v1/cells", json=body)
    assert r.status_code == 422 and fragment in r.json()["error"], r.text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no browser: chromium is not installed")
def test_cells_view_in_the_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 800})
            page.set_default_timeout(20_000)
            errors = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(server.url + "/")
            page.click("#tab-cells")
            page.fill("#cells-text", TEXT)
            page.click("#cells-read")
            expect(page.locator("#cells-out span")).to_have_count(len(TEXT))
            options = page.locator("#cells-ranked option")
            assert options.count() >= 3
            second = options.nth(1).get_attribute("value")
            page.select_option("#cells-ranked", second)
            expect(page.locator("#cell-number")).to_have_value(second)
            page.fill("#cell-number", "7")
            page.locator("#cell-number").dispatch_event("change")
            expect(page.locator("#cells-name")).to_contain_text("L1 c 7")
            page.screenshot(path=str(tmp_path / "cells-view.png"))
            assert errors == []
        finally:
            browser.close()
