"""`dfw` as a new user meets it: help without a command, `dfw assets --download` fetching a file and checking its sha256
(over file:// here, so no network is needed), and a wrong download leaving nothing behind."""
import contextlib
import hashlib
import io

import pytest

from dfworkbench.cli import main
from dfworkbench.core import ASSETS, Asset, register_asset


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main(list(argv))
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def test_plain_dfw_prints_help():
    code, out, err = _run()
    assert code == 0 and out.startswith("usage: dfw") and "detect" in out and err == ""


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    "An asset served from a file:// address; the real ones are pointed at files that exist, so only it can be missing."
    src = tmp_path / "served" / "model.bin"; src.parent.mkdir()
    src.write_bytes(b"weights" * 1000)
    a = Asset("test_model", "model.bin", hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_size, src.as_uri())
    saved = dict(ASSETS)
    ASSETS.clear(); register_asset(a)
    monkeypatch.setenv("DFW_CACHE", str(tmp_path / "cache")); monkeypatch.delenv("DFW_ASSETS", raising=False)
    monkeypatch.delenv("DFW_OFFLINE", raising=False)
    yield a, src
    ASSETS.clear(); ASSETS.update(saved)


def test_assets_download_fetches_and_checks(fake_asset, tmp_path):
    a, src = fake_asset
    code, out, err = _run("assets")
    assert code == 1 and "MISSING" in out and "dfw assets --download" in err
    code, out, err = _run("assets", "--download")
    assert code == 0 and "found" in out, (out, err)
    cached = tmp_path / "cache" / "assets" / "models" / "model.bin"
    assert cached.read_bytes() == src.read_bytes()
    code, out, _ = _run("assets"); assert code == 0 and "MISSING" not in out       # found in the cache from now on


def test_assets_download_with_wrong_sha_keeps_nothing(fake_asset, tmp_path):
    a, src = fake_asset
    src.write_bytes(b"not the model")                                            # the served file changed under its address
    code, out, _ = _run("assets", "--download")
    assert code == 1 and "expected" in out and "nothing was kept" in out, out
    assert not (tmp_path / "cache" / "assets" / "models" / "model.bin").exists()
