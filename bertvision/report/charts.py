"""The report's Altair charts, built from `ReportedRun` records.

Each builder returns a `ChartResult`: the chart (one sub-chart per task,
stacked, each titled with the task and its main metric's name) or ``None``
with the reason it was not drawn (no data), plus notes on tasks left out.

>>> from bertvision.report.loading import load_runs
>>> result = metric_vs_params(load_runs(["runs/"]))      # doctest: +SKIP
>>> result.chart.save("metric_vs_params.html")           # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import altair as alt

from bertvision.report.classes import ClassScores, class_scores
from bertvision.report.loading import ReportedRun
from bertvision.report.table import layer_mix_frame

FACET_WIDTH = 200
FACET_HEIGHT = 150


@dataclass
class ChartResult:
    """A built chart, or ``chart=None`` and the `reason` nothing was drawn.
    `notes` say which tasks (or runs) a drawn chart leaves out and why."""

    name: str
    chart: alt.TopLevelMixin | None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def _by_task(runs: Sequence[ReportedRun]) -> dict[str, list[ReportedRun]]:
    groups: dict[str, list[ReportedRun]] = defaultdict(list)
    for run in runs:
        groups[run.task].append(run)
    return dict(sorted(groups.items()))


def _metric_title(metric: str) -> str:
    return f"dev {metric.replace('_', ' ')}"


def _per_task(name: str, runs: Sequence[ReportedRun],
              build: Callable[[str, list[ReportedRun]], "alt.TopLevelMixin | str"], nothing: str) -> ChartResult:
    """Build one sub-chart per task (`build` returns a chart or the reason it
    has none) and stack them; ``nothing`` is the reason when no task has one."""
    charts, notes = [], []
    groups = _by_task(runs)
    for task, task_runs in groups.items():
        out = build(task, task_runs)
        if isinstance(out, str):
            notes.append(f"{task}: {out}")
        else:
            charts.append(out)
    if not charts:
        reason = nothing if len(groups) <= 1 else f"{nothing} ({'; '.join(notes)})"
        return ChartResult(name, None, reason=reason if runs else "no runs")
    chart = charts[0] if len(charts) == 1 else alt.vconcat(*charts, spacing=40)
    return ChartResult(name, chart, notes=notes)


# ------------------------------------------------------------ finetune_curve


def _backbone_dash(labels) -> alt.Scale:
    """A dash pattern per backbone label: solid for the frozen backbone,
    longer dashes the longer it was fine-tuned. Build it once from the labels
    of every task a chart stacks: Vega-Lite shares the dash scale of stacked
    sub-charts, so per-task scales would merge into one legend that gives two
    backbones the same pattern."""
    patterns = [[1, 0], [5, 2], [2, 2], [5, 2, 1, 2], [1, 3], [8, 3]]
    ordered = sorted(labels, key=lambda l: (not l.startswith("frozen"), l))
    return alt.Scale(domain=ordered, range=[patterns[i % len(patterns)] for i in range(len(ordered))])


# the backbone's own runs (`ReportedRun.backbone_label` of a finetune run) on the fine-tuning curve
FINETUNE_COLOURS = {"BERT fine-tuning": "black", "LoRA": "#9e9e9e"}


def _finetune_task(task: str, runs: list[ReportedRun], dash: alt.Scale) -> "alt.TopLevelMixin | str":
    metric = runs[0].main_metric
    curve = [
        {"run": r.label, "method": r.method, "tuning": r.backbone_label, "epoch": h.epoch, "value": h.dev[metric],
         "loss": h.loss, "train_time_s": h.train_time_s}
        for r in runs if r.run_type == "finetune" for h in r.history if metric in h.dev
    ]
    if not curve:
        return "no finetune run with a dev history"
    best: dict[tuple[str, str], list[ReportedRun]] = defaultdict(list)
    for r in runs:
        if r.run_type != "finetune":
            best[(r.method_label, r.backbone_label)].append(r)
    refs = []
    for (method, backbone), group in sorted(best.items()):
        top = max(group, key=lambda r: r.main_value)
        refs.append({"method": method, "backbone": backbone, "runs": len(group), "run": top.label,
                     "value": top.main_value, "trainable_params": top.trainable_params})
    y = alt.Y("value:Q", title=_metric_title(metric), scale=alt.Scale(zero=False))
    # full fine-tuning black, LoRA grey, in a legend of their own: a LoRA checkpoint is not BERT's curve
    tunings = [t for t in FINETUNE_COLOURS if any(c["tuning"] == t for c in curve)]
    lines = alt.Chart(alt.Data(values=curve)).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch (fractional)", scale=alt.Scale(zero=True)),
        y=y,
        color=alt.Color("tuning:N", title="fine-tuning the backbone",
                        scale=alt.Scale(domain=tunings, range=[FINETUNE_COLOURS[t] for t in tunings])),
        detail="run:N",
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("tuning:N", title="fine-tuning"),
                 alt.Tooltip("epoch:Q", format=".2f"),
                 alt.Tooltip("value:Q", title=metric, format=".4f"), alt.Tooltip("loss:Q", format=".4f"),
                 alt.Tooltip("train_time_s:Q", title="training time (s)", format=".1f")],
    )
    layers = [lines]
    if refs:
        # one rule per (method, backbone): colour = method, dash = backbone; a legend instead of
        # text labels, which overlap when values are close
        tips = [alt.Tooltip("method:N"), alt.Tooltip("backbone:N"), alt.Tooltip("run:N", title="best run"),
                alt.Tooltip("runs:Q", title="runs of this kind"), alt.Tooltip("value:Q", title=metric, format=".4f"),
                alt.Tooltip("trainable_params:Q", title="trainable params", format=",")]
        rules = alt.Chart(alt.Data(values=refs)).mark_rule(strokeWidth=2).encode(
            y=y, color=alt.Color("method:N", title="best run of", scale=alt.Scale(scheme="dark2")),
            strokeDash=alt.StrokeDash("backbone:N", title="on activations of", scale=dash),
            tooltip=tips)
        layers.append(rules)
    return alt.layer(*layers).resolve_scale(color="independent").properties(
        title=alt.TitleParams(f"{task}: dev {metric} while fine-tuning BERT (black; LoRA grey) vs adapters",
                              subtitle="rules: the best run of each adapter kind on each backbone"))


def finetune_curve(runs: Sequence[ReportedRun]) -> ChartResult:
    """Dev main metric against fractional epoch for BERT fine-tuning runs
    (black lines with points; LoRA runs grey, both in a legend);
    adapter/ensemble runs of the same task as horizontal reference rules, the best run per (method, backbone): colour
    is the method, the dash pattern the backbone (frozen, fine-tuned k ep)."""
    dash = _backbone_dash({r.backbone_label for r in runs if r.run_type != "finetune"})
    return _per_task("finetune_curve", runs, lambda task, task_runs: _finetune_task(task, task_runs, dash),
                     "no finetune run (python -m pipelines.finetune) with a dev history among the inputs")


# ---------------------------------------------------------- metric_vs_params


def _params_task(task: str, runs: list[ReportedRun]) -> "alt.TopLevelMixin | str":
    metric = runs[0].main_metric
    rows = [{"run": r.label, "method": r.method, "backbone": r.backbone_label, "params": r.trainable_params,
             "share": r.param_share_pct, "value": r.main_value, "fraction": r.train_fraction}
            for r in runs if r.trainable_params]
    if not rows:
        return "no run records trainable_params"
    # hollow marks: runs with the same parameter count on several backbones stay visible
    return alt.Chart(alt.Data(values=rows)).mark_point(filled=False, size=110, strokeWidth=2, opacity=0.9).encode(
        x=alt.X("params:Q", title="trainable parameters (count, log scale)", scale=alt.Scale(type="log"),
                  axis=alt.Axis(format="~s")),
        y=alt.Y("value:Q", title=_metric_title(metric), scale=alt.Scale(zero=False)),
        color=alt.Color("method:N", title="method"),
        shape=alt.Shape("backbone:N", title="on activations of"),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("method:N"), alt.Tooltip("backbone:N"),
                 alt.Tooltip("params:Q", title="trainable params", format=","),
                 alt.Tooltip("share:Q", title="share of backbone (%)", format=".3g"),
                 alt.Tooltip("fraction:Q", title="train fraction"),
                 alt.Tooltip("value:Q", title=metric, format=".4f")],
    ).properties(title=f"{task}: dev {metric} vs trainable parameters")


def metric_vs_params(runs: Sequence[ReportedRun]) -> ChartResult:
    """Dev main metric against trainable parameters (log x), every run that
    records them, coloured by method, shaped by backbone (frozen, fine-tuned
    k ep, BERT itself)."""
    result = _per_task("metric_vs_params", runs, _params_task, "no run records trainable_params")
    left_out = [r.label for r in runs if not r.trainable_params]
    if result.chart is not None and left_out:
        result.notes.append(f"{len(left_out)} run(s) without trainable_params not shown "
                            f"(e.g. ensembles): {', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}")
    return result


# -------------------------------------------------------- metric_vs_fraction


def _fraction_rows(runs: list[ReportedRun]) -> list[dict]:
    """One task's adapter runs with a training fraction, keeping only the
    (method, backbone) series trained on two or more fractions if any are."""
    rows = [{"run": r.label, "method": r.method, "backbone": r.backbone_label, "fraction": r.train_fraction,
             "value": r.main_value}
            for r in runs if r.train_fraction is not None and r.run_type == "fit"]
    series = defaultdict(set)
    for row in rows:
        series[(row["method"], row["backbone"])].add(row["fraction"])
    return [row for row in rows if len(series[(row["method"], row["backbone"])]) > 1] or rows


def _fraction_task(task: str, runs: list[ReportedRun], dash: alt.Scale) -> "alt.TopLevelMixin | str":
    metric = runs[0].main_metric
    rows = _fraction_rows(runs)
    fractions = {row["fraction"] for row in rows}
    if len(fractions) < 2:
        return ("no run records train_fraction" if not rows else
                f"every run uses the same training fraction ({next(iter(fractions)):g})")
    x = alt.X("fraction:Q", title="training data used (fraction of the train split)",
              axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    base = alt.Chart(alt.Data(values=rows))
    values = [row["value"] for row in rows]
    pad = max(max(values) - min(values), abs(max(values)) * 0.02, 1e-3) * 0.1  # a flat line still gets an axis
    y_scale = alt.Scale(domain=[min(values) - pad, max(values) + pad])
    lines = base.mark_line().encode(
        x=x, y=alt.Y("mean(value):Q", title=_metric_title(metric), scale=y_scale),
        color=alt.Color("method:N", title="method"),
        strokeDash=alt.StrokeDash("backbone:N", title="on activations of", scale=dash),
        tooltip=[alt.Tooltip("method:N"), alt.Tooltip("backbone:N"), alt.Tooltip("fraction:Q", format=".0%"),
                 alt.Tooltip("mean(value):Q", title=f"mean {metric}", format=".4f"),
                 alt.Tooltip("count():Q", title="runs")],
    )
    points = base.mark_point(filled=True, size=70).encode(
        x=x, y=alt.Y("value:Q"), color="method:N",
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("method:N"), alt.Tooltip("fraction:Q", format=".0%"),
                 alt.Tooltip("value:Q", title=metric, format=".4f")],
    )
    return alt.layer(lines, points).properties(title=f"{task}: dev {metric} vs training data fraction")


def metric_vs_fraction(runs: Sequence[ReportedRun]) -> ChartResult:
    """Dev main metric against the training-data fraction: one line per
    method and backbone that was trained on two or more fractions (mean over
    runs), a point per run. Needs >= 2 fractions per task."""
    dash = _backbone_dash({row["backbone"] for task_runs in _by_task(runs).values()
                           for row in _fraction_rows(task_runs)})
    return _per_task("metric_vs_fraction", runs, lambda task, task_runs: _fraction_task(task, task_runs, dash),
                     "no task has runs at two or more training fractions (python -m pipelines.fit --train-fraction)")


# ------------------------------------------------------------- layer_weights


def _layers_task(task: str, runs: list[ReportedRun]) -> "alt.TopLevelMixin | str":
    # the store's own layer ids (a ``last4`` store's first weight is layer 3, not the embeddings)
    rows = [{"run": r.label, "method": r.method, "backbone": r.backbone_label, "weight": w, "layer": i}
            for r in runs if r.layer_weights for i, w in zip(r.layer_ids, r.layer_weights)]
    if not rows:
        return "no run has layer_weights"
    n_runs = len({row["run"] for row in rows})
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("weight:Q", title="pooling weight"),
        color=alt.Color("backbone:N", title="on activations of"),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("method:N"), alt.Tooltip("backbone:N"), alt.Tooltip("layer:O"),
                 alt.Tooltip("weight:Q", format=".4f")],
    ).properties(width=FACET_WIDTH, height=FACET_HEIGHT)
    return alt.FacetChart(data=alt.Data(values=rows), spec=bars,
                          facet=alt.Facet("run:N", title=None, header=alt.Header(labelLimit=FACET_WIDTH)),
                          columns=min(n_runs, 3)).properties(
        title=f"{task}: learned layer-pooling weights")


def layer_weights(runs: Sequence[ReportedRun]) -> ChartResult:
    """Learned layer-pooling weights per layer: bars, one panel per run."""
    return _per_task("layer_weights", runs, _layers_task,
                     "no run has layer_weights (only layer-pooling adapters such as scalar_mix record them)")


# -------------------------------------------------------- layers_by_task


def _layer_rows(run: ReportedRun) -> list[dict]:
    """One row per layer weight of `run`, at the store's own layer ids."""
    if not run.layer_weights:
        return []
    return [{"run": run.label, "task": run.task, "method": run.method, "layer": int(i), "weight": float(w),
             "centre": round(run.layer_centre, 2)} for i, w in zip(run.layer_ids, run.layer_weights)]


def layers_by_task(runs: Sequence[ReportedRun]) -> ChartResult:
    """Which layers each task reads: every run's learned layer weights on one
    axis per backbone, a colour per task (Tenney et al.'s scalar-mix
    picture, comparable across tasks); the tooltip gives each run's centre
    of gravity, the weighted mean layer."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        name = (run.backbone or {}).get("name") or "backbone"
        groups[f"{name} ({run.backbone_label})"].extend(_layer_rows(run))
    groups = {k: v for k, v in sorted(groups.items()) if v}
    if not groups:
        return ChartResult("layers_by_task", None, reason="no run has layer_weights (only layer-pooling adapters "
                                                           "such as scalar_mix record them)" if runs else "no runs")
    charts = []
    for backbone, rows in groups.items():
        tasks = sorted({r["task"] for r in rows})
        base = alt.Chart(alt.Data(values=rows)).encode(
            x=alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("weight:Q", title="learned layer weight"),
            color=alt.Color("task:N", title="task", scale=alt.Scale(domain=tasks)),
            detail="run:N",
            tooltip=[alt.Tooltip("task:N"), alt.Tooltip("run:N"), alt.Tooltip("method:N"), alt.Tooltip("layer:O"),
                     alt.Tooltip("weight:Q", format=".4f"), alt.Tooltip("centre:Q", title="weighted mean layer")],
        )
        charts.append(alt.layer(base.mark_line(opacity=0.7), base.mark_point(filled=True, size=30)).properties(
            width=2 * FACET_WIDTH, height=FACET_HEIGHT,
            title=f"{backbone}: which layers each task reads ({len(tasks)} task(s), "
                  f"{len({r['run'] for r in rows})} run(s))"))
    chart = charts[0] if len(charts) == 1 else alt.vconcat(*charts, spacing=40)
    return ChartResult("layers_by_task", chart)


# ------------------------------------------------------------ layer_spread


def layer_spread(runs: Sequence[ReportedRun]) -> ChartResult:
    """Learned layer weights over seeds, tasks side by side: for each task,
    backbone and mix (`layer_mix_frame`'s groups) the mean weight of every
    layer with error bars of one seed standard deviation, and the uniform
    weight as a dashed rule; the column title gives each task's centre of
    gravity (mean +- std over seeds)."""
    frame = layer_mix_frame(runs)
    if not len(frame):
        return ChartResult("layer_spread", None, reason="no run has layer_weights (only layer-pooling adapters "
                                                        "such as scalar_mix record them)" if runs else "no runs")
    rows = []
    for _, g in frame.iterrows():
        std = g["weight_std"] or [0.0] * len(g["weight_mean"])
        rows += [{"task": g["task"], "mix": f"{g['mix']}, {g['backbone']}", "layer": int(i), "mean": m,
                  "low": m - s, "high": m + s, "uniform": 1 / len(g["layers"]), "seeds": int(g["seeds"]),
                  "centre": g["centre"]} for i, m, s in zip(g["layers"], g["weight_mean"], std)]
    x = alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0))
    colour = alt.Color("mix:N", title="mix, activations of")
    points = alt.Chart().mark_point(filled=True, size=40).encode(
        x=x, y=alt.Y("mean:Q", title="learned layer weight (mean over seeds)"), color=colour,
        tooltip=[alt.Tooltip("task:N"), alt.Tooltip("mix:N"), alt.Tooltip("layer:O"),
                 alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("low:Q", format=".4f"),
                 alt.Tooltip("high:Q", format=".4f"), alt.Tooltip("seeds:Q"),
                 alt.Tooltip("centre:Q", title="centre of gravity", format=".2f")])
    bars = alt.Chart().mark_errorbar(ticks=True).encode(x=x, y=alt.Y("low:Q"), y2="high:Q", color=colour)
    uniform = alt.Chart().mark_tick(strokeDash=[4, 3], color="grey", thickness=1, size=28).encode(
        x=x, y="uniform:Q")
    chart = alt.layer(uniform, bars, points, data=alt.Data(values=rows)).properties(
        width=FACET_WIDTH, height=FACET_HEIGHT).facet(
        column=alt.Column("task:N", title=None)).resolve_scale(x="independent").properties(
        title="learned layer weights over seeds (error bars: one std; grey ticks: uniform)")
    return ChartResult("layer_spread", chart)


# ------------------------------------------------------------------ wall_time


def _wall_task(task: str, runs: list[ReportedRun]) -> "alt.TopLevelMixin | str":
    rows = [{"run": r.label, "method": r.method, "backbone": r.backbone_label, "seconds": r.train_wall_time_s,
             "examples_per_s": r.train_examples_per_s}
            for r in runs if r.train_wall_time_s is not None]
    if not rows:
        return "no run records train_wall_time_s"
    base = alt.Chart(alt.Data(values=rows))
    y = alt.Y("method:N", title=None, sort="-x")
    bars = base.mark_bar(opacity=0.85).encode(
        y=y, x=alt.X("mean(seconds):Q", title="training wall time (s; bar = mean over runs)"),
        yOffset=alt.YOffset("backbone:N"),
        color=alt.Color("backbone:N", title="on activations of"),
        tooltip=[alt.Tooltip("method:N"), alt.Tooltip("backbone:N"),
                 alt.Tooltip("mean(seconds):Q", title="mean wall time (s)", format=".1f"),
                 alt.Tooltip("count():Q", title="runs")],
    )
    ticks = base.mark_tick(color="black", thickness=2, size=10).encode(
        y=y, x="seconds:Q", yOffset=alt.YOffset("backbone:N"),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("seconds:Q", title="wall time (s)", format=".1f"),
                 alt.Tooltip("examples_per_s:Q", title="train examples/s", format=",.0f")],
    )
    return alt.layer(bars, ticks).properties(height={"step": 14, "for": "position"},
                                             title=f"{task}: training wall time per method")


def wall_time(runs: Sequence[ReportedRun]) -> ChartResult:
    """Training wall time per method (horizontal bars: the mean; ticks: each run)."""
    return _per_task("wall_time", runs, _wall_task, "no run records train_wall_time_s")


# ------------------------------------------- confusion_matrix, per_class_f1


def _best_classified(runs: list[ReportedRun]) -> "ClassScores | str":
    """Per-class scores of the task's best classification run that saved
    predictions (the highest main metric), or why there are none."""
    reasons = []
    for run in sorted(runs, key=lambda r: -(r.main_value if r.main_value is not None else float("-inf"))):
        scores = class_scores(run)
        if isinstance(scores, ClassScores):
            return scores
        reasons.append(scores)
    return "no classification run with saved predictions" + (f" ({reasons[0]})" if reasons else "")


def _class_step(count: int) -> int:
    """Pixels per class on a class axis: 77 classes fit in about 850 px."""
    return max(11, min(56, 850 // max(count, 1)))


def _class_axis(title: str | None, count: int, **kwargs) -> alt.Axis:
    """A class-name axis: smaller labels past 20 classes, long names kept whole."""
    return alt.Axis(title=title, labelFontSize=12 if count <= 20 else 9, labelLimit=260, **kwargs)


def _confusion_task(task: str, runs: list[ReportedRun]) -> "alt.TopLevelMixin | str":
    scores = _best_classified(runs)
    if isinstance(scores, str):
        return scores
    n = len(scores.names)
    step = _class_step(n)
    rows = scores.confusion.assign(correct=scores.confusion["true"] == scores.confusion["predicted"])
    base = alt.Chart(alt.Data(values=rows.to_dict("records")))
    order = scores.names
    across = max(len(name) for name in order) * (7 if n <= 20 else 5) <= step  # names fit side by side
    x = alt.X("predicted:N", sort=order, scale=alt.Scale(domain=order),
              axis=_class_axis("predicted class", n, labelAngle=0 if across else -60, orient="top"))
    y = alt.Y("true:N", sort=order, scale=alt.Scale(domain=order), axis=_class_axis("true class", n))
    cells = base.mark_rect(stroke="#f0f0f0", strokeWidth=0.5).encode(
        x=x, y=y,
        # square root: the few confusions of a good model stay visible beside the diagonal
        color=alt.Color("share:Q", title="share of the true class", scale=alt.Scale(type="sqrt", domain=[0, 1],
                                                                                     scheme="blues")),
        tooltip=[alt.Tooltip("true:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("count:Q", title="examples"), alt.Tooltip("share:Q", title="share of true", format=".1%")])
    # errors outlined in red: which cells are mistakes stays clear at any size
    errors = base.transform_filter("!datum.correct").mark_rect(fill=None, stroke="#d62728", strokeWidth=1).encode(
        x=x, y=y)
    layers = [cells, errors]
    if n <= 12:
        layers.append(base.mark_text(fontSize=12).encode(
            x=x, y=y, text=alt.Text("count:Q"),
            color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black"))))
    return alt.layer(*layers).properties(
        width=step * n, height=step * n,
        title=alt.TitleParams(f"{task}: confusion matrix of {scores.run} on {scores.split}",
                              subtitle=f"{scores.examples} examples, accuracy {scores.accuracy:.4f}; colour: share "
                                       f"of each true class (rows), red outline: errors"))


def confusion_matrix(runs: Sequence[ReportedRun]) -> ChartResult:
    """Confusion matrix of each task's best classification run (its first
    eval split's saved predictions; scikit-learn): true class rows, predicted
    class columns, cells coloured by share of the row (square-root scale),
    errors outlined; counts printed up to 12 classes."""
    return _per_task("confusion_matrix", runs, _confusion_task,
                     "no classification run with saved predictions among the inputs")


def _per_class_task(task: str, runs: list[ReportedRun]) -> "alt.TopLevelMixin | str":
    scores = _best_classified(runs)
    if isinstance(scores, str):
        return scores
    table = scores.per_class[(scores.per_class["support"] > 0) | (scores.per_class["predicted"] > 0)]
    n = len(table)
    order = table.sort_values(["f1", "class"])["class"].tolist()  # worst first, at the top
    base = alt.Chart(alt.Data(values=table.to_dict("records")))
    y = alt.Y("class:N", sort=order, axis=_class_axis(None, n))
    tips = [alt.Tooltip("class:N"), alt.Tooltip("f1:Q", title="F1", format=".3f"),
            alt.Tooltip("precision:Q", format=".3f"), alt.Tooltip("recall:Q", format=".3f"),
            alt.Tooltip("support:Q", title="support (gold examples)"),
            alt.Tooltip("predicted:Q", title="predicted as this class")]
    bars = base.mark_bar(color="#9ecae1").encode(
        y=y, x=alt.X("f1:Q", title="F1 (bar); precision and recall (marks)", scale=alt.Scale(domain=[0, 1])),
        tooltip=tips)
    marks = base.transform_fold(["precision", "recall"], as_=["measure", "score"]).mark_point(
        filled=True, size=40 if n > 20 else 70).encode(
        y=y, x="score:Q",
        color=alt.Color("measure:N", title=None, scale=alt.Scale(domain=["precision", "recall"],
                                                                  range=["#08519c", "#e6550d"])),
        shape=alt.Shape("measure:N", title=None, scale=alt.Scale(domain=["precision", "recall"],
                                                                  range=["circle", "diamond"])),
        tooltip=tips)
    macro = alt.Chart(alt.Data(values=[{"macro": scores.macro_f1}])).mark_rule(
        strokeDash=[4, 3], color="black").encode(x="macro:Q", tooltip=[alt.Tooltip("macro:Q", title="macro F1",
                                                                                     format=".3f")])
    return alt.layer(bars, marks, macro).properties(
        width=420, height=alt.Step(max(11, min(24, 850 // max(n, 1)))),
        title=alt.TitleParams(f"{task}: per-class F1 of {scores.run} on {scores.split}",
                              subtitle=f"worst class first; dashed line: macro F1 {scores.macro_f1:.3f}, "
                                       f"{scores.examples} examples"))


def per_class_f1(runs: Sequence[ReportedRun]) -> ChartResult:
    """Per-class F1 (bars), precision and recall (marks) of each task's best
    classification run, worst class first, with the macro F1 as a rule
    (scikit-learn's numbers from the run's saved predictions)."""
    return _per_task("per_class_f1", runs, _per_class_task,
                     "no classification run with saved predictions among the inputs")


CHARTS: dict[str, Callable[[Sequence[ReportedRun]], ChartResult]] = {
    "finetune_curve": finetune_curve,
    "metric_vs_params": metric_vs_params,
    "metric_vs_fraction": metric_vs_fraction,
    "layer_weights": layer_weights,
    "layers_by_task": layers_by_task,
    "layer_spread": layer_spread,
    "wall_time": wall_time,
    "confusion_matrix": confusion_matrix,
    "per_class_f1": per_class_f1,
}


def build_charts(runs: Sequence[ReportedRun]) -> list[ChartResult]:
    """Every report chart, in a fixed order (undrawn ones with a reason)."""
    return [build(runs) for build in CHARTS.values()]
