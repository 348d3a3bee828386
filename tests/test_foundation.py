"The house itself: notebook conventions, the README, the command line, the asset resolver."
import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import nbformat
import pytest

from dfworkbench import core
from dfworkbench.cli import render_readme
from dfworkbench.lessons import _demo_lesson, find_lessons

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted((ROOT / "nbs").glob("*.ipynb"))


def dfw(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    exe = Path(sys.executable).parent / "dfw"  # the console script the install made
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=600)


@pytest.mark.parametrize("path", [p for p in NBS if p.name != "index.ipynb"], ids=lambda p: p.stem)
def test_lesson_conventions(path):
    nb = nbformat.read(str(path), as_version=4)
    assert nb.metadata.kernelspec.name == "python3", f"{path.name}: kernelspec must be python3 for papermill"
    assert nb.cells[0].source.startswith("#| default_exp "), f"{path.name}: first cell must be #| default_exp"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert 'preset = "smoke"' in params[0].source and "device" in params[0].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: run nbdev-clean (outputs committed)"


def test_readme_is_rendered_from_index():
    assert (ROOT / "README.md").read_text() == render_readme(), "README.md is stale: run `dfw readme` after editing nbs/index.ipynb"
    text = (ROOT / "README.md").read_text()
    assert 'pip install -e . && dfw tour' in text and 'pip install -e ".[dev]" && pytest' in text
    assert "settings.ini" in text
    for link in ("nbs/images/overview.png",):
        assert link in text and (ROOT / link).exists()


def test_every_lesson_is_listed_in_the_readme():
    text = (ROOT / "README.md").read_text()
    missing = [p.stem for p in find_lessons() if f"`{p.stem}`" not in text]
    assert not missing, f"lessons not in the README's table (edit nbs/index.ipynb): {missing}"


def test_cli_help():
    r = dfw("--help")
    assert r.returncode == 0 and "lessons" in r.stdout and "tour" in r.stdout
    r = dfw("lessons", "--help")
    assert r.returncode == 0 and "--baseline" in r.stdout and "--preset" in r.stdout
    r = dfw("tour", "--help")
    assert r.returncode == 0 and "index.html" in r.stdout


def test_cli_lessons_runs_compares_and_fails_loudly(tmp_path):
    nbs = tmp_path / "nbs"; nbs.mkdir()
    _demo_lesson(nbs / "01_demo.ipynb")
    env = {"DFW_NBS": str(nbs), "DFW_RUNS": str(tmp_path / "runs")}
    for _ in range(2):
        r = dfw("lessons", "--preset", "smoke", "--device", "cpu", env=env)
        assert r.returncode == 0, r.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((p / "records.json").exists() and (p / "01_demo.ipynb").exists() for p in runs)
    rec = json.loads((runs[0] / "records.json").read_text())
    assert rec["lessons"]["01_demo"]["records"] == {"demo.x": 1, "demo.preset": "smoke"}
    # a baseline made from the run passes; tightened, it fails naming the record and both values
    base = tmp_path / "baseline.json"
    assert dfw("baseline", str(runs[0]), "--out", str(base), env=env).returncode == 0
    assert dfw("lessons", "--baseline", str(base), env=env).returncode == 0
    b = json.loads(base.read_text()); b["records"]["01_demo"]["demo.x"] = {"value": 1.5, "atol": 0.01, "rtol": 0.0}
    base.write_text(json.dumps(b))
    r = dfw("lessons", "--baseline", str(base), env=env)
    assert r.returncode == 1 and "demo.x" in r.stderr and "baseline 1.5" in r.stderr and "this run 1" in r.stderr
    # a lesson that raises: non-zero exit naming notebook and cell; partial notebook kept
    _demo_lesson(nbs / "02_bad.ipynb", fail=True)
    r = dfw("lessons", env=env)
    assert r.returncode == 1 and "02_bad.ipynb failed at cell 3" in r.stderr and "failed on purpose" in r.stderr
    newest = sorted((tmp_path / "runs").iterdir())[-1]
    kept = nbformat.read(str(newest / "02_bad.ipynb"), as_version=4)
    assert any(o.get("output_type") == "error" for c in kept.cells for o in c.get("outputs", []))
    assert len(list((tmp_path / "runs").iterdir())) == 5  # no earlier run deleted


def test_tour_writes_html(tmp_path):
    nbs = tmp_path / "nbs"; nbs.mkdir(); _demo_lesson(nbs / "01_demo.ipynb")
    r = dfw("tour", env={"DFW_NBS": str(nbs), "DFW_RUNS": str(tmp_path / "runs")})
    assert r.returncode == 0, r.stderr
    run = next((tmp_path / "runs").iterdir())
    page = (run / "index.html").read_text()
    assert "demo.x" in page and (run / "01_demo.html").exists()


def test_runs_flag_reaches_the_lessons(tmp_path):
    "`--runs DIR` is where the lessons' own training runs go too (the tour finds the LN-tuning checkpoint there), whatever $DFW_RUNS says."
    nbs = tmp_path / "nbs"; nbs.mkdir()
    _demo_lesson(nbs / "01_demo.ipynb", body="import os, pathlib\nx = 1\npathlib.Path(os.environ['DFW_RUNS'], 'from-the-lesson').write_text('x')")
    r = dfw("lessons", "--runs", str(tmp_path / "mine"), env={"DFW_NBS": str(nbs), "DFW_RUNS": str(tmp_path / "elsewhere")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mine" / "from-the-lesson").is_file() and not (tmp_path / "elsewhere").exists()


def test_missing_model_offline_names_file_address_and_folder(tmp_path, monkeypatch):
    for k in ("DFW_ASSETS", "DFW_FACE_LANDMARKER", "DFW_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DFW_CACHE", str(tmp_path / "cache"))
    def no_network(*a, **k): raise urllib.error.URLError("no network")
    monkeypatch.setattr(core.urllib.request, "urlopen", no_network)
    with pytest.raises(core.AssetError) as e:
        core.resolve_asset("face_landmarker")
    msg = str(e.value)
    a = core.ASSETS["face_landmarker"]
    assert a.filename in msg and a.url in msg and str(tmp_path / "cache" / "assets" / "models") in msg and "no network" in msg
    assert not any((tmp_path / "cache").rglob("*.task")) and not any((tmp_path / "cache").rglob("*.tmp"))


def test_wrong_sha256_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "models" / "face_landmarker.task"; bad.parent.mkdir()
    bad.write_bytes(b"not the model")
    monkeypatch.setenv("DFW_ASSETS", str(tmp_path))
    with pytest.raises(core.AssetError, match="sha256"):
        core.resolve_asset("face_landmarker", download=False)
    with pytest.raises(core.AssetError, match="sha256"):
        core.resolve_asset("face_landmarker", path=bad)


def test_shared_models_resolve(assets_dir):
    for name in ("face_landmarker", "blaze_face_short_range"):
        p = core.resolve_asset(name, download=False)
        assert p.parent == assets_dir / "models" and p.stat().st_size == core.ASSETS[name].size
