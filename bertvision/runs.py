"""The run contract: what every run folder holds, and the one typed reader
and writer of it.

A run folder (adapter fit, BERT fine-tuning or ensemble) is::

    config.json          the config that made it (FitConfig, FinetuneConfig, EnsembleConfig)
    results.json         `RunResults`: task, method, metrics, history, parameters, speeds
    predictions/S.npz    `Predictions` of each eval split (the per-example outputs)
    model.keras          the adapter (fit runs)
    checkpoints/         fine-tuning checkpoints, each a backbone folder (finetune runs)
    logs/                TensorBoard scalars
    state/               while training: what a killed run resumes from
    store.json           what it trains on, recorded at start: the store (path, manifest sha256) or data

`RunFolder` names these files; `RunResults` and `Predictions` are the only
code that reads or writes ``results.json`` and ``predictions/*.npz``.

Example:
    >>> run = RunFolder(RUN)    # here a linear probe trained on 32 SST-2 examples
    >>> results = run.results()
    >>> results.method, results.main_metric, results.main_value == results.dev_metrics["accuracy"]
    ('linear_probe', 'accuracy', True)
    >>> run.load_predictions("dev").evaluate() == results.dev_metrics
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import resource
import shutil
import sys
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from bertvision import io
from bertvision.config import ConfigBase
from bertvision.errors import RunError
from bertvision.data.features import word_predictions
from bertvision.metrics import (SquadGold, best_thresholds, compute_metrics, odds_threshold, per_class_metrics,
                                squad_evaluate_examples, tagging_metrics)
from bertvision.data.squad import SquadWindows, decode_squad
from bertvision.data.tasks import TaskSpec, get_task

__all__ = ["BEST_RUN", "CHECKPOINTS", "CHECKPOINT_INFO", "CONFIG", "MODEL", "PAD_LOGIT", "RESULTS", "RUN_TYPES",
           "SEARCH_RECORD", "STORE", "TRIALS", "TUNER", "HistoryPoint", "PeakMemory", "Predictions", "RunFolder",
           "RunResults", "SearchFolder", "check_store_identity", "checkpoint_name", "checkpoint_path",
           "choose_dev_thresholds", "epoch_selection", "latest_checkpoint", "merge_split_metrics", "package_versions",
           "read_checkpoint_info"]

CONFIG = "config.json"
RESULTS = "results.json"
MODEL = "model.keras"
STORE = "store.json"  # the identity of the store a run trains on (`Store.identity`), recorded at start
SEARCH_RECORD = "search.json"  # a search folder's record (run_type "search")
TRIALS = "trials.csv"  # a search folder's one row per trial
TUNER = "tuner"  # KerasTuner's own state in a search folder (its project name)
BEST_RUN = "best"  # a search folder's retrained best trial: a fit run folder
CHECKPOINTS = "checkpoints"  # fine-tuning: RUN_DIR/checkpoints/epoch-X.XX/, each a backbone folder
CHECKPOINT_INFO = "checkpoint.json"  # in each checkpoint: step, epoch, label, metrics, config
RUN_TYPES = ("fit", "finetune", "ensemble")
# logit where a window is shorter than the longest one it is stacked with
PAD_LOGIT = -1e4


def package_versions() -> dict:
    """Python and the versions of the packages a result depends on."""
    out = {"python": sys.version.split()[0]}
    for name in ("tensorflow", "keras", "keras-hub", "transformers", "tokenizers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class PeakMemory:
    """The peak memory of this process over a block: resident set size
    (Linux's ``VmHWM``, reset at the start of the block) and, when there is a
    GPU, the peak of TensorFlow's allocator on it.

    >>> with PeakMemory() as peak:
    ...     block = np.ones((16, 1024, 1024))   # 128 MiB; fit(config) alike
    >>> peak.rss_mib > 128
    True
    >>> peak.device_mib   # doctest: +SKIP
    None
    """

    def __init__(self):
        self.rss_mib: float | None = None
        self.device_mib: float | None = None
        self._gpus: list = []

    def __enter__(self) -> "PeakMemory":
        try:  # "5" resets the peak resident set size (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass  # the peak then counts from the start of the process
        self._gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        for device in self._gpus:
            tf.config.experimental.reset_memory_stats(device)
        return self

    def __exit__(self, *exc) -> None:
        self.rss_mib = _vm_hwm_mib()
        if self._gpus:
            self.device_mib = round(sum(tf.config.experimental.get_memory_info(d)["peak"]
                                        for d in self._gpus) / 2**20, 1)


def _vm_hwm_mib() -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


def merge_split_metrics(per_split: Mapping[str, Mapping[str, float]], task: TaskSpec) -> dict[str, float]:
    """One dev-metrics dict from several eval splits: the first split's
    metrics under their own names (the ones a model is selected on), and
    every split's under ``<label>_<metric>`` (MNLI: ``matched_accuracy``,
    ``mismatched_accuracy``).

    >>> merge_split_metrics({"dev": {"accuracy": 0.8}}, get_task("sst2"))
    {'accuracy': 0.8}
    """
    splits = list(per_split)
    out = dict(per_split[splits[0]])
    if len(splits) > 1:
        for split in splits:
            label = task.eval_split_labels.get(split, split)
            out.update({f"{label}_{name}": value for name, value in per_split[split].items()})
    return out


def choose_dev_thresholds(predictions: Mapping[str, "Predictions"], dev_split: str) -> list[float] | None:
    """Multi-label: one threshold per label, each label's best F1 on the
    labelled examples of `dev_split` (`bertvision.metrics.best_thresholds`;
    dev, never test), set on the predictions of every split; their metrics
    are then those at these thresholds. None (nothing changed) for other kinds.

    >>> from bertvision.data.tasks import user_task
    >>> p = Predictions(user_task("tags", "multi_label", ("text",), "tags", ("a", "b")), "dev", np.array(["0", "1"]),
    ...                 probabilities=np.array([[0.3, 0.9], [0.2, 0.4]]), labels=np.array([[1, 1], [0, 0]]))
    >>> choose_dev_thresholds({"dev": p}, "dev"), p.evaluate()["micro_f1"]
    ([0.3, 0.5], 1.0)
    """
    dev = predictions[dev_split]
    if dev.kind != "multi_label":
        return None
    keep = dev.labelled_mask()
    thresholds = best_thresholds(dev.probabilities[keep], dev.labels[keep])
    for preds in predictions.values():
        preds.thresholds = np.asarray(thresholds, np.float32)
    return [float(t) for t in thresholds]


# ------------------------------------------------------------------ results


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _optional_int(value: Any, where: str) -> int | None:
    return None if value is None else int(_number(value, where))


def _metrics(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise RunError(f"{where}: expected an object of metric name -> number, got {type(value).__name__}")
    out = {}
    for name, v in value.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue  # a metric that could not be computed (e.g. constant predictions)
        out[str(name)] = _number(v, f"{where}.{name}")
    return out


@dataclass
class HistoryPoint:
    """One evaluation during training.

    ``epoch`` is fractional for fine-tuning checkpoints; ``train_time_s`` is
    the training time up to this point (evaluation excluded) and
    ``examples_per_s`` the training speed since the previous point.
    """

    epoch: float
    dev: dict[str, float]
    step: int | None = None
    loss: float | None = None
    lr: float | None = None
    train_time_s: float | None = None
    examples_per_s: float | None = None

    @classmethod
    def from_dict(cls, item: Any, where: str) -> "HistoryPoint":
        if not isinstance(item, dict) or "epoch" not in item:
            raise RunError(f"{where}: expected an object with 'epoch'")
        unknown = sorted(set(item) - {f.name for f in fields(cls)})
        if unknown:
            raise RunError(f"{where}: unknown key(s) {unknown}")
        return cls(epoch=_number(item["epoch"], f"{where}.epoch"), dev=_metrics(item.get("dev") or {}, f"{where}.dev"),
                   step=_optional_int(item.get("step"), f"{where}.step"),
                   loss=_optional_number(item.get("loss"), f"{where}.loss"),
                   lr=_optional_number(item.get("lr"), f"{where}.lr"),
                   train_time_s=_optional_number(item.get("train_time_s"), f"{where}.train_time_s"),
                   examples_per_s=_optional_number(item.get("examples_per_s"), f"{where}.examples_per_s"))


_NUMBER_FIELDS = ("best_epoch", "train_fraction", "param_share", "train_wall_time_s", "total_wall_time_s",
                  "train_examples_per_s", "peak_memory_mib", "peak_device_memory_mib")
_INT_FIELDS = ("seed", "train_examples", "train_records", "trainable_params", "backbone_params")


@dataclass
class RunResults:
    """A run's ``results.json``, typed and checked (see docs/architecture.md).

    Every engine (adapter fit, fine-tuning, ensemble) writes one; predict,
    ensemble, search, report and the benchmarks read it through
    `RunFolder.results`.

    >>> r = RunResults(task="sst2", method="linear_probe", run_type="fit", main_metric="accuracy",
    ...                dev_metrics={"accuracy": 0.8})
    >>> RunResults.from_dict(r.to_dict(), "example").main_value
    0.8
    """

    task: str
    method: str
    run_type: str
    main_metric: str
    dev_metrics: dict[str, float]
    eval_splits: list = field(default_factory=list)
    history: list = field(default_factory=list)  # of HistoryPoint
    best_epoch: float | None = None
    best_dev_metrics: dict | None = None
    hyperparameters: dict = field(default_factory=dict)
    seed: int | None = None
    train_fraction: float | None = None
    train_examples: int | None = None
    train_records: int | None = None  # model inputs trained on (SQuAD: windows)
    trainable_params: int | None = None
    backbone_params: int | None = None
    param_share: float | None = None  # trainable / backbone parameters
    train_wall_time_s: float | None = None
    total_wall_time_s: float | None = None
    train_examples_per_s: float | None = None
    peak_memory_mib: float | None = None  # resident set size of the process (PeakMemory)
    peak_device_memory_mib: float | None = None  # on the GPU(s), when there are any
    backbone: dict | None = None  # identity of the backbone (fit: the store's; finetune: the one it started from)
    store: str | None = None
    store_signature: dict | None = None
    store_manifest_sha256: str | None = None  # the store's identity when the run started (fit)
    layers: list | None = None
    token_mode: str | None = None
    layer_weights: list | None = None
    predictions: dict = field(default_factory=dict)  # split -> path relative to the run folder
    checkpoints: dict | None = None  # finetune: {"best": ..., "final": ...} relative paths
    members: list | None = None  # ensemble: [{"run", "method", "dev_metrics"}]
    search: dict | None = None  # the best retrain of a search: {"search_dir", "trial_id", "layer_subset"}
    resumed_from: dict | None = None
    environment: dict = field(default_factory=dict)  # strategy, replicas, jit_compile, versions
    task_spec: dict | None = None  # the task (`TaskSpec.to_dict`); absent in runs of presets from before specs
    thresholds: list | None = None  # multi-label: one probability threshold per label, chosen on dev
    selection: dict | None = None  # how the reported epoch was chosen (`epoch_selection`)

    @property
    def main_value(self) -> float:
        return self.dev_metrics[self.main_metric]

    def selection_note(self) -> str:
        """How the reported score was chosen, in words: ``best of 10 epochs,
        chosen on dev (the split reported); last epoch 10: accuracy=0.8125``;
        empty for a run that records no `selection`."""
        sel = self.selection
        if not sel:
            return ""
        where = f"chosen on {sel['chosen_on']}"
        if sel.get("chosen_on_reported_split"):
            where += " (the split reported: optimistic)"
        last = sel.get("last_metrics") or {}
        main = last.get(self.main_metric)
        tail = "" if main is None else f"; last epoch {sel['last_epoch']:g}: {self.main_metric}={main:.4f}"
        return f"best of {sel['marks']} epoch(s), {where}{tail}"

    @property
    def spec(self) -> TaskSpec:
        """The run's task: its saved spec, else the preset its name names."""
        return get_task(self.task_spec if self.task_spec is not None else self.task)

    @property
    def best_null_odds(self) -> float:
        """The null-odds threshold a SQuAD run answers at: its dev
        ``best_f1_thresh`` (the official evaluation's best no-answer
        probability, `odds_threshold`), else 0 (BERT's rule)."""
        thresh = self.dev_metrics.get("best_f1_thresh")
        return 0.0 if thresh is None else odds_threshold(thresh)

    @property
    def param_share_pct(self) -> float | None:
        if self.param_share is not None:
            return 100.0 * self.param_share
        if self.trainable_params is not None and self.backbone_params:
            return 100.0 * self.trainable_params / self.backbone_params
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RunResults":
        """Check a parsed ``results.json``; `where` names it in errors."""
        if not isinstance(data, dict):
            raise RunError(f"{where}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing = [k for k in ("task", "method", "run_type", "main_metric", "dev_metrics") if k not in data]
        if missing:
            raise RunError(f"{where}: missing key(s) {', '.join(missing)} (see docs/architecture.md, Run folders)")
        unknown = sorted(set(data) - names)
        if unknown:
            raise RunError(f"{where}: unknown key(s) {unknown}; written by another version of BertVision?")
        for key in ("task", "method", "run_type", "main_metric"):
            if not isinstance(data[key], str) or not data[key]:
                raise RunError(f"{where}: {key!r} must be a non-empty string, got {data[key]!r}")
        if data["run_type"] not in RUN_TYPES:
            raise RunError(f"{where}: run_type {data['run_type']!r} is not one of {', '.join(RUN_TYPES)}")
        values = dict(data)
        values["dev_metrics"] = _metrics(data["dev_metrics"], f"{where}: dev_metrics")
        if data["main_metric"] not in values["dev_metrics"]:
            raise RunError(f"{where}: main_metric {data['main_metric']!r} is not in dev_metrics "
                           f"({', '.join(values['dev_metrics']) or 'empty'})")
        history = data.get("history") or []
        if not isinstance(history, list):
            raise RunError(f"{where}: history must be a list, got {type(history).__name__}")
        values["history"] = [HistoryPoint.from_dict(h, f"{where}: history[{i}]") for i, h in enumerate(history)]
        for key in _NUMBER_FIELDS:
            values[key] = _optional_number(data.get(key), f"{where}: {key}")
        for key in _INT_FIELDS:
            values[key] = _optional_int(data.get(key), f"{where}: {key}")
        weights = data.get("layer_weights")
        if weights is not None:
            if not isinstance(weights, list) or not weights:
                raise RunError(f"{where}: layer_weights must be a non-empty list of numbers")
            values["layer_weights"] = [_number(w, f"{where}: layer_weights[{i}]") for i, w in enumerate(weights)]
        if data.get("task_spec") is not None:
            get_task(data["task_spec"])  # a ConfigError naming what is wrong
        if data.get("thresholds") is not None:
            values["thresholds"] = [_number(t, f"{where}: thresholds[{i}]") for i, t in enumerate(data["thresholds"])]
        if data.get("selection") is not None and not isinstance(data["selection"], dict):
            raise RunError(f"{where}: selection must be an object, got {type(data['selection']).__name__}")
        if data.get("best_dev_metrics") is not None:
            values["best_dev_metrics"] = _metrics(data["best_dev_metrics"], f"{where}: best_dev_metrics")
        return cls(**values)


def epoch_selection(history: list, best_epoch: float | None, main_metric: str, chosen_on: str,
                    reported: list) -> dict | None:
    """What a run that restores its best evaluation point records about that
    choice (``results.json`` ``selection``): the metric and split it was
    chosen on, how many points it was chosen among, whether that split is one
    the run reports (then the score is the best of several looks at it, an
    optimistic estimate), and the last point's epoch and metrics beside it.

    >>> epoch_selection([HistoryPoint(1.0, {"accuracy": 0.7}), HistoryPoint(2.0, {"accuracy": 0.6})], 1.0,
    ...                 "accuracy", "dev", ["dev"])["last_metrics"]
    {'accuracy': 0.6}
    """
    if not history or best_epoch is None:
        return None
    return {"metric": main_metric, "chosen_on": chosen_on, "marks": len(history), "best_epoch": float(best_epoch),
            "chosen_on_reported_split": chosen_on in reported, "reported_splits": list(reported),
            "last_epoch": float(history[-1].epoch), "last_metrics": dict(history[-1].dev)}


# ---------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """What a run predicted for every example of one split: one format for
    adapter runs, fine-tuning runs and ensembles, saved as
    ``RUN_DIR/predictions/<split>.npz`` (``np.load(..., allow_pickle=False)``):

    - ``task``, ``split`` (0-d str), ``uids [N]`` str: the examples, in order;
    - ``task_spec`` (0-d str, JSON): the task's spec where it is not a
      preset (a user task);
    - classification: ``probabilities [N, C]`` float32, ``labels [N]`` int
      (-1 = unlabelled);
    - multi-label: ``probabilities [N, C]`` (sigmoid) float32, ``labels [N, C]``
      0/1 (-1 = unlabelled), ``thresholds [C]`` (a label is predicted at or
      above its threshold; 0.5 until dev chooses them);
    - regression: ``scores [N]`` float32, ``labels [N]`` float (NaN = unlabelled);
    - span (SQuAD): one row per window, ``window_uids [W]`` str,
      ``window_index [W]`` int (0, 1, ... within a question),
      ``start_logits`` / ``end_logits [W, L]`` float32, ``offsets [W, L, 2]``
      int32 (character offsets in the context, -1 outside it); per question
      ``contexts [N]`` str and ``answers [N]`` str (JSON list of gold answer
      texts, ``[]`` when unanswerable);
    - token classification: per sentence ``words [N]`` and ``tags [N]`` str
      (JSON lists: the words, their gold BIO tags, ``[]`` when unlabelled) and
      ``word_counts [N]``; per word, sentence after sentence,
      ``word_probabilities [sum(word_counts), C]`` float32 (the softmax at
      the word's first sub-word, in the window that predicts it).

    >>> p = Predictions("sst2", "dev", np.array(["0", "1"]),
    ...                 probabilities=np.array([[0.9, 0.1], [0.2, 0.8]]), labels=np.array([0, 1]))
    >>> p.evaluate()
    {'accuracy': 1.0}
    """

    task: str | TaskSpec
    split: str
    uids: np.ndarray
    probabilities: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    window_uids: np.ndarray | None = None
    window_index: np.ndarray | None = None
    start_logits: np.ndarray | None = None
    end_logits: np.ndarray | None = None
    offsets: np.ndarray | None = None
    contexts: np.ndarray | None = None
    answers: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    words: np.ndarray | None = None
    tags: np.ndarray | None = None
    word_counts: np.ndarray | None = None
    word_probabilities: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.spec = get_task(self.task)
        self.task, self.kind = self.spec.name, self.spec.kind
        self.uids = np.asarray([str(u) for u in self.uids], dtype=str)
        n = len(self.uids)
        where = f"predictions of {self.source or self.task + '/' + self.split}"
        if len(set(self.uids.tolist())) != n:
            raise RunError(f"{where}: duplicate uids")
        need = {"classification": ("probabilities",), "multi_label": ("probabilities",), "regression": ("scores",),
                "span": ("window_uids", "window_index", "start_logits", "end_logits", "offsets",
                         "contexts", "answers"),
                "token_classification": ("words", "tags", "word_counts", "word_probabilities")}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise RunError(f"{where}: a {self.kind} task needs {missing}")
        if self.kind in ("classification", "multi_label"):
            self.probabilities = np.asarray(self.probabilities, np.float32)
            if self.probabilities.ndim != 2 or len(self.probabilities) != n:
                raise RunError(f"{where}: probabilities shape {self.probabilities.shape}, expected [{n}, C]")
            if self.kind == "multi_label":
                c = self.probabilities.shape[1]
                self.thresholds = (np.full(c, 0.5, np.float32) if self.thresholds is None
                                   else np.asarray(self.thresholds, np.float32).reshape(-1))
                if self.thresholds.shape != (c,):
                    raise RunError(f"{where}: {len(self.thresholds)} thresholds for {c} labels")
        elif self.kind == "regression":
            self.scores = np.asarray(self.scores, np.float32).reshape(-1)
            if len(self.scores) != n:
                raise RunError(f"{where}: {len(self.scores)} scores for {n} uids")
        elif self.kind == "token_classification":
            self.words = np.asarray(self.words, dtype=str)
            self.tags = np.asarray(self.tags, dtype=str)
            self.word_counts = np.asarray(self.word_counts, np.int64).reshape(-1)
            self.word_probabilities = np.asarray(self.word_probabilities, np.float32)
            if not (len(self.words) == len(self.tags) == len(self.word_counts) == n) \
                    or self.word_probabilities.ndim != 2 or len(self.word_probabilities) != self.word_counts.sum():
                raise RunError(f"{where}: word arrays disagree: {n} uids, {len(self.words)} sentences, "
                               f"{int(self.word_counts.sum())} words, probabilities {self.word_probabilities.shape}")
        else:
            self.window_uids = np.asarray([str(u) for u in self.window_uids], dtype=str)
            self.window_index = np.asarray(self.window_index, np.int32)
            self.start_logits = np.asarray(self.start_logits, np.float32)
            self.end_logits = np.asarray(self.end_logits, np.float32)
            self.offsets = np.asarray(self.offsets, np.int32)
            w = len(self.window_uids)
            shape = self.start_logits.shape
            if (len(shape) != 2 or shape[0] != w or self.end_logits.shape != shape
                    or self.offsets.shape != shape + (2,) or self.window_index.shape != (w,)):
                raise RunError(f"{where}: window arrays disagree: {w} window uids, start {shape}, "
                               f"end {self.end_logits.shape}, offsets {self.offsets.shape}")
            self.contexts = np.asarray(self.contexts, dtype=str)
            self.answers = np.asarray(self.answers, dtype=str)
            if len(self.contexts) != n or len(self.answers) != n:
                raise RunError(f"{where}: contexts/answers need one entry per uid ({n})")
            unknown = set(self.window_uids.tolist()) - set(self.uids.tolist())
            if unknown:
                raise RunError(f"{where}: windows of unknown questions, e.g. {sorted(unknown)[:3]}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if len(self.labels) != n:
                raise RunError(f"{where}: {len(self.labels)} labels for {n} uids")

    @classmethod
    def from_outputs(cls, task: str | TaskSpec, split: str, record_uids: Sequence[str], outputs: Sequence, *,
                     labels: Sequence | None = None, window_index: Sequence | None = None,
                     offsets: Sequence | None = None, gold: Mapping[str, tuple[str, list]] | None = None,
                     thresholds: Sequence | None = None, source: str = "") -> "Predictions":
        """Predictions from a model's batched outputs, in record order.

        `outputs` is a list of batches: logits ``[B, C]`` (classification;
        multi-label: one logit per label), scores ``[B]`` (regression) or
        ``{"start_logits", "end_logits"}``
        ``[B, T]`` (span; `window_index` and `offsets` ``[B, T, 2]`` batches
        beside them, and `gold` mapping each question uid to its
        ``(context, gold answer texts)``, no texts when unanswerable), or
        logits ``[B, T, C]`` (token classification; `offsets` then holds the
        ``word_ids [B, T]`` batches and `gold` maps each sentence uid to its
        ``(words, gold tags)``).
        `thresholds`: multi-label, one per label (a run's, chosen on dev).
        """
        kind = get_task(task).kind
        record_uids = np.asarray([str(u) for u in record_uids], dtype=str)
        if kind == "multi_label":
            logits = np.concatenate([np.asarray(o) for o in outputs]).astype(np.float64)
            return cls(task, split, record_uids, probabilities=(1.0 / (1.0 + np.exp(-logits))).astype(np.float32),
                       labels=None if labels is None else np.asarray(labels).astype(np.int64),
                       thresholds=thresholds, source=source)
        if kind == "classification":
            logits = np.concatenate([np.asarray(o) for o in outputs]).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            return cls(task, split, record_uids, probabilities=probs.astype(np.float32),
                       labels=None if labels is None else np.asarray(labels).astype(np.int64), source=source)
        if kind == "regression":
            scores = np.concatenate([np.asarray(o).reshape(len(o), -1)[:, 0] for o in outputs]).astype(np.float32)
            return cls(task, split, record_uids, scores=scores,
                       labels=None if labels is None else np.asarray(labels).astype(np.float32), source=source)
        if kind == "token_classification":
            return cls._from_token_outputs(task, split, record_uids, outputs, offsets, gold, source)
        width = max(np.asarray(o["start_logits"]).shape[1] for o in outputs)
        start = _pad_rows([np.asarray(o["start_logits"]) for o in outputs], width, PAD_LOGIT)
        end = _pad_rows([np.asarray(o["end_logits"]) for o in outputs], width, PAD_LOGIT)
        offs = _pad_rows([np.asarray(o) for o in offsets], width, -1)
        questions = list(dict.fromkeys(record_uids.tolist()))  # in order of first window
        missing = [u for u in questions if u not in gold]
        if missing:
            raise RunError(f"{split}: {len(missing)} question(s) without a context, e.g. {missing[:3]}")
        return cls(task, split, np.asarray(questions, dtype=str), window_uids=record_uids,
                   window_index=np.concatenate([np.asarray(w) for w in window_index]).astype(np.int32),
                   start_logits=start, end_logits=end, offsets=offs,
                   contexts=np.asarray([gold[u][0] for u in questions], dtype=str),
                   answers=np.asarray([json.dumps(list(gold[u][1])) for u in questions], dtype=str),
                   source=source)

    @classmethod
    def _from_token_outputs(cls, task, split, record_uids, outputs, word_ids, gold, source):
        width = max(np.asarray(o).shape[1] for o in outputs)
        logits = _pad_rows([np.asarray(o, np.float64) for o in outputs], width, 0.0)
        ids = _pad_rows([np.asarray(w) for w in word_ids], width, -1)
        sentences = list(dict.fromkeys(record_uids.tolist()))  # in order of first window
        missing = [u for u in sentences if u not in gold]
        if missing:
            raise RunError(f"{split}: {len(missing)} sentence(s) without their words, e.g. {missing[:3]}")
        index = {u: i for i, u in enumerate(sentences)}
        rows = np.asarray([index[u] for u in record_uids.tolist()])
        try:
            per_word = word_predictions(ids, rows, logits, [len(gold[u][0]) for u in sentences])
        except ValueError as err:
            raise RunError(f"{split}: {err}") from None
        flat = np.concatenate(per_word) if per_word else np.zeros((0, logits.shape[-1]))
        flat -= flat.max(axis=1, keepdims=True)
        probs = np.exp(flat)
        probs /= probs.sum(axis=1, keepdims=True)
        return cls(task, split, np.asarray(sentences, dtype=str),
                   words=np.asarray([json.dumps(list(gold[u][0])) for u in sentences], dtype=str),
                   tags=np.asarray([json.dumps(list(gold[u][1])) for u in sentences], dtype=str),
                   word_counts=np.asarray([len(p) for p in per_word], np.int64),
                   word_probabilities=probs.astype(np.float32), source=source)

    def sentence_tags(self) -> tuple[list[list[str]], list[list[str]], list[np.ndarray]]:
        """Token classification: each sentence's ``(words, predicted tags,
        each predicted tag's probability)``."""
        if self.kind != "token_classification":
            raise RunError(f"sentence_tags is for token classification; {self.task} is {self.kind}")
        names = np.asarray(self.spec.label_names)
        bounds = np.concatenate([[0], np.cumsum(self.word_counts)])
        words, tags, scores = [], [], []
        for i, text in enumerate(self.words.tolist()):
            probs = self.word_probabilities[bounds[i]:bounds[i + 1]]
            best = probs.argmax(axis=1)
            words.append(json.loads(text))
            tags.append(names[best].tolist())
            scores.append(probs[np.arange(len(best)), best])
        return words, tags, scores

    def gold_tags(self) -> list[list[str]]:
        """Token classification: each sentence's gold BIO tags (``[]`` unlabelled)."""
        return [json.loads(t) for t in self.tags.tolist()]

    # ------------------------------------------------------------------ io
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` layout (``task`` and ``split`` as plain strings)."""
        out = {"task": str(self.task), "split": str(self.split)}
        if not self.spec.is_preset:
            out["task_spec"] = json.dumps(self.spec.to_dict())
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("task", "split", "source") and value is not None:
                out[f.name] = np.asarray(value)
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` atomically."""
        with io.atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **self.to_arrays())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, source: str | None = None) -> "Predictions":
        path = Path(path)
        if not path.is_file():
            raise RunError(f"no predictions file {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise RunError(f"{path}: not a readable predictions file ({err})") from err
        known = {f.name for f in fields(cls)} | {"task_spec"}
        unknown = sorted(set(arrays) - known)
        if unknown or "task" not in arrays or "uids" not in arrays:
            raise RunError(f"{path}: not a predictions file (keys {sorted(arrays)})")
        arrays["task"], arrays["split"] = str(arrays["task"]), str(arrays["split"])
        if "task_spec" in arrays:
            arrays["task"] = get_task(json.loads(str(arrays.pop("task_spec"))))
        return cls(**arrays, source=source or str(path))

    # ------------------------------------------------------------- scoring
    def decode(self, **kwargs: Any):
        """Span tasks: n-best decoding of the windows (`bertvision.data.squad.decode_squad`)."""
        if self.kind != "span":
            raise RunError(f"decode is for span tasks; {self.task} is {self.kind}")
        contexts = dict(zip(self.uids.tolist(), self.contexts.tolist()))
        windows = SquadWindows(self.window_uids.tolist(), self.offsets, contexts)
        return decode_squad(windows, self.start_logits, self.end_logits, **kwargs)

    def point_predictions(self) -> np.ndarray:
        """Class indices (classification), 0/1 per label at the thresholds
        (multi-label) or scores (regression)."""
        if self.kind == "classification":
            return np.argmax(self.probabilities, axis=1)
        if self.kind == "multi_label":
            return (self.probabilities >= self.thresholds[None, :]).astype(np.int64)
        if self.kind == "regression":
            return self.scores
        raise RunError("span predictions are decoded text: use decode()")

    @property
    def has_labels(self) -> bool:
        if self.kind == "span":
            return True
        if self.kind == "token_classification":
            return any(self.gold_tags())
        if self.labels is None:
            return False
        return bool(np.any(self.labelled_mask()))

    def labelled_mask(self) -> np.ndarray:
        """Which examples have gold labels."""
        labels = self.labels
        if self.kind == "multi_label":
            return labels.reshape(len(labels), -1)[:, 0] >= 0
        return labels >= 0 if self.kind == "classification" else np.isfinite(labels.astype(np.float64))

    def evaluate(self, threshold: float = 0.0) -> dict[str, float]:
        """The task's official metrics (span: SQuAD 2.0, in percent, of the
        answers decoded at null-odds `threshold`)."""
        if self.kind == "span":
            decoded = self.decode(threshold=threshold)
            golds = [SquadGold(u, tuple(json.loads(a))) for u, a in zip(self.uids.tolist(), self.answers.tolist())]
            result = squad_evaluate_examples(golds, decoded.predictions, decoded.na_probs)
            return {k: float(v) for k, v in result.items()}
        if not self.has_labels:
            raise RunError(f"{self.source or self.split}: the split has no gold labels to evaluate against")
        if self.kind == "token_classification":
            gold = self.gold_tags()
            _, predicted, _ = self.sentence_tags()
            keep = [i for i, g in enumerate(gold) if g]
            return tagging_metrics([gold[i] for i in keep], [predicted[i] for i in keep])
        keep = self.labelled_mask()
        return compute_metrics(self.spec, self.point_predictions()[keep], self.labels[keep])

    def records(self) -> list[dict]:
        """One JSON-ready result per example, with label names: ``{"id",
        "label", "probabilities"}`` (classification), ``{"id", "labels",
        "probabilities"}`` (multi-label: every label at or over its threshold,
        most probable first) or ``{"id", "score"}``; ``"gold"`` too where the
        example has a gold label (a name, a list of names, a score)."""
        if self.kind == "span":
            raise RunError("span predictions are decoded text: use decode()")
        names = self.spec.label_names
        points = self.point_predictions()
        known = self.labelled_mask() if self.labels is not None else np.zeros(len(self.uids), bool)
        out = []
        for i, uid in enumerate(self.uids.tolist()):
            if self.kind == "regression":
                item = {"id": uid, "score": float(points[i])}
                if known[i]:
                    item["gold"] = float(self.labels[i])
            elif self.kind == "classification":
                item = {"id": uid, "label": names[int(points[i])],
                        "probabilities": {n: float(v) for n, v in zip(names, self.probabilities[i].tolist())}}
                if known[i]:
                    item["gold"] = names[int(self.labels[i])]
            else:
                probs = self.probabilities[i]
                chosen = sorted(np.flatnonzero(points[i]).tolist(), key=lambda j: -probs[j])
                item = {"id": uid, "labels": [names[j] for j in chosen],
                        "probabilities": {names[j]: float(probs[j]) for j in chosen}}
                if known[i]:
                    item["gold"] = [names[j] for j in np.flatnonzero(self.labels[i] > 0).tolist()]
            out.append(item)
        return out

    def per_class(self) -> list[dict]:
        """Precision, recall, F1 and support of each class (multi-label: each
        label) over the labelled examples (`bertvision.metrics.per_class_metrics`)."""
        if self.kind not in ("classification", "multi_label") or not self.has_labels:
            raise RunError(f"{self.source or self.split}: per-class metrics need labelled classes")
        keep = self.labelled_mask()
        return per_class_metrics(self.point_predictions()[keep], self.labels[keep], self.spec.label_names)


def _pad_rows(blocks: list[np.ndarray], width: int, value) -> np.ndarray:
    out = []
    for b in blocks:
        pad = [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2)
        out.append(np.pad(b, pad, constant_values=value) if b.shape[1] < width else b)
    return np.concatenate(out, axis=0)


# -------------------------------------------------------------- checkpoints


def checkpoint_name(label: float) -> str:
    """A checkpoint folder's name: ``epoch-0.10``."""
    return f"epoch-{label:.2f}"


def checkpoint_path(run_dir: str | os.PathLike, epoch: float) -> Path:
    """``RUN_DIR/checkpoints/epoch-X.XX``."""
    return Path(run_dir) / CHECKPOINTS / checkpoint_name(epoch)


def read_checkpoint_info(folder: str | os.PathLike) -> dict | None:
    """A checkpoint folder's ``checkpoint.json`` (step, epoch, label,
    metrics, config); ``None`` when `folder` is not a checkpoint."""
    info = Path(folder) / CHECKPOINT_INFO
    return io.read_json(info, RunError) if info.is_file() else None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint folder with the highest step (``None`` if none)."""
    root = Path(run_dir) / CHECKPOINTS
    best, best_step = None, -1
    if root.is_dir():
        for folder in root.iterdir():
            info = None if folder.name.startswith(".") else read_checkpoint_info(folder)
            if info is not None and info["step"] > best_step:
                best, best_step = folder, info["step"]
    return best


# -------------------------------------------------------------- run folders


def check_store_identity(recorded: Mapping[str, Any], current: Mapping[str, Any], where: str,
                         error: type = RunError) -> None:
    """Refuse to resume `where` (a run or search folder) on another store
    than the one it started on: `recorded` and `current` are
    `Store.identity` dicts (``store`` path, ``manifest_sha256``) or, for a
    run that reads data files (fine-tuning), ``data`` and ``examples_sha256``
    (of the examples it read)."""
    key = "manifest_sha256" if "store" in current else "examples_sha256"
    old, new = recorded.get(key), current.get(key)
    if not (old and new and old != new):
        return
    if key == "manifest_sha256":
        raise error(f"{where} was started on the store {recorded.get('store')} (manifest sha256 {old[:12]}), but the "
                    f"store {current.get('store')} is another one now (manifest sha256 {new[:12]}; re-extracted?): "
                    f"resuming would train on two stores; put the original store back, or start over with another "
                    f"--out (or delete {where})")
    raise error(f"{where} was started on other examples of {recorded.get('data')} than it reads now (examples sha256 "
                f"{old[:12]} then, {new[:12]} now; files edited or replaced?): resuming would train on two data sets; "
                f"put the original files back, or start over with another --out (or delete {where})")


class RunFolder:
    """The files of one run folder (see the module docstring).

    >>> run = RunFolder("runs/x")
    >>> run.begin(config, ignore=("command",))   # refuses a finished or different run  # doctest: +SKIP
    >>> run.write_results(results)  # doctest: +SKIP
    >>> run.finished
    False
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_file = self.path / CONFIG
        self.results_file = self.path / RESULTS
        self.model_file = self.path / MODEL
        self.logs_dir = self.path / "logs"
        self.state_dir = self.path / "state"
        self.resuming = False  # `begin` found an unfinished run of the same settings
        self.store_file = self.path / STORE

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def prediction_file(self, split: str) -> Path:
        return self.path / "predictions" / f"{split}.npz"

    @property
    def finished(self) -> bool:
        return self.results_file.is_file()

    # -- results
    def results(self) -> RunResults:
        """The run's `RunResults` (`RunError` when missing or invalid)."""
        if not self.path.is_dir():
            raise RunError(f"run folder {self.path} does not exist")
        if not self.results_file.is_file():
            raise RunError(f"{self.path}: no {RESULTS}; not a finished run (run the same command again to "
                           "resume it)")
        return RunResults.from_dict(io.read_json(self.results_file, RunError), str(self.results_file))

    def write_results(self, results: RunResults) -> None:
        io.atomic_write_json(self.results_file, results.to_dict())

    def read_config(self) -> dict:
        if not self.config_file.is_file():
            raise RunError(f"{self.path}: no {CONFIG}")
        return io.read_json(self.config_file, RunError)

    # -- predictions
    def save_predictions(self, predictions: Mapping[str, Predictions]) -> dict[str, str]:
        """Save each split's predictions; returns ``{split: relative path}``."""
        out = {}
        for split, preds in predictions.items():
            preds.save(self.prediction_file(split))
            out[split] = str(self.prediction_file(split).relative_to(self.path))
        return out

    def has_predictions(self, split: str) -> bool:
        return self.prediction_file(split).is_file()

    def load_predictions(self, split: str) -> Predictions:
        if not self.path.is_dir():
            raise RunError(f"run folder {self.path} does not exist")
        return Predictions.load(self.prediction_file(split), source=str(self.path))

    # -- starting and resuming
    def begin(self, config: ConfigBase, ignore: Sequence[str] = (), store: Mapping[str, Any] | None = None) -> bool:
        """Claim the folder for `config`: refuse a path that is a file, a
        folder holding a finished run or a run with other settings (fields
        in `ignore` may differ), or files that are not a run. Writes
        ``config.json``; returns True when an unfinished run of the same
        settings is there to resume.

        `store` is the identity of the store the run trains on
        (`Store.identity`): recorded in ``store.json`` at start, and a
        resume on another store (re-extracted at the same path) is refused
        (`check_store_identity`)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file; give a folder for the run")
        if self.finished:
            raise RunError(f"{self.path} already holds a finished run ({RESULTS}); choose another --out")
        resuming = self.config_file.is_file()
        if resuming:
            diff = config.differences(self.read_config(), ignore)
            if diff:
                raise RunError(f"{self.path} holds an unfinished run with other settings ({', '.join(diff)}); "
                               "run it again with the same settings to resume it, or choose another --out")
            if store is not None and self.store_file.is_file():
                check_store_identity(io.read_json(self.store_file, RunError), store, str(self.path))
        elif self.path.is_dir() and [p for p in self.path.iterdir() if not p.name.startswith(".")]:
            raise RunError(f"--out {self.path} is a folder holding other files and no run; give a new or empty "
                           "folder")
        self.path.mkdir(parents=True, exist_ok=True)
        config.save(self.config_file)
        if store is not None and not self.store_file.is_file():  # a run started before it was recorded: now
            io.atomic_write_json(self.store_file, dict(store))
        self.resuming = resuming
        return resuming

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Refuse a second process working in this run folder at the same time."""
        self.path.mkdir(parents=True, exist_ok=True)
        with io.exclusive_lock(self.path, what, RunError):
            yield

    def check_same(self, config: ConfigBase, ignore: Sequence[str] = ()) -> None:
        """Refuse (`config`'s own error) a finished run made with other settings
        than `config` (fields in `ignore` may differ)."""
        diff = config.differences(self.read_config(), ignore)
        if diff:
            raise config.error(f"{self.path} holds a finished run with other settings ({', '.join(diff)}); "
                               "choose another --out")

    def clear_state(self) -> None:
        """Remove ``state/`` (the training state a killed run resumes from),
        once the run's outputs are written."""
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- checkpoints (fine-tuning)
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint(self, epoch: float) -> Path:
        """``checkpoints/epoch-X.XX`` of this run."""
        return checkpoint_path(self.path, epoch)


class SearchFolder:
    """The files of one search folder (`bertvision.search.tuner`)::

        search.json   the search's record: config, status, best trial (run_type "search")
        trials.csv    one row per trial
        tuner/        KerasTuner's own state
        best/         the best trial retrained: a fit run folder (`RunFolder`)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.record_file = self.path / SEARCH_RECORD
        self.trials_file = self.path / TRIALS
        self.tuner_dir = self.path / TUNER
        self.best = RunFolder(self.path / BEST_RUN)

    def __repr__(self) -> str:
        return f"SearchFolder({str(self.path)!r})"

    def begin(self, config: ConfigBase, resumable: Sequence[str], error: type[Exception]) -> dict | None:
        """Check the folder before a search starts (before its store is
        read): refuse a path that is a file, a folder holding something but a
        search, or a search with other settings than `config` (fields in
        `resumable` may differ). Returns the ``search.json`` of the search
        to resume, or None; `check_store` then compares its store."""
        if self.path.exists() and not self.path.is_dir():
            raise error(f"--out {self.path} is a file; give a folder for the search")
        if self.record_file.is_file():
            return self.read_record(config, resumable, error)
        if self.tuner_dir.is_dir():
            raise error(f"{self.path} holds a KerasTuner project but no {SEARCH_RECORD}; choose another --out")
        if self.path.is_dir() and [p for p in self.path.iterdir() if not p.name.startswith(".")]:
            raise error(f"--out {self.path} is a folder holding other files and no search; give a new or empty "
                        "folder")
        return None

    def check_store(self, record: Mapping[str, Any] | None, store: Mapping[str, Any],
                    error: type[Exception]) -> None:
        """Refuse to resume the search `record` (from `begin`) on another
        store than it began on (`Store.identity`: trials of two stores must
        not be compared)."""
        if record and record.get("store_identity"):
            check_store_identity(record["store_identity"], store, str(self.path), error)

    def read_record(self, config: ConfigBase, resumable: Sequence[str], error: type[Exception]) -> dict:
        """``search.json``, refused unless its settings are `config`'s (fields
        added to the config since it was written read at their defaults)."""
        record = io.read_json(self.record_file, error)
        if record.get("run_type") != "search":
            raise error(f"{self.record_file} is not a search record (run_type {record.get('run_type')!r})")
        diff = config.differences(record.get("config") or {}, resumable)
        if diff:
            raise error(f"{self.path} holds a search with other settings ({', '.join(diff)}); run it with the same "
                        "settings to resume it (only --max-trials may change), or choose another --out")
        return record

    def write_record(self, record: dict) -> None:
        io.atomic_write_json(self.record_file, record)

    def lock(self, what: str, error: type[Exception]):
        """Refuse a second process doing `what` in this folder (made if new)."""
        return io.exclusive_lock(self.path, what, error)

    @contextlib.contextmanager
    def join(self, config: ConfigBase, resumable: Sequence[str], error: type[Exception],
             tuner_id: str) -> Iterator[dict]:
        """A distributed search's worker `tuner_id` joins the chief's search:
        its settings must be the chief's (`read_record`), and one process per
        tuner id (the lock file ``.lock.<tuner_id>``). Yields the record."""
        record = self.read_record(config, resumable, error)
        name = ".lock." + re.sub(r"[^A-Za-z0-9_.-]", "_", tuner_id)
        with io.exclusive_lock(self.path, f"search worker {tuner_id}", error, name=name):
            yield record

    def write_trials(self, text: str) -> None:
        io.atomic_write_text(self.trials_file, text)

