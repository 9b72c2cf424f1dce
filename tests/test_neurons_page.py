"""The page `charrnn neurons --html` writes, in a real browser: Debian's chromium, headless,
driven by Playwright (never a downloaded browser). It renders the coloured text and one
panel per top cell, a cell can be picked from the list or by its panel, it fetches
nothing, and it fits a desktop (1280 px) and a phone (390 px) screen, each screenshotted."""

import pytest
from browser import playwright_or_skip
from conftest import run
from test_neurons import TEXT, model_file  # noqa: F401 (a fixture)

pytest_plugins = ["browser"]
expect = playwright_or_skip().expect


@pytest.fixture
def page_file(model_file, tmp_path):  # noqa: F811 (the fixture imported above)
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "cells.html"
    r = run("neurons", model_file, text, "--html", out, "--show", 800, "--top", 2)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("width", [1280, 390])
def test_page_renders_and_a_cell_can_be_picked(page_file, browser, tmp_path, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(20_000)
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("request", lambda r: r.url.startswith("file:") or problems.append(r.url))
    page.goto(page_file.as_uri())
    main = page.locator("#main span")
    expect(main).to_have_count(800)
    assert page.locator(".panel").count() >= 5  # a top cell for most of the 8 features
    first = page.locator("#picked").inner_text()
    colours = main.evaluate_all("spans => spans.map(s => s.style.background).join()")
    # Pick the last ranked cell from the list: the label and the colours follow it.
    options = page.locator("#cell option")
    last = options.nth(options.count() - 1)
    page.select_option("#cell", last.get_attribute("value"))
    expect(page.locator("#picked")).not_to_have_text(first)
    assert main.evaluate_all("spans => spans.map(s => s.style.background).join()") != colours
    # A panel picks its cell too, and is marked as the one shown.
    panel = page.locator(".panel").nth(1)
    panel.click()
    expect(panel).to_have_class("panel chosen")
    name = panel.locator("h2").inner_text().split(" · ")[1].removeprefix("cell ")
    assert page.locator("#picked").inner_text().startswith(name + ":")
    # Nothing sticks out sideways at this width.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    shot = tmp_path / f"cells-{width}.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    assert problems == []
    page.close()
