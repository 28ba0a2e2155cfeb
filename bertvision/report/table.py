"""The summary table: one row per run.

>>> frame = summary_frame(runs)                       # doctest: +SKIP
>>> list(frame.columns[:6])                           # doctest: +SKIP
['task', 'method', 'run_type', 'trainable_params', 'param_share_pct', 'main_metric']
>>> print(markdown_table(frame))                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from bertvision.report.loading import Run

LEADING = ["task", "method", "run_type", "trainable_params", "param_share_pct", "main_metric", "dev_main"]
TRAILING = ["train_fraction", "train_wall_time_s", "run_dir"]
METRIC_PREFIX = "dev_"


def metric_names(runs: Sequence[Run]) -> list[str]:
    """Every dev metric name, main metrics first, in first-seen order."""
    names: dict[str, None] = {}
    for run in runs:
        names.setdefault(run.main_metric, None)
    for run in runs:
        for name in run.dev_metrics:
            names.setdefault(name, None)
    return list(names)


def summary_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: task, method, run_type, trainable parameters and
    their share of the backbone (%), the main metric's name and value, one
    ``dev_<metric>`` column per metric name (empty where a task does not
    have it), train fraction, training wall time and the run folder.
    Sorted by task, then best main metric first."""
    names = metric_names(runs)
    rows = []
    for run in runs:
        row = {
            "task": run.task, "method": run.method, "run_type": run.run_type,
            "trainable_params": run.trainable_params, "param_share_pct": run.param_share_pct,
            "main_metric": run.main_metric, "dev_main": run.main_value,
        }
        row.update({METRIC_PREFIX + n: run.dev_metrics.get(n) for n in names})
        row.update({"train_fraction": run.train_fraction, "train_wall_time_s": run.train_wall_time_s,
                    "run_dir": run.run_dir})
        rows.append(row)
    columns = LEADING + [METRIC_PREFIX + n for n in names] + TRAILING
    frame = pd.DataFrame(rows, columns=columns)
    frame["trainable_params"] = frame["trainable_params"].astype("Int64")
    if len(frame):
        frame = frame.sort_values(["task", "dev_main"], ascending=[True, False], kind="stable")
    return frame.reset_index(drop=True)


def md_text(value) -> str:
    """Text from run folders made safe for Markdown (and the HTML it may be
    rendered to): ``&``, ``<``, ``>`` as entities, ``|`` and backticks escaped,
    one line.

    >>> print(md_text("</script>|`x`"))
    &lt;/script&gt;\\|\\`x\\`
    """
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("`", "\\`").replace("\r", " ").replace("\n", " ")


def _cell(value, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if column == "trainable_params":
        return f"{int(value):,}"
    if column == "param_share_pct":
        return f"{value:.3g}%"
    if column == "train_wall_time_s":
        return f"{value:.1f} s"
    if column == "train_fraction":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return md_text(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of `frame`, empty columns dropped, numbers
    formatted for reading (parameters with separators, shares in %,
    metrics to 4 decimals, seconds to 0.1 s)."""
    keep = [c for c in frame.columns if frame[c].notna().any()]
    header = "| " + " | ".join(md_text(c) for c in keep) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in keep) + "|"
    body = ["| " + " | ".join(_cell(row[c], c) for c in keep) + " |" for _, row in frame.iterrows()]
    return "\n".join([header, rule, *body])
