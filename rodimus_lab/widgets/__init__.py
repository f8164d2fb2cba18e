"""Interactive widgets (ipywidgets 8 + plotly FigureWidget), built on :mod:`rodimus_lab.viz` and
:mod:`rodimus_lab.train`. Needs the ``lab`` extra: ``pip install -e ".[lab]"``."""

from .ablation import AblationLab
from .attention_explorer import AttentionExplorer
from .dashboard import TrainingDashboard
from .gate_explorer import GateExplorer
from ..runs import ExampleSlice, RunCache, RunResult, run_key, train_run

__all__ = ["AblationLab", "AttentionExplorer", "GateExplorer", "TrainingDashboard", "ExampleSlice", "RunCache", "RunResult", "run_key", "train_run"]
