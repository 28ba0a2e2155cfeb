"""Training an adapter on a store: `FitConfig` -> a run folder.

The run folder (`bertvision.runs.RunFolder`) holds ``config.json`` (this
FitConfig, with the complete `ModelConfig`), ``model.keras`` (the adapter
with the best epoch's weights), ``results.json`` (`RunResults`),
``predictions/<split>.npz`` (the best epoch's predictions of each eval
split) and ``logs/`` (TensorBoard scalars). While training, ``state/`` holds
the last epoch's training state, so a killed fit resumes.

Training is `bertvision.training.trainer.Trainer`: Keras ``fit`` with AdamW under a
warmup + linear (or cosine) decay; after every epoch the eval splits are
predicted and scored with the official metrics, the best epoch on the task's
main metric is kept, and training stops early after ``patience`` epochs
without improvement.

Example:
    >>> config = FitConfig(store=STORE, out="runs/sst2-pooler",   # STORE: 32 SST-2 examples
    ...                    adapter={"kind": "adapter_pooler", "adapter_dim": 64}, epochs=1, verbose=0)
    >>> results = fit(config)
    >>> results.method, sorted(results.dev_metrics), [point.epoch for point in results.history]
    ('adapter_pooler', ['accuracy'], [1.0])
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from bertvision import io
from bertvision.config import (PER_TOKEN_KINDS, SCHEDULES, STRATEGIES, ConfigBase, check_choice, check_fraction,
                               check_non_negative, check_nonnegative_int, check_positive, check_positive_int)
from bertvision.distribute import get_strategy, is_chief, prepare_multi_worker
from bertvision.errors import FitError
from bertvision.inference.cosine import best_threshold, pair_cosines
from bertvision.inference.predict import make_infer_fn, pad_to_for, predict_store
from bertvision.lifecycle import RunTask, TrainOutcome, run_task
from bertvision.models import FIT_KINDS, ModelConfig, build_model, layer_weights, trainable_params
from bertvision.models.backbone import backbone_param_count
from bertvision.runs import RunFolder, RunResults, choose_dev_thresholds, epoch_selection, merge_split_metrics
from bertvision.store.format import Store, open_store
from bertvision.data.tasks import TaskSpec
from bertvision.training.trainer import Schedule, Trainer, compile_for_task, make_optimizer, span_targets

__all__ = ["RESUME_IGNORED", "AdapterFit", "CosineFit", "FitConfig", "StorePlan", "build_adapter_trainer",
           "check_batch_size", "fit"]


# FitConfig fields that may change when a run is resumed (or kept by bertvision.api.fit)
RESUME_IGNORED = ("command", "verbose", "out", "verify")


@dataclass
class FitConfig(ConfigBase):
    """Everything that determines a fit run (saved as ``RUN_DIR/config.json``).

    `adapter` holds `bertvision.models.ModelConfig` fields: at least
    ``kind``; the store-derived ones (task kind, labels, layers, hidden,
    max_seq_len, input dtype) are filled in from the store by `fit` and
    saved complete. `search` names the search whose best trial this run
    retrains (set by `bertvision.search.tuner`).

    >>> c = FitConfig(store="tfrecords/sst2", out="runs/a", adapter={"kind": "cnn"}, epochs=3)
    >>> FitConfig.from_dict(c.to_dict()) == c
    True
    """

    store: str
    out: str
    adapter: dict = field(default_factory=lambda: {"kind": "adapter_pooler"})
    train_split: str = "train"
    eval_splits: list | None = None  # None: the task's eval splits present in the store
    epochs: int = 10
    batch_size: int = 64  # global (all replicas together)
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all training steps
    schedule: str = "linear"  # decay after warmup: linear | cosine | constant
    seed: int = 0
    train_fraction: float = 1.0
    strategy: str = "default"
    tpu: str | None = None
    patience: int | None = None  # epochs without improvement before stopping (None: never)
    jit_compile: bool = True
    steps_per_execution: int = 1
    verbose: int = 1
    search: dict | None = None
    verify: bool = True  # read every shard once before training (checksums, record counts, sizes)
    command: list = field(default_factory=list)
    label_column: str | None = None  # a user task's store: the label column to train a head for (None: the first)
    group_by_length: int = 0  # sequence stores: batches of similar length from every N batches' worth (0: off)

    error = FitError

    def validate(self) -> None:
        if not isinstance(self.adapter, dict) or "kind" not in self.adapter:
            raise FitError(f"adapter must be a dict of ModelConfig fields with a 'kind', got {self.adapter!r}")
        check_choice("adapter", self.adapter["kind"], FIT_KINDS, FitError)
        for name in ("epochs", "batch_size", "eval_batch_size", "steps_per_execution"):
            check_positive_int(name, getattr(self, name), FitError)
        check_positive("lr", self.lr, FitError)
        check_non_negative("weight_decay", self.weight_decay, FitError)
        check_fraction("warmup", self.warmup, low_open=False, high_open=True, error=FitError)
        check_choice("schedule", self.schedule, SCHEDULES, FitError)
        check_fraction("train_fraction", self.train_fraction, error=FitError)
        check_choice("strategy", self.strategy, STRATEGIES, FitError)
        if self.patience is not None:
            check_positive_int("patience", self.patience, FitError)
        check_nonnegative_int("group_by_length", self.group_by_length, FitError)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise FitError(f"--seed must be an integer, got {self.seed!r}")

    @classmethod
    def as_read(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """`ConfigBase.as_read`, the nested `adapter` included: a run saved
        before a `ModelConfig` field existed reads it at its default."""
        out = super().as_read(saved)
        if isinstance(out.get("adapter"), dict):
            out = {**out, "adapter": ModelConfig.as_read(out["adapter"])}
        return out

    def hyperparameters(self) -> dict:
        """The training and adapter settings a report compares runs on."""
        out = {k: getattr(self, k) for k in ("lr", "batch_size", "epochs", "weight_decay", "warmup", "schedule",
                                             "patience", "seed", "train_fraction")}
        if self.group_by_length:
            out["group_by_length"] = self.group_by_length
        out.update(ModelConfig.user_fields(self.adapter))
        return out


class StorePlan:
    """What a fit (and every trial of a search) works out once from the
    store: the opened store, its task, the training split, the eval splits
    (those asked for, all in the store; else the task's that are) and a
    seeded `fraction` of the training records (``indices``, None for all;
    ``train_examples``, ``train_records``). A search makes one and hands it
    to `AdapterFit` for its best retrain.

    >>> plan = StorePlan(open_store(STORE), "train", None)
    >>> plan.task.name, plan.eval_splits, plan.train_records
    ('sst2', ['dev'], 32)
    """

    def __init__(self, store: Store, train_split: str, eval_splits: list | None, error=FitError,
                 fraction: float = 1.0, seed: int = 0):
        self.store, self.task, self.train_split = store, store.task_spec, train_split
        if train_split not in store.splits:
            raise error(f"{store.path} has no training split {train_split!r}; it has {store.splits}")
        if eval_splits:
            missing = [s for s in eval_splits if s not in store.splits]
            if missing:
                raise error(f"{store.path} has no split(s) {missing}; it has {store.splits}")
            self.eval_splits = list(eval_splits)
        else:
            self.eval_splits = [s for s in self.task.eval_splits if s in store.splits]
            if not self.eval_splits and not self.task.is_preset:
                raise error(f"{store.path} has no dev split to choose the best epoch on (it has {store.splits}); "
                            "extract one with --dev-fraction F or --split dev=FILE, or give --eval-split")
            if not self.eval_splits:
                raise error(f"{store.path} has none of {self.task.name}'s eval splits {list(self.task.eval_splits)} "
                            f"(it has {store.splits}); extract one or give --eval-split")
        self.indices, self.train_examples, self.train_records = self.train_selection(fraction, seed)
        unlabelled = [s for s in self.eval_splits if not store.has_labels(s)]
        if unlabelled:  # refused here, before any run folder is made, not after the first epoch
            raise error(f"{store.path}: split {unlabelled[0]!r} has no gold labels to evaluate against; give a "
                        "labelled --eval-split (e.g. dev)")

    def model_config(self, adapter: dict, error=FitError) -> ModelConfig:
        """The complete `ModelConfig` of `adapter` on this store (`ModelConfig.from_store`)."""
        return ModelConfig.from_store(self.store, adapter, error)

    def train_selection(self, fraction: float, seed: int) -> tuple:
        """``(record indices or None, examples, records)`` of a seeded
        `fraction` of the training split (`Store.select_fraction`)."""
        indices, examples = self.store.select_fraction(self.train_split, fraction, seed)
        records = self.store.num_records(self.train_split) if indices is None else len(indices)
        return indices, int(examples), int(records)


class StoreEvaluation:
    """Predict and score the eval splits of a store: ``model -> (merged
    metrics, {split: Predictions})``, one compiled inference step per model."""

    def __init__(self, store: Store, splits: list[str], task: TaskSpec, batch_size: int, jit_compile: bool):
        self.store, self.splits, self.task = store, list(splits), task
        self.batch_size, self.jit_compile = batch_size, jit_compile
        self.examples = {s: store.examples(s) for s in splits} if store.task_kind in PER_TOKEN_KINDS else {}
        self._infer: dict = {}

    def __call__(self, model):
        infer = self._infer.setdefault(id(model), make_infer_fn(model, self.jit_compile))
        per_split, preds = {}, {}
        for split in self.splits:
            preds[split] = predict_store(model, self.store, split, self.batch_size, infer=infer,
                                         examples=self.examples.get(split))
            per_split[split] = preds[split].evaluate()
        return merge_split_metrics(per_split, self.task), preds


def check_batch_size(batch_size: int, strategy) -> None:
    """A global batch splits evenly over the strategy's replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise FitError(f"--batch-size {batch_size} must be a multiple of the {replicas} replicas")


def mix_batches(model, store: Store, split: str, batch_size: int = 256):
    """The feature batches of `split` that a per-example layer mix's mean
    weights are read over (`bertvision.models.layer_weights`)."""
    return (features for features, _ in store.dataset(split, batch_size, pad_to=pad_to_for(model)))


def check_group_by_length(store: Store, kind: str) -> None:
    """Raise `FitError` unless ``--group-by-length`` applies: a trained
    adapter on a ``sequence`` store of one window per text."""
    if kind == "cosine":
        raise FitError("--group-by-length groups training batches; --adapter cosine trains nothing")
    if not store.is_sequence or store.windowed:
        what = "a store of long documents as windows" if store.windowed else f"a {store.token_mode!r} store"
        raise FitError(f"--group-by-length batches the texts of a 'sequence' store by length; {store.path} is {what}")


def build_adapter_trainer(model_config: ModelConfig, store: Store, *, train_split: str, eval_splits: list[str],
                          epochs: int, batch_size: int, lr: float, seed: int, weight_decay: float = 0.01,
                          warmup: float = 0.1, schedule: str = "linear", train_indices=None, train_records=None,
                          patience: int | None = None, jit_compile: bool = True, steps_per_execution: int = 1,
                          eval_batch_size: int = 256, strategy=None, state_dir=None, log_dir=None, verbose: int = 0,
                          chief: bool = True, callbacks=(), initial_weights=None, restarting: bool = False,
                          group_by_length: int = 0) -> Trainer:
    """The `Trainer` of one adapter on a store (compiled model, data,
    evaluation): what `fit` runs and what every search trial runs.
    `initial_weights` start the adapter from given weights (a Hyperband
    trial continuing another); `group_by_length` batches texts of similar
    length (`Store.training_dataset`, which refuses a store it does not
    apply to; `fit` checks it before the run folder is made)."""
    distribute = strategy is not None and strategy is not tf.distribute.get_strategy()
    strategy = strategy or tf.distribute.get_strategy()
    task = store.task_spec
    records = train_records if train_records is not None else store.num_records(train_split)
    check_batch_size(batch_size, strategy)
    steps_per_epoch = max(1, math.ceil(records / batch_size))
    schedule_ = Schedule.epochs(steps_per_epoch, epochs)
    with strategy.scope():
        model = build_model(model_config)
        if initial_weights is not None:
            model.set_weights(initial_weights)
        optimizer = make_optimizer(lr, schedule_.total_steps, warmup=warmup, schedule=schedule,
                                   weight_decay=weight_decay)
        compile_for_task(model, model_config.task_kind, optimizer, jit_compile, steps_per_execution)
    pad_to = pad_to_for(model)
    span = store.task_kind == "span"

    def train_data(first_step: int):
        def dataset_fn(input_context=None):
            ds = store.training_dataset(train_split, batch_size, seed=seed, steps_per_epoch=steps_per_epoch,
                                        epochs=epochs, first_step=first_step, take_indices=train_indices,
                                        input_context=input_context, pad_to=pad_to,
                                        group_by_length=group_by_length)
            return ds.map(lambda f, y: (f, span_targets(y))) if span else ds

        return strategy.distribute_datasets_from_function(dataset_fn) if distribute else dataset_fn()

    prepare_multi_worker(model, strategy)
    return Trainer(model, main_metric=task.main_metric, schedule=schedule_, train_data=train_data,
                   evaluate=StoreEvaluation(store, eval_splits, task, eval_batch_size, jit_compile),
                   state_dir=state_dir, select_best=True, patience=patience, examples_per_step=batch_size,
                   verbose=verbose, log_dir=log_dir, strategy=strategy, chief=chief, callbacks=callbacks,
                   restarting=restarting)


def choose_thresholds(outcome, eval_splits: list[str], task: TaskSpec) -> list | None:
    """Multi-label: one threshold per label chosen on the first eval split
    (dev) at the best epoch (`bertvision.runs.choose_dev_thresholds`); the
    best epoch's predictions and metrics are then those at these thresholds.
    None for other kinds."""
    thresholds = choose_dev_thresholds(outcome.predictions, eval_splits[0])
    if thresholds is not None:
        outcome.best_metrics.update(merge_split_metrics({s: outcome.predictions[s].evaluate() for s in eval_splits},
                                                        task))
    return thresholds


class CosineFit(RunTask):
    """``--adapter cosine`` as a `bertvision.lifecycle.RunTask`: the zero-shot
    cosine of a separately encoded pair as a run of its own, beside the
    trained pair adapters. No training: for two classes the threshold (and
    which class high cosines mean) is chosen on the training split
    (`bertvision.inference.cosine`), never on a split it reports;
    ``model.keras`` predicts it (`CosineResidualHead`)."""

    run_type = "fit"
    what = "a cosine run"
    resume_free = RESUME_IGNORED

    def __init__(self, config: FitConfig, plan: StorePlan):
        self.config, self.plan, self.store = config, plan, plan.store
        self.model_config = plan.model_config(config.adapter)
        config.adapter = self.model_config.to_dict()

    def store_identity(self) -> dict:
        return self.store.identity()

    def train(self, run: RunFolder) -> TrainOutcome:
        c, store, task = self.config, self.store, self.plan.task
        layer = self.model_config.layers[-1] if self.model_config.layers is not None else -1
        self.model = build_model(self.model_config)
        self.chosen = {"layer": store.layers[layer], "threshold": None, "positive_label": None}
        if task.kind == "classification":
            threshold, positive = best_threshold(*pair_cosines(store, c.train_split, layer), task.main_metric)
            self.model.get_layer("cosine_head").set_threshold(threshold, positive)
            self.chosen.update(threshold=threshold, positive_label=task.label_names[positive])
        metrics, predictions = StoreEvaluation(store, self.plan.eval_splits, task, c.eval_batch_size,
                                               c.jit_compile)(self.model)
        return TrainOutcome(history=[], best_epoch=None, best_metrics=metrics, predictions=predictions,
                            train_seconds=0.0)

    def result_fields(self, outcome: TrainOutcome) -> dict[str, Any]:
        c, store, task = self.config, self.store, self.plan.task
        return dict(task=task.name, method="cosine", main_metric=task.main_metric, eval_splits=self.plan.eval_splits,
                    hyperparameters={**self.chosen, "threshold_chosen_on": c.train_split
                                     if self.chosen["threshold"] is not None else None},
                    seed=c.seed, train_fraction=1.0, train_examples=0, train_records=0, trainable_params=0,
                    backbone_params=backbone_param_count(store.backbone), param_share=0.0, backbone=store.backbone,
                    store=c.store, store_signature=store.signature(), store_manifest_sha256=store.manifest_sha256,
                    layers=store.layers, token_mode=store.token_mode, task_spec=task.to_dict())

    def environment(self) -> dict[str, Any]:
        return {"strategy": self.config.strategy, "replicas": 1, "jit_compile": self.config.jit_compile}

    def save(self, run: RunFolder, outcome: TrainOutcome) -> None:
        with io.atomic_path(run.model_file) as tmp:
            self.model.save(tmp)


class AdapterFit(RunTask):
    """An adapter fit as a `bertvision.lifecycle.RunTask`: everything is
    checked when it is made (before any folder is created); `train` runs
    the one trainer on the store."""

    run_type = "fit"
    what = "an adapter fit"
    resume_free = RESUME_IGNORED

    def __init__(self, config: FitConfig, plan: StorePlan, strategy, chief: bool = True):
        self.config, self.plan, self.store, self.strategy, self.chief = config, plan, plan.store, strategy, chief
        self.model_config = plan.model_config(config.adapter)
        config.adapter = self.model_config.to_dict()
        check_batch_size(config.batch_size, strategy)  # every refusal before the run folder is made

    def store_identity(self) -> dict:
        return self.store.identity()

    def run_folder(self) -> RunFolder:
        """``config.out``; a multi-worker fit's other workers train in a
        temporary folder (removed when done)."""
        return RunFolder(self.config.out if self.chief else tempfile.mkdtemp(prefix="bertvision-worker-"))

    def train(self, run: RunFolder) -> TrainOutcome:
        c = self.config
        keras.utils.set_random_seed(c.seed)
        indices, self.train_examples, self.train_records = self.plan.train_selection(c.train_fraction, c.seed)
        self.trainer = build_adapter_trainer(
            self.model_config, self.store, train_split=c.train_split, eval_splits=self.plan.eval_splits,
            epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=c.seed, weight_decay=c.weight_decay,
            warmup=c.warmup, schedule=c.schedule, train_indices=indices, train_records=self.train_records,
            patience=c.patience, jit_compile=c.jit_compile, steps_per_execution=c.steps_per_execution,
            eval_batch_size=c.eval_batch_size, strategy=self.strategy, state_dir=run.state_dir,
            log_dir=run.logs_dir, verbose=c.verbose if self.chief else 0, chief=self.chief,
            restarting=run.resuming, group_by_length=c.group_by_length)
        try:
            outcome = self.trainer.run()
        except tf.errors.DataLossError as err:  # a corrupt shard not verified first (--no-verify)
            raise self.store.corruption_error([c.train_split, *self.plan.eval_splits], err) from None
        self.thresholds = choose_thresholds(outcome, self.plan.eval_splits, self.plan.task)
        self.export = build_model(self.model_config)  # uncompiled: model.keras holds only the adapter
        self.export.set_weights(self.trainer.model.get_weights())
        return outcome

    def result_fields(self, outcome: TrainOutcome) -> dict[str, Any]:
        c, store = self.config, self.store
        n_trainable = trainable_params(self.export)
        n_backbone = backbone_param_count(store.backbone)
        history = outcome.history
        steady = history[1:] or history  # after the first epoch (tracing, compiling, caching)
        seconds = ([b.train_time_s - a.train_time_s for a, b in zip(history, history[1:])]
                   if len(history) > 1 else [history[0].train_time_s])
        speed = sum(h.examples_per_s * s for h, s in zip(steady, seconds)) / max(sum(seconds), 1e-9)
        return dict(task=self.plan.task.name, method=self.model_config.kind, main_metric=self.plan.task.main_metric,
                    eval_splits=self.plan.eval_splits, hyperparameters=c.hyperparameters(), seed=c.seed,
                    train_fraction=c.train_fraction, train_examples=self.train_examples,
                    train_records=self.train_records, trainable_params=n_trainable, backbone_params=n_backbone,
                    param_share=(n_trainable / n_backbone) if n_backbone else None,
                    train_examples_per_s=round(speed, 1), backbone=store.backbone, store=c.store,
                    store_signature=store.signature(), store_manifest_sha256=store.manifest_sha256,
                    layers=store.layers, token_mode=store.token_mode,
                    layer_weights=layer_weights(self.export,
                                                mix_batches(self.export, store, self.plan.eval_splits[0])),
                    search=c.search, task_spec=self.plan.task.to_dict(), thresholds=self.thresholds,
                    selection=epoch_selection(outcome.history, outcome.best_epoch, self.plan.task.main_metric,
                                              self.plan.eval_splits[0], self.plan.eval_splits))

    def environment(self) -> dict[str, Any]:
        return {"strategy": self.config.strategy, "replicas": int(self.strategy.num_replicas_in_sync),
                "jit_compile": self.config.jit_compile}

    def save(self, run: RunFolder, outcome: TrainOutcome) -> None:
        with io.atomic_path(run.model_file) as tmp:
            self.export.save(tmp)


def fit(config: FitConfig, strategy=None) -> RunResults:
    """Train the adapter `config` describes and write its run folder
    (see the module docstring), through `bertvision.lifecycle.run_task`.
    Returns its `RunResults`.

    A folder with an unfinished run of the same settings is resumed from its
    last finished epoch. `strategy` overrides `config.strategy` (an already
    created `tf.distribute` strategy). A caller that has opened the store
    already (a search's best retrain) runs ``AdapterFit(config, plan,
    strategy)`` through `run_task` itself.
    """
    # the strategy first: multi-worker set-up must precede any other TensorFlow op
    strategy = strategy or get_strategy(config.strategy, config.tpu)
    plan = StorePlan(open_store(config.store).head(config.label_column), config.train_split, config.eval_splits)
    if config.group_by_length:  # refused before the run folder is made
        check_group_by_length(plan.store, config.adapter["kind"])
    if config.verify:  # after the cheap checks: reading every shard of a large store takes a while
        for split in plan.store.splits:
            plan.store.verify(split)
    if config.adapter["kind"] == "cosine":  # no training: the zero-shot cosine as a run of its own
        return run_task(CosineFit(config, plan), RunFolder(config.out))
    task = AdapterFit(config, plan, strategy, chief=is_chief(strategy))
    return run_task(task, task.run_folder())
