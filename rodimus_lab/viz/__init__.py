"""Figures from tensors and results (plotly ``go.Figure``, one style, no CDN).

Every function takes tensors (or plain results) and returns a figure; nothing here trains or
changes a model. :func:`probe` collects what a model computed on one sequence.
"""

from .architecture import block_diagram
from .benchmarks import benchmark_figure, markdown_tables, timing_columns
from .attention_maps import attention_matrix, head_maps, layout_maps
from .cache import memory_vs_context
from .decode import decode_cost
from .gates import gate_family, gate_heatmaps, selection_curves, write_keep_profile
from ..ddts import ddts_states
from .probe import ProbeResult, probe
from .state import effective_rank, singular_values, state_norms, state_spectrum
from .style import use_notebook_renderer
from .training import compare_with_paper, grouped_bars, read_metrics, training_curves

__all__ = [
    "block_diagram", "attention_matrix", "head_maps", "layout_maps", "memory_vs_context",
    "gate_family", "gate_heatmaps", "selection_curves", "write_keep_profile", "probe", "ProbeResult", "ddts_states",
    "effective_rank", "singular_values", "state_norms", "state_spectrum", "use_notebook_renderer",
    "compare_with_paper", "grouped_bars", "read_metrics", "training_curves", "benchmark_figure", "markdown_tables", "timing_columns",
    "decode_cost",
]
