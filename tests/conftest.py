"Shared pytest setup: an isolated cache and run folder per session, the shared assets folder, and a headless Chromium."
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # Tests never download: assets come from DFW_ASSETS (CI sets it to ../shared) or the test skips.
    os.environ.setdefault("DFW_OFFLINE", "1")
    if not os.environ.get("DFW_ASSETS") and (ROOT.parent / "shared" / "models").is_dir():
        os.environ["DFW_ASSETS"] = str(ROOT.parent / "shared")


@pytest.fixture
def assets_dir():
    "The folder of shared models and videos, or skip with the reason."
    d = os.environ.get("DFW_ASSETS")
    if not d or not Path(d).is_dir():
        pytest.skip("DFW_ASSETS is not set to a folder holding models/ and videos/ (CI sets it to ../shared)")
    return Path(d)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def chromium():
    "Debian's Chromium, headless, driven by Playwright; skips with the reason where it cannot run."
    pytest.importorskip("playwright", reason="playwright (Python) is not installed: pip install -e '.[dev]'")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: install Debian's `chromium` (apt-get install chromium); .ci/run does")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        try: yield browser
        finally: browser.close()


@pytest.fixture
def offline_page(chromium):
    """A page of that browser with the network off: it loads only file: and data: URLs. `.page` is the Playwright page;
    `.blocked` lists the requests it refused, `.failed` the requests that failed, `.errors` the pages' script errors."""
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    seen = SimpleNamespace(page=page, blocked=[], failed=[], errors=[])
    def route(r):
        if r.request.url.startswith(("file:", "data:")): r.continue_()
        else: seen.blocked.append(r.request.url); r.abort()
    page.route("**/*", route)
    page.on("requestfailed", lambda r: seen.failed.append(r.url))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    return seen
