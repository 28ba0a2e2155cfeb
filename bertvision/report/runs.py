"""Finding and reading run folders (``results.json``) for reports.

Any mix of fit, finetune, ensemble and search runs; a path may be a run
folder, a ``results.json`` file, or any parent folder (searched recursively).

>>> runs = load_runs(["runs/"])                       # doctest: +SKIP
>>> [(r.method, r.main_value) for r in runs]          # doctest: +SKIP
[('linear_probe', 0.79), ('scalar_mix', 0.81)]

Everything that cannot be read is a `ReportError` naming the bad file.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

RESULTS = "results.json"
TRIALS = "trials.csv"
RUN_TYPES = ("fit", "finetune", "ensemble", "search")
REQUIRED = ("task", "method", "run_type", "main_metric", "dev_metrics")


class ReportError(ValueError):
    """A run folder or ``results.json`` that cannot be reported on."""


@dataclass(frozen=True)
class HistoryPoint:
    """One evaluation during training: `epoch` (fractional for finetune),
    training `loss`, `dev` metrics and the elapsed `wall_time_s`."""

    epoch: float
    loss: float | None
    dev: dict[str, float]
    wall_time_s: float | None


@dataclass
class Run:
    """One run's ``results.json``, checked and typed.

    Example:

    >>> run = Run.from_dict({"task": "sst2", "method": "linear_probe",
    ...     "run_type": "fit", "main_metric": "accuracy",
    ...     "dev_metrics": {"accuracy": 0.8}}, "runs/lp/results.json")
    >>> run.main_value, run.run_dir
    (0.8, 'runs/lp')
    """

    results_path: str
    task: str
    method: str
    run_type: str
    main_metric: str
    dev_metrics: dict[str, float]
    trainable_params: int | None = None
    backbone_params: int | None = None
    param_share: float | None = None
    train_fraction: float | None = None
    train_wall_time_s: float | None = None
    train_examples_per_s: float | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    layer_weights: list[float] | None = None
    search_dir: str | None = None  # the search folder (trials.csv) this run is the best of
    label: str = ""  # short, unique name within a report (set by `load_runs`)

    @property
    def run_dir(self) -> str:
        return str(Path(self.results_path).parent)

    @property
    def main_value(self) -> float:
        return self.dev_metrics[self.main_metric]

    @property
    def param_share_pct(self) -> float | None:
        if self.param_share is not None:
            return 100.0 * self.param_share
        if self.trainable_params is not None and self.backbone_params:
            return 100.0 * self.trainable_params / self.backbone_params
        return None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Run":
        """Check a parsed ``results.json``; `where` names it in errors."""
        if not isinstance(data, dict):
            raise ReportError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ReportError(f"{where}: missing key(s) {', '.join(missing)} (see docs/architecture.md, Run folders)")
        for key in ("task", "method", "run_type", "main_metric"):
            if not isinstance(data[key], str) or not data[key]:
                raise ReportError(f"{where}: {key!r} must be a non-empty string, got {data[key]!r}")
        if data["run_type"] not in RUN_TYPES:
            raise ReportError(f"{where}: run_type {data['run_type']!r} is not one of {', '.join(RUN_TYPES)}")
        dev = _metrics(data["dev_metrics"], f"{where}: dev_metrics")
        if data["main_metric"] not in dev:
            raise ReportError(f"{where}: main_metric {data['main_metric']!r} is not in dev_metrics "
                              f"({', '.join(dev) or 'empty'})")
        history = data.get("history") or []
        if not isinstance(history, list):
            raise ReportError(f"{where}: history must be a list, got {type(history).__name__}")
        points = []
        for i, item in enumerate(history):
            at = f"{where}: history[{i}]"
            if not isinstance(item, dict) or "epoch" not in item:
                raise ReportError(f"{at}: expected an object with 'epoch'")
            points.append(HistoryPoint(
                epoch=_number(item["epoch"], f"{at}.epoch"),
                loss=_optional_number(item.get("loss"), f"{at}.loss"),
                dev=_metrics(item.get("dev") or {}, f"{at}.dev"),
                wall_time_s=_optional_number(item.get("wall_time_s"), f"{at}.wall_time_s"),
            ))
        weights = data.get("layer_weights")
        if weights is not None:
            if not isinstance(weights, list) or not weights:
                raise ReportError(f"{where}: layer_weights must be a non-empty list of numbers")
            weights = [_number(w, f"{where}: layer_weights[{i}]") for i, w in enumerate(weights)]
        params = _optional_number(data.get("trainable_params"), f"{where}: trainable_params")
        backbone = _optional_number(data.get("backbone_params"), f"{where}: backbone_params")
        return cls(
            results_path=where, task=data["task"], method=data["method"], run_type=data["run_type"],
            main_metric=data["main_metric"], dev_metrics=dev,
            trainable_params=None if params is None else int(params),
            backbone_params=None if backbone is None else int(backbone),
            param_share=_optional_number(data.get("param_share"), f"{where}: param_share"),
            train_fraction=_optional_number(data.get("train_fraction"), f"{where}: train_fraction"),
            train_wall_time_s=_optional_number(data.get("train_wall_time_s"), f"{where}: train_wall_time_s"),
            train_examples_per_s=_optional_number(data.get("train_examples_per_s"), f"{where}: train_examples_per_s"),
            history=points, layer_weights=weights,
        )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _metrics(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ReportError(f"{where}: expected an object of metric name -> number, got {type(value).__name__}")
    out = {}
    for name, v in value.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue  # a metric that could not be computed (e.g. constant predictions)
        out[str(name)] = _number(v, f"{where}.{name}")
    return out


def read_run(path: str | os.PathLike) -> Run:
    """Read one run: a run folder or its ``results.json``.

    >>> read_run("runs/sst2-linear")          # doctest: +SKIP
    Run(results_path='runs/sst2-linear/results.json', task='sst2', ...)
    """
    p = Path(path)
    results = p / RESULTS if p.is_dir() else p
    if not results.is_file():
        raise ReportError(f"{results}: no such file (a run folder holds results.json)")
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{results}: not valid JSON ({err})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{results}: cannot be read ({err})") from err
    run = Run.from_dict(data, str(results))
    if (results.parent.parent / TRIALS).is_file():
        run.search_dir = str(results.parent.parent)
    return run


def find_results(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every ``results.json`` under `paths` (files or folders, recursive;
    hidden folders skipped), in a stable order without duplicates."""
    found: dict[Path, None] = {}
    for path in paths:
        p = Path(path)
        if p.is_file():
            if p.name != RESULTS:
                raise ReportError(f"{p}: not a results.json file or a folder of runs")
            found.setdefault(p.resolve(), None)
            continue
        if not p.is_dir():
            raise ReportError(f"{p}: no such file or folder")
        hits = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if RESULTS in files:
                hits.append(Path(root) / RESULTS)
        if not hits:
            raise ReportError(f"{p}: no results.json in this folder or below it")
        for hit in hits:
            found.setdefault(hit.resolve(), None)
    return list(found)


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Read every run under `paths` and give each a short unique `label`
    (its folder relative to the folders' common parent)."""
    runs = [read_run(p) for p in find_results(paths)]
    dirs = [Path(r.run_dir) for r in runs]
    if len(dirs) == 1:
        runs[0].label = dirs[0].name
    elif dirs:
        root = Path(os.path.commonpath([str(d) for d in dirs]))
        for run, d in zip(runs, dirs):
            run.label = str(d.relative_to(root)) if d != root else d.name
    return runs


@dataclass
class SearchTrials:
    """A KerasTuner search folder's ``trials.csv`` (one row per trial)."""

    search_dir: str
    rows: list[dict[str, str]]

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []


def read_trials(search_dir: str | os.PathLike) -> SearchTrials:
    """Read ``SEARCH_DIR/trials.csv``.

    >>> read_trials("searches/sst2").rows[0]["trainable_params"]   # doctest: +SKIP
    '26000'
    """
    path = Path(search_dir) / TRIALS
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise ReportError(f"{path}: cannot be read ({err})") from err
    except csv.Error as err:
        raise ReportError(f"{path}: not a valid CSV file ({err})") from err
    return SearchTrials(str(search_dir), rows)
