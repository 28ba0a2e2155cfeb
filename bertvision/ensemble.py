"""Per-example predictions of a run, and ensembles of runs.

Every run that predicts a split keeps what it predicted in
``RUN_DIR/predictions/<split>.npz`` (`Predictions`), one format for BERT
fine-tuning runs, adapter runs and ensembles:

- ``task``, ``split`` (0-d str), ``uids [N]`` str: the examples, in order;
- classification: ``probabilities [N, C]`` float32, ``labels [N]`` int (-1 =
  unlabelled);
- regression: ``scores [N]`` float32, ``labels [N]`` float (NaN = unlabelled);
- span (SQuAD): one row per window, ``window_uids [W]`` str, ``window_index
  [W]`` int (0, 1, ... within a question), ``start_logits`` / ``end_logits
  [W, L]`` float32, ``offsets [W, L, 2]`` int32 (character offsets in the
  context, -1 outside it); per question ``contexts [N]`` str and ``answers
  [N]`` str (JSON list of gold answer texts, ``[]`` when unanswerable).

`combine` averages (or takes the maximum of) the members' probabilities,
scores or per-window logits, after checking the members predicted the same
examples of the same task; `Predictions.evaluate` scores with the official
metrics (span: n-best decoding from `bertvision.squad`, then the SQuAD 2.0
script).

Example:
    >>> a = load_run_predictions("runs/sst2-bert", "dev")
    >>> b = load_run_predictions("runs/sst2-adapter", "dev", store="tfrecords/sst2")
    >>> ens = combine([a, b], "mean")
    >>> ens.evaluate()
    {'accuracy': 0.87}
"""

from __future__ import annotations

import json
import os
import uuid as _uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["COMBINE_MODES", "EnsembleConfig", "EnsembleError", "Predictions", "combine",
           "load_run_predictions", "predictions_path", "run_ensemble"]

COMBINE_MODES = ("mean", "max")
# Logit written at padding positions when windows of different lengths meet.
PAD_LOGIT = -1e4


class EnsembleError(ValueError):
    """Runs that cannot be combined (different tasks, examples or windows)."""


def predictions_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN_DIR/predictions/<split>.npz``."""
    return Path(run_dir) / "predictions" / f"{split}.npz"


@dataclass
class Predictions:
    """What a run predicted for every example of one split (see the module docstring).

    >>> p = Predictions("sst2", "dev", np.array(["0", "1"]),
    ...                 probabilities=np.array([[0.9, 0.1], [0.2, 0.8]]), labels=np.array([0, 1]))
    >>> p.evaluate()
    {'accuracy': 1.0}
    """

    task: str
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
    source: str = ""

    def __post_init__(self) -> None:
        from bertvision.tasks import get_task

        self.kind = get_task(self.task).kind
        self.uids = np.asarray([str(u) for u in self.uids], dtype=str)
        n = len(self.uids)
        where = f"predictions of {self.source or self.task + '/' + self.split}"
        if len(set(self.uids.tolist())) != n:
            raise EnsembleError(f"{where}: duplicate uids")
        need = {"classification": ("probabilities",), "regression": ("scores",),
                "span": ("window_uids", "window_index", "start_logits", "end_logits", "offsets",
                         "contexts", "answers")}[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise EnsembleError(f"{where}: a {self.kind} task needs {missing}")
        if self.kind == "classification":
            self.probabilities = np.asarray(self.probabilities, np.float32)
            if self.probabilities.ndim != 2 or len(self.probabilities) != n:
                raise EnsembleError(f"{where}: probabilities shape {self.probabilities.shape}, expected [{n}, C]")
        elif self.kind == "regression":
            self.scores = np.asarray(self.scores, np.float32).reshape(-1)
            if len(self.scores) != n:
                raise EnsembleError(f"{where}: {len(self.scores)} scores for {n} uids")
        else:
            self.window_uids = np.asarray([str(u) for u in self.window_uids], dtype=str)
            self.window_index = np.asarray(self.window_index, np.int32)
            self.start_logits = np.asarray(self.start_logits, np.float32)
            self.end_logits = np.asarray(self.end_logits, np.float32)
            self.offsets = np.asarray(self.offsets, np.int32)
            w = len(self.window_uids)
            shape = self.start_logits.shape
            if len(shape) != 2 or shape[0] != w or self.end_logits.shape != shape \
                    or self.offsets.shape != shape + (2,) or self.window_index.shape != (w,):
                raise EnsembleError(f"{where}: window arrays disagree: {w} window uids, start {shape}, "
                                    f"end {self.end_logits.shape}, offsets {self.offsets.shape}")
            self.contexts = np.asarray(self.contexts, dtype=str)
            self.answers = np.asarray(self.answers, dtype=str)
            if len(self.contexts) != n or len(self.answers) != n:
                raise EnsembleError(f"{where}: contexts/answers need one entry per uid ({n})")
            unknown = set(self.window_uids.tolist()) - set(self.uids.tolist())
            if unknown:
                raise EnsembleError(f"{where}: windows of unknown questions, e.g. {sorted(unknown)[:3]}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if len(self.labels) != n:
                raise EnsembleError(f"{where}: {len(self.labels)} labels for {n} uids")

    # ------------------------------------------------------------------ io
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` layout (``task`` and ``split`` as plain strings)."""
        out = {"task": str(self.task), "split": str(self.split)}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("task", "split", "source") and value is not None:
                out[f.name] = np.asarray(value)
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` atomically (temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{_uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, **self.to_arrays())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, source: str | None = None) -> "Predictions":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no predictions file {path}")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(arrays) - known)
        if unknown or "task" not in arrays or "uids" not in arrays:
            raise EnsembleError(f"{path}: not a predictions file (keys {sorted(arrays)})")
        kwargs = {k: v for k, v in arrays.items()}
        kwargs["task"], kwargs["split"] = str(kwargs["task"]), str(kwargs["split"])
        return cls(**kwargs, source=source or str(path))

    # ------------------------------------------------------------- scoring
    def decode(self, **kwargs: Any):
        """Span tasks: n-best decoding of the windows (`bertvision.squad.decode_squad`)."""
        from bertvision.squad import SquadWindows, decode_squad

        if self.kind != "span":
            raise ValueError(f"decode is for span tasks; {self.task} is {self.kind}")
        contexts = dict(zip(self.uids.tolist(), self.contexts.tolist()))
        windows = SquadWindows(self.window_uids.tolist(), self.offsets, contexts)
        return decode_squad(windows, self.start_logits, self.end_logits, **kwargs)

    def point_predictions(self) -> np.ndarray:
        """Class indices (classification) or scores (regression)."""
        if self.kind == "classification":
            return np.argmax(self.probabilities, axis=1)
        if self.kind == "regression":
            return self.scores
        raise ValueError("span predictions are decoded text: use decode()")

    def evaluate(self) -> dict[str, float]:
        """The task's official metrics (span: SQuAD 2.0, in percent)."""
        from bertvision.metrics import SquadGold, compute_metrics, squad_evaluate_examples

        if self.kind == "span":
            decoded = self.decode()
            golds = [SquadGold(u, tuple(json.loads(a))) for u, a in zip(self.uids.tolist(), self.answers.tolist())]
            result = squad_evaluate_examples(golds, decoded.predictions, decoded.na_probs)
            return {k: float(v) for k, v in result.items()}
        if self.labels is None:
            raise ValueError(f"{self.source or self.split}: no gold labels to evaluate against")
        labels = self.labels
        keep = labels >= 0 if self.kind == "classification" else np.isfinite(labels.astype(np.float64))
        if not np.any(keep):
            raise ValueError(f"{self.source or self.split}: the split has no labels")
        return compute_metrics(self.task, self.point_predictions()[keep], labels[keep])


# ---------------------------------------------------------------- loading


def _results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EnsembleError(f"{path}: not valid JSON ({err})") from err


def load_run_predictions(run_dir: str | os.PathLike, split: str, store: str | None = None) -> Predictions:
    """A run's predictions for `split`.

    Reads ``RUN_DIR/predictions/<split>.npz`` when present (fine-tuning
    runs, their checkpoint folders, ensembles, and fit runs that saved
    theirs); otherwise, for an adapter (fit) run, predicts the split from its
    store with ``bertvision.predict.predict_run`` (``store`` overrides the
    one its ``results.json`` names).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    path = predictions_path(run_dir, split)
    if path.is_file():
        return Predictions.load(path, source=str(run_dir))
    results = _results(run_dir)
    if results.get("run_type") != "fit":
        raise EnsembleError(f"{run_dir}: no {path.relative_to(run_dir)} and not an adapter (fit) run "
                            f"whose store could be predicted")
    store = store or results.get("store")
    if not store:
        raise EnsembleError(f"{run_dir}: results.json names no store; give --store")
    try:
        from bertvision.predict import predict_run
    except ImportError as err:
        raise EnsembleError(f"{run_dir}: predicting an adapter run needs bertvision.predict ({err})") from err
    return predictions_from_output(predict_run(str(run_dir), store, split), results.get("task"), split,
                                   str(run_dir), store)


def predictions_from_output(out: Any, task: str | None, split: str, source: str, store: str) -> Predictions:
    """Convert what ``predict_run`` returns (a `Predictions`, or a mapping with
    the keys of the ``.npz`` format) into `Predictions`."""
    if isinstance(out, Predictions):
        return out
    if hasattr(out, "to_arrays"):
        out = out.to_arrays()
    if not isinstance(out, dict) and hasattr(out, "__dict__"):
        out = dict(vars(out))
    if not isinstance(out, dict):
        raise EnsembleError(f"{source}: predict_run returned {type(out).__name__}; expected a mapping")
    data = dict(out)
    data.setdefault("task", task)
    data.setdefault("split", split)
    if "window_uids" not in data and "start_logits" in data:
        raise EnsembleError(f"{source}: span predictions without window_uids/window_index")
    if data.get("contexts") is None and data.get("start_logits") is not None:
        data.update(_span_gold_from_store(store, split, data["uids"]))
    known = {f.name for f in fields(Predictions)}
    return Predictions(**{k: v for k, v in data.items() if k in known and k != "source"}, source=source)


def _span_gold_from_store(store: str, split: str, uids: Sequence[str]) -> dict:
    """Contexts and gold answers of span examples, from a store's examples file."""
    path = Path(store) / f"{split}.examples.jsonl"
    if not path.is_file():
        raise EnsembleError(f"{store}: no {split}.examples.jsonl to take contexts and answers from")
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[str(row["uid"])] = row
    contexts, answers = [], []
    for u in uids:
        row = rows.get(str(u))
        if row is None:
            raise EnsembleError(f"{store}: question {u!r} not in {path.name}")
        contexts.append(row["context"])
        answers.append(json.dumps([] if row.get("is_impossible") else list(row.get("answers", []))))
    return {"contexts": np.asarray(contexts, str), "answers": np.asarray(answers, str)}


# -------------------------------------------------------------- combining


def _check_aligned(members: Sequence[Predictions]) -> None:
    first = members[0]
    for other in members[1:]:
        if other.task != first.task:
            raise EnsembleError(f"cannot combine tasks {first.task!r} ({first.source}) and "
                                f"{other.task!r} ({other.source})")
        if len(other.uids) != len(first.uids) or not np.array_equal(other.uids, first.uids):
            a, b = set(first.uids.tolist()), set(other.uids.tolist())
            if a == b:
                detail = "the same examples in a different order"
            else:
                detail = (f"{len(a)} vs {len(b)} examples, {len(a - b)} only in the first, "
                          f"{len(b - a)} only in the second, e.g. {sorted(a ^ b)[:3]}")
            raise EnsembleError(f"runs do not predict the same {first.split} examples: {first.source} and "
                                f"{other.source} have {detail}; use runs over the same split, limit and sample")
        if first.kind == "classification" and other.probabilities.shape[1] != first.probabilities.shape[1]:
            raise EnsembleError(f"{first.source} has {first.probabilities.shape[1]} classes, "
                                f"{other.source} {other.probabilities.shape[1]}")
        if first.labels is not None and other.labels is not None and not np.array_equal(
                np.asarray(first.labels, np.float64), np.asarray(other.labels, np.float64), equal_nan=True):
            raise EnsembleError(f"{first.source} and {other.source} have different gold labels for the same uids")


def _window_keys(p: Predictions) -> list[tuple[str, int]]:
    return list(zip(p.window_uids.tolist(), p.window_index.tolist()))


def _padded(a: np.ndarray, length: int, value: float) -> np.ndarray:
    if a.shape[1] == length:
        return a
    pad = [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, constant_values=value)


def _combine_span(members: Sequence[Predictions], reduce) -> dict:
    first = members[0]
    keys = _window_keys(first)
    length = max(m.start_logits.shape[1] for m in members)
    offsets = _padded(first.offsets, length, -1)
    starts, ends = [], []
    for m in members:
        order = {k: i for i, k in enumerate(_window_keys(m))}
        if set(order) != set(keys):
            raise EnsembleError(
                f"{first.source} and {m.source} split the questions into different windows "
                f"({len(keys)} vs {len(order)}); featurize both with the same max_seq_len/doc_stride/max_query_len")
        rows = np.asarray([order[k] for k in keys])
        m_offsets = _padded(m.offsets[rows], length, -1)
        real = (offsets[..., 0] >= 0) | (m_offsets[..., 0] >= 0)
        if not np.array_equal(np.where(real[..., None], offsets, 0), np.where(real[..., None], m_offsets, 0)):
            raise EnsembleError(f"{first.source} and {m.source}: windows cover different context tokens "
                                f"(different tokenizer or featurization)")
        starts.append(_padded(m.start_logits[rows], length, PAD_LOGIT))
        ends.append(_padded(m.end_logits[rows], length, PAD_LOGIT))
    return {"window_uids": first.window_uids, "window_index": first.window_index, "offsets": offsets,
            "start_logits": reduce(np.stack(starts)), "end_logits": reduce(np.stack(ends)),
            "contexts": first.contexts, "answers": first.answers}


def combine(members: Sequence[Predictions], mode: str = "mean", source: str = "ensemble") -> Predictions:
    """Combine aligned predictions: ``mean`` (default) or ``max`` of the
    members' probabilities (max: renormalised to sum to 1), scores (mean only:
    ``max`` of regression scores is refused) or per-window start/end logits.

    >>> ens = combine([a, b], "max")
    """
    if mode not in COMBINE_MODES:
        raise ValueError(f"combine mode {mode!r}; choose one of {COMBINE_MODES}")
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two runs; got {len(members)}")
    _check_aligned(members)
    first = members[0]
    reduce = (lambda x: x.mean(axis=0)) if mode == "mean" else (lambda x: x.max(axis=0))
    labels = next((m.labels for m in members if m.labels is not None), None)
    base = dict(task=first.task, split=first.split, uids=first.uids, labels=labels, source=source)
    if first.kind == "classification":
        probs = reduce(np.stack([m.probabilities for m in members]))
        if mode == "max":
            probs = probs / probs.sum(axis=1, keepdims=True)
        return Predictions(**base, probabilities=probs)
    if first.kind == "regression":
        if mode != "mean":
            raise EnsembleError("regression runs are combined by the mean of their scores; --combine max "
                                "is for probabilities and logits")
        return Predictions(**base, scores=reduce(np.stack([m.scores for m in members])))
    return Predictions(**base, **_combine_span(members, reduce))


# -------------------------------------------------------------- the run


@dataclass
class EnsembleConfig:
    """``python -m pipelines.ensemble`` settings (saved as ``config.json``)."""

    runs: list
    out: str
    split: str = "dev"
    combine: str = "mean"
    stores: list | None = None  # one per run (None = the run's own), or a single store for all fit runs

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _method_name(path: str) -> str:
    results = _results(Path(path))
    if results.get("method"):
        return str(results["method"])
    info = Path(path) / "checkpoint.json"
    if info.is_file():
        return f"bert_finetune@{json.loads(info.read_text()).get('label', Path(path).name)}"
    return Path(path).name


def run_ensemble(config: EnsembleConfig) -> dict:
    """Load, align, combine and score the runs; write ``OUT/results.json``,
    ``OUT/config.json`` and ``OUT/predictions/<split>.npz``. Returns the results."""
    from bertvision.store import atomic_write_json

    if config.combine not in COMBINE_MODES:
        raise ValueError(f"--combine {config.combine!r}; choose one of {COMBINE_MODES}")
    if len(config.runs) < 2:
        raise EnsembleError(f"an ensemble needs at least two runs; got {len(config.runs)}")
    stores = list(config.stores or [])
    if len(stores) == 1:
        stores = stores * len(config.runs)
    if stores and len(stores) != len(config.runs):
        raise ValueError(f"--store: give one store for all runs or one per run ({len(config.runs)}); got {len(stores)}")
    stores = stores or [None] * len(config.runs)
    members = [load_run_predictions(r, config.split, s) for r, s in zip(config.runs, stores)]
    names = [_method_name(r) for r in config.runs]
    method = f"ensemble({config.combine}: {'+'.join(names)})"
    ensemble = combine(members, config.combine, source=config.out)
    from bertvision.tasks import get_task

    task = get_task(ensemble.task)
    member_metrics = [m.evaluate() for m in members]
    metrics = ensemble.evaluate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ensemble.save(predictions_path(out, config.split))
    results = {
        "task": task.name, "method": method, "run_type": "ensemble",
        "hyperparameters": {"combine": config.combine, "split": config.split},
        "members": [{"run": str(r), "method": n, "dev_metrics": mm}
                    for r, n, mm in zip(config.runs, names, member_metrics)],
        "main_metric": task.main_metric,
        "eval_split": config.split,
        "eval_examples": int(len(ensemble.uids)),
        "dev_metrics": metrics,
    }
    atomic_write_json(str(out / "config.json"), config.to_dict())
    atomic_write_json(str(out / "results.json"), results)
    return results
