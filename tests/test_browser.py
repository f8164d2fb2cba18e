"""The ablation lab in a real browser: JupyterLab + headless Debian chromium (PyPI playwright,
no browser download). The test starts its own server on a free port with the project's read-only
defaults (jupyter/, as `make lab` does) and fresh settings, workspace and runtime dirs; checks that
a jupytext pair is listed once; runs notebook 09 in fast mode, moves the state-size slider (its
typed entry follows), clicks Run (live figure and results table grow), types a step count into the
steps entry, Run + Stop (the kernel stays responsive while it trains), exports the CSV (the
confirmation appears beside its button, inside the cell) and saves screenshots to test-artifacts/."""

import json

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "09_ablation_lab.ipynb"
PROJECT_CONFIG = ROOT / "jupyter"     # what `make lab` puts on JUPYTER_CONFIG_PATH
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "rodimus-browser-test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
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
    shutil.copy(NOTEBOOK.with_suffix(".py"), work / NOTEBOOK.with_suffix(".py").name)   # its jupytext twin
    port = free_port()
    # the project's defaults (windowingMode "none": off-screen outputs stay rendered; no news popup)
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(PROJECT_CONFIG), "JUPYTERLAB_SETTINGS_DIR": str(settings),
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
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_jupytext_pairs_are_listed_once(lab_server):
    with urllib.request.urlopen(f"{lab_server}/api/contents/?token={TOKEN}", timeout=10) as reply:
        names = [item["name"] for item in json.load(reply)["content"]]
    assert NOTEBOOK.name in names and NOTEBOOK.with_suffix(".py").name not in names, names


def box_of(page, label: str):
    """The row of a slider (labelled ``label``) and its typed entry."""
    return page.locator(".widget-hbox", has=page.locator(".widget-hslider", has=page.get_by_text(label, exact=True))).last


def test_ablation_lab_runs_and_stops_in_a_real_browser(lab_server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 2200})
        try:
            page.set_default_timeout(180_000)
            page.goto(f"{lab_server}/lab/tree/{NOTEBOOK.name}?token={TOKEN}")
            page.wait_for_function(KERNEL_IDLE, polling=500)
            page.evaluate(RUN_ALL)
            # the notebook's last check cell prints the cache bytes once every cell above has run
            outputs = page.locator(".jp-OutputArea-output")
            outputs.filter(has_text="cache bytes: {").wait_for()
            assert outputs.filter(has_text="Traceback").count() == 0, "a notebook cell failed in the browser"
            page.wait_for_function(f"() => ({TABLE_ROWS})() === 4")        # 2 trained + 2 cached in the notebook
            traces, points = page.evaluate(FIGURE)
            lab = page.locator(".widget-vbox", has=page.locator("table.rodimus-results")).first
            cell = page.locator(".jp-OutputArea-output", has=page.locator("table.rodimus-results")).first
            right_edge = cell.bounding_box()["x"] + cell.bounding_box()["width"]

            # layout: the window slider is wide enough to aim at 0…256, the results table stays in the cell
            assert box_of(page, "window (0: all)").locator(".widget-hslider").bounding_box()["width"] >= 300
            table = page.locator(".widget-html", has=page.locator("table.rodimus-results")).first
            assert table.bounding_box()["x"] + table.bounding_box()["width"] <= right_edge + 4   # a border's width of slack
            assert table.evaluate("t => getComputedStyle(t).overflow") == "auto"   # wider columns scroll

            # move the state-size slider: n 16 → 8 (a new config, so a real run); its entry follows
            state = box_of(page, "state size n")
            state.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowLeft")
            expect(state.locator("select option:checked")).to_have_text("8")   # through the kernel
            run = page.locator("button.jupyter-button", has_text="Run")
            stop = page.locator("button.jupyter-button", has_text="Stop")
            run.click()
            page.wait_for_function(f"() => ({TABLE_ROWS})() === 6")       # one row per selected gate
            # three panels per run: training loss, eval loss, eval accuracy
            assert page.evaluate(LAST_STATUS) == "done"
            new_traces, new_points = page.evaluate(FIGURE)
            assert new_traces == traces + 6 and new_points > points, "the live figure did not grow"
            # the gate snapshots follow the newest run to its last step (200 in fast mode)
            page.wait_for_function("() => [...document.querySelectorAll('.widget-label')]"
                                   ".some(l => /#6: step 200$/.test(l.textContent))")
            lab.screenshot(path=str(ARTIFACTS / "ablation_lab_run.png"))

            # a long run (n = 4, 3000 steps typed into the steps entry) and Stop while it trains: the kernel
            # takes the click between two steps and ends the run after the current one, skipping the second variant
            state.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowLeft")
            expect(state.locator("select option:checked")).to_have_text("4")
            steps = box_of(page, "steps")
            steps.locator("input").fill("3000")
            steps.locator("input").press("Enter")
            page.wait_for_function("() => [...document.querySelectorAll('.widget-hslider')].some(s => "
                                   "s.textContent.includes('steps') && s.querySelector('.noUi-handle')"
                                   ".getAttribute('aria-valuenow') === '3000.0')")
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

            # export: the confirmation appears on the row of its button, whole, inside the cell
            csv_button = page.locator("button.jupyter-button", has_text="Export CSV")
            csv_button.click()
            confirmation = page.locator(".widget-html", has_text="✓ wrote").first   # the notebook exported JSON before
            expect(confirmation).to_contain_text("ablation_results.csv (7 runs)")
            button_box, note_box = csv_button.bounding_box(), confirmation.bounding_box()
            assert note_box["x"] > button_box["x"] and abs(note_box["y"] - button_box["y"]) < 40
            assert note_box["x"] + note_box["width"] <= right_edge + 4   # a border's width of slack
            lab.screenshot(path=str(ARTIFACTS / "ablation_lab_export.png"))
            page.screenshot(path=str(ARTIFACTS / "ablation_lab_page.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "ablation_lab_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
