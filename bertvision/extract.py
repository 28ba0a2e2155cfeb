"""Extraction: run BERT once over a split and keep every layer in a store.

>>> config = ExtractConfig(task="sst2", split="dev", out="tfrecords/sst2",
...                        data_dir="../shared/data/glue/SST-2", token_mode="cls")
>>> manifest = Extractor(config).run()

A run killed at any point and started again with the same arguments resumes:
finished shards (those with a ``.done`` marker) are kept, the others are
written again from the start under a temporary name. Two processes extracting
the same split into the same store are refused (a lock per split and
worker). With ``num_workers=W, worker_index=I`` worker I writes shards I,
I+W, ... of the same plan, and ``finalize`` merges them into the manifest.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import threading
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from bertvision import io
from bertvision import store as st
from bertvision.backbone import (AllLayersEncoder, backbone_identity, backbone_layers, load_backbone,
                                 load_tokenizer, resolve_backbone)
from bertvision.config import (DTYPES, TOKEN_MODES, ConfigBase, check_choice, check_fraction, check_positive,
                               check_positive_int, default_max_seq_len)
from bertvision.data import load_examples, seeded_subset
from bertvision.distribute import get_strategy
from bertvision.errors import ConfigError, StoreError
from bertvision.features import Featurizer, FeaturizerConfig, bucket_length, length_sorted_batches
from bertvision.runs import package_versions
from bertvision.tasks import get_task

EXTRACT_STRATEGIES = ("default", "mirrored")  # the forward pass runs on this machine's devices


@dataclass
class ExtractConfig(ConfigBase):
    """Everything that determines a split of a store (saved in its plan)."""

    task: str
    split: str
    out: str
    data_dir: str | None = None
    use_tfds: bool = False
    backbone: str | None = None
    layers: str = "all"
    token_mode: str = "cls"
    dtype: str = "float16"
    max_seq_len: int | None = None  # default: 128, or 384 for span tasks
    doc_stride: int = 128
    max_query_len: int = 64
    batch_size: int = 32
    limit: int | None = None
    sample: int | None = None  # a seeded random subset of this many examples
    seed: int = 0
    shard_size_mb: float = 128.0
    max_skipped: float | None = 0.01  # refuse a split with more malformed records than this share (None: any)
    num_workers: int = 1
    worker_index: int = 0
    strategy: str = "default"
    jit_compile: bool = True
    progress: bool = True
    command: list = field(default_factory=list)

    error = ConfigError

    def validate(self) -> None:
        task = get_task(self.task)
        check_choice("token_mode", self.token_mode, TOKEN_MODES)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("strategy", self.strategy, EXTRACT_STRATEGIES)
        if task.kind == "span" and self.token_mode != "sequence":
            raise ConfigError(f"task {self.task} is span annotation: it needs --token-mode sequence "
                              f"(every token's activations), not {self.token_mode!r}")
        for name in ("batch_size", "doc_stride", "max_query_len", "num_workers"):
            check_positive_int(name, getattr(self, name))
        for name in ("max_seq_len", "limit", "sample"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.max_seq_len is None:
            self.max_seq_len = default_max_seq_len(task.kind)
        featurizer = FeaturizerConfig(self.max_seq_len, self.doc_stride, self.max_query_len)
        if task.kind == "span":
            featurizer.check_span()
        check_positive("shard_size_mb", self.shard_size_mb)
        if self.max_skipped is not None:
            check_fraction("max_skipped", self.max_skipped, low_open=False)
        if isinstance(self.worker_index, bool) or not isinstance(self.worker_index, int) \
                or not 0 <= self.worker_index < self.num_workers:
            raise ConfigError(f"--worker-index {self.worker_index!r} must be in 0..{self.num_workers - 1}")


class _Writer(threading.Thread):
    """Serialises and writes records in the background so the forward pass
    never waits for protobufs or disk."""

    def __init__(self):
        super().__init__(daemon=True)
        self.jobs: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None

    def run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.error is not None:
                continue
            try:
                job()
            except BaseException as err:  # re-raised in the main thread
                self.error = err

    def submit(self, job):
        if self.error is not None:
            raise self.error
        self.jobs.put(job)

    def close(self):
        self.jobs.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class Extractor:
    """Runs one `ExtractConfig`. See the module docstring."""

    def __init__(self, config: ExtractConfig, backbone=None, tokenizer=None):
        """`backbone`/`tokenizer` may be passed in already loaded (they must
        be the ones `config.backbone` names) to save loading them again."""
        self.config = config
        self._backbone, self._tokenizer = backbone, tokenizer
        self.task = get_task(config.task)

    # ------------------------------------------------------------------
    def prepare(self):
        """Load examples, tokenizer and backbone; featurize. Returns the features."""
        c = self.config
        loaded = load_examples(c.task, c.split, c.data_dir, use_tfds=c.use_tfds, limit=c.limit)
        if loaded.skipped:
            print(loaded.skipped_report(), file=sys.stderr, flush=True)
        loaded.check_skipped(c.max_skipped)
        self.examples = loaded.examples
        if c.sample is not None:
            self.examples = seeded_subset(self.examples, c.sample, c.seed)
        self.skipped = [list(s) for s in loaded.skipped]
        if not self.examples:
            raise ConfigError(f"{c.task}/{c.split}: no examples to extract")
        self.ref = resolve_backbone(c.backbone)
        self.tokenizer = self._tokenizer or load_tokenizer(self.ref)
        featurizer = Featurizer(self.tokenizer, max_seq_len=c.max_seq_len, doc_stride=c.doc_stride,
                                max_query_len=c.max_query_len)
        self.features = featurizer.encode(self.task, self.examples)
        self.backbone = self._backbone or load_backbone(self.ref)
        self.layers = backbone_layers(c.layers, self.backbone.num_layers)
        featurizer_config = {"max_seq_len": c.max_seq_len}
        if self.task.kind == "span":
            featurizer_config.update(doc_stride=c.doc_stride, max_query_len=c.max_query_len)
        self.spec = st.StoreSpec(
            task=self.task.name, task_kind=self.task.kind, label_names=list(self.task.label_names),
            backbone=backbone_identity(self.ref), tokenizer=type(self.tokenizer).__name__,
            layers=self.layers, num_model_layers=int(self.backbone.num_layers),
            hidden=int(self.backbone.hidden_dim), token_mode=c.token_mode, max_seq_len=c.max_seq_len,
            dtype=c.dtype, featurizer=featurizer_config,
        )
        return self.features

    def record_bytes(self) -> np.ndarray:
        """Activation bytes of each record (sequence stores keep real tokens only)."""
        per_token = len(self.layers) * self.spec.hidden * st.bytes_per_value(self.config.dtype)
        if self.config.token_mode == "sequence":
            return self.features.padding_mask.sum(axis=1).astype(np.int64) * per_token
        return np.full(len(self.features.token_ids), per_token, dtype=np.int64)

    def _example_rows(self) -> list[str]:
        rows = []
        for ex in self.examples:
            row = {"uid": ex.uid, "label": ex.label}
            if self.task.kind == "span":
                row.update(question=ex.texts[0], context=ex.texts[1],
                           answers=[a.text for a in ex.answers], is_impossible=bool(ex.is_impossible))
            else:
                row["texts"] = list(ex.texts)
            rows.append(json.dumps(row, ensure_ascii=False))
        return rows

    # ------------------------------------------------------------------
    def _check_out(self) -> None:
        """Refuse an --out that holds files but is not a store."""
        out = self.config.out
        if io.exists(out) and not io.isdir(out):
            raise StoreError(f"--out {out} is a file; give a folder for the store")
        if io.isdir(out):
            names = [n.rstrip("/") for n in io.listdir(out)]
            ours = [n for n in names if n == st.MANIFEST or n.endswith(".plan.json")]
            if names and not ours and set(names) - {io.LOCK_FILE} - {n for n in names if n.startswith(".lock")}:
                raise StoreError(f"--out {out} is a folder holding other files and no store; "
                                 "give a new or empty folder")

    def write_plan(self) -> dict:
        """Write (or check) the split's plan, examples file and store header."""
        c = self.config
        out = c.out
        io.makedirs(out)
        manifest_path = io.join(out, st.MANIFEST)
        if io.exists(manifest_path):
            st.check_compatible(st.open_store(out).manifest, self.spec, out)
        sizes = self.record_bytes()
        bounds = st.plan_shards(sizes, c.shard_size_mb)
        uids = [self.examples[i].uid for i in self.features.example_index]
        plan = {
            "split": c.split,
            "num_examples": len(self.examples),
            "num_records": len(uids),
            "uids_sha256": io.sha256_bytes("\n".join(uids).encode()),
            "shards": [list(b) for b in bounds],
            "header": self.spec.header(),
            "skipped": self.skipped,
            "provenance": {"command": c.command or sys.argv, "config": c.to_dict(),
                           "versions": package_versions()},
        }
        plan_path = io.join(out, f"{c.split}.plan.json")
        if io.exists(plan_path):
            old = io.read_json(plan_path, StoreError)
            for key in ("num_records", "uids_sha256", "shards", "header"):
                if old.get(key) != plan[key]:
                    raise StoreError(
                        f"{plan_path}: split {c.split!r} was started with different settings or data "
                        f"({key} differs); use the same arguments to resume, or another --out"
                    )
            plan["provenance"] = old["provenance"]
        else:
            io.atomic_write_json(plan_path, plan)
        examples_path = io.join(out, f"{c.split}.examples.jsonl")
        if not io.exists(examples_path):
            io.atomic_write_bytes(examples_path, ("\n".join(self._example_rows()) + "\n").encode())
        self.plan = plan
        return plan

    # ------------------------------------------------------------------
    def _distributed_forward(self, encoder, strategy):
        if strategy.num_replicas_in_sync == 1:
            return lambda batch: encoder(batch).numpy()

        def run(batch):
            ds = tf.data.Dataset.from_tensors(batch)
            dist = strategy.experimental_distribute_dataset(ds)
            out = None
            for x in dist:
                out = strategy.gather(strategy.run(encoder, args=(x,)), axis=0)
            return out.numpy()

        return run

    def run(self) -> dict | None:
        """Extract this worker's shards; finalize when every shard is done."""
        c = self.config
        self._check_out()
        created = not io.exists(c.out)
        try:
            return self._run()
        except BaseException:
            if created and io.is_local(c.out) and all(n.startswith(".lock") for n in os.listdir(c.out)):
                shutil.rmtree(c.out, ignore_errors=True)  # failed before writing anything: leave no trace
            raise

    def _run(self) -> dict | None:
        c = self.config
        lock = f".lock.{c.split}.{c.worker_index}"
        with io.exclusive_lock(c.out, f"extracting {c.split}", StoreError, name=lock):
            self.prepare()
            plan = self.write_plan()
            bounds = [tuple(b) for b in plan["shards"]]
            n_shards = len(bounds)
            mine = [i for i in range(n_shards) if i % c.num_workers == c.worker_index]
            todo = [i for i in mine if st.finished_shard(c.out, st.shard_name(c.split, i, n_shards)) is None]
            total = sum(bounds[i][1] - bounds[i][0] for i in mine)
            remaining = sum(bounds[i][1] - bounds[i][0] for i in todo)
            for i in todo:  # leftovers of a killed run (nobody else writes these shards: we hold the lock)
                for stale in io.glob(io.join(c.out, st.shard_name(c.split, i, n_shards)) + ".tmp-*"):
                    io.remove(stale)
            if todo:
                strategy = get_strategy(c.strategy)
                with strategy.scope():
                    encoder = AllLayersEncoder(self.backbone, self.layers, c.token_mode, c.dtype, c.jit_compile)
                forward = self._distributed_forward(encoder, strategy)
                self._extract_shards(todo, bounds, forward, total, total - remaining)
        done = all(st.finished_shard(c.out, st.shard_name(c.split, i, n_shards)) for i in range(n_shards))
        if done:
            with io.exclusive_lock(c.out, "updating the manifest", StoreError, wait=True):
                return st.finalize_split(c.out, c.split, self.spec.header(), plan["provenance"])
        return None
    def _extract_shards(self, todo, bounds, forward, total, already):
        c, f = self.config, self.features
        lengths = f.padding_mask.sum(axis=1)
        windows = self.features.window_index() if self.task.kind == "span" else None
        labels = [self.examples[i].label for i in f.example_index]
        uids = [self.examples[i].uid for i in f.example_index]
        n_shards = len(bounds)
        bar = tqdm(total=total, initial=already, unit="ex", desc=f"extract {c.task}/{c.split}",
                   disable=not c.progress, dynamic_ncols=True, file=sys.stderr)
        writer_thread = _Writer()
        writer_thread.start()
        seq = c.token_mode == "sequence"
        kind = self.task.kind
        try:
            for shard in todo:
                start, end = bounds[shard]
                writer = st.ShardWriter(io.join(c.out, st.shard_name(c.split, shard, n_shards)))
                # Forward in length-sorted batches; write in row order as soon as
                # the next row's activations are there (at most one shard held).
                ready, next_row = {}, start
                for rows in length_sorted_batches(lengths, np.arange(start, end), c.batch_size):
                    t = bucket_length(int(lengths[rows].max()), c.max_seq_len)
                    batch = {
                        "token_ids": f.token_ids[rows, :t],
                        "segment_ids": f.segment_ids[rows, :t],
                        "padding_mask": f.padding_mask[rows, :t],
                    }
                    acts = forward(batch)
                    for j, r in enumerate(rows):
                        ready[int(r)] = np.ascontiguousarray(acts[j, :, :int(lengths[r]), :]) if seq else acts[j]
                    first = next_row
                    while next_row in ready:
                        next_row += 1
                    if next_row > first:
                        arrays = [ready.pop(r) for r in range(first, next_row)]

                        def write(arrays=arrays, first=first, writer=writer):
                            for r, a in enumerate(arrays, start=first):
                                n = int(lengths[r])
                                span = None
                                if kind == "span":
                                    span = {"start_position": f.start_positions[r], "end_position": f.end_positions[r],
                                            "window_index": windows[r], "offsets": f.offsets[r]}
                                record = st.serialize_record(a, length=n if seq else None, uid=uids[r],
                                                             example_index=int(f.example_index[r]), label=labels[r],
                                                             task_kind=kind, span=span)
                                writer.write(record, a.nbytes)

                        writer_thread.submit(write)
                    bar.update(len(rows))
                if ready or next_row != end:  # cannot happen: every row is in exactly one batch
                    raise AssertionError(f"shard {shard}: rows {start}..{end - 1} were not all extracted")
                writer_thread.submit(writer.commit)
        except BaseException:
            try:
                writer_thread.close()
            except BaseException:
                pass
            raise
        finally:
            bar.close()
        writer_thread.close()


def finalize(store_dir: str, split: str | None = None) -> dict:
    """Verify and merge the shards of `split` (or of every planned split)."""
    if not io.isdir(store_dir):
        raise StoreError(f"{store_dir}: no such store folder")
    names = [split] if split else sorted(
        n[: -len(".plan.json")] for n in io.listdir(store_dir) if n.endswith(".plan.json"))
    if not names:
        raise StoreError(f"{store_dir}: nothing to finalize (no *.plan.json)")
    manifest = None
    with io.exclusive_lock(store_dir, "updating the manifest", StoreError, wait=True):
        for name in names:
            manifest = st.finalize_split(store_dir, name)
    return manifest


def env_worker_from_tf_config() -> tuple[int, int] | None:
    """(num_workers, worker_index) from TF_CONFIG, if it names a cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err})") from err
    workers = config.get("cluster", {}).get("worker", [])
    if config.get("task", {}).get("type") != "worker" or not workers:
        return None
    return len(workers), int(config["task"]["index"])
