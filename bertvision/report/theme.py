"""The ``bertvision`` Altair theme: readable fonts and fixed default sizes.

>>> from bertvision.report.theme import use_theme
>>> use_theme()          # registers and enables "bertvision"
'bertvision'
"""

from __future__ import annotations

import altair as alt

THEME = "bertvision"
WIDTH = 480
HEIGHT = 300
FONT = "Helvetica, Arial, sans-serif"


def theme_config() -> dict:
    """The theme as a Vega-Lite ``config`` (plain dict)."""
    return {
        "config": {
            "font": FONT,
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": "transparent"},
            "title": {"fontSize": 16, "fontWeight": "bold", "anchor": "start", "offset": 10},
            "axis": {"labelFontSize": 12, "titleFontSize": 13, "titlePadding": 8,
                     "gridColor": "#e6e6e6", "domainColor": "#888", "tickColor": "#888"},
            "header": {"labelFontSize": 13, "titleFontSize": 13},
            "legend": {"labelFontSize": 12, "titleFontSize": 13, "labelLimit": 260, "symbolSize": 90},
            "point": {"size": 60, "filled": True},
            "line": {"strokeWidth": 2},
            "bar": {"cornerRadiusEnd": 2},
            "range": {"category": {"scheme": "tableau10"}},
            "background": "white",
            "padding": 12,
        }
    }


def use_theme() -> str:
    """Register the ``bertvision`` theme (once) and enable it; returns its name."""
    if THEME not in alt.theme.names():
        alt.theme.register(THEME, enable=False)(lambda: alt.theme.ThemeConfig(theme_config()))
    alt.theme.enable(THEME)
    return THEME
