"""BERT's own fine-tuning: the whole backbone plus a task head, the baseline
BERTVision's adapters are measured against.

`Finetuner(FinetuneConfig(...)).run()` featurizes the task once (numpy in
memory), builds `build_finetune_model` (a keras-hub `BertBackbone` with a
`TaskHead`: dropout + dense on the pooled [CLS] output for classification and
regression, a per-token dense(2) giving start/end logits for span tasks),
trains it with AdamW under linear warmup + linear decay in a jit-compiled
step, and at every checkpoint (each ``checkpoint_every`` fraction of an epoch
and each epoch end) evaluates the eval splits with the official metrics and
saves ``RUN_DIR/checkpoints/epoch-0.10/``: a keras-hub preset folder that *is*
a backbone (``python -m pipelines.extract --model`` loads it), with the
Hugging Face tokenizer in ``tokenizer/``, the head in ``head.weights.npz``,
per-example predictions in ``predictions/<split>.npz`` and
``checkpoint.json`` (step, epoch, metrics, history). A killed run started
again with the same arguments resumes from its latest complete checkpoint:
weights, optimizer step (the learning-rate schedule) and the position in the
seeded shuffle; Adam's moment estimates and the dropout random state start
afresh.

Example:
    >>> config = FinetuneConfig(task="sst2", out="runs/sst2-bert", data_dir="../shared/data/glue/SST-2",
    ...                         epochs=1, checkpoint_every=0.1, sample=8000)
    >>> results = Finetuner(config).run()
    >>> results["dev_metrics"], results["best"]["epoch"]
    ({'accuracy': 0.87}, 0.9)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FinetuneConfig", "FinetuneError", "Finetuner", "TaskHead", "build_finetune_model",
           "checkpoint_schedule", "latest_checkpoint", "length_grouped_batches", "seeded_subset"]

CHECKPOINTS = "checkpoints"
CHECKPOINT_INFO = "checkpoint.json"
HEAD_WEIGHTS = "head.weights.npz"
# Settings that may change when a run is resumed.
_RESUME_FREE = ("progress", "strategy", "command", "jit_compile", "out")


class FinetuneError(ValueError):
    """A fine-tuning run that cannot go on (e.g. its loss became NaN)."""


def seeded_subset(items: list, n: int, seed: int = 0) -> list:
    """`n` items drawn at random (seeded), kept in their original order; the
    same draw as ``pipelines.extract --sample n --seed seed``.

    >>> seeded_subset(list(range(10)), 3, seed=0)
    [...]  # three of 0..9, ascending
    """
    from bertvision.extract import seeded_subset as _draw

    return _draw(items, n, seed)


@dataclass
class FinetuneConfig:
    """Everything that determines a fine-tuning run (saved as ``RUN_DIR/config.json``).

    ``epochs`` may be fractional; ``warmup`` is a fraction of all steps;
    ``checkpoint_every`` a fraction of an epoch (``None``: at epoch ends
    only); ``checkpoint_at`` lists extra epochs to checkpoint at (e.g.
    ``[0.1, 0.3]``, as the original study's short fine-tunings); ``limit`` keeps the first N examples of every split
    (``eval_limit`` overrides it for eval splits); ``sample`` draws a seeded
    random N of the training examples (after ``limit``; as
    ``pipelines.extract --sample``); ``train_fraction`` then keeps a seeded
    fraction of those. ``group_by_length`` batches rows of similar length
    together, sorting windows of that many batches (0: a plain shuffle; see
    `length_grouped_batches`): most batches need far fewer tokens.
    """

    task: str
    out: str
    data_dir: str | None = None
    use_tfds: bool = False
    model: str | None = None
    train_split: str = "train"
    eval_splits: list | None = None
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    max_seq_len: int | None = None  # 128, or 384 for span tasks
    doc_stride: int = 128
    max_query_len: int = 64
    warmup: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    clipnorm: float | None = 1.0
    seed: int = 0
    train_fraction: float = 1.0
    limit: int | None = None
    eval_limit: int | None = None
    sample: int | None = None
    checkpoint_every: float | None = None
    checkpoint_at: list | None = None
    eval_batch_size: int = 64
    group_by_length: int = 50
    strategy: str = "default"
    jit_compile: bool = True
    progress: bool = True
    command: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ValueError(f"--epochs must be > 0; got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0; got {self.lr}")
        if self.group_by_length < 0:
            raise ValueError(f"--group-by-length must be >= 0 (0: off); got {self.group_by_length}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1; got {self.batch_size}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"--warmup is a fraction of the training steps in [0, 1); got {self.warmup}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train-fraction must be in (0, 1]; got {self.train_fraction}")
        if self.checkpoint_every is not None and not 0 < self.checkpoint_every <= 1:
            raise ValueError(f"--checkpoint-every is a fraction of an epoch in (0, 1]; got {self.checkpoint_every}")
        if self.checkpoint_at is not None:
            self.checkpoint_at = sorted({float(x) for x in self.checkpoint_at})
            if not all(0 < x <= self.epochs for x in self.checkpoint_at):
                raise ValueError(f"--checkpoint-at epochs must lie in (0, --epochs={self.epochs}]; "
                                 f"got {self.checkpoint_at}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1); got {self.dropout}")
        if isinstance(self.eval_splits, str):
            self.eval_splits = [self.eval_splits]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FinetuneConfig keys {unknown}")
        return cls(**data)


# ------------------------------------------------------------------ model


def _keras():
    import keras

    return keras


def _task_head_class():
    keras = _keras()
    ops = keras.ops
    from bertvision.models.layers import Dropout

    # registered apart from the adapters' `bertvision>TaskHead`, which it must not replace
    @keras.saving.register_keras_serializable(package="bertvision", name="FinetuneHead")
    class TaskHead(keras.layers.Layer):
        """Fine-tuning head over `BertBackbone` outputs.

        ``classification``: dropout + dense(num_labels) on ``pooled_output``
        -> logits; ``regression``: the same with one output -> score
        ``[batch]``; ``span``: dropout + dense(2) on ``sequence_output`` ->
        ``(start_logits, end_logits)`` ``[batch, tokens]``, padding set to -1e4.
        """

        def __init__(self, task_kind: str, num_labels: int = 2, dropout: float = 0.1, **kwargs):
            super().__init__(**kwargs)
            if task_kind not in ("classification", "regression", "span"):
                raise ValueError(f"TaskHead: unknown task_kind {task_kind!r}")
            self.task_kind = task_kind
            self.num_labels = 1 if task_kind == "regression" else (2 if task_kind == "span" else int(num_labels))
            self.dropout_rate = float(dropout)
            self.drop = Dropout(self.dropout_rate, name="dropout")
            init = keras.initializers.TruncatedNormal(stddev=0.02)
            self.dense = keras.layers.Dense(self.num_labels, kernel_initializer=init, name="logits")

        def build(self, shapes):
            key = "sequence_output" if self.task_kind == "span" else "pooled_output"
            self.dense.build(shapes[key])
            self.built = True

        def call(self, outputs, padding_mask=None, training=None):
            if self.task_kind == "span":
                x = self.dense(self.drop(outputs["sequence_output"], training=training))
                start, end = x[..., 0], x[..., 1]
                if padding_mask is not None:
                    pad = ops.cast(padding_mask, "bool")
                    start = ops.where(pad, start, -1e4)
                    end = ops.where(pad, end, -1e4)
                return start, end
            x = self.dense(self.drop(outputs["pooled_output"], training=training))
            return x[:, 0] if self.task_kind == "regression" else x

        def get_config(self):
            return {**super().get_config(), "task_kind": self.task_kind, "num_labels": self.num_labels,
                    "dropout": self.dropout_rate}

    return TaskHead


def TaskHead(task_kind: str, num_labels: int = 2, dropout: float = 0.1, **kwargs):  # noqa: N802 - a layer
    """Build the `TaskHead` Keras layer (see `_task_head_class`).

    >>> head = TaskHead("classification", num_labels=2, dropout=0.1)
    >>> head.get_config()["task_kind"]
    'classification'
    """
    return _task_head_class()(task_kind, num_labels, dropout, **kwargs)


def build_finetune_model(backbone, task_kind: str, num_labels: int = 2, dropout: float = 0.1):
    """Functional Keras model: BERT inputs -> logits / score / (start, end).

    Returns ``(model, head)``.

    >>> model, head = build_finetune_model(load_backbone(resolve_model(None)), "classification", 2)
    >>> model(batch).shape  # (batch, 2)
    """
    keras = _keras()
    inputs = {k: keras.Input(shape=(None,), dtype="int32", name=k) for k in ("token_ids", "segment_ids", "padding_mask")}
    head = TaskHead(task_kind, num_labels, dropout, name="task_head")
    outputs = head(backbone(inputs), padding_mask=inputs["padding_mask"])
    return keras.Model(inputs, outputs, name=f"bert_finetune_{task_kind}"), head


# ------------------------------------------------------------- schedule


def checkpoint_schedule(steps_per_epoch: int, epochs: float, every: float | None,
                        at: list | None = None) -> list[tuple[int, float]]:
    """``(global step, epoch label)`` of every checkpoint: each ``every``
    fraction of an epoch, each epoch in ``at``, each epoch end and the end of
    training; labels are the nominal fractions (``0.1, 0.2, ...``). Fractions
    that fall on the same step keep the later label.

    >>> checkpoint_schedule(10, 1.0, 0.5)
    [(5, 0.5), (10, 1.0)]
    >>> checkpoint_schedule(10, 2.0, None, at=[0.1, 0.3])
    [(1, 0.1), (3, 0.3), (10, 1.0), (20, 2.0)]
    """
    total = max(1, math.ceil(epochs * steps_per_epoch))
    marks: dict[int, float] = {}
    labels: list[float] = []
    if every:
        k = 1
        while k * every < epochs - 1e-9:
            labels.append(round(k * every, 6))
            k += 1
    labels += [float(x) for x in (at or []) if 0 < x <= epochs]
    labels += [float(e) for e in range(1, int(math.floor(epochs + 1e-9)) + 1)]
    labels.append(float(epochs))
    for label in sorted(set(labels)):
        step = min(total, max(1, round(label * steps_per_epoch)))
        marks[step] = label
    return sorted(marks.items())


def checkpoint_name(label: float) -> str:
    return f"epoch-{label:.2f}"


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint folder with the highest step (``None`` if none)."""
    root = Path(run_dir) / CHECKPOINTS
    best, best_step = None, -1
    if root.is_dir():
        for folder in root.iterdir():
            info = folder / CHECKPOINT_INFO
            if folder.name.startswith(".") or not info.is_file():
                continue
            step = json.loads(info.read_text())["step"]
            if step > best_step:
                best, best_step = folder, step
    return best


def _window_indices(example_index: np.ndarray) -> np.ndarray:
    out = np.zeros(len(example_index), dtype=np.int32)
    for i in range(1, len(example_index)):
        out[i] = out[i - 1] + 1 if example_index[i] == example_index[i - 1] else 0
    return out


def _bucket(n: int, max_len: int) -> int:
    from bertvision.extract import bucket_length

    return bucket_length(n, max_len, fine=True)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, window: int, rng: np.random.Generator) -> list:
    """One epoch's batches (arrays of row indices) with little padding.

    Rows are shuffled, cut into windows of ``window`` batches, each window
    sorted by length and cut into batches, and the batch order shuffled
    again: batches hold rows of similar length (SST-2 pads 1.7x the real
    tokens instead of 4.5x), yet each epoch still mixes short and long
    batches. ``window=0``: a plain shuffle. Always ``ceil(n / batch_size)``
    batches, only the very last one short.

    Example:
        >>> b = length_grouped_batches(np.array([5, 1, 9, 2]), 2, 50, np.random.default_rng(0))
        >>> sorted(sorted(x.tolist()) for x in b)
        [[0, 2], [1, 3]]
    """
    from bertvision.extract import length_sorted_batches

    order = rng.permutation(len(lengths))
    if window <= 0:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    span = batch_size * window
    for w0 in range(0, len(order), span):
        batches += length_sorted_batches(lengths, order[w0:w0 + span], batch_size)
    last = batches.pop() if len(batches[-1]) < batch_size else None
    batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches + ([last] if last is not None else [])


# ---------------------------------------------------------------- runner


@dataclass
class _Split:
    name: str
    examples: list
    features: Any


class Finetuner:
    """Runs one `FinetuneConfig` (see the module docstring)."""

    def __init__(self, config: FinetuneConfig):
        from bertvision.tasks import get_task

        self.config = config
        self.task = get_task(config.task)
        if config.max_seq_len is None:
            config.max_seq_len = 384 if self.task.kind == "span" else 128
        if config.eval_splits is None:
            config.eval_splits = list(self.task.eval_splits)
        self.run_dir = Path(config.out)

    # ---------------------------------------------------------------- data
    def _load(self, split: str, limit: int | None) -> list:
        from bertvision.data import load_examples

        c = self.config
        loaded = load_examples(self.task, split, c.data_dir, use_tfds=c.use_tfds, limit=limit)
        if not loaded.examples:
            raise ValueError(f"{c.task}/{split}: no examples")
        return loaded.examples

    def prepare(self) -> None:
        """Load examples and tokenizer; featurize train and eval splits."""
        from bertvision.backbone import load_tokenizer, resolve_model
        from bertvision.features import Featurizer

        c = self.config
        self.ref = resolve_model(c.model)
        self.tokenizer = load_tokenizer(self.ref)
        self.featurizer = Featurizer(self.tokenizer, max_seq_len=c.max_seq_len, doc_stride=c.doc_stride,
                                     max_query_len=c.max_query_len)
        train = self._load(c.train_split, c.limit)
        if c.sample is not None:
            train = seeded_subset(train, c.sample, c.seed)
        if c.train_fraction < 1:
            train = seeded_subset(train, max(1, round(c.train_fraction * len(train))), c.seed + 1)
        self.train = _Split(c.train_split, train, self.featurizer.encode(self.task, train))
        eval_limit = c.eval_limit if c.eval_limit is not None else c.limit
        self.evals = []
        for split in c.eval_splits:
            examples = self._load(split, eval_limit)
            self.evals.append(_Split(split, examples, self.featurizer.encode(self.task, examples)))
        if self.task.kind != "span":
            dtype = np.float32 if self.task.kind == "regression" else np.int32
            labels = [ex.label for ex in train]
            if any(label is None for label in labels):
                raise ValueError(f"{c.task}/{c.train_split}: unlabelled examples cannot be trained on")
            self.train_labels = {"label": np.asarray(labels, dtype)}
        else:
            f = self.train.features
            self.train_labels = {"start_positions": f.start_positions, "end_positions": f.end_positions}

    # --------------------------------------------------------------- model
    def _build(self, resume_from: Path | None) -> None:
        import keras
        import tensorflow as tf

        from bertvision.backbone import hidden_act, load_backbone, resolve_model
        from bertvision.distribute import get_strategy

        c = self.config
        keras.utils.set_random_seed(c.seed)
        self.act = hidden_act(self.ref)
        self.strategy = get_strategy(c.strategy)
        n = len(self.train.features)
        self.steps_per_epoch = math.ceil(n / c.batch_size)
        self.total_steps = max(1, math.ceil(c.epochs * self.steps_per_epoch))
        with self.strategy.scope():
            source = resolve_model(str(resume_from)) if resume_from else self.ref
            self.backbone = load_backbone(source)
            if self.task.kind == "span":  # the pooled output feeds nothing: no gradients
                self.backbone.pooled_dense.trainable = False
            self.model, self.head = build_finetune_model(self.backbone, self.task.kind, self.task.num_labels,
                                                         c.dropout)
            if resume_from:
                with np.load(resume_from / HEAD_WEIGHTS) as data:
                    self.head.set_weights([data[f"w{i}"] for i in range(len(data.files))])
            from bertvision.training import WarmupDecay

            schedule = WarmupDecay(c.lr, self.total_steps, round(c.warmup * self.total_steps), decay="linear")
            self.optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=c.weight_decay,
                                                    epsilon=1e-6, global_clipnorm=c.clipnorm)
            self.optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
            self.optimizer.build(self.model.trainable_variables)
        replicas = self.strategy.num_replicas_in_sync
        jit = c.jit_compile and replicas == 1

        def loss_fn(outputs, labels):
            if self.task.kind == "classification":
                return keras.losses.sparse_categorical_crossentropy(labels["label"], outputs, from_logits=True)
            if self.task.kind == "regression":
                return tf.square(outputs - labels["label"])
            start, end = outputs
            return 0.5 * (keras.losses.sparse_categorical_crossentropy(labels["start_positions"], start, from_logits=True)
                          + keras.losses.sparse_categorical_crossentropy(labels["end_positions"], end, from_logits=True))

        def replica_step(batch, labels):
            with tf.GradientTape() as tape:
                outputs = self.model(batch, training=True)
                per_example = loss_fn(outputs, labels)
                loss = tf.nn.compute_average_loss(per_example)
            variables = self.model.trainable_variables
            grads = tape.gradient(loss, variables)
            self.optimizer.apply(grads, variables)
            return loss

        def forward(batch):
            return self.model(batch, training=False)

        # One trace for every batch shape: tokens and batch size vary (length
        # buckets, the last partial batch); XLA still compiles each shape.
        ids = tf.TensorSpec([None, None], tf.int32)
        batch_spec = {"token_ids": ids, "segment_ids": ids, "padding_mask": ids}
        if self.task.kind == "span":
            label_spec = {"start_positions": tf.TensorSpec([None], tf.int32),
                          "end_positions": tf.TensorSpec([None], tf.int32)}
        else:
            label_spec = {"label": tf.TensorSpec([None], tf.float32 if self.task.kind == "regression" else tf.int32)}
        if replicas == 1:
            self._train_step = tf.function(replica_step, jit_compile=jit, input_signature=[batch_spec, label_spec])
            self._forward = tf.function(forward, jit_compile=jit, input_signature=[batch_spec])
        else:
            strategy = self.strategy

            @tf.function(reduce_retracing=True)
            def dist_step(batch, labels):
                loss = strategy.run(replica_step, args=(batch, labels))
                return strategy.reduce("SUM", loss, axis=None)

            def train_step(batch, labels):
                ds = tf.data.Dataset.from_tensors((batch, labels)).unbatch().batch(len(batch["token_ids"]))
                for b, y in strategy.experimental_distribute_dataset(ds):
                    return dist_step(b, y)

            self._train_step = train_step
            self._forward = tf.function(forward, reduce_retracing=True)

    def param_counts(self) -> tuple[int, int]:
        """(backbone params, head params)."""
        return int(self.backbone.count_params()), int(self.head.count_params())

    # ------------------------------------------------------------- batches
    def _batches(self, first_step: int):
        """Yield ``(step, batch, labels)`` from global step `first_step` on:
        each epoch's batches are a seeded function of (seed, epoch) (see
        `length_grouped_batches`), so a resumed run skips exactly the
        batches already trained on. Each batch is cut to a bucketed token
        length covering its longest row."""
        c, f = self.config, self.train.features
        lengths = f.padding_mask.sum(axis=1)
        step, epoch, batches = first_step, None, None
        while step < self.total_steps:
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                rng = np.random.default_rng([c.seed, epoch])
                batches = length_grouped_batches(lengths, c.batch_size, c.group_by_length, rng)
            rows = batches[step % self.steps_per_epoch]
            t = _bucket(int(lengths[rows].max()), c.max_seq_len)
            batch = {k: v[rows, :t] for k, v in f.inputs().items()}
            labels = {k: v[rows] for k, v in self.train_labels.items()}
            yield step, batch, labels
            step += 1

    # ------------------------------------------------------------ evaluate
    def predict_split(self, split: _Split):
        """Run the model over a split; returns `Predictions`."""
        from bertvision.ensemble import Predictions

        c, f = self.config, split.features
        n, length = f.token_ids.shape
        lengths = f.padding_mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        kind = self.task.kind
        if kind == "span":
            start = np.full((n, length), -1e4, np.float32)
            end = np.full((n, length), -1e4, np.float32)
        else:
            out = np.zeros((n, self.task.num_labels) if kind == "classification" else (n,), np.float32)
        for b0 in range(0, n, c.eval_batch_size):
            rows = order[b0:b0 + c.eval_batch_size]
            t = _bucket(int(lengths[rows].max()), c.max_seq_len)
            batch = {k: v[rows, :t] for k, v in f.inputs().items()}
            result = self._forward(batch)
            if kind == "span":
                start[rows, :t] = np.asarray(result[0])
                end[rows, :t] = np.asarray(result[1])
            else:
                out[rows] = np.asarray(result)
        uids = [ex.uid for ex in split.examples]
        common = dict(task=self.task.name, split=split.name, uids=uids, source=str(self.run_dir))
        if kind == "classification":
            logits = out - out.max(axis=1, keepdims=True)
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            labels = np.asarray([-1 if ex.label is None else ex.label for ex in split.examples], np.int64)
            return Predictions(**common, probabilities=probs, labels=labels)
        if kind == "regression":
            labels = np.asarray([np.nan if ex.label is None else ex.label for ex in split.examples], np.float64)
            return Predictions(**common, scores=out, labels=labels)
        answers = [json.dumps([] if ex.is_impossible else [a.text for a in ex.answers]) for ex in split.examples]
        return Predictions(**common, window_uids=[split.examples[i].uid for i in f.example_index],
                           window_index=_window_indices(f.example_index), start_logits=start, end_logits=end,
                           offsets=f.offsets, contexts=[ex.texts[1] for ex in split.examples], answers=answers)

    def mean_loss(self, split: _Split | None = None) -> float:
        """The training loss (dropout off) averaged over a split (default:
        the training rows), e.g. to check that training lowered it."""
        split = split or self.train
        p = self.predict_split(split)
        if self.task.kind == "classification":
            y = np.asarray([ex.label for ex in split.examples])
            return float(-np.mean(np.log(np.maximum(p.probabilities[np.arange(len(y)), y], 1e-12))))
        if self.task.kind == "regression":
            y = np.asarray([ex.label for ex in split.examples], np.float32)
            return float(np.mean((p.scores - y) ** 2))
        f = split.features

        def ce(logits, target):
            z = logits - logits.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return -logp[np.arange(len(target)), target]

        return float(np.mean(0.5 * (ce(p.start_logits, f.start_positions) + ce(p.end_logits, f.end_positions))))

    def evaluate(self) -> tuple[dict, dict]:
        """``({split: metrics}, {split: Predictions})`` for the eval splits."""
        metrics, preds = {}, {}
        for split in self.evals:
            p = self.predict_split(split)
            preds[split.name] = p
            metrics[split.name] = p.evaluate()
        return metrics, preds

    # ---------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, label: float, metrics: dict, preds: dict, state: dict) -> Path:
        """Write ``checkpoints/epoch-X.XX`` atomically (temporary folder, renamed when complete)."""
        from bertvision.backbone import model_identity, write_backbone_files
        from bertvision.store import atomic_folder

        final = self.run_dir / CHECKPOINTS / checkpoint_name(label)
        with atomic_folder(final) as tmp:
            write_backbone_files(self.backbone, self.tokenizer, tmp, self.act,
                                 extra={"finetuned_from": model_identity(self.ref), "task": self.task.name,
                                        "step": step, "epoch": label})
            with open(tmp / HEAD_WEIGHTS, "wb") as handle:
                np.savez(handle, **{f"w{i}": w for i, w in enumerate(self.head.get_weights())})
            for split, p in preds.items():
                p.save(tmp / "predictions" / f"{split}.npz")
            info = {"step": step, "epoch": label, "label": final.name, "steps_per_epoch": self.steps_per_epoch,
                    "examples_seen": min(step * self.config.batch_size, int(math.ceil(self.config.epochs * len(self.train.features)))),
                    "metrics": metrics, "head": self.head.get_config(), "config": self.config.to_dict(), **state}
            (tmp / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2, default=float) + "\n")
        return final

    # ----------------------------------------------------------------- run
    def _check_resume(self) -> None:
        from bertvision.store import atomic_write_json

        path = self.run_dir / "config.json"
        mine = {k: v for k, v in self.config.to_dict().items() if k not in _RESUME_FREE}
        if path.is_file():
            old = {k: v for k, v in json.loads(path.read_text()).items() if k not in _RESUME_FREE}
            diff = sorted(k for k in set(old) | set(mine) if old.get(k) != mine.get(k))
            if diff:
                raise ValueError(f"{self.run_dir} holds a run started with different settings ({', '.join(diff)} "
                                 f"differ); use the same arguments to resume, or another --out")
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(str(path), self.config.to_dict())
        for stale in (self.run_dir / CHECKPOINTS).glob(".epoch-*.tmp-*") if (self.run_dir / CHECKPOINTS).is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)

    def run(self) -> dict:
        """Train (or resume), checkpoint, evaluate; write ``results.json``. Returns the results."""
        from tqdm import tqdm

        c = self.config
        self._check_resume()
        done = self.run_dir / "results.json"
        if done.is_file():
            return json.loads(done.read_text())
        t_start = time.perf_counter()
        self.prepare()
        resume = latest_checkpoint(self.run_dir)
        state = {"history": [], "train_time_s": 0.0, "examples_trained": 0}
        if resume is not None:
            info = json.loads((resume / CHECKPOINT_INFO).read_text())
            state = {k: info[k] for k in state}
        self._build(resume)
        start_step = 0
        if resume is not None:
            start_step = int(info["step"])
            self.optimizer.iterations.assign(start_step)
            print(f"resuming {self.run_dir} from {resume.name} (step {start_step}/{self.total_steps})",
                  file=sys.stderr)
        schedule = [(s, label) for s, label in checkpoint_schedule(self.steps_per_epoch, c.epochs,
                                                                   c.checkpoint_every, c.checkpoint_at)
                    if s > start_step]
        marks = dict(schedule)
        prep_s = time.perf_counter() - t_start
        rows_per_epoch = len(self.train.features)
        total_examples = min(self.total_steps * c.batch_size, math.ceil(c.epochs * rows_per_epoch))
        initial = min(start_step * c.batch_size, total_examples)
        bar = tqdm(total=total_examples, initial=initial, unit="ex", desc=f"finetune {c.task}",
                   disable=not c.progress, dynamic_ncols=True, file=sys.stderr, smoothing=0.1)
        history, train_time, trained = state["history"], float(state["train_time_s"]), int(state["examples_trained"])
        loss_sum, loss_count = 0.0, 0
        eval_time = 0.0
        try:
            t0 = time.perf_counter()
            for step, batch, labels in self._batches(start_step):
                loss = float(self._train_step(batch, labels))
                if not math.isfinite(loss):
                    raise FinetuneError(f"loss became {loss} at step {step + 1}; lower --lr")
                loss_sum, loss_count = loss_sum + loss, loss_count + 1
                rows = len(batch["token_ids"])
                trained += rows
                bar.update(rows)
                bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}")
                if step + 1 in marks:
                    train_time += time.perf_counter() - t0
                    t_eval = time.perf_counter()
                    metrics, preds = self.evaluate()
                    entry = {"epoch": marks[step + 1], "step": step + 1, "loss": loss_sum / loss_count,
                             "lr": float(self.optimizer.learning_rate), "wall_time_s": round(train_time, 3),
                             **{("dev" if i == 0 else s): m for i, (s, m) in enumerate(metrics.items())}}
                    history.append(entry)
                    self.save_checkpoint(step + 1, marks[step + 1], metrics, preds,
                                         {"history": history, "train_time_s": train_time, "examples_trained": trained})
                    main = self.task.main_metric
                    bar.write(f"epoch {marks[step + 1]:.2f}: loss {entry['loss']:.4f}, "
                              + ", ".join(f"{s} {main} {m.get(main, float('nan')):.4f}" for s, m in metrics.items()))
                    loss_sum, loss_count = 0.0, 0
                    eval_time += time.perf_counter() - t_eval
                    t0 = time.perf_counter()
        finally:
            bar.close()
        return self._finish(history, train_time, trained, prep_s, eval_time, resume, start_step,
                            time.perf_counter() - t_start)

    def _finish(self, history, train_time, trained, prep_s, eval_time, resume, start_step, wall) -> dict:
        from bertvision.backbone import model_identity
        from bertvision.ensemble import Predictions, predictions_path
        from bertvision.store import atomic_write_json

        c = self.config
        main = self.task.main_metric
        final_ckpt = latest_checkpoint(self.run_dir)
        first_eval = c.eval_splits[0]
        for split in c.eval_splits:
            Predictions.load(final_ckpt / "predictions" / f"{split}.npz").save(predictions_path(self.run_dir, split))
        best = max(history, key=lambda h: (h["dev"].get(main, -math.inf), h["epoch"]))
        backbone_params, head_params = self.param_counts()
        results = {
            "task": self.task.name, "method": "bert_finetune", "run_type": "finetune",
            "hyperparameters": {k: getattr(c, k) for k in ("epochs", "lr", "batch_size", "max_seq_len", "doc_stride",
                                                            "max_query_len", "warmup", "weight_decay", "dropout",
                                                            "clipnorm", "seed", "checkpoint_every", "checkpoint_at")},
            "train_fraction": c.train_fraction, "train_examples": len(self.train.examples),
            "train_rows": len(self.train.features), "sample": c.sample,
            "eval_splits": list(c.eval_splits),
            "eval_examples": {s.name: len(s.examples) for s in self.evals},
            "trainable_params": backbone_params + head_params, "backbone_params": backbone_params,
            "head_params": head_params, "param_share": (backbone_params + head_params) / backbone_params,
            "history": history, "main_metric": main,
            "dev_metrics": history[-1]["dev"],
            "dev_metrics_from": "final checkpoint",
            "best": {"epoch": best["epoch"], "step": best["step"], "dev_metrics": best["dev"],
                     "checkpoint": str(Path(CHECKPOINTS) / checkpoint_name(best["epoch"]))},
            "final_checkpoint": str(Path(CHECKPOINTS) / final_ckpt.name),
            "predictions": {s: str(Path("predictions") / f"{s}.npz") for s in c.eval_splits},
            "train_wall_time_s": round(train_time, 3),
            "train_examples_per_s": round(trained / train_time, 2) if train_time > 0 else None,
            "eval_wall_time_s": round(eval_time, 3), "prepare_wall_time_s": round(prep_s, 3),
            "total_wall_time_s": round(wall, 3),
            "resumed_from": None if resume is None else {"checkpoint": resume.name, "step": start_step},
            "backbone": model_identity(self.ref),
            "store": None,
        }
        if len(c.eval_splits) > 1:
            results["eval_metrics"] = {s: history[-1].get("dev" if s == first_eval else s) for s in c.eval_splits}
        atomic_write_json(str(self.run_dir / "results.json"), results)
        return results
