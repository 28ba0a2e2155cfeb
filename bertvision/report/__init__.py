"""Reports over run folders: Altair charts, a summary table and report.json.

>>> from bertvision.report import build_report, load_runs, summary_frame
>>> report = build_report(["runs/"], "reports/all")      # doctest: +SKIP
>>> sorted(report.charts)                                 # doctest: +SKIP
['layer_weights', 'metric_vs_params', 'wall_time']
>>> summary_frame(load_runs(["runs/"]))                   # doctest: +SKIP

Modules: `runs` (find and check results.json), `table` (summary rows),
`charts` (every chart, `CHARTS`), `classes` (per-class scores of a
classification run's predictions, scikit-learn), `theme` (the ``bertvision`` Altair theme),
`build` (writing a report folder).
"""

from bertvision.report.build import FORMATS, Report, build_report, save_chart
from bertvision.report.charts import CHARTS, ChartResult, build_charts
from bertvision.report.loading import (HistoryPoint, ReportError, ReportedRun, find_results, load_runs, read_run,
                                       read_trials)
from bertvision.report.table import markdown_table, summary_frame
from bertvision.report.theme import THEME, use_theme

__all__ = [
    "CHARTS", "FORMATS", "THEME", "ChartResult", "HistoryPoint", "Report", "ReportError", "ReportedRun",
    "build_charts", "build_report", "find_results", "load_runs", "markdown_table", "read_run",
    "read_trials", "save_chart", "summary_frame", "use_theme",
]
