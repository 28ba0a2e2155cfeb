"""Sentence pairs encoded separately: the zero-shot cosine baseline.

A store extracted with ``--pair-mode separate`` holds each text of a pair
encoded on its own (records ``[2, layers, hidden]``: text a, then text b).
With ``--token-mode mean`` that is how a sentence-embedding model such as the
embedded all-MiniLM-L6-v2 was trained to be used (a bi-encoder): the cosine
of the two mean-pooled vectors of its last layer scores a pair with no
training at all. `cosine_baseline` turns that into a task prediction, the
baseline a trained pair adapter has to beat:

- a two-class task: "positive" when the cosine reaches a threshold chosen
  on `fit_split` only (the one maximizing the task's main metric; which
  class the high cosines mean is chosen there too);
- a regression task (STS-B): the cosine itself is the score (Pearson and
  Spearman do not care about its scale).

Example:
    >>> from bertvision.store.format import open_store
    >>> result = cosine_baseline(open_store("tfrecords/mrpc-separate"), "train", "dev")  # doctest: +SKIP
    >>> result.metrics, result.threshold  # doctest: +SKIP
    ({'accuracy': 0.748, 'f1': 0.829}, 0.81)

(not run: it needs a separately encoded MRPC store, ``pipelines.extract --task mrpc --pair-mode separate``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bertvision.errors import ConfigError
from bertvision.metrics import compute_metrics
from bertvision.store.format import Store

__all__ = ["CosineBaseline", "best_threshold", "cosine_baseline", "pair_cosines"]


def pair_cosines(store: Store, split: str, layer: int = -1, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(cosine [N], labels [N])`` of the two texts of every record of
    `split` at stored layer position `layer` (-1: the last stored layer)."""
    if store.pair_mode != "separate":
        raise ConfigError(f"{store.path}: the cosine baseline needs each text of a pair encoded on its own "
                          f"(a store extracted with --pair-mode separate); this one is {store.pair_mode}")
    if not -len(store.layers) <= layer < len(store.layers):
        raise ConfigError(f"layer position {layer} is not among the store's {len(store.layers)} stored layers")
    cosines, labels = [], []
    for features, y in store.dataset(split, batch_size):
        acts = features["activations"].numpy()[:, :, layer].astype(np.float32)  # [B, 2, H]
        u, v = acts[:, 0], acts[:, 1]
        norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
        cosines.append(np.sum(u * v, axis=1) / np.maximum(norms, 1e-12))
        labels.append(y.numpy())
    if not cosines:
        raise ConfigError(f"{store.path}: split {split!r} has no records")
    return np.concatenate(cosines), np.concatenate(labels)


def _classes(cos: np.ndarray, threshold: float, positive: int) -> np.ndarray:
    return np.where(cos >= threshold, positive, 1 - positive)


def best_threshold(cos: np.ndarray, labels: np.ndarray, metric: str, candidates: int = 512) -> tuple[float, int]:
    """``(threshold, positive class)`` maximizing `metric` of a two-class
    prediction "cosine >= threshold -> positive class" on these labels; the
    thresholds tried are midpoints between quantiles of `cos`."""
    keep = labels >= 0
    cos, labels = cos[keep], labels[keep]
    if cos.size == 0:
        raise ConfigError("no labelled records to choose a cosine threshold on")
    points = np.unique(np.quantile(cos, np.linspace(0.0, 1.0, candidates + 1)))
    tries = np.concatenate([[points[0] - 1e-6], (points[1:] + points[:-1]) / 2, [points[-1] + 1e-6]])
    best = (-np.inf, 0.0, 1)
    for positive in (1, 0):
        for t in tries:
            value = compute_metrics([metric], _classes(cos, float(t), positive), labels)[metric]
            if value > best[0]:
                best = (value, float(t), positive)
    return best[1], best[2]


@dataclass
class CosineBaseline:
    """What `cosine_baseline` measured: the eval split's metrics, the
    threshold and positive class chosen on the fit split (two-class tasks;
    ``None`` for regression) and the fit split's own metrics."""

    task: str
    layer: int
    fit_split: str
    eval_split: str
    threshold: float | None
    positive_label: str | None
    metrics: dict
    fit_metrics: dict

    def to_dict(self) -> dict:
        return asdict(self)


def cosine_baseline(store: Store, fit_split: str = "train", eval_split: str = "dev",
                    layer: int = -1) -> CosineBaseline:
    """The zero-shot cosine of `store`'s separately encoded pairs as a
    prediction of its task, its threshold chosen on `fit_split`, scored on
    `eval_split` with the task's official metrics."""
    task = store.task_spec
    if task.kind == "classification" and len(task.label_names) != 2:
        raise ConfigError(f"task {task.name} has {len(task.label_names)} classes; the cosine baseline scores "
                          "two-class and regression pair tasks")
    if task.kind not in ("classification", "regression"):
        raise ConfigError(f"task {task.name} is {task.kind}; the cosine baseline scores sentence-pair tasks")
    fit_cos, fit_y = pair_cosines(store, fit_split, layer)
    eval_cos, eval_y = pair_cosines(store, eval_split, layer)
    if task.kind == "regression":
        return CosineBaseline(task.name, layer, fit_split, eval_split, None, None,
                              compute_metrics(task.metrics, eval_cos, eval_y),
                              compute_metrics(task.metrics, fit_cos, fit_y))
    threshold, positive = best_threshold(fit_cos, fit_y, task.main_metric)
    if not (eval_y >= 0).any():
        raise ConfigError(f"{store.path}: split {eval_split!r} has no labels to score the cosine baseline on")

    def scored(cos, y):  # the labelled records' metrics at the chosen threshold
        keep = y >= 0
        return compute_metrics(task.metrics, _classes(cos[keep], threshold, positive), y[keep])

    return CosineBaseline(task.name, layer, fit_split, eval_split, threshold, task.label_names[positive],
                          scored(eval_cos, eval_y), scored(fit_cos, fit_y))
