"""The ablation lab in a real browser: JupyterLab + headless Debian chromium (PyPI playwright,
no browser download). The test starts its own server on a free port with fresh settings,
workspace and runtime dirs, runs notebook 09 in fast mode, moves the state-size slider, clicks
Run (live figure and results table grow), then Run + Stop (the kernel stays responsive while
it trains), and saves screenshots to test-artifacts/ for CI."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "09_ablation_lab.ipynb"
SETTINGS = ROOT / "notebooks" / ".jupyter" / "lab" / "user-settings"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "rodimus-browser-test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian chromium is not installed: `apt-get install -y chromium` (.ci/run does this)"),
]

# JavaScript run in the page -------------------------------------------------------------
KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && w.content && w.content.widgets.length > 0;
}"""
RUN_ALL = "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
# The live figure of the lab: the plotly graph titled "Ablation runs" → [traces, points]
FIGURE = """() => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => g.layout && g.layout.title && g.layout.title.text === 'Ablation runs');
  if (!gd) return null;
  return [gd.data.length, gd.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0)];
}"""
TABLE_ROWS = "() => document.querySelectorAll('table.rodimus-results tbody tr').length"
LAST_ROW = """() => {
  const rows = document.querySelectorAll('table.rodimus-results tbody tr');
  return rows.length ? [...rows[rows.length - 1].children].map(td => td.textContent) : null;
}"""
LAST_STATUS = f"() => ({LAST_ROW})().at(-2)"     # the columns end with status, key
STEPS_COLUMN = 10               # variant, task, block, gate, n, conv, knorm, layout, window, two_hop, steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab_server(tmp_path):
    """A JupyterLab of its own on 127.0.0.1 serving a copy of notebook 09; stopped and removed after."""
    work, settings = tmp_path / "work", tmp_path / "settings"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    shutil.copytree(SETTINGS, settings)        # windowingMode "none": off-screen outputs stay rendered
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false"}')    # no "get Jupyter news?" popup over the page
    port = free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "RODIMUS_FAST": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.token={TOKEN}",
         f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={TOKEN}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_ablation_lab_runs_and_stops_in_a_real_browser(lab_server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 2200})
        try:
            page.set_default_timeout(120_000)
            page.goto(lab_server)
            page.wait_for_function(KERNEL_IDLE, polling=500)
            page.evaluate(RUN_ALL)
            # the notebook's last check cell prints the cache bytes once every cell above has run
            outputs = page.locator(".jp-OutputArea-output")
            outputs.filter(has_text="cache bytes: {").wait_for()
            assert outputs.filter(has_text="Traceback").count() == 0, "a notebook cell failed in the browser"
            page.wait_for_function(f"() => ({TABLE_ROWS})() === 4")        # 2 trained + 2 cached in the notebook
            traces, points = page.evaluate(FIGURE)
            lab = page.locator(".widget-vbox", has=page.locator("table.rodimus-results")).first

            # move the state-size slider: n 8 → 4 (a new config, so a real run)
            slider = page.locator(".widget-hslider", has=page.get_by_text("state size n", exact=True))
            slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowLeft")
            assert slider.locator(".widget-readout").inner_text() == "4"
            run = page.locator("button.jupyter-button", has_text="Run")
            stop = page.locator("button.jupyter-button", has_text="Stop")
            run.click()
            page.wait_for_function(f"() => ({TABLE_ROWS})() === 6")       # one row per selected gate
            # three panels per run: training loss, eval loss, eval accuracy
            assert page.evaluate(LAST_STATUS) == "done"
            new_traces, new_points = page.evaluate(FIGURE)
            assert new_traces == traces + 6 and new_points > points, "the live figure did not grow"
            # the gate snapshots follow the newest run to its last step (6 in fast mode)
            page.wait_for_function("() => [...document.querySelectorAll('.widget-label')]"
                                   ".some(l => /#6: step 6$/.test(l.textContent))")
            lab.screenshot(path=str(ARTIFACTS / "ablation_lab_run.png"))

            # a long run (n = 2, steps → 3000 with End) and Stop while it trains: the kernel takes the
            # click between two steps and ends the run after the current one, skipping the second variant
            slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowLeft")
            assert slider.locator(".widget-readout").inner_text() == "2"
            steps = page.locator(".widget-hslider", has=page.get_by_text("steps", exact=True))
            steps.locator(".noUi-handle").focus()
            page.keyboard.press("End")
            assert steps.locator(".widget-readout").inner_text() == "3000"
            run.click()
            page.wait_for_function(f"() => ({FIGURE})()[1] > {new_points + 100}")   # well under way
            clicked = time.monotonic()
            stop.click()
            page.wait_for_function("() => [...document.querySelectorAll('.widget-label')]"
                                   ".some(l => l.textContent === 'stopped')")
            print(f"Stop took effect {time.monotonic() - clicked:.1f} s after the click")
            assert page.evaluate(TABLE_ROWS) == 7, "Stop must end the run after one (stopped) variant"
            assert page.evaluate(LAST_STATUS) == "stopped"
            stopped_at = int(page.evaluate(f"() => ({LAST_ROW})()[{STEPS_COLUMN}]"))
            assert 2 <= stopped_at < 3000
            print(f"the stopped run ended at step {stopped_at}")
            page.screenshot(path=str(ARTIFACTS / "ablation_lab_page.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "ablation_lab_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
