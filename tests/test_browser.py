"""The widget lesson as a person uses it: JupyterLab from the project's install, in a real headless Chromium.

Opens nbs/22_widgets.ipynb in JupyterLab, waits for an idle kernel on the first load, runs every cell, moves the
attention explorer's frame slider with the keyboard and checks that the plotly figure re-rendered. The screenshots
are kept in the test's output folder (pytest's tmp_path, printed on failure).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, chromium):
    "A JupyterLab server on loopback over a copy of the widget lesson (only where a browser can open it); yields (url, log path)."
    work = tmp_path / "nbs"; work.mkdir()
    shutil.copy(ROOT / "nbs" / "22_widgets.ipynb", work / "22_widgets.ipynb")
    port, token = _free_port(), "dfw-test-token"
    log = tmp_path / "jupyterlab.log"
    # fresh config, data and runtime folders: the first load of a new user (no workspace, no notebook secret yet)
    env = {**os.environ, **{f"JUPYTER_{k}_DIR": str(tmp_path / f"jupyter-{k.lower()}") for k in ("CONFIG", "DATA", "RUNTIME")}}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
                             "--ServerApp.open_browser=False", "--allow-root"], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2); break
            except OSError:
                if proc.poll() is not None: pytest.fail(f"JupyterLab exited: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        else: pytest.fail(f"JupyterLab did not answer in 60 s: {log.read_text()[-2000:]}")
        yield f"{url}/lab/tree/22_widgets.ipynb?token={token}", log
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()


def _status(page) -> str:
    "The notebook's kernel as JupyterLab sees it: 'connected/idle' when it can run code."
    return page.evaluate("""() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                                    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                                    return k ? k.connectionStatus + '/' + k.status : 'no kernel'; }""")


def test_widget_lesson_in_jupyterlab(lab, chromium, tmp_path):
    url, log = lab
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    # the first load must reach an idle kernel, without a reload
    deadline = time.time() + 120
    while _status(page) != "connected/idle" and time.time() < deadline: time.sleep(0.5)
    page.screenshot(path=str(tmp_path / "first-load.png"))
    assert _status(page) == "connected/idle", (f"kernel status {_status(page)!r} 120 s after the first load; screenshot "
                                     f"{tmp_path / 'first-load.png'}; server log:\n{log.read_text()[-3000:]}")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # wait for the explorer: a FigureWidget beside a slider labelled 'frame'
    page.wait_for_selector(".widget-slider:has-text('frame') .noUi-handle, .widget-slider:has-text('frame') .slider-container",
                           timeout=240_000)
    deadline = time.time() + 240
    while _status(page) != "connected/idle" and time.time() < deadline: time.sleep(0.5)
    titles = lambda: page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot .gtitle')].map(t => t.textContent)")
    # the attention explorer: the first widget box holding a 'frame' slider, and the plotly figure in that box
    box = page.locator(".widget-vbox", has=page.locator(".widget-slider", has_text="frame")).first
    title = lambda: box.locator(".js-plotly-plot .gtitle").first.text_content()
    before, others = title(), titles()
    assert before.startswith("clip 0, frame 0"), (before, others)
    handle = box.locator(".widget-slider", has_text="frame").locator(".noUi-handle").first
    handle.focus(); page.keyboard.press("ArrowRight")
    deadline = time.time() + 30
    while not title().startswith("clip 0, frame 1") and time.time() < deadline: time.sleep(0.25)
    page.screenshot(path=str(tmp_path / "after-slider.png"), full_page=False)
    after = title()
    assert after.startswith("clip 0, frame 1"), (f"the explorer's figure did not re-render after moving the frame "
                                                 f"slider: its title {after!r}; screenshots in {tmp_path}")
    changed = [(x, y) for x, y in zip(others, titles()) if x != y]
    assert changed == [(before, after)], changed                              # only that figure moved
    assert "kernel_ws_protocol" not in log.read_text(), log.read_text()[-3000:]
