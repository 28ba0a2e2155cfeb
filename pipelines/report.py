"""python -m pipelines.report: charts and a summary table over run folders.

Any mix of fit, finetune, ensemble and search runs; a folder may also be a
parent of many run folders (results.json files are found recursively).

Examples::

    python -m pipelines.report runs/ --out reports/all
    python -m pipelines.report runs/sst2-linear runs/sst2-bert searches/sst2 \\
        --out reports/sst2 --formats html,png

Writes REPORT_DIR/{finetune_curve,metric_vs_params,metric_vs_fraction,
layer_weights,layers_by_task,layer_spread,wall_time,confusion_matrix,
per_class_f1}.{html,png,svg}
(charts without data are skipped and listed in summary.md), summary.md,
summary.csv and report.json. The confusion matrix and per-class F1 chart show
each task's best classification run on its first eval split. layers_by_task:
every run's learned layer weights on one axis per backbone, a colour per
task: which layers each task reads.
"""

from __future__ import annotations

import argparse
import sys

from pipelines._common import die, setup_env

setup_env()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="RUN_DIR|SEARCH_DIR",
                   help="run folders, search folders, results.json files, or folders holding many runs")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder to write the report into")
    p.add_argument("--formats", default="html,png,svg", help="comma-separated chart formats (default: html,png,svg)")
    p.add_argument("--scale", type=float, default=2.0, help="PNG scale factor (default: 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    with die.on_errors():
        from bertvision.report import build_report  # heavy (TensorFlow): after argparse, so that --help answers at once

        report = build_report(args.paths, args.out, formats=formats, scale=args.scale)
    print(f"{report.runs} run(s), task(s): {', '.join(report.tasks)} -> {report.out}")
    for name, files in report.charts.items():
        print(f"  {name}: {', '.join(files.values())}")
    for name, reason in report.skipped.items():
        print(f"  {name}: not drawn ({reason})")
    print("  summary.md, summary.csv, report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
