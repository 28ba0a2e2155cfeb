"""Ensembles of runs: combining what several runs predicted for the same examples.

`combine` averages (or takes the maximum of) the members' probabilities,
scores or per-window logits (`bertvision.runs.Predictions`), after checking
the members predicted the same examples of the same task; the result scores
with the official metrics (span: n-best decoding from `bertvision.data.squad`,
then the SQuAD 2.0 script). `run_ensemble` writes an ensemble run folder.

Example:
    >>> a = load_run_predictions(RUN, "dev")                 # as the run saved them
    >>> b = load_run_predictions(RUN, "dev", store=STORE)    # predicted again from the store
    >>> ens = combine([a, b], "mean")    # two different runs in practice; here one run twice
    >>> ens.evaluate() == a.evaluate(), sorted(ens.evaluate())
    (True, ['accuracy'])

(``RUN``: a linear probe run on ``STORE``, 32 SST-2 dev examples.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertvision.config import ConfigBase, check_choice
from bertvision.errors import EnsembleError
from bertvision.inference.config import COMBINE_MODES
from bertvision.inference.predict import predict_run
from bertvision.lifecycle import RunTask, TrainOutcome, run_task
from bertvision.runs import PAD_LOGIT, Predictions, RunFolder, RunResults, read_checkpoint_info

__all__ = ["COMBINE_MODES", "EnsembleConfig", "combine", "load_run_predictions", "run_ensemble"]


def load_run_predictions(run_dir: str | os.PathLike, split: str, store: str | None = None) -> Predictions:
    """A run's predictions for `split`.

    Reads ``RUN_DIR/predictions/<split>.npz`` when present (fine-tuning
    runs, their checkpoint folders, ensembles, and fit runs that saved
    theirs); otherwise, for an adapter (fit) run, predicts the split from its
    store (``store`` overrides the one its results name).
    """
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise EnsembleError(f"run folder {run.path} does not exist")
    if run.has_predictions(split):
        return run.load_predictions(split)
    if not run.finished or run.results().run_type != "fit":
        raise EnsembleError(f"{run.path}: no predictions/{split}.npz and not an adapter (fit) run "
                            "whose store could be predicted")
    store = store or run.results().store
    if not store:
        raise EnsembleError(f"{run.path}: its results name no store; give --store")
    return predict_run(run.path, store, split)


# -------------------------------------------------------------- combining


def _check_aligned(members: Sequence[Predictions]) -> None:
    first = members[0]
    for other in members[1:]:
        if other.spec != first.spec:
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

    >>> a = load_run_predictions(RUN, "dev")
    >>> combine([a, a], "max").probabilities.shape
    (32, 2)
    """
    check_choice("combine", mode, COMBINE_MODES, EnsembleError)
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two runs; got {len(members)}")
    _check_aligned(members)
    first = members[0]
    reduce = (lambda x: x.mean(axis=0)) if mode == "mean" else (lambda x: x.max(axis=0))
    labels = next((m.labels for m in members if m.labels is not None), None)
    base = dict(task=first.spec, split=first.split, uids=first.uids, labels=labels, source=source)
    if first.kind == "multi_label":  # mean (or max) of each label's probability, at the first member's thresholds
        return Predictions(**base, probabilities=reduce(np.stack([m.probabilities for m in members])),
                           thresholds=first.thresholds)
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
class EnsembleConfig(ConfigBase):
    """``python -m pipelines.ensemble`` settings (saved as ``config.json``)."""

    runs: list
    out: str
    split: str = "dev"
    combine: str = "mean"
    stores: list | None = None  # one per run (None = the run's own), or a single store for all fit runs

    error = EnsembleError

    def validate(self) -> None:
        check_choice("combine", self.combine, COMBINE_MODES, EnsembleError)
        if len(self.runs) < 2:
            raise EnsembleError(f"an ensemble needs at least two runs; got {len(self.runs)}")
        if self.stores and len(self.stores) not in (1, len(self.runs)):
            raise EnsembleError(f"--store: give one store for all runs or one per run ({len(self.runs)}); "
                                f"got {len(self.stores)}")


def _method_name(path: str) -> str:
    run = RunFolder(path)
    if run.finished:
        return run.results().method
    info = read_checkpoint_info(run.path)
    if info is not None:
        return f"bert_finetune@{info.get('label', run.path.name)}"
    return run.path.name


class Ensemble(RunTask):
    """An ensemble as a `bertvision.lifecycle.RunTask`: the members are
    loaded, aligned, combined and scored when it is made (before any folder
    is created); there is no training."""

    run_type = "ensemble"
    what = "an ensemble"

    def __init__(self, config: EnsembleConfig):
        self.config = config
        stores = list(config.stores or [])
        if len(stores) == 1:
            stores = stores * len(config.runs)
        stores = stores or [None] * len(config.runs)
        members = [load_run_predictions(r, config.split, s) for r, s in zip(config.runs, stores)]
        self.names = [_method_name(r) for r in config.runs]
        self.ensemble = combine(members, config.combine, source=config.out)
        self.member_metrics = [m.evaluate() for m in members]
        self.metrics = self.ensemble.evaluate()

    def train(self, run: RunFolder) -> TrainOutcome:
        return TrainOutcome(history=[], best_epoch=None, best_metrics=self.metrics,
                            predictions={self.config.split: self.ensemble}, train_seconds=None)

    def result_fields(self, outcome: TrainOutcome) -> dict:
        config, task = self.config, self.ensemble.spec
        return dict(task=task.name, method=f"ensemble({config.combine}: {'+'.join(self.names)})",
                    main_metric=task.main_metric, eval_splits=[config.split],
                    hyperparameters={"combine": config.combine, "split": config.split}, train_examples=None,
                    members=[{"run": str(r), "method": n, "dev_metrics": mm}
                             for r, n, mm in zip(config.runs, self.names, self.member_metrics)],
                    task_spec=task.to_dict(),
                    thresholds=(None if self.ensemble.thresholds is None
                                else [float(t) for t in self.ensemble.thresholds]))


def run_ensemble(config: EnsembleConfig) -> RunResults:
    """Load, align, combine and score the runs; write the ensemble run folder
    (``config.json``, ``results.json``, ``predictions/<split>.npz``) through
    `bertvision.lifecycle.run_task`."""
    return run_task(Ensemble(config), RunFolder(config.out))
