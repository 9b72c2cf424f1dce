"""The browser the page tests drive: Debian's chromium (never a downloaded browser), headless,
through Playwright. A pytest plugin: a test module takes it with

    pytest_plugins = ["browser"]
    sync_api = playwright_or_skip()   # from browser import ...; where every test needs it

and gets the `browser` fixture, one chromium per test module. Without chromium or Playwright
the tests that need it are skipped with one line.

PYTEST_DONT_REWRITE: the test modules import it before pytest loads it as a plugin, and it
has no assert of its own to rewrite.
"""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "no browser: chromium is not installed (apt-get install chromium)"
NO_PLAYWRIGHT = "playwright is not installed"


def playwright_or_skip():
    """playwright.sync_api, or a skip of the calling test module (called at its top)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(NO_CHROMIUM, allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT)


# Module scope, not session: Playwright's sync API runs one instance per thread at a time,
# and a test that starts its own must find none running.
@pytest.fixture(scope="module")
def browser():
    """A headless chromium for the module's tests, closed after them."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()
