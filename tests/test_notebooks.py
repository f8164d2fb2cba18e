"""Every notebook runs headless in fast mode (RODIMUS_FAST=1) without an error, shows plotly
figures, and its .ipynb is in sync with the jupytext .py it is generated from."""

import os
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
PLOTLY = "application/vnd.plotly.v1+json"


def execute(path: Path, timeout: int = 300) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook in a fresh kernel in fast mode; returns (executed notebook, seconds)."""
    nb = nbformat.read(path, as_version=4)
    env = {"RODIMUS_FAST": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        return nb, time.perf_counter() - start
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_there_are_notebooks():
    assert len(SOURCES) >= 5, f"expected the notebook series in {NOTEBOOKS}, found {[p.name for p in SOURCES]}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_matches_its_jupytext_source(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `jupytext --to ipynb notebooks/{source.name}`"
    from_py = jupytext.read(source)
    stored = nbformat.read(ipynb, as_version=4)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(from_py) == cells(stored), (
        f"{ipynb.name} drifted from {source.name}: edit the .py, then `jupytext --sync notebooks/{source.name}`")


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode_and_shows_figures(source):
    nb, seconds = execute(source.with_suffix(".ipynb"))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.output_type in ("display_data", "execute_result") and PLOTLY in o.get("data", {})]
    assert figures, f"{source.name} produced no plotly figure"
    assert all(f["data"][PLOTLY]["data"] for f in figures), f"{source.name} has an empty figure"
    print(f"{source.stem}: {seconds:.1f} s, {len(figures)} figures")
