"""Hyperparameter search over the adapter zoo with KerasTuner.

`search(SearchConfig(...))` tunes an adapter on a store and leaves a search
folder a person can open::

    SEARCH_DIR/search.json     SearchConfig, status, best trial and its
                               hyperparameters, best metric (run_type "search")
    SEARCH_DIR/tuner/          KerasTuner's own state (oracle.json,
                               trial_XX/trial.json, checkpoints) plus, per
                               finished trial, trial_XX/bertvision_trial.json
                               (trainable params, wall time, dev metrics)
    SEARCH_DIR/trials.csv      one row per trial: trial_id, status,
                               hyperparameters, <main metric>,
                               trainable_params, wall_time_s
    SEARCH_DIR/best/           the best configuration retrained by
                               `bertvision.training.fit`: a normal fit run
                               folder (`pipelines.predict`, `pipelines.ensemble`)

The space (`SearchSpace`): model ``kind``; which stored ``layers`` enter the
model (``all``, ``last_K``, ``every_other``; not for ``linear_probe``, which
reads the last layer); ``layer_pooling`` and ``adapter_dim`` of
``adapter_pooler``; ``dropout``; ``lr``; ``batch_size``. A layer subset is
`ModelConfig.layers`, so the saved adapter still takes every stored layer and
any store the run fits predicts with it.

The objective is the task's official main dev metric
(`bertvision.tasks.TaskSpec.main_metric`; all are maximised), scored each
epoch by `bertvision.training.DevEvaluation` and reported to the tuner as
``val_<metric>``. Running the same search again resumes it: KerasTuner
reloads its oracle from ``SEARCH_DIR/tuner`` and reruns only the trial that
was interrupted.

Example:
    >>> config = SearchConfig(store="tfrecords/sst2", out="searches/sst2", max_trials=10, epochs=4)
    >>> summary = search(config)
    >>> summary["best_hyperparameters"], summary["best_metric"]
    ({'kind': 'adapter_pooler', 'layers': 'all', ...}, 0.85)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PROJECT", "SPACE_NAMES", "TUNERS", "SearchConfig", "SearchError", "SearchSpace", "build_search_tuner",
           "layer_indices", "read_trial_rows", "search", "write_trials_csv"]

TUNERS = ("random", "bayesian", "hyperband")
PROJECT = "tuner"  # KerasTuner project name: SEARCH_DIR/tuner
TRIAL_RECORD = "bertvision_trial.json"
# the hyperparameters of the space, in trials.csv column order
SPACE_NAMES = ("kind", "layers", "layer_pooling", "adapter_dim", "dropout", "lr", "batch_size")
# settings that may change when a search is resumed
RESUMABLE = ("out", "max_trials", "verbose", "command")


class SearchError(ValueError):
    """A search that cannot run as configured (bad space, store mismatch...)."""


# --------------------------------------------------------------- layer subsets


def layer_indices(subset: str, num_layers: int) -> list[int] | None:
    """Stored-layer positions a subset name selects (``None``: all of them).

    ``all``; ``last_K`` (the K deepest stored layers); ``every_other``
    (every second layer, counted back from the last, so the last is in).

    >>> layer_indices("last_3", 7), layer_indices("every_other", 7), layer_indices("all", 7)
    ([4, 5, 6], [0, 2, 4, 6], None)
    """
    if subset == "all":
        return None
    if subset == "every_other":
        chosen = list(range((num_layers - 1) % 2, num_layers, 2))
    else:
        match = re.fullmatch(r"last_(\d+)", subset)
        if not match:
            raise SearchError(f"unknown layer subset {subset!r}: use all, last_K (e.g. last_4) or every_other")
        k = int(match.group(1))
        if not 1 <= k <= num_layers:
            raise SearchError(f"layer subset {subset!r} needs 1 <= K <= {num_layers} (the store has "
                              f"{num_layers} layers)")
        chosen = list(range(num_layers - k, num_layers))
    return None if len(chosen) == num_layers else chosen


# ------------------------------------------------------------------ the space


def _as_list(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


@dataclass
class SearchSpace:
    """What the tuner may choose. Lists are choices; ``dropout`` and ``lr``
    are ``[min, max]`` ranges (``lr`` sampled on a log scale; equal ends fix
    the value).

    >>> SearchSpace(kinds=["adapter_pooler"], adapter_dims=[32, 64]).validate()
    """

    kinds: list = field(default_factory=lambda: ["linear_probe", "scalar_mix", "adapter_pooler", "cnn"])
    layer_subsets: list = field(default_factory=lambda: ["all", "last_4", "every_other"])
    layer_poolings: list = field(default_factory=lambda: ["scalar_mix", "attention", "concat"])
    adapter_dims: list = field(default_factory=lambda: [32, 64, 128, 256])
    dropout: list = field(default_factory=lambda: [0.0, 0.5])
    lr: list = field(default_factory=lambda: [1e-4, 3e-3])
    batch_sizes: list = field(default_factory=lambda: [32, 64, 128])

    def __post_init__(self):
        for name in ("kinds", "layer_subsets", "layer_poolings", "adapter_dims", "dropout", "lr", "batch_sizes"):
            setattr(self, name, _as_list(getattr(self, name)))

    def validate(self, num_layers: int | None = None) -> None:
        """Raise `SearchError` for an empty or impossible space; with
        `num_layers`, also for layer subsets the store cannot give."""
        from bertvision.models import KINDS, LAYER_POOLINGS

        def choices(name, values, allowed=None):
            if not values:
                raise SearchError(f"search space {name}: no choices given")
            if len(set(map(str, values))) != len(values):
                raise SearchError(f"search space {name}: repeated choices {values}")
            if allowed is not None:
                bad = [v for v in values if v not in allowed]
                if bad:
                    raise SearchError(f"search space {name}: unknown {bad}; choose from {', '.join(allowed)}")

        def positive_ints(name, values):
            choices(name, values)
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise SearchError(f"search space {name}: must be positive integers, got {bad}")

        def interval(name, values, low, high, low_open=False):
            if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise SearchError(f"search space {name}: give [min, max], got {values}")
            lo, hi = values
            if lo > hi or lo < low or (low_open and lo <= low) or hi >= high:
                raise SearchError(f"search space {name}: need {low} {'<' if low_open else '<='} min <= max "
                                  f"< {high}, got {values}")

        choices("kinds", self.kinds, KINDS)
        choices("layer_subsets", self.layer_subsets)
        for subset in self.layer_subsets:
            layer_indices(subset, num_layers if num_layers is not None else 10 ** 6)
        choices("layer_poolings", self.layer_poolings, LAYER_POOLINGS)
        positive_ints("adapter_dims", self.adapter_dims)
        positive_ints("batch_sizes", self.batch_sizes)
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
    """``(model dict, layer subset name, training settings)`` from trial values.

    >>> split_values({"kind": "cnn", "layers": "last_2", "dropout": 0.1, "lr": 1e-3, "batch_size": 64})
    ({'kind': 'cnn', 'dropout': 0.1}, 'last_2', {'lr': 0.001, 'batch_size': 64})
    """
    model = {"kind": values["kind"]}
    for key in ("adapter_dim", "layer_pooling", "dropout"):
        if key in values:
            model[key] = values[key]
    train = {"lr": float(values["lr"]), "batch_size": int(values["batch_size"])}
    return model, values.get("layers", "all"), train


# ------------------------------------------------------------- configuration


@dataclass
class SearchConfig:
    """Everything that determines a search (saved in ``search.json``).

    >>> c = SearchConfig(store="tfrecords/sst2", out="searches/a", tuner="bayesian", max_trials=20)
    >>> SearchConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
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

    def __post_init__(self):
        if isinstance(self.space, dict):
            self.space = SearchSpace(**self.space)
        self.validate()

    def validate(self) -> None:
        from bertvision.distribute import STRATEGIES

        def positive(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")

        if self.tuner not in TUNERS:
            raise SearchError(f"unknown tuner {self.tuner!r}; choose one of {', '.join(TUNERS)}")
        for name in ("max_trials", "executions_per_trial", "epochs", "eval_batch_size", "hyperband_factor"):
            positive(name)
        if self.tuner == "hyperband" and self.hyperband_factor < 2:
            raise SearchError(f"hyperband-factor must be >= 2, got {self.hyperband_factor}")
        for name in ("train_fraction", "retrain_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise SearchError(f"{name.replace('_', '-')} must be in (0, 1], got {value!r}")
        if self.strategy not in STRATEGIES:
            raise SearchError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        self.space.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SearchError(f"unknown SearchConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def fit_config(self, values: dict, out: str, train_fraction: float | None = None, verbose: int = 0):
        """The `bertvision.training.FitConfig` a trial's values train with."""
        from bertvision.training import FitConfig

        model, _, train = split_values(values)
        return FitConfig(store=self.store, out=out, model=model, train_split=self.train_split,
                         eval_splits=[self.eval_split] if self.eval_split else None, epochs=self.epochs,
                         eval_batch_size=self.eval_batch_size, weight_decay=self.weight_decay,
                         warmup=self.warmup, seed=self.seed,
                         train_fraction=self.train_fraction if train_fraction is None else train_fraction,
                         strategy=self.strategy, jit_compile=self.jit_compile, verbose=verbose, **train)


# -------------------------------------------------------------- hypermodel


def _keras_tuner():
    import keras_tuner

    return keras_tuner


class _Plan:
    """What every trial shares: the opened store, task, eval splits, the
    training records, the number of layers."""

    def __init__(self, config: SearchConfig):
        from bertvision.store import StoreError, open_store
        from bertvision.tasks import get_task
        from bertvision.training import FitError, make_model_config, resolve_eval_splits, select_train_records

        try:
            self.store = open_store(config.store)
        except StoreError as err:
            raise SearchError(str(err)) from err
        self.task = get_task(self.store.task)
        if config.train_split not in self.store.splits:
            raise SearchError(f"{config.store} has no training split {config.train_split!r}; "
                              f"it has {self.store.splits}")
        probe = config.fit_config({"kind": config.space.kinds[0], "lr": 1e-3, "batch_size": 1}, out=config.out)
        try:
            self.eval_splits = resolve_eval_splits(probe, self.store, self.task)[:1]
            # every kind and adapter setting must fit the store (e.g. span tasks need a sequence store)
            for kind in config.space.kinds:
                for dim in (config.space.adapter_dims if kind == "adapter_pooler" else [None]):
                    make_model_config(self.store, {"kind": kind, **({"adapter_dim": dim} if dim else {})})
        except FitError as err:
            raise SearchError(str(err)) from err
        self.num_layers = len(self.store.layers)
        config.space.validate(self.num_layers)
        self.indices, self.train_examples = select_train_records(self.store, config.train_split,
                                                                 config.train_fraction, config.seed)
        self.train_records = (self.store.num_records(config.train_split) if self.indices is None
                              else len(self.indices))
        if self.train_records < 1:
            raise SearchError(f"{config.store}: split {config.train_split!r} has no records")
        self.metric = self.task.main_metric
        self.objective = f"val_{self.metric}"


def _hypermodel_base():
    return _keras_tuner().HyperModel


class AdapterHyperModel(_hypermodel_base()):
    """A KerasTuner `HyperModel` over the adapter zoo: `build` compiles the
    model a trial's values describe exactly as `bertvision.training.fit`
    does; `fit` trains it on the store with the trial's batch size and
    scores every epoch with `bertvision.training.DevEvaluation` (logged as
    ``val_<metric>``, the tuner's objective)."""

    def __init__(self, config: SearchConfig, plan: _Plan):
        super().__init__(name="bertvision_adapter", tunable=True)
        self.config, self.plan = config, plan
        self.executions: list[dict] = []

    def declare_hyperparameters(self, hp) -> None:
        self.config.space.declare(hp)

    def _steps_per_epoch(self, batch_size: int) -> int:
        return max(1, math.ceil(self.plan.train_records / batch_size))

    def build(self, hp):
        from bertvision.training import FitError, build_compiled_model, make_model_config

        self.config.space.declare(hp)
        values = active_values(hp)
        model_dict, subset, train = split_values(values)
        fit_config = self.config.fit_config(values, out=self.config.out)
        total_steps = self._steps_per_epoch(train["batch_size"]) * self.config.epochs
        model_dict["layers"] = layer_indices(subset, self.plan.num_layers)
        try:
            model_config = make_model_config(self.plan.store, model_dict)
        except FitError as err:
            raise SearchError(str(err)) from err
        return build_compiled_model(model_config, fit_config, total_steps)

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None, verbose=0, **kwargs):
        from bertvision.models import trainable_params
        from bertvision.predict import make_infer_fn, pad_to_for
        from bertvision.training import DevEvaluation

        batch_size = int(hp.values["batch_size"])
        steps = self._steps_per_epoch(batch_size)
        epochs = epochs or self.config.epochs
        plan = self.plan
        train_ds = plan.store.dataset(self.config.train_split, batch_size, shuffle=True, repeat=True,
                                      seed=self.config.seed, drop_remainder=True, take_indices=plan.indices,
                                      pad_to=pad_to_for(model))
        if plan.store.task_kind == "span":
            train_ds = train_ds.map(lambda f, y: (f, {"start_logits": y["start_positions"],
                                                      "end_logits": y["end_positions"]}))
        backup = tempfile.mkdtemp(prefix="bertvision-trial-")
        try:
            evaluation = DevEvaluation(plan.store, plan.eval_splits, plan.task,
                                       lambda m: make_infer_fn(m, self.config.jit_compile),
                                       self.config.eval_batch_size, backup, None, 0, batch_size, steps)
            start = time.perf_counter()
            # DevEvaluation first: its val_* logs must exist when the tuner's callbacks read them
            history = model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                                callbacks=[evaluation, *(callbacks or [])], verbose=0, shuffle=False)
            wall = time.perf_counter() - start
        finally:
            shutil.rmtree(backup, ignore_errors=True)
        best = next((h for h in evaluation.history if h["epoch"] == evaluation.best_epoch), None)
        self.executions.append({"trainable_params": trainable_params(model), "wall_time_s": round(wall, 3),
                                "best_epoch": evaluation.best_epoch, "dev_metrics": best and best["dev"],
                                "epochs": len(evaluation.history)})
        return history


_UNFINISHED = ("RUNNING", "IDLE", "INVALID")  # INVALID: waiting for a retry


def _recording_tuner_mixin():
    from bertvision.store import atomic_write_json

    class RecordingTuner:
        """Writes ``trial_XX/bertvision_trial.json`` (wall time, trainable
        parameters, per-execution dev metrics) when a trial finishes, and
        declares the whole space at once instead of building models to
        discover conditional hyperparameters."""

        def _populate_initial_space(self):
            hp = self.oracle.get_space()
            self.hypermodel.declare_hyperparameters(hp)
            self.oracle.update_space(hp)

        def reload(self):
            super().reload()
            # KerasTuner saves oracle.json in end_trial while the trial is still listed
            # as ongoing, and reload() sends every ongoing trial for retry: a search
            # killed right after a trial finished would redo it. Retry only trials
            # that never finished.
            oracle = self.oracle
            queue = [t for t in oracle._retry_queue if t in oracle.trials and oracle.trials[t].status in _UNFINISHED]
            oracle._retry_queue = list(dict.fromkeys(queue))

        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            # KerasTuner imports the tensorboard package unconditionally here; only a
            # TensorBoard callback (never passed by `search`) needs it
            if any(c.__class__.__name__ == "TensorBoard" for c in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

        def run_trial(self, trial, *args, **kwargs):
            self.hypermodel.executions = []
            start = time.perf_counter()
            result = super().run_trial(trial, *args, **kwargs)
            executions = self.hypermodel.executions
            record = {"trial_id": trial.trial_id, "wall_time_s": round(time.perf_counter() - start, 3),
                      "trainable_params": executions[0]["trainable_params"] if executions else None,
                      "executions": executions}
            atomic_write_json(os.path.join(self.get_trial_dir(trial.trial_id), TRIAL_RECORD), record)
            return result

    return RecordingTuner


def _check_tuner_available(tuner: str) -> None:
    """KerasTuner's Bayesian optimisation needs scipy (an optional extra)."""
    if tuner == "bayesian":
        try:
            import scipy  # noqa: F401
        except ImportError as err:
            raise SearchError("--tuner bayesian needs scipy, which is not installed "
                              "(pip install 'keras-tuner[bayesian]'); use --tuner random or hyperband") from err


def build_search_tuner(config: SearchConfig, plan: _Plan, strategy=None):
    """The KerasTuner tuner of `config` (random / bayesian / hyperband) in
    ``SEARCH_DIR/tuner``, reloading its state when the folder has one."""
    kt = _keras_tuner()
    base = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}[config.tuner]
    cls = type(f"Adapter{base.__name__}", (_recording_tuner_mixin(), base), {})
    kwargs = dict(hypermodel=AdapterHyperModel(config, plan), objective=kt.Objective(plan.objective, "max"),
                  seed=config.seed, executions_per_trial=config.executions_per_trial, directory=config.out,
                  project_name=PROJECT, overwrite=False, distribution_strategy=strategy)
    if config.tuner == "hyperband":
        tuner = cls(max_epochs=config.epochs, factor=config.hyperband_factor, **kwargs)
        tuner.oracle.max_trials = config.max_trials  # Hyperband has no max_trials of its own
    else:
        tuner = cls(max_trials=config.max_trials, **kwargs)
    return tuner


# ---------------------------------------------------------------- outputs


def read_trial_rows(tuner, metric: str) -> list[dict]:
    """One row per trial of `tuner`'s oracle, by trial id: ``trial_id``,
    ``status``, the active hyperparameters, `metric` (the tuner's objective
    score), ``trainable_params``, ``wall_time_s`` (from the trial record)."""
    rows = []
    for trial_id in sorted(tuner.oracle.trials):
        trial = tuner.oracle.trials[trial_id]
        record_path = os.path.join(tuner.get_trial_dir(trial_id), TRIAL_RECORD)
        record = {}
        if os.path.isfile(record_path):
            with open(record_path) as handle:
                record = json.load(handle)
        row = {"trial_id": trial_id, "status": str(trial.status)}
        row.update(active_values(trial.hyperparameters))
        row[metric] = trial.score
        row["trainable_params"] = record.get("trainable_params")
        row["wall_time_s"] = record.get("wall_time_s")
        rows.append(row)
    return rows


def write_trials_csv(rows: list[dict], path: str, metric: str) -> None:
    """Write `rows` (from `read_trial_rows`) as CSV, atomically: ``trial_id``,
    ``status``, the hyperparameters (space order, then any others, e.g.
    Hyperband's ``tuner/epochs``), `metric`, ``trainable_params``,
    ``wall_time_s``; empty cells for inactive hyperparameters."""
    from bertvision.store import atomic_write_bytes

    tail = [metric, "trainable_params", "wall_time_s"]
    seen = []
    for row in rows:
        seen += [c for c in row if c not in seen and c not in tail]
    head = [c for c in ("trial_id", "status", *SPACE_NAMES) if c in seen]
    columns = head + [c for c in seen if c not in head] + tail
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def _check_search_folder(config: SearchConfig) -> dict | None:
    """Refuse a folder holding another search; return its search.json, if any."""
    path = os.path.join(config.out, "search.json")
    if not os.path.isfile(path):
        if os.path.isdir(os.path.join(config.out, PROJECT)):
            raise SearchError(f"{config.out} holds a KerasTuner project but no search.json; "
                              "choose another --out")
        return None
    with open(path) as handle:
        old = json.load(handle)
    if old.get("run_type") != "search":
        raise SearchError(f"{path} is not a search record (run_type {old.get('run_type')!r})")
    before, now = old.get("config") or {}, config.to_dict()
    diff = [k for k in now if k not in RESUMABLE and before.get(k) != now[k]]
    if diff:
        raise SearchError(f"{config.out} holds a search with other settings ({', '.join(diff)}); "
                          "run it with the same settings to resume it (only --max-trials may change), "
                          "or choose another --out")
    return old


def _retrain_best(config: SearchConfig, plan: _Plan, best_id: str, values: dict, previous: dict | None) -> dict:
    """Train the best trial's configuration with `bertvision.training.fit`
    into ``SEARCH_DIR/best`` (resuming an interrupted retrain of the same
    trial; replacing a best run of another trial)."""
    from bertvision.store import atomic_write_json
    from bertvision.training import fit

    out = os.path.join(config.out, "best")
    same = previous is not None and previous.get("best_trial_id") == best_id
    results_path = os.path.join(out, "results.json")
    if same and os.path.isfile(results_path):
        with open(results_path) as handle:
            return json.load(handle)
    if os.path.isdir(out) and not same:
        shutil.rmtree(out)
    _, subset, _ = split_values(values)
    fit_config = config.fit_config(values, out=out, train_fraction=config.retrain_fraction,
                                   verbose=1 if config.verbose > 1 else 0)
    fit_config.command = list(config.command)
    indices = layer_indices(subset, plan.num_layers)
    fit_config.model["layers"] = indices
    results = fit(fit_config)
    results["hyperparameters"]["layers"] = subset
    results["layer_indices"] = indices if indices is not None else list(range(plan.num_layers))
    results["search"] = {"search_dir": config.out, "trial_id": best_id}
    atomic_write_json(results_path, results)
    return results


def search(config: SearchConfig) -> dict:
    """Run (or resume) the search `config` describes; write ``trials.csv``,
    ``search.json`` and, with ``retrain``, ``best/``. Returns the
    ``search.json`` record. Everything is checked before any trial runs.
    """
    from bertvision.distribute import get_strategy

    previous = _check_search_folder(config)
    strategy = get_strategy(config.strategy) if config.strategy != "default" else None

    import keras

    from bertvision.store import atomic_write_json

    _check_tuner_available(config.tuner)
    plan = _Plan(config)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    bad = [b for b in config.space.batch_sizes if b % replicas]
    if bad:
        raise SearchError(f"batch sizes {bad} are not multiples of the {replicas} replicas")
    os.makedirs(config.out, exist_ok=True)
    record = {"run_type": "search", "task": plan.task.name, "main_metric": plan.metric,
              "objective": {"name": plan.objective, "direction": "max"}, "config": config.to_dict(),
              "status": "running", "trials": 0, "best_trial_id": (previous or {}).get("best_trial_id"),
              "best_hyperparameters": (previous or {}).get("best_hyperparameters"),
              "best_search_metric": None, "best_metric": None, "best_run": None,
              "store": config.store, "layers": plan.store.layers, "tokens": plan.store.tokens,
              "train_examples": int(plan.train_examples), "eval_split": plan.eval_splits[0]}
    path = os.path.join(config.out, "search.json")
    atomic_write_json(path, record)

    keras.utils.set_random_seed(config.seed)
    tuner = build_search_tuner(config, plan, strategy)
    start = time.perf_counter()
    tuner.search(verbose=config.verbose)
    rows = read_trial_rows(tuner, plan.metric)
    write_trials_csv(rows, os.path.join(config.out, "trials.csv"), plan.metric)
    best_trials = tuner.oracle.get_best_trials(1)
    record.update(trials=len(rows), search_wall_time_s=round(time.perf_counter() - start, 3),
                  trial_status={s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})})
    if not best_trials or best_trials[0].score is None:
        record["status"] = "failed"
        atomic_write_json(path, record)
        raise SearchError(f"no trial of {config.out} finished; see the trial folders under "
                          f"{os.path.join(config.out, PROJECT)}")
    best = best_trials[0]
    values = {k: v for k, v in active_values(best.hyperparameters).items() if not k.startswith("tuner/")}
    record.update(best_trial_id=best.trial_id, best_hyperparameters=values, best_search_metric=best.score)
    atomic_write_json(path, record)
    if config.retrain:
        results = _retrain_best(config, plan, best.trial_id, values, previous)
        record.update(best_metric=results["dev_metrics"][plan.metric], best_run="best",
                      best_trainable_params=results.get("trainable_params"),
                      best_dev_metrics=results["dev_metrics"])
    record["status"] = "complete"
    atomic_write_json(path, record)
    return record
