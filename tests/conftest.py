"Shared pytest setup: an isolated cache and run folder per session, and the shared assets folder."
import os
from pathlib import Path

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
