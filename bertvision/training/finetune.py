"""BERT's own fine-tuning: the whole backbone plus a task head, the baseline
BERTVision's adapters are measured against.

`Finetuner(FinetuneConfig(...)).run()` featurizes the task once (numpy in
memory), builds a `BertTask` (a keras-hub ``Task`` wrapping a
``BertBackbone`` with the adapters' heads: dropout + `TaskHead` on the pooled
[CLS] output (``pooling="cls"``) or the mean of the last layer over real
tokens (``pooling="mean"``; the default ``"auto"`` takes the pooling a
sentence-transformers backbone folder declares, else cls) for classification
and regression, dropout + `SpanHead` on the
token outputs for span tasks; multi-label: a sigmoid per label under binary
cross-entropy) and trains it with the one trainer
(`bertvision.training.trainer.Trainer`, Keras ``fit``): AdamW under linear warmup +
linear decay, global-norm clipping, batches of rows of similar length.

At every checkpoint (each ``checkpoint_every`` fraction of an epoch, each
epoch in ``checkpoint_at``, each epoch end) the eval splits are scored with
the official metrics and ``RUN_DIR/checkpoints/epoch-0.10/`` is written: a
keras-hub preset folder that *is* a backbone (``python -m pipelines.extract
--backbone`` loads it), holding the task (``task.json``,
``task.weights.h5``: the head), the Hugging Face tokenizer in ``tokenizer/``,
``predictions/<split>.npz`` and ``checkpoint.json`` (step, epoch, metrics).
A multi-label task's predictions and metrics at each checkpoint are those at
one threshold per label chosen on the first eval split (dev, never test;
`bertvision.runs.choose_dev_thresholds`), as an adapter run's; the run's
``results.json`` keeps the final checkpoint's ``thresholds``, which
``pipelines.predict``, ``serve`` and ``ensemble`` use.
A killed run started again with the same arguments resumes from its last
checkpoint exactly: weights, optimizer moments, dropout random state and
the position in the seeded batch order (``RUN_DIR/state/``).

Example:
    >>> config = FinetuneConfig(task="sst2", out="runs/sst2-bert", data_dir="../shared/data/glue/SST-2",
    ...                         epochs=1, checkpoint_every=0.1, sample=8000)
    >>> results = Finetuner(config).run()  # doctest: +SKIP
    >>> results.dev_metrics, results.best_epoch  # doctest: +SKIP
    ({'accuracy': 0.87}, 0.9)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bertvision import io
from bertvision.models.backbone import (backbone_identity, backbone_param_count, hidden_act, load_backbone,
                                 load_tokenizer, resolve_backbone, sentence_pooling, write_backbone_info)
from bertvision.config import (PER_TOKEN_KINDS, STRATEGIES, ConfigBase, check_choice, check_fraction, check_non_negative,
                               check_positive, check_positive_int, default_max_seq_len)
from bertvision.data.readers import load_examples, seeded_subset
from bertvision.distribute import get_strategy
from bertvision.errors import ConfigError, FinetuneError
from bertvision.data.features import Featurizer, FeaturizerConfig, bucket_length, length_grouped_batches
from bertvision.models import trainable_params
from bertvision.models.bert_task import BertTask
from bertvision.models.config import BERT_POOLINGS
from bertvision.lifecycle import RunTask, TrainOutcome, run_task
from bertvision.runs import (CHECKPOINT_INFO, CHECKPOINTS, Predictions, RunFolder, RunResults, checkpoint_name,
                             choose_dev_thresholds, merge_split_metrics)
from bertvision.data.tasks import USER_KINDS, TaskSpec, get_task
from bertvision.store.format import open_store
from bertvision.training.trainer import Schedule, Trainer, compile_for_task, make_optimizer

__all__ = ["FinetuneConfig", "Finetuner"]

# settings that may change when a run is resumed
_RESUME_FREE = ("progress", "command", "jit_compile", "out", "max_skipped")


@dataclass
class FinetuneConfig(ConfigBase):
    """Everything that determines a fine-tuning run (saved as ``RUN_DIR/config.json``).

    ``epochs`` may be fractional; ``warmup`` is a fraction of all steps;
    ``checkpoint_every`` a fraction of an epoch (``None``: at epoch ends
    only); ``checkpoint_at`` lists extra epochs to checkpoint at (e.g.
    ``[0.1, 0.3]``, as the original study's short fine-tunings); ``limit``
    keeps the first N examples of every split (``eval_limit`` overrides it for
    eval splits); ``sample`` draws a seeded random N of the training examples
    (after ``limit``; as ``pipelines.extract --sample``); ``train_fraction``
    then keeps a seeded fraction of those. ``group_by_length`` batches rows of
    similar length together, sorting windows of that many batches (0: a plain
    shuffle; see `bertvision.data.features.length_grouped_batches`).
    """

    task: str  # "" with `store`: the store's task
    out: str
    data_dir: str | None = None
    store: str | None = None  # a store's task and examples (a user's own data) instead of task + data_dir
    use_tfds: bool = False
    backbone: str | None = None
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
    # sentence-level heads: "cls" (BERT's pooler over [CLS]), "mean" (the last layer's mean over real tokens), or
    # "auto" (the default): the pooling a sentence-transformers backbone declares (the embedded MiniLM: mean),
    # else cls; the run's config records the resolved choice
    pooling: str = "auto"
    lora_rank: int | None = None  # LoRA instead of full fine-tuning: keras-hub's enable_lora(rank)
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
    max_skipped: float | None = 0.01  # refuse a split with more malformed records than this share (None: any)
    strategy: str = "default"
    jit_compile: bool = True
    progress: bool = True
    command: list = field(default_factory=list)

    error = FinetuneError

    def spec(self) -> TaskSpec:
        """The task: the store's (`store`), else the preset `task` names."""
        if self.store is None:
            return get_task(self.task)
        spec = open_store(self.store).task_spec
        if self.task and spec.name != self.task:
            raise FinetuneError(f"{self.store} holds task {spec.name!r}, not {self.task!r}")
        return spec

    def validate(self) -> None:
        task = self.spec()
        self.task = self.task or task.name
        if self.store is not None and task.kind not in USER_KINDS:
            raise FinetuneError(f"{self.store}: fine-tuning on a store's examples takes a classification, "
                                f"multi-label, regression or token classification task; {task.name} is {task.kind}")
        if self.store is not None and open_store(self.store).windowed:
            raise FinetuneError(
                f"{self.store} keeps long documents as windows (extract --doc-stride), and fine-tuning BERT on a "
                f"document's windows is not supported: fit an adapter that pools them (python -m pipelines.fit "
                f"--store {self.store} --window-pooling mean|max|attention), or fine-tune on a store extracted "
                "without --doc-stride (each text cut to --max-seq-len)")
        check_positive("epochs", self.epochs, FinetuneError)
        check_positive("lr", self.lr, FinetuneError)
        for name in ("batch_size", "eval_batch_size", "doc_stride", "max_query_len"):
            check_positive_int(name, getattr(self, name), FinetuneError)
        for name in ("max_seq_len", "limit", "eval_limit", "sample", "lora_rank"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name), FinetuneError)
        if (isinstance(self.group_by_length, bool) or not isinstance(self.group_by_length, int)
                or self.group_by_length < 0):
            raise FinetuneError(f"--group-by-length must be an integer >= 0 (0: off); got {self.group_by_length!r}")
        check_fraction("warmup", self.warmup, low_open=False, high_open=True, error=FinetuneError)
        check_fraction("train_fraction", self.train_fraction, error=FinetuneError)
        check_non_negative("weight_decay", self.weight_decay, FinetuneError)
        check_fraction("dropout", self.dropout, low_open=False, high_open=True, error=FinetuneError)
        check_choice("pooling", self.pooling, ("auto", *BERT_POOLINGS), FinetuneError)
        if self.pooling == "auto":  # the backbone's own sentence pooling, else BERT's pooler
            self.pooling = sentence_pooling(resolve_backbone(self.backbone)) or "cls"
        if self.clipnorm is not None:
            check_positive("clipnorm", self.clipnorm, FinetuneError)
        if self.checkpoint_every is not None:
            check_fraction("checkpoint_every", self.checkpoint_every, error=FinetuneError)
        if self.checkpoint_at is not None:
            self.checkpoint_at = sorted({float(x) for x in self.checkpoint_at})
            if not all(0 < x <= self.epochs for x in self.checkpoint_at):
                raise FinetuneError(f"--checkpoint-at epochs must lie in (0, --epochs={self.epochs}]; "
                                    f"got {self.checkpoint_at}")
        check_choice("strategy", self.strategy, STRATEGIES, FinetuneError)
        if self.max_skipped is not None:
            check_fraction("max_skipped", self.max_skipped, low_open=False, error=FinetuneError)
        if isinstance(self.eval_splits, str):
            self.eval_splits = [self.eval_splits]
        if self.max_seq_len is None:
            self.max_seq_len = default_max_seq_len(task.kind)
        try:
            featurizer = FeaturizerConfig(self.max_seq_len, self.doc_stride, self.max_query_len)
            if task.kind == "span":
                featurizer.check_span()
        except ConfigError as err:
            raise FinetuneError(str(err)) from err
        if self.eval_splits is None:
            self.eval_splits = list(task.eval_splits)


# ---------------------------------------------------------------- runner


@dataclass
class _Split:
    name: str
    examples: list
    features: Any



def checkpoint_line(label: float, step: int, total_steps: int, metrics: dict, path) -> str:
    """The one line `--no-progress` prints per checkpoint: its epoch, step and dev metrics.

    >>> checkpoint_line(0.5, 5, 10, {"accuracy": 0.8125, "total": 48}, "runs/x/checkpoints/epoch-0.50")
    'checkpoint epoch 0.5 (step 5/10): accuracy=0.8125, total=48 -> runs/x/checkpoints/epoch-0.50'
    """
    shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                      if isinstance(v, (int, float)))
    return f"checkpoint epoch {label:g} (step {step}/{total_steps}): {shown} -> {path}"


class Finetuner(RunTask):
    """Runs one `FinetuneConfig` (see the module docstring): a
    `bertvision.lifecycle.RunTask` whose training writes a checkpoint at
    every mark."""

    run_type = "finetune"
    what = "a fine-tuning run"
    resume_free = _RESUME_FREE
    reuse_finished = True

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.task = config.spec()
        self.run_dir = RunFolder(config.out)

    # ---------------------------------------------------------------- data
    def _load(self, split: str, limit: int | None) -> list:
        c = self.config
        if c.store is not None:  # the texts and labels extraction kept (SPLIT.examples.jsonl)
            examples = open_store(c.store).task_examples(split, limit)
            if not examples:
                raise FinetuneError(f"{c.store}/{split}: no examples")
            return examples
        loaded = load_examples(self.task, split, c.data_dir, use_tfds=c.use_tfds, limit=limit)
        if loaded.skipped:
            print(loaded.skipped_report(), file=sys.stderr, flush=True)
        loaded.check_skipped(c.max_skipped)
        if not loaded.examples:
            raise FinetuneError(f"{c.task}/{split}: no examples")
        return loaded.examples

    def prepare(self) -> None:
        """Load examples and tokenizer; featurize train and eval splits."""
        c = self.config
        self.ref = resolve_backbone(c.backbone)
        self.tokenizer = load_tokenizer(self.ref)
        featurizer = Featurizer(self.tokenizer, max_seq_len=c.max_seq_len, doc_stride=c.doc_stride,
                                max_query_len=c.max_query_len)
        train = self._load(c.train_split, c.limit)
        if c.sample is not None:
            train = seeded_subset(train, c.sample, c.seed)
        if c.train_fraction < 1:
            train = seeded_subset(train, max(1, round(c.train_fraction * len(train))), c.seed + 1)
        self.train_set = _Split(c.train_split, train, featurizer.encode(self.task, train))
        eval_limit = c.eval_limit if c.eval_limit is not None else c.limit
        self.evals = [_Split(s, ex, featurizer.encode(self.task, ex))
                      for s, ex in ((s, self._load(s, eval_limit)) for s in c.eval_splits)]
        unlabelled = [e.name for e in self.evals
                      if self.task.kind != "span" and all(ex.label is None and not ex.tags for ex in e.examples)]
        if unlabelled:
            raise FinetuneError(f"{c.task}/{unlabelled[0]}: the split has no gold labels to evaluate against; give a "
                                "labelled --eval-split (e.g. dev)")
        if self.task.kind == "span":
            f = self.train_set.features
            self.train_targets = {"start_logits": f.start_positions, "end_logits": f.end_positions}
        elif self.task.kind == "token_classification":
            if not any(ex.tags for ex in train):
                raise FinetuneError(f"{c.task}/{c.train_split}: untagged sentences cannot be trained on")
            self.train_targets = self.train_set.features.token_labels  # [rows, max_seq_len], -1: no loss
        else:
            labels = [ex.label for ex in train]
            if any(label is None for label in labels):
                raise FinetuneError(f"{c.task}/{c.train_split}: unlabelled examples cannot be trained on")
            self.train_targets = np.asarray(labels, np.int32 if self.task.kind == "classification" else np.float32)
            if self.task.kind == "multi_label" and (self.train_targets < 0).any():  # a 0/1 row per example
                raise FinetuneError(f"{c.task}/{c.train_split}: unlabelled examples cannot be trained on")

    def store_identity(self) -> dict:
        """`RunTask.store_identity`: the data the run trains on (`data_identity`)."""
        return self.data_identity()

    def data_identity(self) -> dict:
        """What the run trains and evaluates on (after `prepare`): the task's
        data and the sha256 of every example read (uid, texts, label, answers),
        recorded at start, so that a resume on edited files is refused
        (`bertvision.runs.check_store_identity`)."""
        c = self.config
        digest = hashlib.sha256()
        for split in [self.train_set, *self.evals]:
            for ex in split.examples:
                digest.update(json.dumps([split.name, dataclasses.asdict(ex)], default=str).encode())
        source = (f"the store {c.store}" if c.store is not None else "TensorFlow Datasets" if c.use_tfds
                  else c.data_dir or "the default data folder")
        return {"data": f"{c.task} ({source})", "examples_sha256": digest.hexdigest()}

    # --------------------------------------------------------------- model
    def build(self) -> None:
        """The task model, compiled with the trainer's optimizer and loss."""
        c = self.config
        keras.utils.set_random_seed(c.seed)
        self.act = hidden_act(self.ref)
        self.strategy = get_strategy(c.strategy)
        rows = len(self.train_set.features)
        self.steps_per_epoch = math.ceil(rows / c.batch_size)
        self.schedule = Schedule.checkpoints(self.steps_per_epoch, c.epochs, c.checkpoint_every, c.checkpoint_at)
        with self.strategy.scope():
            self.backbone = load_backbone(self.ref)
            if self.task.kind in PER_TOKEN_KINDS or c.pooling == "mean":  # the pooler feeds nothing: no gradients
                self.backbone.pooled_dense.trainable = False
            self.model = BertTask(self.backbone, self.task.kind, self.task.num_labels, c.dropout, pooling=c.pooling)
            if c.lora_rank:  # freezes the backbone but for low-rank updates of the attention projections
                self.backbone.enable_lora(c.lora_rank)
                for variable in self.backbone.trainable_variables:  # LoRA trains the low-rank factors only
                    if "lora_kernel" not in variable.path:
                        variable.trainable = False
            optimizer = make_optimizer(c.lr, self.schedule.total_steps, warmup=c.warmup,
                                       weight_decay=c.weight_decay, clipnorm=c.clipnorm, epsilon=1e-6)
            compile_for_task(self.model, self.task.kind, optimizer, jit_compile=c.jit_compile)

    # ------------------------------------------------------------- batches
    def batches(self, first_step: int):
        """``(inputs, targets)`` batches from global step `first_step` on:
        each epoch's batches are a seeded function of (seed, epoch) (see
        `length_grouped_batches`), so a resumed run trains on exactly the
        batches the uninterrupted run would. Each batch is cut to a bucketed
        token length covering its longest row."""
        c, f = self.config, self.train_set.features
        lengths = f.lengths()
        inputs = f.inputs()
        epoch, batches = None, None
        for step in range(first_step, self.schedule.total_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                batches = length_grouped_batches(lengths, c.batch_size, c.group_by_length,
                                                 np.random.default_rng([c.seed, epoch]))
            rows = batches[step % self.steps_per_epoch]
            t = bucket_length(int(lengths[rows].max()), c.max_seq_len, fine=True)
            x = {k: v[rows, :t] for k, v in inputs.items()}
            if isinstance(self.train_targets, dict):
                y = {k: v[rows] for k, v in self.train_targets.items()}
            elif self.task.kind == "token_classification":
                y = self.train_targets[rows, :t]
            else:
                y = self.train_targets[rows]
            yield x, y

    def train_data(self, first_step: int) -> tf.data.Dataset:
        ids = tf.TensorSpec([None, None], tf.int32)
        x_spec = {"token_ids": ids, "segment_ids": ids, "padding_mask": ids}
        if self.task.kind == "span":
            y_spec = {k: tf.TensorSpec([None], tf.int32) for k in ("start_logits", "end_logits")}
        elif self.task.kind == "token_classification":
            y_spec = tf.TensorSpec([None, None], tf.int32)
        elif self.task.kind == "multi_label":  # multi-hot targets of the binary cross-entropy
            y_spec = tf.TensorSpec([None, self.task.num_labels], tf.float32)
        else:
            y_spec = tf.TensorSpec([None], tf.float32 if self.task.kind == "regression" else tf.int32)
        ds = tf.data.Dataset.from_generator(lambda: self.batches(first_step), output_signature=(x_spec, y_spec))
        return ds.prefetch(2)

    # ------------------------------------------------------------ evaluate
    def predict_split(self, split: _Split) -> Predictions:
        """Run the model over a split (length-sorted batches); returns `Predictions`."""
        c, f = self.config, split.features
        if not hasattr(self, "_forward"):
            self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True,
                                        jit_compile=c.jit_compile)
        lengths = f.lengths()
        order = np.argsort(lengths, kind="stable")
        outputs: list = [None] * len(f)
        inputs = f.inputs()
        for b0 in range(0, len(f), c.eval_batch_size):
            rows = order[b0:b0 + c.eval_batch_size]
            t = bucket_length(int(lengths[rows].max()), c.max_seq_len, fine=True)
            out = self._forward({k: v[rows, :t] for k, v in inputs.items()})
            for j, r in enumerate(rows):
                outputs[r] = ({k: np.asarray(v[j]) for k, v in out.items()} if isinstance(out, dict)
                              else np.asarray(out[j]))
        examples = split.examples
        record_uids = [examples[i].uid for i in f.example_index]
        if self.task.kind == "token_classification":
            width = max(o.shape[0] for o in outputs)
            logits = np.stack([np.pad(o, [(0, width - len(o)), (0, 0)]) for o in outputs])
            gold = {ex.uid: (list(ex.words), list(ex.tags)) for ex in examples}
            return Predictions.from_outputs(self.task, split.name, record_uids, [logits],
                                            offsets=[f.word_ids[:, :width]], gold=gold, source=str(self.run_dir.path))
        if self.task.kind != "span":
            missing = {"classification": -1, "multi_label": [-1] * self.task.num_labels}.get(self.task.kind, np.nan)
            labels = [missing if ex.label is None else ex.label for ex in examples]
            return Predictions.from_outputs(self.task, split.name, record_uids, [np.stack(outputs)],
                                            labels=labels, source=str(self.run_dir.path))
        width = max(o["start_logits"].shape[0] for o in outputs)
        batch = {k: np.stack([np.pad(o[k], (0, width - len(o[k])), constant_values=-1e4) for o in outputs])
                 for k in ("start_logits", "end_logits")}
        offsets = f.offsets[:, :width]
        gold = {ex.uid: (ex.texts[1], [] if ex.is_impossible else [a.text for a in ex.answers]) for ex in examples}
        return Predictions.from_outputs(self.task.name, split.name, record_uids, [batch],
                                        window_index=[f.window_index()], offsets=[offsets], gold=gold,
                                        source=str(self.run_dir.path))

    def evaluate(self, model=None) -> tuple[dict, dict]:
        """``(merged metrics, {split: Predictions})`` of the eval splits
        (multi-label: at the thresholds chosen on the first, dev)."""
        preds = {split.name: self.predict_split(split) for split in self.evals}
        choose_dev_thresholds(preds, self.evals[0].name)
        return merge_split_metrics({name: p.evaluate() for name, p in preds.items()}, self.task), preds

    def mean_loss(self, split: _Split | None = None) -> float:
        """The training loss (dropout off) averaged over a split (default:
        the training rows), e.g. to check that training lowered it."""
        split = split or self.train_set
        p = self.predict_split(split)
        if self.task.kind == "classification":
            y = np.asarray([ex.label for ex in split.examples])
            return float(-np.mean(np.log(np.maximum(p.probabilities[np.arange(len(y)), y], 1e-12))))
        if self.task.kind == "regression":
            y = np.asarray([ex.label for ex in split.examples], np.float32)
            return float(np.mean((p.scores - y) ** 2))
        if self.task.kind == "multi_label":  # binary cross-entropy, the mean over examples and labels
            y = np.asarray([ex.label for ex in split.examples], np.float64)
            q = np.clip(p.probabilities.astype(np.float64), 1e-12, 1 - 1e-12)
            return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
        if self.task.kind == "token_classification":  # the mean over words (each word's first sub-word)
            index = {name: i for i, name in enumerate(self.task.label_names)}
            y = np.asarray([index[t] for tags in p.gold_tags() for t in tags])
            return float(-np.mean(np.log(np.maximum(p.word_probabilities[np.arange(len(y)), y], 1e-12))))
        f = split.features

        def ce(logits, target):
            z = logits - logits.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return -logp[np.arange(len(target)), target]

        return float(np.mean(0.5 * (ce(p.start_logits, f.start_positions) + ce(p.end_logits, f.end_positions))))

    # ---------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, label: float, model, metrics: dict, preds: dict) -> Path:
        """Write ``checkpoints/epoch-X.XX`` atomically: the task as a keras-hub
        preset (a backbone folder), tokenizer, predictions, checkpoint.json."""
        final = self.run_dir.checkpoint(label)
        with io.atomic_folder(final) as tmp:
            self.model.save_to_preset(str(tmp))
            self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            write_backbone_info(tmp, self.act, {"finetuned_from": backbone_identity(self.ref),
                                                "task": self.task.name, "step": step, "epoch": label,
                                                "method": "lora" if self.config.lora_rank else "full"})
            for split, p in preds.items():
                p.save(tmp / "predictions" / f"{split}.npz")
            info = {"step": step, "epoch": label, "label": final.name, "steps_per_epoch": self.steps_per_epoch,
                    "examples_seen": min(step * self.config.batch_size,
                                         int(math.ceil(self.config.epochs * len(self.train_set.features)))),
                    "metrics": metrics, "config": self.config.to_dict()}
            io.atomic_write_json(tmp / CHECKPOINT_INFO, info)
        if not self.config.progress:  # no progress bar: still one line of news per checkpoint
            print(checkpoint_line(label, step, self.schedule.total_steps, metrics, final), file=sys.stderr, flush=True)
        return final

    # ----------------------------------------------------------------- run
    def run(self) -> RunResults:
        """Train (or resume), checkpoint, evaluate; write ``results.json``
        (`bertvision.lifecycle.run_task`). Returns the results; the same
        command again returns a finished run's results."""
        return run_task(self, self.run_dir)

    def train(self, run: RunFolder) -> TrainOutcome:
        """`RunTask.train`: build the task model and train it through the one trainer
        (the data was featurized by `prepare`, before the run folder was claimed)."""
        c = self.config
        self.build()
        trainer = Trainer(self.model, main_metric=self.task.main_metric, schedule=self.schedule,
                          train_data=self.train_data, evaluate=self.evaluate, state_dir=run.state_dir,
                          select_best=False, on_mark=self.save_checkpoint, examples_per_step=c.batch_size,
                          verbose=1 if c.progress else 0, log_dir=run.logs_dir, strategy=self.strategy,
                          restarting=run.resuming)
        return trainer.run()

    def environment(self) -> dict:
        c = self.config
        return {"strategy": c.strategy, "replicas": int(self.strategy.num_replicas_in_sync),
                "jit_compile": c.jit_compile}

    def result_fields(self, outcome: TrainOutcome) -> dict:
        c = self.config
        final = outcome.history[-1]
        n_trainable = trainable_params(self.model)
        n_backbone = backbone_param_count(backbone_identity(self.ref)) or int(self.backbone.count_params())
        dev = outcome.predictions.get(c.eval_splits[0])
        return dict(
            task=self.task.name, task_spec=None if self.task.is_preset else self.task.to_dict(),
            method="bert_lora" if c.lora_rank else "bert_finetune",
            main_metric=self.task.main_metric,
            dev_metrics=final.dev, eval_splits=list(c.eval_splits), best_dev_metrics=outcome.best_metrics,
            hyperparameters={k: getattr(c, k) for k in ("epochs", "lr", "batch_size", "max_seq_len", "doc_stride",
                                                          "max_query_len", "warmup", "weight_decay", "dropout",
                                                          "pooling", "lora_rank", "clipnorm", "seed", "checkpoint_every",
                                                          "checkpoint_at", "sample", "group_by_length")},
            seed=c.seed, train_fraction=c.train_fraction, train_examples=len(self.train_set.examples),
            train_records=len(self.train_set.features), trainable_params=n_trainable, backbone_params=n_backbone,
            param_share=n_trainable / n_backbone,
            train_examples_per_s=round(final.step * c.batch_size / max(outcome.train_seconds, 1e-9), 2)
            if outcome.resumed_from is None else final.examples_per_s,
            backbone=backbone_identity(self.ref), store=c.store,
            thresholds=None if self.task.kind != "multi_label" else [round(float(t), 6) for t in dev.thresholds],
            checkpoints={"best": str(Path(CHECKPOINTS) / checkpoint_name(outcome.best_epoch)),
                         "final": str(Path(CHECKPOINTS) / checkpoint_name(final.epoch))})
