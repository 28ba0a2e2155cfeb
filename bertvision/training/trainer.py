"""One trainer: every model BertVision trains goes through Keras ``fit`` here.

An adapter on a store (`bertvision.training.fit`) and BERT itself on text
(`bertvision.training.finetune`) differ only in their model, their data and their
evaluation; the rest is this module:

- the optimizer: AdamW under a linear warmup then linear / cosine decay
  (`WarmupDecay`), no weight decay on biases, LayerNorm and layer-mixing
  weights (`make_optimizer`);
- the loss table, one per task kind, for one output convention: logits
  ``[B, C]``, a score ``[B]``, or ``{"start_logits", "end_logits"}`` ``[B, T]``
  (`task_losses`);
- a `Schedule` of evaluation points ("marks": every epoch end for adapters,
  fractional epochs such as 0.1 and 0.3 for fine-tuning);
- `Trainer`: Keras ``fit`` with a callback that, at every mark, scores the
  eval splits with the official metrics, keeps the history and the best
  weights, stops early after ``patience`` marks without improvement, writes
  TensorBoard scalars, calls the caller's checkpoint hook and saves the
  whole training state (weights, optimizer and dropout random state, history)
  so that a killed run resumes from its last mark.

Example:
    >>> schedule = Schedule.epochs(steps_per_epoch=125, epochs=10)
    >>> trainer = Trainer(model, main_metric="accuracy", schedule=schedule,
    ...                   train_data=lambda first_step: dataset, evaluate=evaluate,
    ...                   state_dir="runs/x/state", select_best=True, patience=3)  # doctest: +SKIP
    >>> outcome = trainer.run()  # doctest: +SKIP
    >>> outcome.best_epoch, outcome.history[-1].dev  # doctest: +SKIP
    (4.0, {'accuracy': 0.84})
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tensorflow.core.framework import summary_pb2

from bertvision import io
from bertvision.config import SCHEDULES
from bertvision.data.features import IGNORE
from bertvision.errors import ConfigError, RunError
from bertvision.lifecycle import TrainOutcome
from bertvision.runs import HistoryPoint

__all__ = ["NO_DECAY", "Schedule", "TrainOutcome", "Trainer", "WarmupDecay", "compile_for_task",
           "make_optimizer", "task_losses"]

# variables not weight-decayed: biases, LayerNorm scales/offsets, layer-mixing logits
NO_DECAY = ("bias", "gamma", "beta", "mix_logits")


# --------------------------------------------------------------- optimizer


@keras.saving.register_keras_serializable(package="bertvision")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then linear (or
    cosine) decay to `end_lr` at `total_steps` (``constant``: stay at peak).

    >>> lr = WarmupDecay(1e-3, total_steps=1000, warmup_steps=100)
    >>> [round(float(lr(step)), 9) for step in (50, 100, 1000)]   # float32
    [0.0005, 0.001, 0.0]
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, decay="linear", end_lr=0.0):
        if decay not in SCHEDULES:
            raise ConfigError(f"decay must be one of {SCHEDULES}, got {decay!r}")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.end_lr = float(end_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup_lr = self.peak_lr * ops.minimum(step / warm, 1.0)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "linear":
            decayed = self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - progress)
        elif self.decay == "cosine":
            decayed = self.end_lr + (self.peak_lr - self.end_lr) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            decayed = ops.convert_to_tensor(self.peak_lr, "float32") + 0.0 * progress
        if self.warmup_steps <= 0:
            return decayed
        return ops.where(step < self.warmup_steps, warmup_lr, decayed)

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay, "end_lr": self.end_lr}


def make_optimizer(lr: float, total_steps: int, *, warmup: float = 0.1, schedule: str = "linear",
                   weight_decay: float = 0.01, clipnorm: float | None = None, epsilon: float = 1e-7):
    """AdamW under `WarmupDecay` (``warmup`` is a fraction of the steps),
    no weight decay on `NO_DECAY` variables, optional global-norm clipping.

    >>> optimizer = make_optimizer(1e-3, total_steps=1000, warmup=0.1)
    """
    rate = WarmupDecay(lr, total_steps, int(round(warmup * total_steps)), schedule)
    optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay, epsilon=epsilon,
                                       global_clipnorm=clipnorm)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


def task_losses(task_kind: str):
    """``(loss, loss_weights)`` for a task kind: the one loss table.

    Classification: cross-entropy of logits; multi-label: binary
    cross-entropy of each label's logit (a sigmoid per label); regression: mean
    squared error; span: the mean of the start and end cross-entropies; token
    classification: the cross-entropy of each labelled token's logits, the
    mean over the words' first sub-words (label -1, `features.IGNORE`: no loss).
    """
    if task_kind == "classification":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True), None
    if task_kind == "multi_label":
        return keras.losses.BinaryCrossentropy(from_logits=True), None
    if task_kind == "regression":
        return keras.losses.MeanSquaredError(), None
    if task_kind == "token_classification":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE), None
    if task_kind == "span":
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return {"start_logits": ce, "end_logits": ce}, {"start_logits": 0.5, "end_logits": 0.5}
    raise ConfigError(f"unknown task kind {task_kind!r}")


def compile_for_task(model, task_kind: str, optimizer, jit_compile: bool = False, steps_per_execution: int = 1):
    """Compile `model` with the task's loss (call inside ``strategy.scope()``)."""
    loss, loss_weights = task_losses(task_kind)
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    return model


def span_targets(labels: dict) -> dict:
    """Span labels as the model's output names (the span losses' keys)."""
    return {"start_logits": labels["start_positions"], "end_logits": labels["end_positions"]}


# ---------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Schedule:
    """How long to train and when to evaluate: ``marks`` are ``(global step,
    epoch label)`` pairs, the last one at ``total_steps``.

    >>> Schedule.epochs(10, 2).marks
    ((10, 1.0), (20, 2.0))
    >>> Schedule.checkpoints(10, 2.0, every=None, at=[0.1, 0.3]).marks
    ((1, 0.1), (3, 0.3), (10, 1.0), (20, 2.0))
    """

    steps_per_epoch: int
    total_steps: int
    marks: tuple

    @classmethod
    def epochs(cls, steps_per_epoch: int, epochs: int) -> "Schedule":
        """A mark at every epoch end."""
        return cls(steps_per_epoch, steps_per_epoch * epochs,
                   tuple((k * steps_per_epoch, float(k)) for k in range(1, epochs + 1)))

    @classmethod
    def checkpoints(cls, steps_per_epoch: int, epochs: float, every: float | None = None,
                    at: Sequence[float] | None = None) -> "Schedule":
        """Marks at each ``every`` fraction of an epoch, at each epoch in
        ``at``, at each epoch end and at the end of training; labels are the
        nominal fractions (``0.1, 0.2, ...``); fractions that fall on the same
        step keep the later label."""
        total = max(1, math.ceil(epochs * steps_per_epoch))
        labels: list[float] = []
        if every:
            k = 1
            while k * every < epochs - 1e-9:
                labels.append(round(k * every, 6))
                k += 1
        labels += [float(x) for x in (at or []) if 0 < x <= epochs]
        labels += [float(e) for e in range(1, int(math.floor(epochs + 1e-9)) + 1)]
        labels.append(float(epochs))
        marks: dict[int, float] = {}
        for label in sorted(set(labels)):
            marks[min(total, max(1, round(label * steps_per_epoch)))] = label
        return cls(steps_per_epoch, total, tuple(sorted(marks.items())))

    def segments(self, start_step: int) -> list[tuple[int, int, int, int]]:
        """The ``model.fit`` calls that train from ``start_step`` (a mark, or
        0) to ``total_steps``: ``(initial_epoch, epochs, steps_per_epoch,
        first_step)`` each. Every mark ends a Keras epoch, so the running
        training loss Keras reports at a mark covers exactly the steps since
        the previous mark, and a run resumed at a mark trains the very
        segments the uninterrupted run would. Consecutive segments of one
        length share a call (adapters: one call, one Keras epoch per epoch).

        >>> Schedule.checkpoints(10, 2.0, at=[0.1, 0.3]).segments(0)
        [(0, 1, 1, 0), (1, 2, 2, 1), (2, 3, 7, 3), (3, 4, 10, 10)]
        """
        lengths, previous = [], 0
        for step, _ in self.marks:
            if step > start_step:
                lengths.append((previous if previous >= start_step else start_step, step - max(previous, start_step)))
            previous = step
        index = sum(1 for step, _ in self.marks if step <= start_step)
        calls: list[tuple[int, int, int, int]] = []
        for first, length in lengths:
            if calls and calls[-1][2] == length:
                initial, epochs, _, first_step = calls[-1]
                calls[-1] = (initial, epochs + 1, length, first_step)
            else:
                calls.append((index, index + 1, length, first))
            index += 1
        return calls


# ------------------------------------------------------------ training state


STATE_PREFIX = "step-"


def _latest_state(state_dir: Path) -> Path | None:
    """The complete saved state with the highest step (``None`` if none)."""
    if not state_dir.is_dir():
        return None
    found = sorted(p for p in state_dir.iterdir() if p.name.startswith(STATE_PREFIX) and (p / "state.json").is_file())
    return found[-1] if found else None


def _save_npz(path: Path, arrays: Sequence[np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **{f"a{i}": a for i, a in enumerate(arrays)})


def _load_npz(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"a{i}"] for i in range(len(data.files))]


class _ScalarSummaries:
    """TensorBoard event files of the per-mark scalars: ``logs/train``
    (``epoch_loss``, ``epoch_learning_rate``) and ``logs/validation`` (every
    dev metric, e.g. ``epoch_accuracy``), x axis = global step. Written with
    TensorFlow's own summary ops, so it needs no ``tensorboard`` package."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writers: dict = {}
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))

    def write(self, which: str, values: dict, step: int) -> None:
        if which not in self._writers:
            self._writers[which] = tf.summary.create_file_writer(os.path.join(self.log_dir, which))
        with self._writers[which].as_default():
            for tag, value in values.items():
                if value is not None and math.isfinite(float(value)):
                    tf.summary.write(f"epoch_{tag}", tf.constant(float(value), tf.float32), step=step,
                                     metadata=self._metadata)
        self._writers[which].flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


class Trainer:
    """Train `model` (compiled) through Keras ``fit`` (see the module docstring).

    Args:
        model: a compiled Keras model (`compile_for_task`).
        main_metric: the metric (of `evaluate`'s) that selects the best mark; higher is better.
        schedule: steps and marks (`Schedule`).
        train_data: ``first_step -> tf.data.Dataset`` of ``(features,
            targets)`` batches from that global step on.
        evaluate: ``model -> (metrics, {split: Predictions})`` at each mark.
        state_dir: where the training state is saved at each mark (``None``:
            not saved, no resume). The state of a finished run is removed by
            `bertvision.lifecycle.run_task` (`RunFolder.clear_state`).
        select_best: restore the best mark's weights at the end (adapters)
            instead of keeping the last (fine-tuning checkpoints).
        patience: stop after this many marks without a better main metric.
        on_mark: ``(step, label, model, metrics, predictions) -> None``,
            called at every mark before the state is saved (checkpoints).
        examples_per_step: global batch size (for examples/s).
        verbose: Keras progress bar (1), one line per epoch (2) or none (0).
        log_dir: TensorBoard scalars (``None``: none).
        strategy: the `tf.distribute` strategy the model was built under.
        chief: whether this process saves state and calls `on_mark`.
        callbacks: more Keras callbacks (after the trainer's own).
        restarting: the run folder holds an earlier, unfinished attempt
            (`bertvision.runs.RunFolder.begin` returned True): with no saved
            state to resume (it was stopped before its first save was
            complete) `run` says it starts again from step 0.
    """

    def __init__(self, model, *, main_metric: str, schedule: Schedule, train_data: Callable[[int], tf.data.Dataset],
                 evaluate: Callable, state_dir: str | os.PathLike | None = None, select_best: bool = True,
                 patience: int | None = None, on_mark: Callable | None = None, examples_per_step: int = 1,
                 verbose: int = 1, log_dir: str | os.PathLike | None = None, strategy=None, chief: bool = True,
                 callbacks: Sequence = (), restarting: bool = False):
        self.model, self.main_metric, self.schedule = model, main_metric, schedule
        self.restarting = restarting
        self.train_data, self.evaluate, self.on_mark = train_data, evaluate, on_mark
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.select_best, self.patience = select_best, patience
        self.examples_per_step, self.verbose, self.chief = examples_per_step, verbose, chief
        self.summaries = _ScalarSummaries(str(log_dir)) if (log_dir and chief) else None
        self.strategy = strategy or tf.distribute.get_strategy()
        self.callbacks = list(callbacks)
        self.marks = dict(schedule.marks)
        # state
        self.history: list[HistoryPoint] = []
        self.best_epoch: float | None = None
        self.best_value: float | None = None
        self.best_weights: list | None = None
        self.predictions: dict = {}
        self.best_predictions: dict = {}
        self.train_seconds = 0.0
        self.step = 0
        self.stopped = False
        self.resumed_from: dict | None = None

    # -------------------------------------------------------------- state
    def _model_state(self) -> list[np.ndarray]:
        return [np.asarray(v) for v in self.model.variables]

    def _optimizer_state(self) -> list[np.ndarray]:
        return [np.asarray(v) for v in self.model.optimizer.variables]

    def save_state(self) -> None:
        """Write ``state_dir/step-N/`` (weights, optimizer, dropout RNG,
        history, best) atomically, then drop older states."""
        if self.state_dir is None or not self.chief:
            return
        folder = self.state_dir / f"{STATE_PREFIX}{self.step:09d}"
        with io.atomic_folder(folder) as tmp:
            _save_npz(tmp / "model.npz", self._model_state())
            _save_npz(tmp / "optimizer.npz", self._optimizer_state())
            if self.best_weights is not None:
                _save_npz(tmp / "best.npz", self.best_weights)
            state = {"step": self.step, "history": [asdict(h) for h in self.history], "best_epoch": self.best_epoch,
                     "best_value": self.best_value, "train_seconds": self.train_seconds, "stopped": self.stopped}
            io.atomic_write_json(tmp / "state.json", state)
        for old in self.state_dir.iterdir():
            if old.name.startswith(STATE_PREFIX) and old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def restore_state(self) -> bool:
        """Load the latest saved state into the model and optimizer; False if none."""
        if self.state_dir is None:
            return False
        latest = _latest_state(self.state_dir)
        if latest is None:
            return False
        state = io.read_json(latest / "state.json", RunError)
        model_values = _load_npz(latest / "model.npz")
        if len(model_values) != len(self.model.variables):
            raise RunError(f"{latest}: saved state does not fit this model ({len(model_values)} variables, "
                           f"model has {len(self.model.variables)}); remove {self.state_dir} to start afresh")
        with self.strategy.scope():
            if not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
        for var, value in zip(self.model.variables, model_values):
            var.assign(value)
        for var, value in zip(self.model.optimizer.variables, _load_npz(latest / "optimizer.npz")):
            var.assign(value)
        if (latest / "best.npz").is_file():
            self.best_weights = _load_npz(latest / "best.npz")
        self.step = int(state["step"])
        self.history = [HistoryPoint(**h) for h in state["history"]]
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.train_seconds = float(state["train_seconds"])
        self.stopped = bool(state.get("stopped"))
        self.resumed_from = {"step": self.step, "epoch": self.history[-1].epoch if self.history else 0.0}
        return True

    # -------------------------------------------------------------- marks
    def _mark(self, step: int, loss: float | None, seconds: float) -> None:
        label = self.marks[step]
        self.train_seconds += seconds
        previous = self.history[-1].step if self.history and self.history[-1].step is not None else 0
        metrics, predictions = self.evaluate(self.model)
        lr = self.model.optimizer.learning_rate
        point = HistoryPoint(epoch=float(label), dev=metrics, step=step, loss=loss,
                             lr=float(np.asarray(lr)) if lr is not None else None,
                             train_time_s=round(self.train_seconds, 3),
                             examples_per_s=round((step - previous) * self.examples_per_step / max(seconds, 1e-9), 1))
        self.history.append(point)
        self.step = step
        self.predictions = predictions
        main = metrics[self.main_metric]
        if self.best_value is None or main > self.best_value:
            self.best_epoch, self.best_value = float(label), float(main)
            if self.select_best:
                self.best_weights = self.model.get_weights()
                self.best_predictions = predictions
        if self.summaries is not None:
            self.summaries.write("train", {"loss": loss, "learning_rate": point.lr}, step)
            self.summaries.write("validation", metrics, step)
        if self.patience and self._marks_since_best() >= self.patience:
            self.stopped = True
        if self.on_mark is not None and self.chief:
            self.on_mark(step, label, self.model, metrics, predictions)
        self.save_state()
        if self.stopped:
            if self.verbose:
                print(f"\nearly stopping: no better {self.main_metric} for {self.patience} evaluation(s); "
                      f"best at epoch {self.best_epoch:g}", flush=True)
            self.model.stop_training = True

    def _marks_since_best(self) -> int:
        epochs = [h.epoch for h in self.history]
        return len(epochs) - 1 - epochs.index(self.best_epoch) if self.best_epoch in epochs else 0

    @property
    def finished(self) -> bool:
        return self.stopped or self.step >= self.schedule.total_steps

    # ---------------------------------------------------------------- run
    def run(self) -> TrainOutcome:
        """Train (or resume) to the end of the schedule or an early stop."""
        resumed = self.restore_state()
        if resumed and self.chief:
            print(f"resuming from step {self.step}/{self.schedule.total_steps} (epoch "
                  f"{self.resumed_from['epoch']:g}) saved in {self.state_dir}", file=sys.stderr, flush=True)
        elif self.restarting and self.chief:  # never silently: a checkpoint on disk is not a resumable state
            print(f"no saved training state in {self.state_dir} (the earlier attempt stopped before its first "
                  "save was complete): starting again from step 0", file=sys.stderr, flush=True)
        callback = _MarkCallback(self)
        for initial_epoch, epochs, steps, first_step in ([] if self.finished else
                                                        self.schedule.segments(self.step)):
            with self.strategy.scope():
                self.model.fit(self.train_data(first_step), initial_epoch=initial_epoch, epochs=epochs,
                               steps_per_epoch=steps, callbacks=[callback, *self.callbacks],
                               verbose=self.verbose if self.chief else 0, shuffle=False)
            if self.stopped:
                break
        if self.summaries is not None:
            self.summaries.close()
        if not self.history:
            raise RunError("no evaluation point was reached; nothing to save")
        predictions = self.predictions
        if self.select_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            predictions = self.best_predictions
            if set(predictions) != set(self.predictions) or not predictions:  # the best mark was before a resume
                _, predictions = self.evaluate(self.model)
        elif not predictions:  # an interrupted run that had finished training: evaluate its final weights
            _, predictions = self.evaluate(self.model)
        best = next(h for h in self.history if h.epoch == self.best_epoch)
        return TrainOutcome(history=self.history, best_epoch=self.best_epoch, best_metrics=best.dev,
                            predictions=predictions, train_seconds=self.train_seconds,
                            resumed_from=self.resumed_from if resumed else None, stopped_early=self.stopped)


class _MarkCallback(keras.callbacks.Callback):
    """Calls `Trainer._mark` at every mark; puts the mark's metrics into the
    epoch logs as ``val_<metric>`` (progress bar, KerasTuner's objective)."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.trainer = trainer
        self._since = time.perf_counter()
        self._last: dict = {}

    def on_train_begin(self, logs=None):
        self._since = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = int(np.asarray(self.model.optimizer.iterations))
        if step in self.trainer.marks and step > self.trainer.step:
            seconds = time.perf_counter() - self._since
            loss = (logs or {}).get("loss")
            self.trainer._mark(step, None if loss is None else float(np.asarray(loss)), seconds)
            self._last = {"step": step, "metrics": self.trainer.history[-1].dev}
            self._since = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._last.get("step") == int(np.asarray(self.model.optimizer.iterations)):
            for name, value in self._last["metrics"].items():
                logs[f"val_{name}"] = value
