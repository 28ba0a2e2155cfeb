"""The one run lifecycle: every run that writes a run folder (an adapter fit,
BERT fine-tuning, an answerability classifier, an ensemble) goes through
`run_task`.

A run is a `RunTask` (in the spirit of TF Model Garden's
``official/core/base_task.Task``): it knows its config, how to build its
model and data and train them (`RunTask.train`, through the one trainer,
`bertvision.training.trainer.Trainer`, or no training at all for an
ensemble), what files beside ``results.json`` it writes, and the
`RunResults` fields it adds (`RunTask.result_fields`). `run_task` does the
rest, the same way for every kind of run:

1. return a finished run's results when the task allows it
   (`RunTask.reuse_finished`), else read the task's data (`RunTask.prepare`)
   and claim the folder (`RunFolder.begin`:
   refuses a finished run or one with other settings; resumes an unfinished
   one of the same settings);
2. lock the folder against a second process;
3. measure peak memory (`PeakMemory`) and wall time around `RunTask.train`;
4. build ``results.json``: the fields every run shares (task, run type, main
   metric, dev metrics, history, best epoch, times, peak memory, where it
   resumed from, package versions) plus the task's own, in ONE place;
5. save the task's outputs (`RunTask.save`), the eval predictions and
   ``results.json``; remove the training state (``state/``).

Example:
    >>> from bertvision.distribute import get_strategy
    >>> from bertvision.store.format import open_store
    >>> from bertvision.training.fit import AdapterFit, FitConfig, StorePlan
    >>> config = FitConfig(store=STORE, out="runs/a", adapter={"kind": "linear_probe"}, epochs=1, verbose=0)
    >>> plan = StorePlan(open_store(STORE), "train", None)     # STORE: 32 SST-2 examples
    >>> results = run_task(AdapterFit(config, plan, get_strategy()), RunFolder("runs/a"))
    >>> results.run_type, sorted(results.dev_metrics), RunFolder("runs/a").finished
    ('fit', ['accuracy'], True)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any, Sequence

from bertvision.config import ConfigBase
from bertvision.runs import PeakMemory, RunFolder, RunResults, package_versions

__all__ = ["RunTask", "TrainOutcome", "run_task"]


@dataclass
class TrainOutcome:
    """What training (or, for an ensemble, evaluating) a task gave:
    `bertvision.training.trainer.Trainer.run` returns one."""

    history: list  # of HistoryPoint
    best_epoch: float | None
    best_metrics: dict
    predictions: dict  # split -> Predictions of the weights the model holds now
    train_seconds: float | None
    resumed_from: dict | None = None
    stopped_early: bool = False


class RunTask:
    """One kind of run, as `run_task` drives it (subclass it).

    Attributes:
        config: the run's config (saved as ``config.json``).
        run_type: ``fit``, ``finetune`` or ``ensemble`` (`RunResults.run_type`).
        what: the run in words, for the lock's message ("an adapter fit").
        resume_free: config fields that may differ when an unfinished run is
            resumed.
        reuse_finished: a folder holding a finished run of the same settings
            returns its results instead of being refused.
        chief: whether this process writes the run folder (a multi-worker
            fit's other workers train in a temporary folder, removed after).
    """

    config: ConfigBase
    run_type: str = "fit"
    what: str = "a run"
    resume_free: Sequence[str] = ("command",)
    reuse_finished: bool = False
    chief: bool = True

    def prepare(self) -> None:
        """Read what the run needs that may still refuse it (data files,
        labels), before the run folder is made."""

    def train(self, run: RunFolder) -> TrainOutcome:
        """Build the model and data and train them (``state/`` and ``logs/``
        in `run`); an ensemble only combines and evaluates."""
        raise NotImplementedError

    def result_fields(self, outcome: TrainOutcome) -> dict[str, Any]:
        """The `RunResults` fields of this kind of run: at least ``task``,
        ``method`` and ``main_metric``; any shared field may be overridden
        (fine-tuning reports its final checkpoint's ``dev_metrics``)."""
        raise NotImplementedError

    def store_identity(self) -> dict | None:
        """The identity of the store the run trains on (`Store.identity`), or
        None: recorded in ``store.json`` when the run starts, and a resume on
        another store refused (`RunFolder.begin`)."""
        return None

    def environment(self) -> dict[str, Any]:
        """``results.json``'s ``environment`` besides the package versions
        (strategy, replicas, jit_compile)."""
        return {}

    def save(self, run: RunFolder, outcome: TrainOutcome) -> None:
        """Write the task's own files into `run` (an adapter's ``model.keras``)."""

    def cleanup(self, run: RunFolder) -> None:
        """After ``results.json`` is written: remove the training state."""
        run.clear_state()


def run_task(task: RunTask, run: RunFolder) -> RunResults:
    """Run `task` in `run` (see the module docstring); returns its `RunResults`."""
    if task.reuse_finished and run.finished:  # the same command again: the finished run's results
        run.check_same(task.config, task.resume_free)
        return run.results()
    task.prepare()  # the data's refusals before the run folder is made
    if task.chief:
        run.begin(task.config, ignore=task.resume_free, store=task.store_identity())
    with run.lock(task.what):
        with PeakMemory() as peak:
            start = time.perf_counter()
            outcome = task.train(run)
            fields = task.result_fields(outcome)
            total = time.perf_counter() - start
        shared = dict(run_type=task.run_type, dev_metrics=outcome.best_metrics, history=outcome.history,
                      best_epoch=outcome.best_epoch,
                      train_wall_time_s=None if outcome.train_seconds is None else round(outcome.train_seconds, 3),
                      total_wall_time_s=None if outcome.train_seconds is None else round(total, 3),
                      peak_memory_mib=None if outcome.train_seconds is None else peak.rss_mib,
                      peak_device_memory_mib=None if outcome.train_seconds is None else peak.device_mib,
                      resumed_from=outcome.resumed_from,
                      environment={**task.environment(), "versions": package_versions()}
                      if outcome.train_seconds is not None else {})
        results = RunResults(**{**shared, **fields})
        if task.chief:
            task.save(run, outcome)
            results.predictions = run.save_predictions(outcome.predictions)
            run.write_results(results)
            task.cleanup(run)
    if not task.chief:
        shutil.rmtree(run.path, ignore_errors=True)
    return results
