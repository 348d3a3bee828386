"""The tour's report as a reader meets it: pages that render their figures in a real Chromium with the network off, a
small run folder, and a terminal that shows only the runner's own lines (the kernels' logs go to files)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dfworkbench.lessons import PLOTLY_JS, run_lessons, write_summary

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}

JS_SEEN = """() => ({
                plots: document.querySelectorAll('.js-plotly-plot').length,
                drawn: [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length,
                images: [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length,
                plotlyImages: document.querySelectorAll('.js-plotly-plot image').length,
                styled: getComputedStyle(document.documentElement).getPropertyValue('--jp-ui-font-size1').trim() !== '',
                text: document.body.innerText})"""


def _lesson(path, cells):
    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[v4.new_code_cell('preset = "smoke"\ndevice = "auto"', metadata={"tags": ["parameters"]})]
                         + [v4.new_markdown_cell(c[3:]) if c.startswith("md:") else v4.new_code_cell(c) for c in cells], metadata=KERNEL)
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A run of two small lessons (plotly bars and an image, a matplotlib figure) and the real 00_core lesson, with its report."
    d = tmp_path_factory.mktemp("tour")
    nbs = d / "nbs"; nbs.mkdir()
    _lesson(nbs / "01_plots.ipynb", ["md:# Plots\n> Two kinds of plotly figure.",
                                     "#| export\nimport numpy as np, plotly.graph_objects as go\nfrom dfworkbench.core import record",
                                     "record('demo.v', 0.5)", "md:## The picture",
                                     "go.Figure(go.Bar(y=[1, 3, 2])).show()",
                                     "img = np.random.default_rng(0).integers(0, 255, (270, 480, 3), dtype=np.uint8)\ngo.Figure(go.Image(z=img)).show()",
                                     "import ipywidgets as w\nw.VBox([w.IntSlider(3), go.FigureWidget(go.Bar(y=[1, 2]))])"])
    _lesson(nbs / "02_matplotlib.ipynb", ["md:# Matplotlib\n> A static figure.",
                                          "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()"])
    shutil.copy(ROOT / "nbs" / "00_core.ipynb", nbs / "00_core.ipynb")
    rep = run_lessons("smoke", "cpu", nbs=nbs, root=d / "runs", progress=False, log=lambda *a: None)
    assert rep.ok, [r.error for r in rep.results if not r.ok]
    write_summary(rep)
    return rep


def test_run_folder_is_small_and_plotly_js_is_there_once(run):
    files = {p.name: p.stat().st_size for p in run.folder.iterdir()}
    assert files[PLOTLY_JS] > 1_000_000
    pages = [n for n in files if n.endswith(".html")]
    assert sorted(pages) == ["00_core.html", "01_plots.html", "02_matplotlib.html", "index.html"]
    assert all(files[n] < 1_500_000 for n in pages), files                        # no page carries its own plotly.js
    assert files["01_plots.ipynb"] < 600_000, files                                  # the 480 x 270 image is a PNG, not a JSON array
    assert "widgets" not in nbformat.read(str(run.folder / "01_plots.ipynb"), as_version=4).metadata   # no saved widget state (a FigureWidget's is megabytes)
    css = [n for n in files if n.endswith(".css")]
    assert len(css) >= 1 and sum(files[n] for n in css) > 100_000, files             # nbconvert's theme, written once for the run...
    for n in pages:
        if n == "index.html": continue
        text = (run.folder / n).read_text()
        assert all(f'href="{c}"' in text for c in css) and "widget-state+json" not in text, n   # ...and linked by every lesson page
        assert all(len(b) < 4096 for b in re.findall(r"<style[^>]*>(.*?)</style>", text, re.S)), n  # no page keeps its own copy
    assert sum(files.values()) < 15_000_000


def test_pages_render_their_figures_offline_in_chromium(run, tmp_path, offline_page):
    page, seen = offline_page.page, {}
    for name in ("index", "00_core", "01_plots", "02_matplotlib"):
        page.goto((run.folder / f"{name}.html").as_uri()); page.wait_for_load_state("load")
        page.wait_for_timeout(300)
        seen[name] = page.evaluate(JS_SEEN)
        if name == "index": page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    assert (offline_page.blocked, offline_page.failed, offline_page.errors) == ([], [], [])
    for name, s in seen.items():
        assert s["drawn"] == s["plots"], (name, s["plots"], s["drawn"])              # every plotly figure drew itself
    assert seen["01_plots"]["plots"] == 2 and seen["01_plots"]["plotlyImages"] >= 1
    assert seen["00_core"]["plots"] >= 1 and seen["02_matplotlib"]["images"] >= 1
    idx = seen["index"]
    assert idx["drawn"] >= 2 and idx["images"] >= 1                                 # the lessons' pictures, on the index too
    assert "Two kinds of plotly figure." in idx["text"] and "external files registered" in idx["text"]
    assert "#|" not in seen["01_plots"]["text"] and "Parameters" not in seen["00_core"]["text"]
    assert "Open this lesson in JupyterLab" in seen["01_plots"]["text"]               # the widget says where it works instead of a blank
    assert seen["01_plots"]["styled"] and seen["00_core"]["styled"]                   # the shared CSS file loaded offline and applies


def test_terminal_shows_only_the_runner(tmp_path):
    "Kernel warnings, MediaPipe-style C++ log lines and what a kernel writes to its stderr go to the lesson's log, not the terminal."
    nbs = tmp_path / "nbs"; nbs.mkdir()
    _lesson(nbs / "01_noisy.ipynb", ["import os, sys\nos.write(2, b'W0000 00:00 fake_graph.cc:1] C-level noise\\n')\n"
                                     "print('python-level noise', file=sys.__stderr__, flush=True)"])
    env = {**os.environ, "DFW_NBS": str(nbs)}
    p = subprocess.run([str(Path(sys.executable).parent / "dfw"), "lessons", "--runs", str(tmp_path / "runs"), "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    terminal = p.stdout + p.stderr
    for noise in ("C-level noise", "python-level noise", "without encryption", "KeyboardInterrupt"):
        assert noise not in terminal, (noise, terminal[-3000:])
    log = next((tmp_path / "runs").glob("*/01_noisy.log")).read_text()
    assert "C-level noise" in log and "python-level noise" in log
