"""SQuAD 2.0 answerability: is a question answerable at all?

The original study trained a classifier of that decision on the stored
activations (a layer mix, 0.001% of BERT's parameters) and compared it with
BERT's own null decision. Here:

- `fit_answerability(AnswerabilityConfig)` trains an adapter (default
  ``scalar_mix`` on the ``[CLS]`` token of every layer, `token_pooling="cls"`)
  on a SQuAD ``sequence`` store through the one trainer: each window is a
  binary example, "the answer is inside this window"; a question's
  probability of being answerable is the largest of its windows'. Writes a
  normal fit run folder (`RunResults` with ``answerable_accuracy``,
  ``answerable_f1`` ...; run_type ``fit``, method ``answerability:<kind>``).
- `span_decisions(predictions)`: the same decision read off any span run
  (BERT, an adapter): a question is answered when its decoded answer is not
  empty at the null-odds threshold.
- `answerability_metrics(decisions, gold)`: accuracy, precision, recall and
  F1 of "answerable" (the positive class), in [0, 1].

Example:
    >>> results = fit_answerability(AnswerabilityConfig(store="tfrecords/squad", out="runs/answerable"))  # doctest: +SKIP
    >>> results.dev_metrics["answerable_f1"]  # doctest: +SKIP
    0.76
    >>> answerability_metrics(span_decisions(bert_predictions), gold_answerable(bert_predictions))  # doctest: +SKIP
    {'answerable_accuracy': 0.70, 'answerable_f1': 0.72, ...}
    >>> m = answerability_metrics({"q1": True, "q2": True, "q3": False}, {"q1": True, "q2": False, "q3": False})
    >>> {k: round(float(v), 3) for k, v in m.items()}
    {'answerable_accuracy': 0.667, 'answerable_f1': 0.667, 'answerable_precision': 0.5, 'answerable_recall': 1.0, 'answerable_share': 0.333}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from bertvision.models.backbone import backbone_param_count
from bertvision.config import ConfigBase, check_positive, check_positive_int
from bertvision.errors import FitError
from bertvision.metrics import accuracy, f1
from bertvision.lifecycle import RunTask, TrainOutcome, run_task
from bertvision.models import ModelConfig, build_model, layer_weights, trainable_params
from bertvision.inference.predict import make_infer_fn
from bertvision.runs import Predictions, RunFolder, RunResults
from bertvision.store.format import Store, open_store
from bertvision.training.trainer import Schedule, Trainer, compile_for_task, make_optimizer

__all__ = ["AnswerabilityConfig", "answerability_metrics", "fit_answerability", "gold_answerable",
           "span_decisions"]

MAIN_METRIC = "answerable_f1"


def answerability_metrics(decisions: dict[str, bool], gold: dict[str, bool]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of "answerable" over the questions of `gold`."""
    qids = sorted(gold)
    missing = [q for q in qids if q not in decisions]
    if missing:
        raise FitError(f"no answerability decision for {len(missing)} question(s), e.g. {missing[:3]}")
    pred = np.asarray([int(decisions[q]) for q in qids])
    true = np.asarray([int(gold[q]) for q in qids])
    tp = float(((pred == 1) & (true == 1)).sum())
    precision = tp / pred.sum() if pred.sum() else 0.0
    recall = tp / true.sum() if true.sum() else 0.0
    return {"answerable_accuracy": accuracy(pred, true), "answerable_f1": f1(pred, true),
            "answerable_precision": precision, "answerable_recall": recall,
            "answerable_share": float(true.mean())}


def gold_answerable(predictions: Predictions) -> dict[str, bool]:
    """Question id -> whether it has a gold answer, from span predictions."""
    return {u: bool(json.loads(a)) for u, a in zip(predictions.uids.tolist(), predictions.answers.tolist())}


def span_decisions(predictions: Predictions, threshold: float = 0.0) -> dict[str, bool]:
    """Question id -> answered (a non-empty decoded answer at null-odds `threshold`)."""
    return {u: bool(text) for u, text in predictions.decode(threshold=threshold).predictions.items()}


@dataclass
class AnswerabilityConfig(ConfigBase):
    """An answerability classifier on a SQuAD sequence store (saved as ``config.json``)."""

    store: str
    out: str
    adapter: dict = field(default_factory=lambda: {"kind": "scalar_mix", "token_pooling": "cls"})
    train_split: str = "train"
    eval_split: str = "dev"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    seed: int = 0
    patience: int | None = 2
    jit_compile: bool = True
    verbose: int = 1
    command: list = field(default_factory=list)

    error = FitError

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            check_positive_int(name, getattr(self, name), FitError)
        check_positive("lr", self.lr, FitError)
        if not isinstance(self.adapter, dict) or "kind" not in self.adapter:
            raise FitError(f"adapter must be a dict of ModelConfig fields with a 'kind', got {self.adapter!r}")


def _classifier_config(store: Store, adapter: dict) -> ModelConfig:
    if store.task_kind != "span" or not store.is_sequence:
        raise FitError(f"{store.path}: answerability needs a SQuAD sequence store (task kind span); it holds "
                       f"{store.task_kind} {store.token_mode} activations")
    span_config = ModelConfig.from_store(store, adapter, FitError)  # the store's fields, checked
    return span_config.replace(task_kind="classification", num_labels=2)


class _Evaluation:
    """``model -> (metrics, {split: Predictions})``: per-window P(answer in
    window), a question's P(answerable) the largest of its windows'."""

    def __init__(self, store: Store, split: str, gold: dict[str, bool]):
        self.store, self.split, self.gold = store, split, gold
        self._infer = None

    def probabilities(self, model) -> dict[str, float]:
        self._infer = self._infer or make_infer_fn(model)
        best: dict[str, float] = {}
        for features, _ in self.store.dataset(self.split, 256, with_meta=True):
            logits = np.asarray(self._infer(features), np.float64)
            p = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))
            for uid, value in zip(features["uid"].numpy(), p):
                uid = uid.decode()
                best[uid] = max(best.get(uid, 0.0), float(value))
        return best

    def __call__(self, model):
        probs = self.probabilities(model)
        return answerability_metrics({u: probs[u] >= 0.5 for u in self.gold}, self.gold), {}


class Answerability(RunTask):
    """The answerability classifier as a `bertvision.lifecycle.RunTask`
    (checked when made, before any folder is created)."""

    run_type = "fit"
    what = "an answerability fit"
    resume_free = ("command", "verbose", "out")

    def __init__(self, config: AnswerabilityConfig):
        self.config = config
        self.store = store = open_store(config.store, verify=True)
        self.model_config = _classifier_config(store, config.adapter)
        for split in (config.train_split, config.eval_split):
            if split not in store.splits:
                raise FitError(f"{store.path} has no split {split!r}; it has {store.splits}")
        self.gold = {str(r["uid"]): not r.get("is_impossible") for r in store.examples(config.eval_split)}

    def train(self, run: RunFolder) -> TrainOutcome:
        config, store = self.config, self.store
        keras.utils.set_random_seed(config.seed)
        self.records = records = store.num_records(config.train_split)
        steps = max(1, math.ceil(records / config.batch_size))
        schedule = Schedule.epochs(steps, config.epochs)
        self.model = model = build_model(self.model_config)
        compile_for_task(model, "classification", make_optimizer(config.lr, schedule.total_steps,
                                                                 warmup=config.warmup,
                                                                 weight_decay=config.weight_decay),
                         config.jit_compile)

        def train_data(first_step):
            ds = store.training_dataset(config.train_split, config.batch_size, seed=config.seed,
                                        steps_per_epoch=steps, epochs=config.epochs, first_step=first_step)
            return ds.map(lambda f, y: (f, tf.cast(y["start_positions"] > 0, tf.int32)))

        trainer = Trainer(model, main_metric=MAIN_METRIC, schedule=schedule, train_data=train_data,
                          evaluate=_Evaluation(store, config.eval_split, self.gold), state_dir=run.state_dir,
                          select_best=True, patience=config.patience, examples_per_step=config.batch_size,
                          verbose=config.verbose, log_dir=run.logs_dir, restarting=run.resuming)
        return trainer.run()

    def result_fields(self, outcome: TrainOutcome) -> dict:
        config, store = self.config, self.store
        n_trainable, n_backbone = trainable_params(self.model), backbone_param_count(store.backbone)
        return dict(
            task="squad_v2", method=f"answerability:{self.model_config.kind}", main_metric=MAIN_METRIC,
            eval_splits=[config.eval_split],
            hyperparameters={"lr": config.lr, "batch_size": config.batch_size, "epochs": config.epochs,
                             **ModelConfig.user_fields(config.adapter)},
            seed=config.seed, train_fraction=1.0, train_examples=store.num_examples(config.train_split),
            train_records=self.records, trainable_params=n_trainable, backbone_params=n_backbone,
            param_share=(n_trainable / n_backbone) if n_backbone else None, backbone=store.backbone,
            store=config.store, store_signature=store.signature(), store_manifest_sha256=store.manifest_sha256,
            layers=store.layers, token_mode=store.token_mode,
            layer_weights=layer_weights(self.model))

    def store_identity(self) -> dict:
        return self.store.identity()

    def environment(self) -> dict:
        return {"jit_compile": self.config.jit_compile}


def fit_answerability(config: AnswerabilityConfig) -> RunResults:
    """Train the answerability classifier `config` describes; write its run
    folder (`bertvision.lifecycle.run_task`)."""
    return run_task(Answerability(config), RunFolder(config.out))
