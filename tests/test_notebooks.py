"""Every notebook runs headless in fast mode (RODIMUS_FAST=1) without an error, shows plotly
figures, and its .ipynb is in sync with the jupytext .py it is generated from. And the check cells
can fail: with a bug planted in a library function a notebook teaches, that notebook stops at a check."""

import os
import textwrap
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
PLOTLY = "application/vnd.plotly.v1+json"


def execute(path: Path | nbformat.NotebookNode, timeout: int = 300) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook (a path or a notebook node) in a fresh kernel in fast mode; returns (executed
    notebook, seconds). A failing cell raises CellExecutionError; the notebook keeps its outputs so far."""
    nb = nbformat.read(path, as_version=4) if isinstance(path, Path) else path
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


# ----------------------------------------------------------------------------- planted bugs
# Each entry: a bug planted in a library function (code run in the kernel before the notebook's first cell,
# so the notebook's own imports pick up the planted version), the notebook that teaches that function, and
# the first line of the check cell that must stop it. The notebook runs only up to that cell.
PLANTED = {
    "ddts_gates without τ in the decay": ("01_from_attention_to_ddts", "# check: the forms equal the loop; the gates", """
        import torch, torch.nn.functional as F, rodimus_lab.ddts as D
        def ddts_gates(g_logits, tau_logits):
            g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
            return -g, g.pow(tau)            # planted: log α = −g, the temperature left out
        D.ddts_gates = ddts_gates
    """),
    "DDTS causal mask without its diagonal": ("01_from_attention_to_ddts", "# check: recurrent = parallel = chunkwise", """
        import torch, rodimus_lab.ddts as D
        assert hasattr(D, "_decay_matrix"), "the plant targets rodimus_lab.ddts._decay_matrix: update PLANTED"
        def _decay_matrix(cum):
            T = cum.shape[-2]
            diff = cum.unsqueeze(-2) - cum.unsqueeze(-3)
            causal = torch.ones(T, T, dtype=torch.bool).tril(-1)   # planted: a token cannot read its own write
            return diff.masked_fill(~causal[..., None], float("-inf")).exp()
        D._decay_matrix = _decay_matrix
    """),
    "sliding window one key too wide": ("04_shared_key_attention", "# check: each row is a distribution", """
        import rodimus_lab.attention as A
        _mask = A.attention_mask
        def attention_mask(q_len, k_len, *, window=None, causal=True, device=None):
            wide = None if window is None else window + 1             # planted: off by one
            return _mask(q_len, k_len, window=wide, causal=causal, device=device)
        A.attention_mask = attention_mask
    """),
    "RoPE halves swapped": ("04_shared_key_attention", "# check: the library's rope is the rotation", """
        import torch, rodimus_lab.attention as A
        def rope(x, *, offset=0, base=10000.0):
            cos, sin = A.rope_cos_sin(torch.arange(offset, offset + x.shape[1]), x.shape[-1], base=base, dtype=x.dtype)
            x1, x2 = x.chunk(2, dim=-1)
            return x * cos[:, None] + torch.cat([x2, -x1], dim=-1) * sin[:, None]   # planted: sign on the wrong half
        A.rope = rope
    """),
    "cache formula ignores the window": ("04_shared_key_attention", "# check: the Rodimus+ cache, counted by hand", """
        import dataclasses, rodimus_lab.memory as M
        _count = M.cache_elements
        def cache_elements(config, context_len, *, include_conv=True):
            unwindowed = dataclasses.replace(config, window=None)       # planted: the window is ignored
            return _count(unwindowed, context_len, include_conv=include_conv)
        M.cache_elements = cache_elements
    """),
    "mixer without the skip d ⊙ x̃": ("05_rodimus_plus", "# check: the module computes exactly these six lines", """
        from rodimus_lab.model import RodimusMixer
        _forward = RodimusMixer.forward
        def forward(self, x, *args, **kwargs):
            saved = self.residual_weight.data.clone()
            self.residual_weight.data.zero_()                            # planted: the skip is left out
            try:
                return _forward(self, x, *args, **kwargs)
            finally:
                self.residual_weight.data.copy_(saved)
        RodimusMixer.forward = forward
    """),
    "HGRN2-style gate writes α": ("06_mqar_recall", "# check: the hand formulas are the library's gates", """
        import rodimus_lab.ddts as D
        _gates = D.gates
        def gates(kind, logits, mem_size):
            out = _gates(kind, logits, mem_size)
            if kind == "hgrn2":
                out = out._replace(alpha_hat=out.log_alpha.exp())       # planted: writes α, not 1 − α
            return out
        D.gates = gates
    """),
    "Rodimus+ layer wired one-hop": ("05_rodimus_plus", "# check: the layer computes the two-hop form", """
        from rodimus_lab.model import Layer
        _forward = Layer.forward
        def forward(self, x, *args, **kwargs):
            two_hop, self.config.two_hop = self.config.two_hop, False    # planted: attention added to the stream
            try:
                return _forward(self, x, *args, **kwargs)
            finally:
                self.config.two_hop = two_hop
        Layer.forward = forward
    """),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("bug", PLANTED, ids=lambda name: name.replace(" ", "_"))
def test_a_planted_bug_stops_its_notebook_at_a_check_cell(bug):
    name, check_line, plant = PLANTED[bug]
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    ends = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(check_line)]
    assert len(ends) == 1, f"{name} has {len(ends)} cells starting with {check_line!r}: update PLANTED"
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(plant))] + nb.cells[:ends[0] + 1]
    with pytest.raises(CellExecutionError) as failure:
        execute(nb)
    failed = [c for c in nb.cells if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.get("outputs", []))]
    assert failed and failed[0].source.startswith("# check"), (
        f"with '{bug}' planted, {name} failed outside a check cell:\n{failed[0].source if failed else ''}\n{failure.value}")
    assert failure.value.ename == "AssertionError", failure.value
    assert failed[0] is nb.cells[-1], f"{name} stopped at an earlier check than expected:\n{failed[0].source}"
