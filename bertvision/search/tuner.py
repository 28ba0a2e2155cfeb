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
                               `bertvision.training.fit.AdapterFit`: a normal fit run folder
                               (`pipelines.predict`, `pipelines.ensemble`)

The space (`SearchSpace`): adapter ``kind``; which stored ``layers`` enter
the adapter (``all``, ``lastK``, ``every_other``, as
`bertvision.config.select_layers`; not for ``linear_probe``, which reads the
last layer); ``layer_pooling``, ``adapter_dim`` and (when given more than
``[0]``; sequence stores) ``transformer_blocks`` of ``adapter_pooler``;
on a store of long documents (windows) ``window_pooling`` (mean, max,
attention; `--window-poolings`); ``dropout``; ``lr``; ``batch_size``. A layer subset is `ModelConfig.layers`,
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
    >>> summary = search(config)  # doctest: +SKIP
    >>> summary["best_hyperparameters"], summary["best_metric"]  # doctest: +SKIP
    ({'kind': 'adapter_pooler', 'layers': 'all', ...}, 0.85)
"""

from __future__ import annotations

import contextlib
import csv
import io as _stringio
import json
import os
import shutil
import time
from dataclasses import dataclass

import keras
import keras_tuner as kt
import keras_tuner.src.utils as kt_utils
import numpy as np
import tensorflow as tf

from bertvision import io
from bertvision.distribute import get_strategy
from bertvision.errors import SearchError
from bertvision.lifecycle import run_task
from bertvision.training.fit import AdapterFit, FitConfig, StorePlan, build_adapter_trainer
from bertvision.models import WINDOW_POOLINGS, build_model, trainable_params
from bertvision.runs import TUNER, RunFolder, SearchFolder
from bertvision.search.config import (RESUMABLE, SPACE_NAMES, TUNERS, SearchConfig, SearchSpace, active_values,
                                      layer_indices, split_values)
from bertvision.store.format import open_store

__all__ = ["PROJECT", "SPACE_NAMES", "TUNERS", "SearchConfig", "SearchRole", "SearchSpace", "atomic_tuner_state",
           "build_search_tuner", "layer_indices", "read_trial_rows", "search", "search_role", "trial_fit_config",
           "trials_csv", "work_for_chief"]

PROJECT = TUNER  # KerasTuner project name: SEARCH_DIR/tuner (`bertvision.runs.SearchFolder`)
TRIAL_RECORD = "bertvision_trial.json"
TRIAL_WEIGHTS = "best.weights.npz"


def trial_fit_config(config: SearchConfig, values: dict, out: str, train_fraction: float | None = None,
                     verbose: int = 0, layer_count: int | None = None, search: dict | None = None) -> FitConfig:
    """The `FitConfig` a trial's `values` train with in the search `config`
    (`layer_count`: the store's layers, to turn the layer subset into indices)."""
    adapter, subset, train = split_values(values)
    if layer_count is not None:
        adapter["layers"] = layer_indices(subset, layer_count)
    return FitConfig(store=config.store, out=out, adapter=adapter, train_split=config.train_split,
                     eval_splits=[config.eval_split] if config.eval_split else None, epochs=config.epochs,
                     eval_batch_size=config.eval_batch_size, weight_decay=config.weight_decay,
                     warmup=config.warmup, seed=config.seed,
                     train_fraction=config.train_fraction if train_fraction is None else train_fraction,
                     strategy=config.strategy, jit_compile=config.jit_compile, verbose=verbose, search=search,
                     label_column=config.label_column, **train)


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
    """What every trial shares: the store's `StorePlan` (opened store, task,
    eval splits; handed to `fit` for the best retrain), the eval split the
    trials are scored on, the training records, the number of stored layers."""

    def __init__(self, config: SearchConfig):
        self.fit_plan = StorePlan(open_store(config.store, verify=True).head(config.label_column),
                                  config.train_split, [config.eval_split] if config.eval_split else None, SearchError,
                                  config.train_fraction, config.seed)
        self.store, self.task = self.fit_plan.store, self.fit_plan.task
        self.eval_splits = self.fit_plan.eval_splits[:1]
        # every kind and adapter setting must fit the store (e.g. span tasks need a sequence store)
        for kind in config.space.kinds:
            pooler = kind == "adapter_pooler"
            for dim in (config.space.adapter_dims if pooler else [None]):
                for blocks in (config.space.transformer_blocks if pooler else [0]):
                    self.fit_plan.model_config({"kind": kind, **({"adapter_dim": dim} if dim else {}),
                                                **({"transformer_blocks": blocks} if blocks else {})}, SearchError)
        self.windows = self.store.windowed  # long documents: the window pooling is searched too
        if not self.windows and config.space.window_poolings != list(WINDOW_POOLINGS):
            raise SearchError(f"--window-poolings searches how a long document's windows are pooled; {config.store} "
                              "keeps no windows (extract it with --doc-stride to store documents as windows)")
        self.num_layers = len(self.store.layers)
        config.space.check(self.num_layers)
        self.indices, self.train_examples = self.fit_plan.indices, self.fit_plan.train_examples
        self.train_records = self.fit_plan.train_records
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
        self.config.space.declare(hp, self.plan.windows)

    def model_config(self, hp):
        self.config.space.declare(hp, self.plan.windows)
        adapter, subset, _ = split_values(active_values(hp))
        adapter["layers"] = layer_indices(subset, self.plan.num_layers)
        return self.plan.fit_plan.model_config(adapter, SearchError)

    def build(self, hp):
        return build_model(self.model_config(hp))


_UNFINISHED = ("RUNNING", "IDLE", "INVALID")  # INVALID: waiting for a retry


# ------------------------------------------------- KerasTuner's private parts
#
# KerasTuner has no public way to make its state files safe against kill -9,
# nor to say which trials a reloaded oracle retries. This section is the one
# place BertVision reaches into KerasTuner's internals for that. pyproject.toml
# pins the keras-tuner range they are tested on (>=1.4.7,<1.5), and
# tests/test_search.py::test_keras_tuner_internals_we_rely_on checks the
# installed version lies in it and fails loudly if an upgrade moves them.


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


def trials_csv(rows: list[dict], metric: str) -> str:
    """`rows` (from `read_trial_rows`) as the text of ``trials.csv``: ``trial_id``,
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
    return buffer.getvalue()


def _strategy_and_plan(config: SearchConfig):
    strategy = get_strategy(config.strategy) if config.strategy != "default" else None
    plan = _Plan(config)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    bad = [b for b in config.space.batch_sizes if b % replicas]
    if bad:
        raise SearchError(f"batch sizes {bad} are not multiples of the {replicas} replicas")
    return strategy, plan


def work_for_chief(config: SearchConfig, role: "SearchRole", folder: SearchFolder, strategy, plan: _Plan,
                   poll_s: float = 1.0) -> dict:
    """Be a worker of a distributed search: wait for the chief's
    ``search.json`` (and refuse other settings than the chief's), then train
    the trials the chief hands out until it has none left. Writes only the
    trial folders (``trial_XX/bertvision_trial.json``, weights) and its own
    tuner file; ``search.json``, ``trials.csv`` and ``best/`` are the chief's.
    Returns ``{"run_type": "search_worker", "tuner_id", "oracle", "trials_run"}``."""
    if not folder.record_file.is_file():
        print(f"{role.tuner_id}: waiting for the chief to start the search in {config.out}", flush=True)
        while not folder.record_file.is_file():
            time.sleep(poll_s)
    with folder.join(config, RESUMABLE, SearchError, role.tuner_id):  # the chief's settings must be ours
        keras.utils.set_random_seed(config.seed)
        with atomic_tuner_state():
            tuner = build_search_tuner(config, plan, strategy)
            tuner.search(verbose=0)
    return {"run_type": "search_worker", "tuner_id": role.tuner_id, "oracle": role.oracle,
            "trials_run": list(tuner.trials_run)}


def _retrain_best(config: SearchConfig, plan: _Plan, strategy, run: RunFolder, best_id: str, values: dict,
                  previous: dict | None):
    """Train the best trial's configuration into ``SEARCH_DIR/best``: an
    `AdapterFit` on the search's own `StorePlan`, through
    `bertvision.lifecycle.run_task` (a finished retrain of the same trial
    returns its results; an interrupted one resumes; a best run of another
    trial is replaced)."""
    out = str(run.path)
    same = previous is not None and previous.get("best_trial_id") == best_id
    if run.path.is_dir() and not same:
        shutil.rmtree(run.path)
    _, subset, _ = split_values(values)
    fit_config = trial_fit_config(config, values, out=out, train_fraction=config.retrain_fraction,
                                   verbose=1 if config.verbose > 1 else 0, layer_count=plan.num_layers,
                                   search={"search_dir": config.out, "trial_id": best_id, "layer_subset": subset})
    fit_config.command = list(config.command)
    task = AdapterFit(fit_config, plan.fit_plan, strategy or tf.distribute.get_strategy())
    task.reuse_finished = True  # the same trial retrained already: its results
    return run_task(task, run)


def search(config: SearchConfig) -> dict:
    """Run (or resume) the search `config` describes; write ``trials.csv``,
    ``search.json`` and, with ``retrain``, ``best/``. Returns the
    ``search.json`` record. Everything is checked before any trial runs.

    In a distributed search (`search_role`) the chief does all this while the
    workers train the trials; a worker's call returns `work_for_chief`'s
    summary instead.
    """
    role = search_role()
    folder = SearchFolder(config.out)
    previous = None if role.kind == "worker" else folder.begin(config, RESUMABLE, SearchError)  # before the store
    strategy, plan = _strategy_and_plan(config)
    if role.kind == "worker":
        return work_for_chief(config, role, folder, strategy, plan)
    folder.check_store(previous, plan.store.identity(), SearchError)
    with folder.lock("a search", SearchError):
        record = {"run_type": "search", "task": plan.task.name, "main_metric": plan.metric,
                  "objective": {"name": plan.objective, "direction": "max"}, "config": config.to_dict(),
                  "status": "running", "trials": 0, "best_trial_id": (previous or {}).get("best_trial_id"),
                  "best_hyperparameters": (previous or {}).get("best_hyperparameters"),
                  "best_search_metric": None, "best_metric": None, "best_run": None,
                  "store": config.store, "store_identity": plan.store.identity(), "layers": plan.store.layers,
                  "token_mode": plan.store.token_mode,
                  "train_examples": int(plan.train_examples), "eval_split": plan.eval_splits[0],
                  "distributed": None if role.kind == "single" else {"oracle": role.oracle, "chief": role.tuner_id}}
        folder.write_record(record)

        if role.kind == "single":  # nobody else writes here (we hold the lock): a killed search's leftovers go
            _remove_stale_state(str(folder.tuner_dir))
        keras.utils.set_random_seed(config.seed)
        start = time.perf_counter()
        with atomic_tuner_state():
            tuner = build_search_tuner(config, plan, strategy)
            tuner.save()  # oracle.json and the tuner's file exist from here on: a search killed later reloads
            if role.kind == "chief" and config.verbose:
                print(f"chief {role.tuner_id}: serving trials at {role.oracle} to the workers", flush=True)
            tuner.search(verbose=config.verbose)  # the chief: until the workers have run every trial
        rows = read_trial_rows(tuner, plan.metric)
        folder.write_trials(trials_csv(rows, plan.metric))
        best_trials = tuner.oracle.get_best_trials(max(1, len(tuner.oracle.trials)))
        record.update(trials=len(rows), search_wall_time_s=round(time.perf_counter() - start, 3),
                      trial_status={s: sum(r["status"] == s for r in rows)
                                    for s in sorted({r["status"] for r in rows})})
        if not best_trials or best_trials[0].score is None:
            record["status"] = "failed"
            folder.write_record(record)
            raise SearchError(f"no trial of {config.out} finished; see the trial folders under {folder.tuner_dir}")
        # a tie goes to the earliest trial, so the best trial does not depend on the order trials finished in
        # (a search killed and resumed finishes them in another order than an uninterrupted one)
        tied = [t for t in best_trials if t.score == best_trials[0].score]
        best = min(tied, key=lambda t: (int(t.trial_id) if t.trial_id.isdigit() else float("inf"), t.trial_id))
        values = {k: v for k, v in active_values(best.hyperparameters).items() if not k.startswith("tuner/")}
        record.update(best_trial_id=best.trial_id, best_hyperparameters=values, best_search_metric=best.score)
        folder.write_record(record)
        if config.retrain:
            results = _retrain_best(config, plan, strategy, folder.best, best.trial_id, values, previous)
            record.update(best_metric=results.dev_metrics[plan.metric], best_run="best",
                          best_trainable_params=results.trainable_params, best_dev_metrics=results.dev_metrics)
        record["status"] = "complete"
        folder.write_record(record)
    return record
