"""The summary table: one row per run.

>>> frame = summary_frame(runs)                       # doctest: +SKIP
>>> list(frame.columns[:6])                           # doctest: +SKIP
['task', 'method', 'run_type', 'trainable_params', 'param_share_pct', 'main_metric']
>>> print(markdown_table(frame))                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
from typing import Collection, Iterable, Sequence

import pandas as pd

from bertvision.report.loading import ReportedRun

LEADING = ["task", "method", "run_type", "trainable_params", "param_share_pct", "main_metric", "dev_main"]
TRAILING = ["train_fraction", "train_wall_time_s", "run_dir"]
METRIC_PREFIX = "dev_"


def metric_names(runs: Sequence[ReportedRun]) -> list[str]:
    """Every dev metric name, main metrics first, in first-seen order."""
    names: dict[str, None] = {}
    for run in runs:
        names.setdefault(run.main_metric, None)
    for run in runs:
        for name in run.dev_metrics:
            names.setdefault(name, None)
    return list(names)


def summary_frame(runs: Sequence[ReportedRun]) -> pd.DataFrame:
    """One row per run: task, method, run_type, trainable parameters and
    their share of the backbone (%), the main metric's name and value, one
    ``dev_<metric>`` column per metric name (empty where a task does not
    have it), train fraction, training wall time and the run folder; where
    a run was trained on long documents (windows), a ``window_pooling``
    column after ``run_type``. Sorted by task, then best main metric first."""
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
    if any(run.window_pooling for run in runs):
        frame.insert(LEADING.index("run_type") + 1, "window_pooling", [run.window_pooling for run in runs])
    if len(frame):
        frame = frame.sort_values(["task", "dev_main"], ascending=[True, False], kind="stable")
    return frame.reset_index(drop=True)


def layer_mix_frame(runs: Sequence[ReportedRun]) -> pd.DataFrame:
    """Learned layer weights over seeds: one row per task, backbone label
    and mix (`ReportedRun.mix_label`) of the runs that record `layer_weights` on the
    same layers. Columns: ``seeds`` (runs), ``layers`` (the store's ids),
    ``weight_mean`` and ``weight_std`` (per layer; std over runs, ddof 1,
    None for one run), ``centre`` and ``centre_std`` (the centre of gravity,
    `ReportedRun.layer_centre`; std NaN for one run), ``max_from_uniform`` (the largest ``|mean - 1/L|``)
    and ``beyond_spread``: the layers whose mean differs from uniform by
    more than its seed std (None for one run: no spread to compare with).

    >>> layer_mix_frame(runs)[["task", "mix", "seeds", "centre", "centre_std"]]   # doctest: +SKIP
    """
    groups: dict[tuple, list[ReportedRun]] = {}
    for run in runs:
        if run.layer_weights:
            key = (run.task, run.mix_label, run.backbone_label, tuple(run.layer_ids))
            groups.setdefault(key, []).append(run)
    rows = []
    for (task, mix, backbone, layers), members in sorted(groups.items()):
        weights = pd.DataFrame([r.layer_weights for r in members])
        centres = pd.Series([r.layer_centre for r in members])
        mean = weights.mean().tolist()
        std = weights.std(ddof=1).tolist() if len(members) > 1 else None
        uniform = 1 / len(layers)
        rows.append({"task": task, "mix": mix, "backbone": backbone, "seeds": len(members), "layers": list(layers),
                     "weight_mean": mean, "weight_std": std, "centre": float(centres.mean()),
                     "centre_std": float(centres.std(ddof=1)) if len(members) > 1 else None,
                     "max_from_uniform": max(abs(m - uniform) for m in mean),
                     "beyond_spread": None if std is None else
                     [i for i, m, s in zip(layers, mean, std) if abs(m - uniform) > s]})
    return pd.DataFrame(rows, columns=["task", "mix", "backbone", "seeds", "layers", "weight_mean", "weight_std",
                                       "centre", "centre_std", "max_from_uniform", "beyond_spread"])


def layer_mix_markdown(frame: pd.DataFrame) -> str:
    """`layer_mix_frame` as a markdown table: centre of gravity +- std,
    weights as mean +- std per layer, layers beyond their seed spread."""
    rows = []
    for _, row in frame.iterrows():
        std = row["weight_std"]
        weights = ", ".join(f"{i}: " + mean_std(m, s, 3, sign="+-")
                            for i, m, s in zip(row["layers"], row["weight_mean"], std or [None] * len(row["layers"])))
        centre = mean_std(row["centre"], None if pd.isna(row["centre_std"]) else row["centre_std"], 2, sign="+-")
        beyond = "n/a (one seed)" if row["beyond_spread"] is None else (
            ", ".join(map(str, row["beyond_spread"])) or "none")
        rows.append([md_text(row["task"]), md_text(row["mix"]), md_text(row["backbone"]), row["seeds"], centre,
                     f"{row['max_from_uniform']:.3f}", weights, beyond])
    return grid(["task", "mix", "activations of", "seeds", "centre of gravity", "max abs(w - 1/L)",
                 "layer weights, mean +- std (layer: w)", "differ from uniform by more than their seed std"],
                rows, right={3, 4, 5})


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
    metrics to 4 decimals, seconds to 0.1 s), numeric columns aligned right."""
    keep = [c for c in frame.columns if frame[c].notna().any()]
    return grid([md_text(c) for c in keep], [[_cell(row[c], c) for c in keep] for _, row in frame.iterrows()],
                right={i for i, c in enumerate(keep) if pd.api.types.is_numeric_dtype(frame[c])})


def grid_head(header: Sequence[str], right: Collection[int] = ()) -> str:
    """The header and rule lines of a `grid` table (columns whose index is in
    `right` aligned right), for a table printed row by row (`grid_row`) as
    its rows are measured.

    >>> print(grid_head(["method", "seeds"], right={1}))
    | method | seeds |
    |---|---:|
    """
    rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(header)))
    return grid_row(header) + "\n" + rule


def grid_row(cells: Sequence) -> str:
    """One line of a `grid` table: `cells` already formatted."""
    return "| " + " | ".join(map(str, cells)) + " |"


def grid(header: Sequence[str], rows: Iterable[Sequence], right: Collection[int] = ()) -> str:
    """A GitHub markdown table of cells already formatted (`header`, then
    one line per row; columns whose index is in `right` aligned right):
    every table of the experiments app (`experiments.reproduce`, the
    benchmarks) is drawn here, as are `markdown_table` and
    `layer_mix_markdown`.

    >>> print(grid(["method", "accuracy"], [["cnn", "0.8450"]]))
    | method | accuracy |
    |---|---|
    | cnn | 0.8450 |
    """
    return "\n".join([grid_head(header, right), *map(grid_row, rows)])


def mean_std(mean: float, std: float | None, digits: int = 4, sign: str = "±") -> str:
    """A mean and its standard deviation as one cell, ``mean ± std``; the
    mean alone where there is no std (one seed).

    >>> mean_std(0.84567, 0.0123), mean_std(37.61, None, 1)
    ('0.8457 ± 0.0123', '37.6')
    """
    return f"{mean:.{digits}f}" + ("" if std is None else f" {sign} {std:.{digits}f}")


def seed_spread(values: Iterable[float | None], digits: int = 4, scale: float = 1.0, missing: str = "-") -> str:
    """The cell of a metric measured once per seed: mean ± sample standard
    deviation (ddof 1) of `values` times `scale` (`mean_std`), the value
    alone for one seed, `missing` where there is none (None values skipped).

    >>> seed_spread([0.81, 0.83]), seed_spread([0.8123], 1, scale=100), seed_spread([None])
    ('0.8200 ± 0.0141', '81.2', '-')
    """
    values = [scale * v for v in values if v is not None]
    if not values:
        return missing
    return mean_std(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, digits)
