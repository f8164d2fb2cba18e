"""The paper's published points, to draw beside ours (read off its Fig. 1, ±2%; docs/equations.md §6).

Each series is a list of (x, y) pairs. These are reference data for plots, not results of this
repository: every figure that shows them labels them "paper". Plain data, importing nothing, so a sweep
spec that names a series (``figure.paper``) loads where plotly is not installed; ``viz`` draws them.
"""

from __future__ import annotations

__all__ = ["FIG1A_PPL_VS_STATE_MB", "FIG1B_MQAR_VS_STATE_SIZE"]

# WikiText-103, sequence length 512: best validation perplexity vs recurrent-state memory
# (MB, 2 bytes per element, n × m × L), sweeping n ∈ {8, 16, 32, 64, 128}.
FIG1A_PPL_VS_STATE_MB = {
    "Rodimus": [(0.20, 20.87), (0.39, 20.65), (0.79, 20.54), (1.57, 20.4), (3.15, 20.18)],
    "Mamba2": [(0.20, 22.12), (0.39, 21.87), (1.57, 21.46), (3.15, 21.53)],
    "HGRN2": [(0.05, 22.01), (0.10, 21.73), (0.20, 21.40), (0.39, 21.31)],
    "GLA": [(0.05, 23.19), (0.10, 22.74)],
    "Rodimus+": [(1.08, 20.82), (2.56, 20.15)],
}

# MQAR, sequence length 1024, 256 key-value pairs: accuracy vs state size n.
FIG1B_MQAR_VS_STATE_SIZE = {
    "Rodimus+": [(16, 0.37), (32, 0.72), (64, 0.91), (128, 0.97), (256, 0.97)],
    "Rodimus": [(16, 0.25), (32, 0.37), (64, 0.65), (128, 0.74), (256, 0.82)],
    "Mamba2": [(16, 0.11), (32, 0.26), (64, 0.31), (128, 0.41), (256, 0.61)],
    "Mamba": [(16, 0.16), (32, 0.17), (64, 0.25), (128, 0.23)],
}
