"""Figures from tensors and results (plotly)."""
