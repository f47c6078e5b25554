"""How every labkit figure looks: one palette, the true label's colour, the notebook renderer and template.

Okabe & Ito's eight colour-blind-safe colours throughout. Vermillion marks the true label and nothing else; each
method (`labkit.sla.methods`) and each inference mode (`labkit.sla.modes`) has its own colour from the palette;
probabilities run white to blue over [0, 1]. `setup_notebook()` picks the plotly renderer that keeps figures
visible both in JupyterLab and in the HTML copy of an executed notebook; the notebook runner gives its kernels the
same renderer. Importing this module imports neither plotly nor torch.
"""

from __future__ import annotations

__all__ = ["NOTEBOOK_RENDERER", "PALETTE", "TRUE_COLOR", "PROB_COLORSCALE", "SERIES_COLORS", "FONT",
           "TITLE_BELOW_MODEBAR", "setup_notebook"]

# `plotly_mimetype` lets JupyterLab draw the figure with its plotly extension; `notebook` adds a text/html copy with
# plotly.js embedded once per notebook, which is what nbconvert's HTML keeps, so the HTML needs no network.
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"  # labkit.lab.runner gives its kernels the same as PLOTLY_RENDERER

PALETTE = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
           "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
           "grey": "#7F7F7F"}  # Okabe & Ito's eight, and a neutral grey for the baseline
TRUE_COLOR = PALETTE["vermillion"]  # the true label, everywhere, and nothing else
PROB_COLORSCALE = "Blues"  # white = probability 0, dark blue = 1
# colours for series that are not methods (models · modes): the palette without vermillion, yellow last
SERIES_COLORS = tuple(c for name, c in PALETTE.items() if name not in ("vermillion", "yellow")) + (PALETTE["yellow"],)
FONT = dict(size=12)

# plotly's mode bar (shown while the pointer is over a figure) is about 25 px tall at the top right, where a long
# title runs under it: titles start this far below the figure's top edge instead, whatever the figure's height.
TITLE_BELOW_MODEBAR = dict(yref="container", y=1.0, yanchor="top", pad=dict(t=32))


def setup_notebook(renderer: str = NOTEBOOK_RENDERER) -> str:
    """Make `fig.show()` and a figure as a cell's value render in JupyterLab and in exported HTML, with every
    title below the mode bar (plotly's default template plus TITLE_BELOW_MODEBAR)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    pio.renderers.default = renderer
    pio.templates["labkit"] = go.layout.Template(layout=dict(title=TITLE_BELOW_MODEBAR))
    pio.templates.default = "plotly+labkit"
    return renderer
