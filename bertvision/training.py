"""Training adapters on a store: `FitConfig` -> a run folder.

A run folder (local path) holds everything needed to reproduce and use it::

    config.json          the FitConfig (incl. the ModelConfig) that made it
    model.keras          the adapter with the best epoch's weights
    results.json         task, method, hyperparameters, history, dev metrics,
                         speeds, parameter counts (docs/architecture.md)
    predictions/S.npz    the best model's predictions of each eval split
                         (the `bertvision.ensemble` format)
    logs/                TensorBoard event files (train loss and learning rate;
                         dev metrics under validation)
    backup/              while training: the last epoch (Keras
                         BackupAndRestore) and the best weights so far, so a
                         killed fit resumes; removed when the run is complete

Training is Keras ``compile``/``fit`` with AdamW and a linear warmup then
linear (or cosine) decay (`WarmupDecay`); after each epoch the eval splits are
predicted and scored with the official metrics, the best epoch on the task's
main metric is kept, and training stops early after ``patience`` epochs
without improvement.

Example:
    >>> config = FitConfig(store="tfrecords/sst2", out="runs/sst2-pooler",
    ...                    model={"kind": "adapter_pooler", "adapter_dim": 64})
    >>> results = fit(config)
    >>> results["dev_metrics"]["accuracy"]
    0.85
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FitConfig", "FitError", "WarmupDecay", "backbone_params", "bert_param_count", "fit",
           "make_model_config", "select_train_records"]

SCHEDULES = ("linear", "cosine", "constant")
# ModelConfig fields that come from the store, not from the user
STORE_DERIVED = ("task_kind", "num_labels", "num_layers", "hidden", "tokens", "input_dtype")


class FitError(ValueError):
    """A fit that cannot run as configured (bad settings, run folder in use...)."""


# ---------------------------------------------------------------- configuration


@dataclass
class FitConfig:
    """Everything that determines a fit run (saved as ``RUN_DIR/config.json``).

    `model` holds `bertvision.models.ModelConfig` fields: at least ``kind``;
    the store-derived ones (task kind, labels, layers, hidden, tokens, input
    dtype) are filled in from the store by `fit` and saved complete.

    >>> c = FitConfig(store="tfrecords/sst2", out="runs/a", model={"kind": "cnn"}, epochs=3)
    >>> FitConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    True
    """

    store: str
    out: str
    model: dict = field(default_factory=lambda: {"kind": "adapter_pooler"})
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
    command: list = field(default_factory=list)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from bertvision.distribute import STRATEGIES
        from bertvision.models import KINDS

        def positive(name, value):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FitError(f"{name} must be a positive integer, got {value!r}")

        if not isinstance(self.model, dict) or "kind" not in self.model:
            raise FitError(f"model must be a dict of ModelConfig fields with a 'kind', got {self.model!r}")
        if self.model["kind"] not in KINDS:
            raise FitError(f"unknown model kind {self.model['kind']!r}; choose one of {', '.join(KINDS)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "steps_per_execution"):
            positive(name, getattr(self, name))
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise FitError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.weight_decay:
            raise FitError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup < 1:
            raise FitError(f"warmup is a fraction of the training steps in [0, 1), got {self.warmup!r}")
        if self.schedule not in SCHEDULES:
            raise FitError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.train_fraction <= 1:
            raise FitError(f"train_fraction must be in (0, 1], got {self.train_fraction!r}")
        if self.strategy not in STRATEGIES:
            raise FitError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.patience is not None:
            positive("patience", self.patience)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FitConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FitError(f"unknown FitConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str) -> "FitConfig":
        from bertvision.store import exists, read_json

        if not exists(path):
            raise FitError(f"no config file {path}")
        return cls.from_dict(read_json(path))

    def hyperparameters(self) -> dict:
        """The training and model settings a report compares runs on."""
        out = {k: getattr(self, k) for k in ("lr", "batch_size", "epochs", "weight_decay", "warmup", "schedule",
                                             "patience", "seed", "train_fraction")}
        out.update({k: v for k, v in self.model.items() if k not in STORE_DERIVED and k != "name"})
        return out


def make_model_config(store, model: dict):
    """A complete `ModelConfig` for `store`: the user's fields (`model`, with
    ``kind``) plus those the store determines. Sequence stores give
    ``tokens = max_seq_len``."""
    from bertvision.models import ModelConfig

    user = {k: v for k, v in model.items() if k not in STORE_DERIVED}
    derived = {
        "task_kind": store.task_kind,
        "num_labels": 1 if store.task_kind == "regression" else max(2, len(store.manifest.get("label_names") or [])),
        "num_layers": len(store.layers),
        "hidden": store.hidden,
        "tokens": store.max_seq_len if store.tokens == "sequence" else None,
        "input_dtype": store.manifest["dtype"],
    }
    for key in STORE_DERIVED:  # a saved config carries them: they must still agree with the store
        if key in model and model[key] != derived[key]:
            raise FitError(f"model {key}={model[key]!r} does not match the store {store.path} ({derived[key]!r})")
    try:
        return ModelConfig.from_dict({**user, **derived})
    except (TypeError, ValueError) as err:
        raise FitError(f"model settings: {err}") from err


# --------------------------------------------------------------- learning rate


def _register(cls):
    import keras

    return keras.saving.register_keras_serializable(package="bertvision")(cls)


def _schedule_base():
    import keras

    return keras.optimizers.schedules.LearningRateSchedule


class WarmupDecay(_schedule_base()):
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then linear (or
    cosine) decay to `end_lr` at `total_steps` (``constant``: stay at peak).

    >>> lr = WarmupDecay(1e-3, total_steps=1000, warmup_steps=100)
    >>> float(lr(50)), float(lr(100)), float(lr(1000))
    (0.0005, 0.001, 0.0)
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, decay="linear", end_lr=0.0):
        if decay not in SCHEDULES:
            raise ValueError(f"decay must be one of {SCHEDULES}, got {decay!r}")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.end_lr = float(end_lr)

    def __call__(self, step):
        from keras import ops

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


WarmupDecay = _register(WarmupDecay)


# ------------------------------------------------------------ parameter counts


def bert_param_count(config: dict) -> int:
    """Parameters of a BERT encoder with pooler, in closed form, from a Hugging
    Face ``config.json`` or a keras-hub ``BertBackbone`` preset config.

    Embeddings ``(V + P + S) H + 2H`` (word, position, segment, LayerNorm);
    per layer ``4H^2 + 4H`` (attention) ``+ 2HI + I + H`` (feed-forward)
    ``+ 4H`` (two LayerNorms); pooler ``H^2 + H``.

    >>> bert_param_count({"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    ...                   "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2})
    22713216
    """
    if "config" in config and isinstance(config["config"], dict):  # keras-hub preset config.json
        c = config["config"]
        v, h, n, i = c["vocabulary_size"], c["hidden_dim"], c["num_layers"], c["intermediate_dim"]
        p, s = c.get("max_sequence_length", 512), c.get("num_segments", 2)
    else:
        try:
            v, h, n, i = (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
                          config["intermediate_size"])
        except KeyError as err:
            raise ValueError(f"not a BERT config (missing {err}); keys: {sorted(config)[:12]}") from err
        p, s = config.get("max_position_embeddings", 512), config.get("type_vocab_size", 2)
    embeddings = (v + p + s) * h + 2 * h
    layer = (4 * h * h + 4 * h) + (2 * h * i + i + h) + 4 * h
    return int(embeddings + n * layer + h * h + h)


def backbone_params(model_identity: dict) -> int | None:
    """Parameter count of the backbone a store was extracted with, from the
    ``config.json`` at its manifest's model path (``None`` when the model is a
    keras-hub preset name with no local folder)."""
    from bertvision.store import exists, join, read_json

    path = (model_identity or {}).get("path")
    if not path or not exists(join(path, "config.json")):
        return None
    return bert_param_count(read_json(join(path, "config.json")))


# ---------------------------------------------------------- training fraction


def record_uids(store, split: str) -> np.ndarray:
    """The uid of every record of `split`, in store order (parses only uids)."""
    import tensorflow as tf

    spec = {"uid": tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(store.shard_paths(split)).batch(4096)
    ds = ds.map(lambda s: tf.io.parse_example(s, spec)["uid"])
    return np.concatenate([b.numpy() for b in ds]) if store.num_records(split) else np.zeros([0], object)


def select_train_records(store, split: str, fraction: float, seed: int) -> tuple[np.ndarray | None, int]:
    """A seeded `fraction` of the examples of `split`: ``(record indices or None
    for all, number of examples)``. Span stores sample whole questions (all
    windows of a question together); others sample records (= examples).

    >>> idx, n = select_train_records(store, "train", 0.1, seed=0)
    """
    n_records = store.num_records(split)
    groups = None
    if store.task_kind == "span":
        _, groups = np.unique(record_uids(store, split), return_inverse=True)
        n_examples = int(groups.max()) + 1 if len(groups) else 0
    else:
        n_examples = n_records
    if fraction >= 1.0:
        return None, n_examples
    keep = max(1, int(round(fraction * n_examples)))
    chosen = np.random.default_rng(seed).permutation(n_examples)[:keep]
    if groups is None:
        return np.sort(chosen), keep
    mask = np.zeros(n_examples, bool)
    mask[chosen] = True
    return np.flatnonzero(mask[groups]), keep


# ------------------------------------------------------------------ callbacks


def _callback_base():
    import keras

    return keras.callbacks.Callback


class DevEvaluation(_callback_base()):
    """After every epoch: predict the eval splits, score them with the official
    metrics, log them (as ``val_*`` for TensorBoard and the progress line),
    keep the best weights on ``main_metric`` (in memory and in the backup
    folder), stop after `patience` epochs without improvement. State is saved
    in ``backup/state.json`` so a resumed fit continues its history."""

    def __init__(self, store, splits, task, infer_fn_factory, batch_size, backup_dir, patience, verbose,
                 examples_per_step, steps_per_epoch):
        super().__init__()
        self.store, self.splits, self.task = store, list(splits), task
        self.batch_size, self.backup_dir, self.patience = batch_size, backup_dir, patience
        self.infer_fn_factory, self.verbose = infer_fn_factory, verbose
        self.examples_per_step, self.steps_per_epoch = examples_per_step, steps_per_epoch
        self.examples = {s: store.examples(s) for s in splits} if store.task_kind == "span" else {}
        self.history: list[dict] = []
        self.best_epoch, self.best_value, self.best_weights = None, None, None
        self.best_predictions: dict = {}
        self.train_seconds = 0.0
        self.train_steps = 0
        self._infer = None

    # state ---------------------------------------------------------------
    @property
    def _state_path(self):
        return os.path.join(self.backup_dir, "state.json")

    @property
    def _best_path(self):
        return os.path.join(self.backup_dir, "best_weights.npz")

    def restore_state(self) -> None:
        """Load history and best weights of an interrupted run, if any."""
        if not os.path.isfile(self._state_path):
            return
        with open(self._state_path) as handle:
            state = json.load(handle)
        self.history = state["history"]
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.train_seconds, self.train_steps = state["train_seconds"], state["train_steps"]
        if self.best_epoch is not None:
            with np.load(self._best_path) as data:
                self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]

    @property
    def finished(self) -> bool:
        """True when the restored run had already stopped early."""
        return bool(self.patience and self.best_epoch is not None and self.history
                    and self.history[-1]["epoch"] - self.best_epoch >= self.patience)

    def _save_state(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        state = {"history": self.history, "best_epoch": self.best_epoch, "best_value": self.best_value,
                 "train_seconds": self.train_seconds, "train_steps": self.train_steps}
        tmp = f"{self._state_path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w") as handle:
            json.dump(state, handle)
        os.replace(tmp, self._state_path)

    # evaluation ----------------------------------------------------------
    def evaluate(self, model):
        from bertvision.predict import evaluate_splits, predict_arrays

        if self._infer is None:
            self._infer = self.infer_fn_factory(model)
        per_split, preds = {}, {}
        for split in self.splits:
            preds[split] = predict_arrays(model, self.store, split, self.batch_size, infer=self._infer,
                                          examples=self.examples.get(split))
            per_split[split] = preds[split].evaluate()
        return evaluate_splits(per_split, self.task), preds

    # keras hooks -----------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self._epoch_start
        self.train_seconds += seconds
        self.train_steps += self.steps_per_epoch
        metrics, preds = self.evaluate(self.model)
        for name, value in metrics.items():
            logs[f"val_{name}"] = value
        main = metrics[self.task.main_metric]
        entry = {"epoch": float(epoch + 1), "loss": float(logs.get("loss", float("nan"))), "dev": metrics,
                 "wall_time_s": round(seconds, 4),
                 "examples_per_s": round(self.steps_per_epoch * self.examples_per_step / max(seconds, 1e-9), 1)}
        self.history = [h for h in self.history if h["epoch"] < epoch + 1] + [entry]
        improved = self.best_value is None or main > self.best_value
        if improved:
            self.best_epoch, self.best_value = epoch + 1, float(main)
            self.best_weights = self.model.get_weights()
            self.best_predictions = preds
            os.makedirs(self.backup_dir, exist_ok=True)
            tmp = os.path.join(self.backup_dir, f".best.tmp-{uuid.uuid4().hex[:8]}.npz")
            with open(tmp, "wb") as handle:
                np.savez(handle, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            os.replace(tmp, self._best_path)
        self._save_state()
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            if self.verbose:
                print(f"\nearly stopping: no better {self.task.main_metric} for {self.patience} epoch(s); "
                      f"best epoch {self.best_epoch}", flush=True)
            self.model.stop_training = True


# ------------------------------------------------------------------ the fit


class ScalarSummaries(_callback_base()):
    """TensorBoard event files of the per-epoch scalars: ``logs/train``
    (``epoch_loss``, ``epoch_learning_rate``) and ``logs/validation`` (every
    ``val_*`` value, e.g. ``epoch_accuracy``, ``epoch_f1``). Written with
    TensorFlow's own summary ops, so it needs no ``tensorboard`` package."""

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _write(self, which: str, values: dict, step: int) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if which not in self._writers:
            self._writers[which] = tf.summary.create_file_writer(os.path.join(self.log_dir, which))
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        with self._writers[which].as_default():
            for tag, value in values.items():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value), tf.float32), step=step, metadata=metadata)
        self._writers[which].flush()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float, np.floating, np.integer))
                   or (hasattr(v, "shape") and not getattr(v, "shape", (1,)))}
        train = {k: v for k, v in numeric.items() if not k.startswith("val_")}
        try:
            train["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):
            pass
        self._write("train", train, epoch + 1)
        self._write("validation", {k[4:]: v for k, v in numeric.items() if k.startswith("val_")}, epoch + 1)

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    spec = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec


def _losses(task_kind: str):
    import keras

    if task_kind == "classification":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True), None
    if task_kind == "regression":
        return keras.losses.MeanSquaredError(), None
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return {"start_logits": ce, "end_logits": ce}, {"start_logits": 0.5, "end_logits": 0.5}


def build_compiled_model(model_config, config: FitConfig, total_steps: int):
    """The adapter, compiled as `fit` trains it: AdamW (no decay on biases and
    mixing weights) with `WarmupDecay`, the task's loss, ``jit_compile``.
    Call inside ``strategy.scope()`` when distributing.

    >>> model = build_compiled_model(make_model_config(store, {"kind": "cnn"}), config, 1000)
    """
    import keras

    from bertvision.models import build_model

    model = build_model(model_config)
    schedule = WarmupDecay(config.lr, total_steps, int(round(config.warmup * total_steps)), config.schedule)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "mix_logits", "gamma", "beta"])
    loss, loss_weights = _losses(model_config.task_kind)
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, jit_compile=config.jit_compile,
                  steps_per_execution=config.steps_per_execution)
    return model


def _repair_backup(backup_dir: str) -> None:
    """A fit killed while Keras wrote its first epoch checkpoint leaves an
    unreadable file and no previous one: start that run afresh."""
    latest = os.path.join(backup_dir, "latest.weights.h5")
    if not os.path.exists(latest) or os.path.exists(latest + ".bkp"):
        return
    try:
        import h5py

        with h5py.File(latest, "r"):
            return
    except OSError:
        shutil.rmtree(backup_dir, ignore_errors=True)


def _atomic_save_model(model, path: str) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name[:-len('.keras')]}.tmp-{uuid.uuid4().hex[:8]}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_run_folder(config: FitConfig) -> None:
    """Refuse to write into a folder holding another run; allow resuming this one."""
    out = config.out
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(os.path.join(out, "results.json")):
        raise FitError(f"{out} already holds a finished run (results.json); choose another --out")
    if os.path.isfile(cfg_path):
        with open(cfg_path) as handle:
            old = json.load(handle)
        new = config.to_dict()
        skip = ("command", "verbose", "out", "model")
        diff = [k for k in new if k not in skip and old.get(k) != new[k]]
        old_model = {k: v for k, v in (old.get("model") or {}).items() if k not in STORE_DERIVED}
        new_model = {k: v for k, v in config.model.items() if k not in STORE_DERIVED}
        diff += [f"model.{k}" for k in sorted(set(old_model) | set(new_model))
                 if old_model.get(k) != new_model.get(k)]
        if diff:
            raise FitError(f"{out} holds an unfinished run with other settings ({', '.join(diff)}); "
                           "run it again with the same settings to resume it, or choose another --out")


def resolve_eval_splits(config: FitConfig, store, task) -> list[str]:
    if config.eval_splits:
        missing = [s for s in config.eval_splits if s not in store.splits]
        if missing:
            raise FitError(f"{store.path} has no split(s) {missing}; it has {store.splits}")
        return list(config.eval_splits)
    splits = [s for s in task.eval_splits if s in store.splits]
    if not splits:
        raise FitError(f"{store.path} has none of {task.name}'s eval splits {list(task.eval_splits)} "
                       f"(it has {store.splits}); extract one or give --eval-split")
    return splits


def fit(config: FitConfig, strategy=None) -> dict:
    """Train the adapter `config` describes and write its run folder
    (see the module docstring). Returns the results dict.

    A folder with an unfinished run of the same settings is resumed from its
    last finished epoch. `strategy` overrides `config.strategy` (an already
    created `tf.distribute` strategy).
    """
    from bertvision.distribute import get_strategy

    # the strategy first: multi-worker set-up must precede any other TensorFlow op
    strategy = strategy or get_strategy(config.strategy, config.tpu)

    import keras
    import tensorflow as tf

    from bertvision.models import build_model, layer_weights, trainable_params
    from bertvision.predict import make_infer_fn, pad_to_for, store_signature
    from bertvision.store import StoreError, atomic_write_json, open_store
    from bertvision.tasks import get_task

    try:
        store = open_store(config.store)
    except StoreError as err:
        raise FitError(str(err)) from err
    task = get_task(store.task)
    if config.train_split not in store.splits:
        raise FitError(f"{store.path} has no training split {config.train_split!r}; it has {store.splits}")
    eval_splits = resolve_eval_splits(config, store, task)
    model_config = make_model_config(store, config.model)
    config.model = model_config.to_dict()

    chief = _is_chief(strategy)
    out = config.out if chief else tempfile.mkdtemp(prefix="bertvision-worker-")
    run_config = dataclasses.replace(config, out=out) if not chief else config
    if chief:
        _check_run_folder(config)
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "config.json"), config.to_dict())
    backup_dir = os.path.join(out, "backup")

    keras.utils.set_random_seed(config.seed)
    indices, train_examples = select_train_records(store, config.train_split, config.train_fraction, config.seed)
    train_records = store.num_records(config.train_split) if indices is None else len(indices)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise FitError(f"--batch-size {config.batch_size} must be a multiple of the {replicas} replicas")
    steps_per_epoch = max(1, math.ceil(train_records / config.batch_size))
    total_steps = steps_per_epoch * config.epochs

    with strategy.scope():
        model = build_compiled_model(model_config, config, total_steps)
    pad_to = pad_to_for(model)
    span = store.task_kind == "span"

    def dataset_fn(input_context=None):
        batch = config.batch_size if input_context is None else input_context.get_per_replica_batch_size(
            config.batch_size)
        ds = store.dataset(config.train_split, batch, shuffle=True, repeat=True, seed=config.seed,
                           drop_remainder=True, input_context=input_context, take_indices=indices, pad_to=pad_to)
        if span:
            ds = ds.map(lambda f, y: (f, {"start_logits": y["start_positions"], "end_logits": y["end_positions"]}))
        return ds

    if config.strategy == "default" and replicas == 1:
        train_ds = dataset_fn()
    else:
        train_ds = strategy.distribute_datasets_from_function(dataset_fn)

    evaluation = DevEvaluation(store, eval_splits, task, lambda m: make_infer_fn(m, config.jit_compile),
                               config.eval_batch_size, backup_dir, config.patience,
                               config.verbose if chief else 0, config.batch_size, steps_per_epoch)
    _repair_backup(backup_dir)
    evaluation.restore_state()
    done = evaluation.finished or (evaluation.history and evaluation.history[-1]["epoch"] >= config.epochs)
    callbacks = [
        evaluation,  # first: its val_* metrics reach TensorBoard and the progress bar
        # two checkpoints: a fit killed while writing one resumes from the other
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False, double_checkpoint=True),
        ScalarSummaries(os.path.join(out, "logs")),
    ]
    start = time.perf_counter()
    if getattr(strategy.extended, "_num_workers", 1) > 1:
        # Keras 3.15's symbolic build averages a first batch across workers with
        # strategy.reduce, which MultiWorkerMirroredStrategy cannot do for a
        # (features dict, labels) batch. The model is already built; build the
        # optimizer here and let fit find the strategy from the enclosing scope.
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        model._distribute_strategy = None
        # ...and it averages each step's scalar logs across workers with
        # reduce(axis=0), which needs a batch axis: give them one.
        keras_train_step = model.train_step

        def train_step(data):
            return {k: tf.reshape(v, [1]) for k, v in keras_train_step(data).items()}

        model.train_step = train_step
    if not done:  # else: an interrupted run that had finished training; only its outputs are missing
        with strategy.scope():
            model.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                      verbose=config.verbose if chief else 0, shuffle=False)
    wall = time.perf_counter() - start
    if evaluation.best_weights is None:
        raise FitError("no epoch finished; nothing to save")
    model.set_weights(evaluation.best_weights)
    if set(evaluation.best_predictions) != set(eval_splits):  # best epoch was before a resume
        _, evaluation.best_predictions = evaluation.evaluate(model)

    best = next(h for h in evaluation.history if h["epoch"] == evaluation.best_epoch)
    export = build_model(model_config)  # uncompiled: model.keras holds only the adapter
    export.set_weights(model.get_weights())
    n_trainable = trainable_params(export)
    n_backbone = backbone_params(store.manifest.get("model"))
    seen = evaluation.train_steps * config.batch_size
    steady = [h for h in evaluation.history[1:]]  # after the first epoch (tracing, compiling, caching)
    steady_s = sum(h["wall_time_s"] for h in steady)
    speed = (len(steady) * steps_per_epoch * config.batch_size / steady_s) if steady and steady_s > 0 \
        else seen / max(evaluation.train_seconds, 1e-9)
    results = {
        "task": task.name,
        "method": model_config.kind,
        "run_type": "fit",
        "hyperparameters": config.hyperparameters(),
        "train_fraction": config.train_fraction,
        "train_examples": int(train_examples),
        "train_records": int(train_records),
        "trainable_params": n_trainable,
        "backbone_params": n_backbone,
        "param_share": (n_trainable / n_backbone) if n_backbone else None,
        "history": evaluation.history,
        "main_metric": task.main_metric,
        "best_epoch": evaluation.best_epoch,
        "eval_splits": eval_splits,
        "dev_metrics": best["dev"],
        "train_wall_time_s": round(evaluation.train_seconds, 3),
        "fit_wall_time_s": round(wall, 3),
        "train_examples_per_s": round(speed, 1),
        "first_epoch_s": evaluation.history[0]["wall_time_s"] if evaluation.history else None,
        "store": config.store,
        "store_signature": store_signature(store),
        "backbone": {k: (store.manifest.get("model") or {}).get(k) for k in ("name", "config_sha256", "weights_sha256")}
        | {"sha256": (store.manifest.get("model") or {}).get("weights_sha256")},
        "layers": store.layers,
        "tokens": store.tokens,
        "layer_weights": layer_weights(export),
        "seed": config.seed,
        "strategy": config.strategy,
        "replicas": int(replicas),
        "jit_compile": config.jit_compile,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    _atomic_save_model(export, os.path.join(out, "model.keras"))
    for split, preds in evaluation.best_predictions.items():
        preds.save(os.path.join(out, "predictions", f"{split}.npz"))
    atomic_write_json(os.path.join(out, "results.json"), results)
    shutil.rmtree(backup_dir, ignore_errors=True)
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
    return results
