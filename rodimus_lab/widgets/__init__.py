"""Interactive widgets (ipywidgets + plotly FigureWidget)."""
