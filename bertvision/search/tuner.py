"""Hyperparameter search over the adapter zoo with KerasTuner.

`search(SearchConfig(...))` tunes an adapter on a store and leaves a search
folder a person can open::

    SEARCH_DIR/search.json     SearchConfig, status, best trial and its
                               hyperparameters, best metric (run_type "search")
    SEARCH_DIR/tuner/          KerasTuner's own state (oracle.json,
                               trial_XX/trial.json) plus, per finished trial,
                               trial_XX/bertvision_trial.json (trainable
                               params, wall time, dev metrics) and
                               trial_XX/best.weights.npz
    SEARCH_DIR/trials.csv      one row per trial: trial_id, status,
                               hyperparameters, <main metric>,
                               trainable_params, wall_time_s, tuner_id
    SEARCH_DIR/best/           the best configuration retrained by
                               `bertvision.training.fit.fit`: a normal fit run folder
                               (`pipelines.predict`, `pipelines.ensemble`)

The space (`SearchSpace`): adapter ``kind``; which stored ``layers`` enter
the adapter (``all``, ``lastK``, ``every_other``, as
`bertvision.config.select_layers`; not for ``linear_probe``, which reads the
last layer); ``layer_pooling``, ``adapter_dim`` and (when given more than
``[0]``; sequence stores) ``transformer_blocks`` of ``adapter_pooler``;
``dropout``; ``lr``; ``batch_size``. A layer subset is `ModelConfig.layers`,
so the saved adapter still takes every stored layer and any store the run
fits predicts with it.

Every trial trains through the one trainer (`bertvision.training.fit.build_adapter_trainer`);
the objective is the task's official main dev metric
(`bertvision.data.tasks.TaskSpec.main_metric`; all are maximised), reported to the
tuner as ``val_<metric>``. Running the same search again resumes it:
KerasTuner reloads its oracle from ``SEARCH_DIR/tuner`` and reruns only the
trial that was interrupted, wherever a ``kill -9`` landed (KerasTuner's
state files are written atomically, `atomic_tuner_state`; a trial whose
training finished is not trained again).

Distributed (`SearchRole`, KerasTuner's own chief/worker set-up): start the
same command once with ``KERASTUNER_TUNER_ID=chief`` and once per worker with
``KERASTUNER_TUNER_ID=tuner0``, ``tuner1``, ..., all with
``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` naming the chief and
``--out`` a folder they share. The chief serves the oracle over gRPC and
writes the outputs; the workers train the trials. A worker killed mid-trial
and started again with the same id runs that trial again (the chief waits
for it).

Example:
    >>> config = SearchConfig(store="tfrecords/sst2", out="searches/sst2", max_trials=10, epochs=4)
    >>> summary = search(config)
    >>> summary["best_hyperparameters"], summary["best_metric"]
    ({'kind': 'adapter_pooler', 'layers': 'all', ...}, 0.85)
"""

from __future__ import annotations

import contextlib
import csv
import io as _stringio
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import keras_tuner as kt
import keras_tuner.src.utils as kt_utils
import numpy as np

from bertvision import io
from bertvision.config import STRATEGIES, ConfigBase, check_choice, check_fraction, check_positive_int, select_layers
from bertvision.distribute import get_strategy
from bertvision.errors import ConfigError, FitError, SearchError
from bertvision.training.fit import FitConfig, adapter_config, build_adapter_trainer, fit, resolve_eval_splits
from bertvision.models import KINDS, LAYER_POOLINGS, build_model, trainable_params
from bertvision.runs import RunFolder, check_store_identity
from bertvision.store.format import open_store
from bertvision.data.tasks import get_task

__all__ = ["PROJECT", "SPACE_NAMES", "TUNERS", "SearchConfig", "SearchRole", "SearchSpace", "atomic_tuner_state",
           "build_search_tuner", "layer_indices", "read_trial_rows", "search", "search_role", "work_for_chief",
           "write_trials_csv"]

TUNERS = ("random", "bayesian", "hyperband")
PROJECT = "tuner"  # KerasTuner project name: SEARCH_DIR/tuner
TRIAL_RECORD = "bertvision_trial.json"
TRIAL_WEIGHTS = "best.weights.npz"
# the hyperparameters of the space, in trials.csv column order
SPACE_NAMES = ("kind", "layers", "layer_pooling", "adapter_dim", "transformer_blocks", "dropout", "lr", "batch_size")
# settings that may change when a search is resumed
RESUMABLE = ("out", "max_trials", "verbose", "command")


def layer_indices(subset: str, num_layers: int) -> list[int] | None:
    """Stored-layer positions a subset name selects (``None``: all of them).

    >>> layer_indices("last3", 7), layer_indices("every_other", 7), layer_indices("all", 7)
    ([4, 5, 6], [0, 2, 4, 6], None)
    """
    try:
        chosen = select_layers(subset, num_layers, what="layer subset")
    except ConfigError as err:
        raise SearchError(f"{err} (the store has {num_layers} layers)") from err
    return None if len(chosen) == num_layers else chosen


# ------------------------------------------------------------------ the space


def _as_list(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


@dataclass
class SearchSpace(ConfigBase):
    """What the tuner may choose. Lists are choices; ``dropout`` and ``lr``
    are ``[min, max]`` ranges (``lr`` sampled on a log scale; equal ends fix
    the value).

    >>> SearchSpace(kinds=["adapter_pooler"], adapter_dims=[32, 64]).check(num_layers=7)
    """

    kinds: list = field(default_factory=lambda: list(KINDS))
    layer_subsets: list = field(default_factory=lambda: ["all", "last4", "every_other"])
    layer_poolings: list = field(default_factory=lambda: list(LAYER_POOLINGS))
    adapter_dims: list = field(default_factory=lambda: [32, 64, 128, 256])
    transformer_blocks: list = field(default_factory=lambda: [0])
    dropout: list = field(default_factory=lambda: [0.0, 0.5])
    lr: list = field(default_factory=lambda: [1e-4, 3e-3])
    batch_sizes: list = field(default_factory=lambda: [32, 64, 128])

    error = SearchError

    def __post_init__(self):
        for name in ("kinds", "layer_subsets", "layer_poolings", "adapter_dims", "transformer_blocks", "dropout", "lr",
                     "batch_sizes"):
            setattr(self, name, _as_list(getattr(self, name)))
        super().__post_init__()

    def validate(self) -> None:
        self.check(None)

    def check(self, num_layers: int | None) -> None:
        """Raise `SearchError` for an empty or impossible space; with
        `num_layers`, also for layer subsets the store cannot give."""

        def choices(name, values, allowed=None):
            if not values or len(set(map(str, values))) != len(values):
                raise SearchError(f"search space {name}: give distinct choices, got {values}")
            bad = [v for v in values if allowed is not None and v not in allowed]
            if bad:
                raise SearchError(f"search space {name}: unknown {bad}; choose from {', '.join(allowed)}")

        def ints(name, values, low=1, what="positive integers"):
            choices(name, values)
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < low]
            if bad:
                raise SearchError(f"search space {name}: must be {what}, got {bad}")

        def interval(name, values, low, high, low_open=False):
            ok = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if (not ok or values[0] > values[1] or values[0] < low or (low_open and values[0] <= low)
                    or values[1] >= high):
                raise SearchError(f"search space {name}: need [min, max] with {low} {'<' if low_open else '<='} "
                                  f"min <= max < {high}, got {values}")

        choices("kinds", self.kinds, KINDS)
        choices("layer_subsets", self.layer_subsets)
        for subset in self.layer_subsets:
            if subset not in ("all", "every_other") and not (subset.startswith("last") and subset[4:].isdigit()):
                raise SearchError(f"unknown layer subset {subset!r}: use all, lastK (e.g. last4) or every_other")
            if num_layers is not None:
                layer_indices(subset, num_layers)
        choices("layer_poolings", self.layer_poolings, LAYER_POOLINGS)
        ints("adapter_dims", self.adapter_dims)
        ints("transformer_blocks", self.transformer_blocks, low=0, what="integers >= 0")
        ints("batch_sizes", self.batch_sizes)
        interval("dropout", self.dropout, 0.0, 1.0)
        interval("lr", self.lr, 0.0, math.inf, low_open=True)

    def declare(self, hp) -> None:
        """Declare every hyperparameter on a KerasTuner `HyperParameters`
        (conditional ones inside their ``kind`` scopes)."""
        hp.Choice("kind", self.kinds)
        readers = [k for k in self.kinds if k != "linear_probe"]
        if readers:
            with hp.conditional_scope("kind", readers):
                hp.Choice("layers", self.layer_subsets)
        if "adapter_pooler" in self.kinds:
            with hp.conditional_scope("kind", ["adapter_pooler"]):
                hp.Choice("layer_pooling", self.layer_poolings)
                hp.Choice("adapter_dim", self.adapter_dims)
                if self.transformer_blocks != [0]:  # declared only when searched: a space without it samples as before
                    hp.Choice("transformer_blocks", self.transformer_blocks)
        _float(hp, "dropout", self.dropout, log=False)
        _float(hp, "lr", self.lr, log=True)
        hp.Choice("batch_size", self.batch_sizes)


def _float(hp, name, bounds, log):
    lo, hi = float(bounds[0]), float(bounds[1])
    if lo == hi:
        return hp.Fixed(name, lo)
    return hp.Float(name, lo, hi, sampling="log" if log else "linear")


def active_values(hp) -> dict[str, Any]:
    """The active hyperparameter values of a trial (space names first)."""
    names = [n for n in SPACE_NAMES if n in hp] + sorted(n for n in hp.values if n not in SPACE_NAMES)
    # names outside the space are the tuner's own (Hyperband's tuner/epochs, tuner/trial_id...)
    return {n: hp.values[n] for n in names if n in hp.values and (n not in hp or hp.is_active(n))}


def split_values(values: dict) -> tuple[dict, str, dict]:
    """``(adapter dict, layer subset name, training settings)`` from trial values.

    >>> split_values({"kind": "cnn", "layers": "last2", "dropout": 0.1, "lr": 1e-3, "batch_size": 64})
    ({'kind': 'cnn', 'dropout': 0.1}, 'last2', {'lr': 0.001, 'batch_size': 64})
    """
    adapter = {"kind": values["kind"]}
    for key in ("adapter_dim", "transformer_blocks", "layer_pooling", "dropout"):
        if key in values:
            adapter[key] = values[key]
    train = {"lr": float(values["lr"]), "batch_size": int(values["batch_size"])}
    return adapter, values.get("layers", "all"), train


# ------------------------------------------------------------- configuration


@dataclass
class SearchConfig(ConfigBase):
    """Everything that determines a search (saved in ``search.json``).

    >>> c = SearchConfig(store="tfrecords/sst2", out="searches/a", tuner="bayesian", max_trials=20)
    >>> SearchConfig.from_dict(c.to_dict()) == c
    True
    """

    store: str
    out: str
    tuner: str = "random"
    max_trials: int = 10
    executions_per_trial: int = 1
    epochs: int = 4  # per trial (hyperband: the most a trial trains)
    seed: int = 0
    strategy: str = "default"
    train_fraction: float = 1.0  # seeded fraction of the training data the trials train on
    train_split: str = "train"
    eval_split: str | None = None  # None: the task's first eval split in the store
    space: SearchSpace = field(default_factory=SearchSpace)
    retrain: bool = True  # retrain the best configuration into SEARCH_DIR/best
    retrain_fraction: float = 1.0  # training data of the best retrain
    hyperband_factor: int = 3
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    warmup: float = 0.1
    jit_compile: bool = True
    verbose: int = 1
    command: list = field(default_factory=list)

    error = SearchError

    def __post_init__(self):
        if isinstance(self.space, dict):
            self.space = SearchSpace.from_dict(self.space)
        super().__post_init__()

    def validate(self) -> None:
        if self.tuner not in TUNERS:
            raise SearchError(f"unknown tuner {self.tuner!r}; choose one of {', '.join(TUNERS)}")
        for name in ("max_trials", "executions_per_trial", "epochs", "eval_batch_size", "hyperband_factor"):
            check_positive_int(name, getattr(self, name), SearchError)
        if self.tuner == "hyperband" and self.hyperband_factor < 2:
            raise SearchError(f"--hyperband-factor must be >= 2, got {self.hyperband_factor}")
        for name in ("train_fraction", "retrain_fraction"):
            check_fraction(name, getattr(self, name), error=SearchError)
        check_choice("strategy", self.strategy, STRATEGIES, SearchError)
        self.space.validate()

    def fit_config(self, values: dict, out: str, train_fraction: float | None = None, verbose: int = 0,
                   layer_count: int | None = None, search: dict | None = None) -> FitConfig:
        """The `FitConfig` a trial's values train with (`layer_count`: the
        store's layers, to turn the layer subset into indices)."""
        adapter, subset, train = split_values(values)
        if layer_count is not None:
            adapter["layers"] = layer_indices(subset, layer_count)
        return FitConfig(store=self.store, out=out, adapter=adapter, train_split=self.train_split,
                         eval_splits=[self.eval_split] if self.eval_split else None, epochs=self.epochs,
                         eval_batch_size=self.eval_batch_size, weight_decay=self.weight_decay,
                         warmup=self.warmup, seed=self.seed,
                         train_fraction=self.train_fraction if train_fraction is None else train_fraction,
                         strategy=self.strategy, jit_compile=self.jit_compile, verbose=verbose, search=search,
                         **train)


# ----------------------------------------------------------- distributed search


@dataclass(frozen=True)
class SearchRole:
    """What this process is in a search, from KerasTuner's environment
    variables: ``single`` (no ``KERASTUNER_ORACLE_IP``: the whole search in
    this process), ``chief`` (``KERASTUNER_TUNER_ID`` contains ``chief``: it
    serves the oracle at ``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT``,
    runs no trial, and writes ``search.json``, ``trials.csv`` and ``best/``)
    or ``worker`` (any other id: it trains the trials the chief hands out)."""

    kind: str
    tuner_id: str
    oracle: str | None = None


def search_role() -> SearchRole:
    """This process's `SearchRole`; a half-set environment is refused, naming
    the variable."""
    env = os.environ
    if not env.get("KERASTUNER_ORACLE_IP"):
        return SearchRole("single", env.get("KERASTUNER_TUNER_ID") or "tuner0")
    port, tuner_id = env.get("KERASTUNER_ORACLE_PORT", ""), env.get("KERASTUNER_TUNER_ID", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SearchError(f"KERASTUNER_ORACLE_PORT must be the chief's port number (1-65535) when "
                          f"KERASTUNER_ORACLE_IP is set, got {port!r}")
    if not tuner_id:
        raise SearchError("KERASTUNER_TUNER_ID must name this process when KERASTUNER_ORACLE_IP is set: "
                          "'chief' for the chief, a distinct id (tuner0, tuner1, ...) for each worker")
    kind = "chief" if "chief" in tuner_id else "worker"  # KerasTuner's own rule
    return SearchRole(kind, tuner_id, f"{env['KERASTUNER_ORACLE_IP']}:{port}")


# -------------------------------------------------------------- hypermodel


class _Plan:
    """What every trial shares: the opened store, task, eval split, the
    training records, the number of stored layers."""

    def __init__(self, config: SearchConfig):
        self.store = open_store(config.store, verify=True)
        self.task = get_task(self.store.task)
        if config.train_split not in self.store.splits:
            raise SearchError(f"{config.store} has no training split {config.train_split!r}; "
                              f"it has {self.store.splits}")
        try:
            self.eval_splits = resolve_eval_splits([config.eval_split] if config.eval_split else None,
                                                   self.store, self.task)[:1]
            # every kind and adapter setting must fit the store (e.g. span tasks need a sequence store)
            for kind in config.space.kinds:
                pooler = kind == "adapter_pooler"
                for dim in (config.space.adapter_dims if pooler else [None]):
                    for blocks in (config.space.transformer_blocks if pooler else [0]):
                        adapter_config(self.store, {"kind": kind, **({"adapter_dim": dim} if dim else {}),
                                                    **({"transformer_blocks": blocks} if blocks else {})})
        except FitError as err:
            raise SearchError(str(err)) from err
        self.num_layers = len(self.store.layers)
        config.space.check(self.num_layers)
        self.indices, self.train_examples = self.store.select_fraction(config.train_split, config.train_fraction,
                                                                       config.seed)
        self.train_records = (self.store.num_records(config.train_split) if self.indices is None
                              else len(self.indices))
        if self.train_records < 1:
            raise SearchError(f"{config.store}: split {config.train_split!r} has no records")
        self.metric = self.task.main_metric
        self.objective = f"val_{self.metric}"


class AdapterHyperModel(kt.HyperModel):
    """A KerasTuner `HyperModel` over the adapter zoo: `build` makes the
    (uncompiled) adapter a trial's values describe; the tuner's `run_trial`
    trains it with the one trainer."""

    def __init__(self, config: SearchConfig, plan: _Plan):
        super().__init__(name="bertvision_adapter", tunable=True)
        self.config, self.plan = config, plan

    def declare_hyperparameters(self, hp) -> None:
        self.config.space.declare(hp)

    def model_config(self, hp):
        self.config.space.declare(hp)
        adapter, subset, _ = split_values(active_values(hp))
        adapter["layers"] = layer_indices(subset, self.plan.num_layers)
        try:
            return adapter_config(self.plan.store, adapter)
        except FitError as err:
            raise SearchError(str(err)) from err

    def build(self, hp):
        return build_model(self.model_config(hp))


_UNFINISHED = ("RUNNING", "IDLE", "INVALID")  # INVALID: waiting for a retry


# ------------------------------------------------- KerasTuner's private parts
#
# KerasTuner has no public way to make its state files safe against kill -9,
# nor to say which trials a reloaded oracle retries. This section is the one
# place BertVision reaches into KerasTuner's internals for that;
# tests/test_search.py::test_keras_tuner_internals_we_rely_on fails loudly if
# an upgrade moves them.


def _atomic_save_json(path, obj) -> str:
    """KerasTuner's `save_json`, written atomically (`bertvision.io`)."""
    text = json.dumps(obj)
    io.atomic_write_text(path, text)
    return text


@contextlib.contextmanager
def atomic_tuner_state():
    """Make KerasTuner write its state files atomically while the block runs.

    KerasTuner writes ``oracle.json``, every ``trial_XX/trial.json`` and
    ``<tuner id>.json`` in place, through ``keras_tuner.src.utils.save_json``
    (`Stateful.save`): a kill during a write leaves a truncated file, and the
    search cannot be resumed. Inside this block each is written under a
    temporary name and renamed over the old one, so a kill leaves the old
    file or the new one.
    """
    original = getattr(kt_utils, "save_json", None)
    if original is None:
        raise SearchError(f"keras-tuner {kt.__version__}: keras_tuner.src.utils has no save_json; "
                          "bertvision.search.tuner.atomic_tuner_state needs updating")
    kt_utils.save_json = _atomic_save_json
    try:
        yield
    finally:
        kt_utils.save_json = original


def _remove_stale_state(tuner_dir: str) -> None:
    """Remove the temporary state files a search killed mid-write left in
    `tuner_dir` (the old file is whole beside each: `atomic_tuner_state`)."""
    for pattern in (".*.tmp-*", os.path.join("trial_*", ".*.tmp-*")):
        for path in io.glob(io.join(tuner_dir, pattern)):
            io.remove(path)


def _retry_unfinished(oracle) -> None:
    """After `Oracle.reload`: retry exactly the trials that never finished.

    KerasTuner saves ``oracle.json`` in ``end_trial`` while the trial is still
    listed as ongoing, and ``reload()`` sends every ongoing trial for retry: a
    search killed right after a trial finished would redo it. And a kill
    between a new trial's ``trial.json`` and ``oracle.json`` leaves a trial
    no retry queue holds, which would never run. The queue is rebuilt from the
    trials' own files: every trial not COMPLETED or FAILED, lowest id first.
    """
    unfinished = sorted(t for t, trial in oracle.trials.items() if trial.status in _UNFINISHED)
    queue = [t for t in oracle._retry_queue if t in unfinished]
    queue += [t for t in unfinished if t not in queue]
    oracle._retry_queue = sorted(queue, reverse=True)  # create_trial pops from the end


# ----------------------------------------------------------------- the tuners


class _AdapterTuner:
    """What BertVision's tuners add to KerasTuner's (mixed into each):
    `run_trial` trains with `bertvision.training.fit.build_adapter_trainer` (the
    documented way to customise a KerasTuner search) and writes
    ``trial_XX/bertvision_trial.json`` (with the trial's values and results:
    a trial whose training finished is never trained again, even if a kill
    came before the oracle heard of it) and the trial's best weights;
    `reload` retries only trials that never finished."""

    def __init__(self, *args, **kwargs):
        self.trials_run: list[str] = []  # trial ids this process trained (or found trained)
        super().__init__(*args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        config, plan = self.hypermodel.config, self.hypermodel.plan
        hp = trial.hyperparameters
        values = active_values(hp)
        trial_dir = self.get_trial_dir(trial.trial_id)
        record_path = os.path.join(trial_dir, TRIAL_RECORD)
        self.trials_run.append(trial.trial_id)
        if os.path.isfile(record_path):  # trained before a kill or a worker's loss; the oracle never heard
            record = io.read_json(record_path, SearchError)
            if record.get("values") == json.loads(json.dumps(values)) and record.get("results"):
                return record["results"]
        _, _, train = split_values(values)
        epochs = int(hp.values.get("tuner/epochs", config.epochs))
        initial_epoch = int(hp.values.get("tuner/initial_epoch", 0))
        start, results, executions = time.perf_counter(), [], []
        for execution in range(self.executions_per_trial):
            model_config = self.hypermodel.model_config(hp)
            keras.utils.set_random_seed(config.seed + execution)
            weights, previous = None, hp.values.get("tuner/trial_id")
            if previous is not None:  # Hyperband: continue the trial this one was promoted from
                with np.load(os.path.join(self.get_trial_dir(previous), TRIAL_WEIGHTS)) as data:
                    weights = [data[f"a{i}"] for i in range(len(data.files))]
            trainer = build_adapter_trainer(
                model_config, plan.store, train_split=config.train_split, eval_splits=plan.eval_splits,
                epochs=max(1, epochs - initial_epoch), batch_size=train["batch_size"], lr=train["lr"],
                seed=config.seed, weight_decay=config.weight_decay, warmup=config.warmup,
                train_indices=plan.indices, train_records=plan.train_records, jit_compile=config.jit_compile,
                eval_batch_size=config.eval_batch_size, strategy=self.distribution_strategy, verbose=0,
                initial_weights=weights)
            t0 = time.perf_counter()
            outcome = trainer.run()
            if execution == 0:
                with io.atomic_path(os.path.join(trial_dir, TRIAL_WEIGHTS)) as tmp:
                    with open(tmp, "wb") as handle:
                        np.savez(handle, **{f"a{i}": w for i, w in enumerate(trainer.model.get_weights())})
            executions.append({"trainable_params": trainable_params(trainer.model),
                               "wall_time_s": round(time.perf_counter() - t0, 3), "best_epoch": outcome.best_epoch,
                               "dev_metrics": outcome.best_metrics, "epochs": len(outcome.history)})
            results.append({plan.objective: outcome.best_metrics[plan.metric]})
        record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                  "wall_time_s": round(time.perf_counter() - start, 3),
                  "trainable_params": executions[0]["trainable_params"], "values": values, "results": results,
                  "executions": executions}
        io.atomic_write_json(record_path, record)
        if config.verbose and search_role().kind == "worker":
            print(f"{self.tuner_id}: trial {trial.trial_id} {plan.metric}={results[0][plan.objective]:.4f}", flush=True)
        return results

    def reload(self):
        super().reload()
        if search_role().kind != "worker":  # a worker's oracle is the chief's
            _retry_unfinished(self.oracle)


class AdapterRandomSearch(_AdapterTuner, kt.RandomSearch):
    pass


class AdapterBayesianOptimization(_AdapterTuner, kt.BayesianOptimization):
    pass


class AdapterHyperband(_AdapterTuner, kt.Hyperband):
    pass


def build_search_tuner(config: SearchConfig, plan: _Plan, strategy=None):
    """The KerasTuner tuner of `config` (random / bayesian / hyperband) in
    ``SEARCH_DIR/tuner``, reloading its state when the folder has one."""
    kwargs = dict(hypermodel=AdapterHyperModel(config, plan), objective=kt.Objective(plan.objective, "max"),
                  seed=config.seed, executions_per_trial=config.executions_per_trial, directory=config.out,
                  project_name=PROJECT, overwrite=False, distribution_strategy=strategy)
    if config.tuner == "hyperband":
        tuner = AdapterHyperband(max_epochs=config.epochs, factor=config.hyperband_factor, **kwargs)
        tuner.oracle.max_trials = config.max_trials  # Hyperband has no max_trials of its own
        return tuner
    cls = AdapterBayesianOptimization if config.tuner == "bayesian" else AdapterRandomSearch
    return cls(max_trials=config.max_trials, **kwargs)


# ---------------------------------------------------------------- outputs


def read_trial_rows(tuner, metric: str) -> list[dict]:
    """One row per trial of `tuner`'s oracle, by trial id: ``trial_id``,
    ``status``, the active hyperparameters, `metric` (the tuner's objective
    score), ``trainable_params``, ``wall_time_s``, ``tuner_id`` (the process
    that trained it; from the trial record)."""
    rows = []
    for trial_id in sorted(tuner.oracle.trials):
        trial = tuner.oracle.trials[trial_id]
        record_path = os.path.join(tuner.get_trial_dir(trial_id), TRIAL_RECORD)
        record = io.read_json(record_path, SearchError) if os.path.isfile(record_path) else {}
        row = {"trial_id": trial_id, "status": str(trial.status)}
        row.update(active_values(trial.hyperparameters))
        row[metric] = trial.score
        row["trainable_params"] = record.get("trainable_params")
        row["wall_time_s"] = record.get("wall_time_s")
        row["tuner_id"] = record.get("tuner_id")
        rows.append(row)
    return rows


def write_trials_csv(rows: list[dict], path: str, metric: str) -> None:
    """Write `rows` (from `read_trial_rows`) as CSV, atomically: ``trial_id``,
    ``status``, the hyperparameters (space order, then any others, e.g.
    Hyperband's ``tuner/epochs``), `metric`, ``trainable_params``,
    ``wall_time_s``, ``tuner_id``; empty cells for inactive hyperparameters."""
    tail = [metric, "trainable_params", "wall_time_s", "tuner_id"]
    seen: list[str] = []
    for row in rows:
        seen += [c for c in row if c not in seen and c not in tail]
    head = [c for c in ("trial_id", "status", *SPACE_NAMES) if c in seen]
    columns = head + [c for c in seen if c not in head] + tail
    buffer = _stringio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    io.atomic_write_text(path, buffer.getvalue())


def _check_search_folder(config: SearchConfig) -> dict | None:
    """Refuse a folder holding another search; return its search.json, if any."""
    path = os.path.join(config.out, "search.json")
    if os.path.exists(config.out) and not os.path.isdir(config.out):
        raise SearchError(f"--out {config.out} is a file; give a folder for the search")
    if not os.path.isfile(path):
        if os.path.isdir(os.path.join(config.out, PROJECT)):
            raise SearchError(f"{config.out} holds a KerasTuner project but no search.json; "
                              "choose another --out")
        if os.path.isdir(config.out) and [n for n in os.listdir(config.out) if not n.startswith(".")]:
            raise SearchError(f"--out {config.out} is a folder holding other files and no search; give a new "
                              "or empty folder")
        return None
    return _read_search_record(config)


def _read_search_record(config: SearchConfig) -> dict:
    """``search.json`` of `config.out`, refused unless its settings are `config`'s."""
    path = os.path.join(config.out, "search.json")
    old = io.read_json(path, SearchError)
    if old.get("run_type") != "search":
        raise SearchError(f"{path} is not a search record (run_type {old.get('run_type')!r})")
    diff = config.differences(old.get("config") or {}, RESUMABLE)  # fields added since: at their defaults
    if diff:
        raise SearchError(f"{config.out} holds a search with other settings ({', '.join(diff)}); "
                          "run it with the same settings to resume it (only --max-trials may change), "
                          "or choose another --out")
    return old


def _strategy_and_plan(config: SearchConfig):
    strategy = get_strategy(config.strategy) if config.strategy != "default" else None
    plan = _Plan(config)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    bad = [b for b in config.space.batch_sizes if b % replicas]
    if bad:
        raise SearchError(f"batch sizes {bad} are not multiples of the {replicas} replicas")
    return strategy, plan


def work_for_chief(config: SearchConfig, role: "SearchRole", poll_s: float = 1.0) -> dict:
    """Be a worker of a distributed search: wait for the chief's
    ``search.json`` (and refuse other settings than the chief's), then train
    the trials the chief hands out until it has none left. Writes only the
    trial folders (``trial_XX/bertvision_trial.json``, weights) and its own
    tuner file; ``search.json``, ``trials.csv`` and ``best/`` are the chief's.
    Returns ``{"run_type": "search_worker", "tuner_id", "oracle", "trials_run"}``."""
    path = os.path.join(config.out, "search.json")
    if not os.path.isfile(path):
        print(f"{role.tuner_id}: waiting for the chief to start the search in {config.out}", flush=True)
        while not os.path.isfile(path):
            time.sleep(poll_s)
    _read_search_record(config)  # the chief's settings must be ours
    strategy, plan = _strategy_and_plan(config)
    lock = ".lock." + re.sub(r"[^A-Za-z0-9_.-]", "_", role.tuner_id)
    with io.exclusive_lock(config.out, f"search worker {role.tuner_id}", SearchError, name=lock):
        keras.utils.set_random_seed(config.seed)
        with atomic_tuner_state():
            tuner = build_search_tuner(config, plan, strategy)
            tuner.search(verbose=0)
    return {"run_type": "search_worker", "tuner_id": role.tuner_id, "oracle": role.oracle,
            "trials_run": list(tuner.trials_run)}


def _retrain_best(config: SearchConfig, plan: _Plan, best_id: str, values: dict, previous: dict | None):
    """Train the best trial's configuration with `bertvision.training.fit.fit` into
    ``SEARCH_DIR/best`` (resuming an interrupted retrain of the same trial;
    replacing a best run of another trial)."""
    out = os.path.join(config.out, "best")
    same = previous is not None and previous.get("best_trial_id") == best_id
    run = RunFolder(out)
    if same and run.finished:
        return run.results()
    if run.path.is_dir() and not same:
        shutil.rmtree(out)
    _, subset, _ = split_values(values)
    fit_config = config.fit_config(values, out=out, train_fraction=config.retrain_fraction,
                                   verbose=1 if config.verbose > 1 else 0, layer_count=plan.num_layers,
                                   search={"search_dir": config.out, "trial_id": best_id, "layer_subset": subset})
    fit_config.command = list(config.command)
    return fit(fit_config)


def search(config: SearchConfig) -> dict:
    """Run (or resume) the search `config` describes; write ``trials.csv``,
    ``search.json`` and, with ``retrain``, ``best/``. Returns the
    ``search.json`` record. Everything is checked before any trial runs.

    In a distributed search (`search_role`) the chief does all this while the
    workers train the trials; a worker's call returns `work_for_chief`'s
    summary instead.
    """
    role = search_role()
    if role.kind == "worker":
        return work_for_chief(config, role)
    previous = _check_search_folder(config)
    strategy, plan = _strategy_and_plan(config)
    if previous and previous.get("store_identity"):  # trials of two stores must not be compared
        check_store_identity(previous["store_identity"], plan.store.identity(), config.out, SearchError)
    os.makedirs(config.out, exist_ok=True)
    with io.exclusive_lock(config.out, "a search", SearchError):
        record = {"run_type": "search", "task": plan.task.name, "main_metric": plan.metric,
                  "objective": {"name": plan.objective, "direction": "max"}, "config": config.to_dict(),
                  "status": "running", "trials": 0, "best_trial_id": (previous or {}).get("best_trial_id"),
                  "best_hyperparameters": (previous or {}).get("best_hyperparameters"),
                  "best_search_metric": None, "best_metric": None, "best_run": None,
                  "store": config.store, "store_identity": plan.store.identity(), "layers": plan.store.layers, "token_mode": plan.store.token_mode,
                  "train_examples": int(plan.train_examples), "eval_split": plan.eval_splits[0],
                  "distributed": None if role.kind == "single" else {"oracle": role.oracle, "chief": role.tuner_id}}
        path = os.path.join(config.out, "search.json")
        io.atomic_write_json(path, record)

        if role.kind == "single":  # nobody else writes here (we hold the lock): a killed search's leftovers go
            _remove_stale_state(os.path.join(config.out, PROJECT))
        keras.utils.set_random_seed(config.seed)
        start = time.perf_counter()
        with atomic_tuner_state():
            tuner = build_search_tuner(config, plan, strategy)
            tuner.save()  # oracle.json and the tuner's file exist from here on: a search killed later reloads
            if role.kind == "chief" and config.verbose:
                print(f"chief {role.tuner_id}: serving trials at {role.oracle} to the workers", flush=True)
            tuner.search(verbose=config.verbose)  # the chief: until the workers have run every trial
        rows = read_trial_rows(tuner, plan.metric)
        write_trials_csv(rows, os.path.join(config.out, "trials.csv"), plan.metric)
        best_trials = tuner.oracle.get_best_trials(max(1, len(tuner.oracle.trials)))
        record.update(trials=len(rows), search_wall_time_s=round(time.perf_counter() - start, 3),
                      trial_status={s: sum(r["status"] == s for r in rows)
                                    for s in sorted({r["status"] for r in rows})})
        if not best_trials or best_trials[0].score is None:
            record["status"] = "failed"
            io.atomic_write_json(path, record)
            raise SearchError(f"no trial of {config.out} finished; see the trial folders under "
                              f"{os.path.join(config.out, PROJECT)}")
        # a tie goes to the earliest trial, so the best trial does not depend on the order trials finished in
        # (a search killed and resumed finishes them in another order than an uninterrupted one)
        tied = [t for t in best_trials if t.score == best_trials[0].score]
        best = min(tied, key=lambda t: (int(t.trial_id) if t.trial_id.isdigit() else float("inf"), t.trial_id))
        values = {k: v for k, v in active_values(best.hyperparameters).items() if not k.startswith("tuner/")}
        record.update(best_trial_id=best.trial_id, best_hyperparameters=values, best_search_metric=best.score)
        io.atomic_write_json(path, record)
        if config.retrain:
            results = _retrain_best(config, plan, best.trial_id, values, previous)
            record.update(best_metric=results.dev_metrics[plan.metric], best_run="best",
                          best_trainable_params=results.trainable_params, best_dev_metrics=results.dev_metrics)
        record["status"] = "complete"
        io.atomic_write_json(path, record)
    return record
