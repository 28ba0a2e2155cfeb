"""Per-class numbers of a classification run, from its saved predictions
(scikit-learn): what the report's confusion matrix and per-class F1 chart
draw.

>>> from bertvision.report.loading import load_runs
>>> scores = class_scores(load_runs(["runs/banking77"])[0])   # doctest: +SKIP
>>> scores.per_class[["class", "f1", "support"]].head(2)      # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from bertvision.errors import BertVisionError
from bertvision.report.loading import ReportedRun
from bertvision.runs import RunFolder
from bertvision.store.format import MANIFEST

__all__ = ["ClassScores", "class_names", "class_scores"]


@dataclass
class ClassScores:
    """One split of one run: ``per_class`` (a row per class in label order:
    ``class``, ``precision``, ``recall``, ``f1``, ``support``, ``predicted``),
    ``confusion`` (a row per non-empty cell and per diagonal cell: ``true``,
    ``predicted``, ``count``, ``share`` of the true class), accuracy and the
    macro F1 (over the classes in the gold labels or the predictions,
    scikit-learn's default)."""

    run: str
    split: str
    names: list[str]
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    macro_f1: float
    accuracy: float
    examples: int


def class_names(run: ReportedRun, count: int, spec=None) -> list[str]:
    """The run's class names in label order: its task spec's (`spec`, the
    predictions'), else its store manifest's, else ``0 .. count-1``."""
    names = list(spec.label_names) if spec is not None else []
    manifest = Path(run.store or "") / MANIFEST
    if len(names) != count and run.store and manifest.is_file():
        try:
            names = list(json.loads(manifest.read_text(encoding="utf-8")).get("label_names") or [])
        except (OSError, ValueError):
            names = []
    return [str(n) for n in names] if len(names) == count else [str(i) for i in range(count)]


def class_scores(run: ReportedRun, split: str | None = None) -> ClassScores | str:
    """Per-class scores of `run` on `split` (default: its first eval split
    with saved predictions), or the reason there are none."""
    folder = RunFolder(run.run_dir)
    splits = [split] if split else [s for s in (run.eval_splits or []) if folder.has_predictions(s)]
    if not splits or not folder.has_predictions(splits[0]):
        return f"{run.label}: no saved predictions{f' of {split}' if split else ''}"
    try:
        preds = folder.load_predictions(splits[0])
    except BertVisionError as err:
        return f"{run.label}: {err}"
    if preds.kind != "classification" or preds.labels is None:
        return f"{run.label}: not single-label classification predictions with gold labels ({preds.kind})"
    labelled = np.asarray(preds.labels) >= 0
    if not labelled.any():
        return f"{run.label}: {splits[0]} has no gold labels"
    gold = np.asarray(preds.labels)[labelled].astype(int)
    guess = np.argmax(preds.probabilities[labelled], axis=1)
    count = preds.probabilities.shape[1]
    names = class_names(run, count, preds.spec)
    ids = list(range(count))
    precision, recall, f1, support = precision_recall_fscore_support(gold, guess, labels=ids, zero_division=0)
    per_class = pd.DataFrame({"class": names, "precision": precision, "recall": recall, "f1": f1,
                              "support": support.astype(int), "predicted": np.bincount(guess, minlength=count)})
    matrix = confusion_matrix(gold, guess, labels=ids)
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    true, predicted = np.nonzero((matrix > 0) | np.eye(count, dtype=bool))
    confusion = pd.DataFrame({"true": [names[i] for i in true], "predicted": [names[j] for j in predicted],
                              "count": matrix[true, predicted], "share": (matrix / totals)[true, predicted]})
    return ClassScores(run=run.label, split=splits[0], names=names, per_class=per_class, confusion=confusion,
                       macro_f1=float(f1_score(gold, guess, average="macro", zero_division=0)),
                       accuracy=float((gold == guess).mean()), examples=int(len(gold)))
