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
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable

from bertvision.errors import BertVisionError, ReportError
from bertvision.runs import RESULTS, TRIALS, HistoryPoint, RunFolder, RunResults

__all__ = ["HistoryPoint", "ReportError", "ReportedRun", "SearchTrials", "find_results", "load_runs", "read_run",
           "read_trials"]


@dataclass
class ReportedRun(RunResults):
    """One run's `RunResults` and where it was found: the results file,
    a short unique ``label`` within a report (set by `load_runs`) and the
    search folder (``trials.csv``) it is the best run of, if any.

    >>> run = ReportedRun.from_results(RunResults(task="sst2", method="linear_probe", run_type="fit",
    ...     main_metric="accuracy", dev_metrics={"accuracy": 0.8}), "runs/lp/results.json")
    >>> run.main_value, run.run_dir
    (0.8, 'runs/lp')
    """

    results_path: str = ""
    label: str = ""
    search_dir: str | None = None

    @property
    def run_dir(self) -> str:
        return str(Path(self.results_path).parent)

    @property
    def method_label(self) -> str:
        """The method, short enough for a legend (an ensemble by how it combines)."""
        if self.run_type == "ensemble":
            combine = (self.hyperparameters or {}).get("combine")
            return f"ensemble ({combine})" if combine else "ensemble"
        return self.method

    @property
    def backbone_label(self) -> str:
        """What the run's activations came from, for charts: ``frozen
        backbone``, ``backbone fine-tuned 1 ep`` (an adapter on a fine-tuning
        checkpoint's store), ``BERT fine-tuning`` / ``LoRA`` (the backbone's own
        runs) or ``ensemble``."""
        if self.run_type == "finetune":
            return "LoRA" if self.method == "bert_lora" else "BERT fine-tuning"
        if self.run_type == "ensemble":
            return "ensemble"
        epoch = (self.backbone or {}).get("finetuned_epoch")
        if epoch is None:  # a checkpoint folder written before the identity recorded its epoch
            match = re.fullmatch(r"epoch-(\d+(?:\.\d+)?)", str((self.backbone or {}).get("name", "")))
            epoch = float(match.group(1)) if match else None
        if epoch is None:
            return "frozen backbone"
        lora = (self.backbone or {}).get("finetuned_method") == "lora"
        return f"backbone {'LoRA-' if lora else ''}fine-tuned {float(epoch):g} ep"

    @property
    def layer_ids(self) -> list[int]:
        """The store's layer ids of `layer_weights` (a ``last4`` store's first
        weight is layer 3, not the embeddings); positions where the run did
        not record matching ids."""
        n = len(self.layer_weights or [])
        return [int(i) for i in self.layers] if self.layers and len(self.layers) == n else list(range(n))

    @property
    def layer_centre(self) -> float | None:
        """The learned mix's centre of gravity (Tenney et al.'s expected
        layer): ``sum_l w_l * layer_l / sum_l w_l``; None without weights."""
        if not self.layer_weights:
            return None
        return sum(i * w for i, w in zip(self.layer_ids, self.layer_weights)) / max(sum(self.layer_weights), 1e-12)

    @property
    def window_pooling(self) -> str | None:
        """How an adapter trained on long documents (a store of windows,
        ``extract --doc-stride``) pooled a document's windows; None otherwise."""
        if self.run_type != "fit" or not (self.store_signature or {}).get("windows"):
            return None
        return (self.hyperparameters or {}).get("window_pooling", "mean")

    @property
    def mix_label(self) -> str:
        """The method with its layer pooling where it has several
        (``adapter_pooler (attention)``): which mix learned the weights."""
        pooling = (self.hyperparameters or {}).get("layer_pooling")
        return f"{self.method} ({pooling})" if self.method == "adapter_pooler" and pooling else self.method

    @classmethod
    def from_results(cls, results: RunResults, results_path: str) -> "ReportedRun":
        return cls(**{f.name: getattr(results, f.name) for f in fields(RunResults)}, results_path=results_path)


def read_run(path: str | os.PathLike) -> ReportedRun:
    """Read one run: a run folder or its ``results.json``.

    >>> read_run("runs/sst2-linear")          # doctest: +SKIP
    ReportedRun(results_path='runs/sst2-linear/results.json', task='sst2', ...)
    """
    p = Path(path)
    results = p / RESULTS if p.is_dir() else p
    if not results.is_file():
        raise ReportError(f"{results}: no such file (a run folder holds results.json)")
    try:
        run = ReportedRun.from_results(RunFolder(results.parent).results(), str(results))
    except BertVisionError as err:
        raise ReportError(str(err)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{results}: cannot be read ({err})") from err
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


def load_runs(paths: Iterable[str | os.PathLike]) -> list[ReportedRun]:
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
