"""Write a report folder: charts (HTML, PNG, SVG), summary.md/.csv, report.json.

>>> from bertvision.report import build_report
>>> report = build_report(["runs/", "searches/sst2"], "reports/sst2")   # doctest: +SKIP
>>> report.charts["metric_vs_params"]["png"]                            # doctest: +SKIP
'metric_vs_params.png'
>>> report.skipped                                                      # doctest: +SKIP
{'finetune_curve': 'no finetune run ...'}

Every file is written under a temporary name beside its target and renamed
when complete, so a report folder never holds half-written files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import altair as alt

from bertvision.report.charts import ChartResult, build_charts
from bertvision.report.loading import ReportedRun, ReportError, load_runs, read_trials
from bertvision.report.table import layer_mix_frame, layer_mix_markdown, markdown_table, md_text, summary_frame
from bertvision.report.theme import use_theme
from bertvision.config import check_positive
from bertvision.io import atomic_path, atomic_write_text

FORMATS = ("html", "png", "svg")


@dataclass
class Report:
    """What `build_report` wrote; paths are relative to `out`."""

    out: str
    inputs: list[str]
    runs: int
    tasks: list[str]
    charts: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _ScriptSafeJSON(json.JSONEncoder):
    """JSON that can sit inside an HTML ``<script>``: ``<``, ``>`` and ``&``
    written as ``\\u`` escapes (the same JSON values, no markup)."""

    def encode(self, o) -> str:
        return super().encode(o).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def save_chart(chart: alt.TopLevelMixin, path: Path, fmt: str, scale: float = 2.0) -> None:
    """Save `chart` as `fmt` (html: interactive, offline -- vega inlined;
    png at `scale` x; svg) atomically."""
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r}; choose from {', '.join(FORMATS)}")
    with atomic_path(path) as tmp:
        if fmt == "html":  # the spec goes inside a <script>: no "</script>" may come from a run's name
            chart.save(tmp, format="html", inline=True, json_kwds={"cls": _ScriptSafeJSON})
        elif fmt == "png":
            chart.save(tmp, format="png", scale_factor=scale)
        else:
            chart.save(tmp, format="svg")


def _summary_md(report: Report, runs: Sequence[ReportedRun], frame, generated: str) -> str:
    lines = ["# BERTVision report", "",
             f"{report.runs} run(s), {len(report.tasks)} task(s), generated {generated} from:", ""]
    lines += [f"- {md_text(p)}" for p in report.inputs]
    for task in report.tasks:
        part = frame[frame["task"] == task]
        metric = part["main_metric"].iloc[0]
        lines += ["", f"## {task} (main metric: {metric})", "",
                  "Best first. `dev_main` is the main metric; `param_share_pct` is trainable "
                  "parameters as a share of the backbone's.", "",
                  markdown_table(part.drop(columns=["task"]))]
    mixes = layer_mix_frame(runs)
    if len(mixes):
        lines += ["", "## Learned layer weights over seeds", "",
                  "Runs of one task, mix and backbone together; the centre of gravity is the weighted mean "
                  "layer (Tenney et al.). Chart: layer_spread.", "", layer_mix_markdown(mixes)]
    searches = sorted({r.search_dir for r in runs if r.search_dir})
    if searches:
        lines += ["", "## Searches", ""]
        for folder in searches:
            trials = read_trials(folder)
            best = [r.label for r in runs if r.search_dir == folder]
            lines.append(f"- {md_text(folder)}: {len(trials.rows)} trial(s) in trials.csv; run(s) reported: "
                         f"{md_text(', '.join(best))}")
    lines += ["", "## Charts", ""]
    for name, files in report.charts.items():
        links = " · ".join(f"[{fmt}]({rel})" for fmt, rel in files.items())
        lines.append(f"- **{name}**: {links}")
        lines += [f"  - not shown: {md_text(note)}" for note in report.notes.get(name, [])]
    if report.skipped:
        lines += ["", "## Charts not drawn (no data)", ""]
        lines += [f"- **{name}**: {md_text(reason)}" for name, reason in report.skipped.items()]
    lines += ["", f"Table as CSV: [{report.summary['csv']}]({report.summary['csv']})", ""]
    return "\n".join(lines)


def build_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                 formats: Sequence[str] = FORMATS, scale: float = 2.0) -> Report:
    """Read every run under `paths`, write the charts in `formats`,
    ``summary.md``, ``summary.csv`` and ``report.json`` into `out`.

    Charts without data are not drawn; `Report.skipped` (and summary.md)
    says why. Raises `ReportError` for unreadable or invalid results.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ReportError(f"--formats {','.join(formats)}: choose one or more of {', '.join(FORMATS)}")
    check_positive("scale", scale, ReportError)
    runs = load_runs(paths)
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"{out_dir}: cannot create the report folder ({err})") from err
    frame = summary_frame(runs)
    report = Report(out=str(out_dir), inputs=[str(p) for p in paths], runs=len(runs),
                    tasks=sorted({r.task for r in runs}))
    use_theme()
    results: list[ChartResult] = build_charts(runs)
    for result in results:
        if result.chart is None:
            report.skipped[result.name] = result.reason or "no data"
            continue
        files = {}
        for fmt in formats:
            rel = f"{result.name}.{fmt}"
            save_chart(result.chart, out_dir / rel, fmt, scale)
            files[fmt] = rel
        report.charts[result.name] = files
        if result.notes:
            report.notes[result.name] = result.notes
    report.summary = {"csv": "summary.csv", "md": "summary.md"}
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    atomic_write_text(out_dir / "summary.csv", frame.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", _summary_md(report, runs, frame, generated))
    atomic_write_text(out_dir / "report.json", json.dumps({**report.to_dict(), "generated": generated,
                                                           "report_json": "report.json"}, indent=2) + "\n")
    return report
