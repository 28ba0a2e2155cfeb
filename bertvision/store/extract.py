"""Extraction: run BERT once over a split and keep every layer in a store.

>>> config = ExtractConfig(task="sst2", split="dev", out="tfrecords/sst2", limit=8, progress=False,
...                        data_dir=str(DATA / "glue" / "SST-2"), token_mode="cls",   # DATA: ../shared/data
...                        jit_compile=False)   # no XLA compile for 8 examples
>>> manifest = Extractor(config).run()
>>> manifest["splits"]["dev"]["num_records"], manifest["layers"]
(8, [0, 1, 2, 3, 4, 5, 6])

How a split is written, whoever writes it:

1. `Extractor.plan_split` loads the examples, featurizes them once to learn
   each record's size, cuts the records into shards (`store.plan_shards`)
   and writes ``SPLIT.plan.json`` and ``SPLIT.examples.jsonl``. It returns
   one `ShardJob` per shard: the shard's place in the plan and the examples
   whose model inputs it holds (a SQuAD question's windows may straddle two
   shards; each job featurizes the whole question and keeps its rows).
2. `ShardExtractor.write(job)` featurizes the job's examples, runs the
   backbone over length-sorted batches, serializes every record in row order
   (`store.serialize_record`) and writes the shard atomically
   (`store.ShardWriter`: a temporary name, renamed when complete, with a
   ``.done`` marker holding its record count and sha256).
3. `finalize_splits` checks every planned shard is there and writes the
   manifest (`store.finalize_split`).

`Extractor.run` does all three in this process (step 2 for the shards not yet
done, so a killed run started again resumes). `bertvision.store.beam` does
step 1 on the launching machine and steps 2 and 3 inside an Apache Beam
pipeline, so any Beam runner spreads the shards over many machines; both
write the same bytes. Two processes writing the same split into one store are
refused (a lock per split).
"""

from __future__ import annotations

import dataclasses
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
from bertvision.store import format as st
from bertvision.models.backbone import (AllLayersEncoder, backbone_identity, backbone_layers, load_backbone,
                                 load_tokenizer, resolve_backbone)
from bertvision.config import (DEFAULT_MAX_WINDOWS, EXTRACT_STRATEGIES, PAIR_MODES, PER_TOKEN_KINDS, STORE_DTYPES,
                               TOKEN_MODES, ConfigBase, check_choice, check_fraction,
                               check_positive, check_positive_int, default_max_seq_len, pair_texts)
from bertvision.data.readers import Answer, Example, LoadResult, load_examples, seeded_subset
from bertvision.distribute import get_strategy
from bertvision.errors import ConfigError, StoreError
from bertvision.data.features import (SEQUENCE_KINDS, Featurizer, FeaturizerConfig, bucket_length,
                                     length_sorted_batches)
from bertvision.runs import package_versions
from bertvision.data.tasks import TaskSpec, get_task

__all__ = ["EXTRACT_STRATEGIES", "JOBS_SUFFIX", "ExtractConfig", "Extractor", "ShardExtractor", "ShardJob", "finalize_splits",
           "make_forward", "split_lock", "stale_files"]

JOBS_SUFFIX = ".jobs.jsonl"  # SPLIT.jobs.jsonl: a Beam pipeline's input, removed when the split is finalized


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
    pair_mode: str = "cross"  # pair tasks: separate = each text encoded on its own, both stored
    dtype: str = "float16"  # or int8: half the bytes, one float16 scale per vector (`store.quantize_int8`)
    max_seq_len: int | None = None  # default: 128, or 384 for span tasks
    doc_stride: int = 128
    windows: bool = False  # sentence-level tasks: a long text as windows of max_seq_len, doc_stride apart
    max_windows: int = DEFAULT_MAX_WINDOWS  # with windows: a document keeps its first max_windows windows
    max_query_len: int = 64
    batch_size: int = 32
    limit: int | None = None
    sample: int | None = None  # a seeded random subset of this many examples
    seed: int = 0
    shard_size_mb: float = 128.0
    max_skipped: float | None = 0.01  # refuse a split with more malformed records than this share (None: any)
    strategy: str = "default"
    jit_compile: bool = True
    progress: bool = True
    command: list = field(default_factory=list)
    heads: list | None = None  # a user task (`bertvision.data.files`): the spec of every label column kept
    source: dict | None = None  # a user task: the files read and how dev was drawn from train

    error = ConfigError

    @property
    def spec(self) -> TaskSpec:
        """The store's task: the first head of a user task, else the preset `task` names."""
        return get_task(self.heads[0]) if self.heads else get_task(self.task)

    def validate(self) -> None:
        task = self.spec
        check_choice("token_mode", self.token_mode, TOKEN_MODES)
        check_choice("dtype", self.dtype, STORE_DTYPES)
        check_choice("strategy", self.strategy, EXTRACT_STRATEGIES)
        check_choice("pair_mode", self.pair_mode, PAIR_MODES)
        if self.pair_mode == "separate":
            if len(task.text_fields) != 2 or task.kind == "span":
                raise ConfigError(f"--pair-mode separate encodes each text of a sentence pair on its own; task "
                                  f"{self.task} is not a sentence-pair task")
            if self.token_mode == "sequence":
                raise ConfigError("--pair-mode separate stores one vector per text and layer: use --token-mode "
                                  "mean or cls, not sequence")
        if task.kind in PER_TOKEN_KINDS and self.token_mode != "sequence":
            what = "span annotation" if task.kind == "span" else "token classification"
            raise ConfigError(f"task {self.task} is {what}: it needs --token-mode sequence "
                              f"(every token's activations), not {self.token_mode!r}")
        for name in ("batch_size", "doc_stride", "max_query_len", "max_windows"):
            check_positive_int(name, getattr(self, name))
        for name in ("max_seq_len", "limit", "sample"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.max_seq_len is None:
            self.max_seq_len = default_max_seq_len(task.kind)
        if task.kind == "span":
            FeaturizerConfig(self.max_seq_len, self.doc_stride, self.max_query_len).check_span()
        if self.windows:
            self.check_windows(task)
        check_positive("shard_size_mb", self.shard_size_mb)
        if self.max_skipped is not None:
            check_fraction("max_skipped", self.max_skipped, low_open=False)

    def check_windows(self, task: TaskSpec) -> None:
        """Windows (``--doc-stride`` on a sentence-level task) need one text
        per example and a stride shorter than a window."""
        if task.kind not in SEQUENCE_KINDS:
            raise ConfigError(f"task {self.task} is {task.kind}: its examples are windowed already; documents as "
                              f"windows are for {', '.join(SEQUENCE_KINDS)} tasks")
        if len(task.text_fields) != 1:
            raise ConfigError(f"--doc-stride splits one text into windows; task {self.task} has a text pair "
                              f"({', '.join(map(str, task.text_fields))})")
        if self.doc_stride >= self.max_seq_len:
            raise ConfigError(f"--doc-stride {self.doc_stride} must be less than --max-seq-len {self.max_seq_len} "
                              "(windows start doc_stride tokens apart)")

    @property
    def rows_per_record(self) -> int:
        """Model inputs per stored record: 2 with ``pair_mode="separate"``."""
        return pair_texts(self.pair_mode)

    def featurizer(self, tokenizer) -> Featurizer:
        """The `Featurizer` these settings describe."""
        return Featurizer(tokenizer, max_seq_len=self.max_seq_len, doc_stride=self.doc_stride,
                          max_query_len=self.max_query_len, windows=self.windows, max_windows=self.max_windows)


def _plan_settings(plan: dict) -> dict:
    """A split's plan as a resumed run must match it: a user task's `source`
    (the files of the command that wrote it) left out, so that a command
    adding a split (``--split dev=dev.csv``) resumes the splits already there."""
    return {**plan, "header": {k: v for k, v in (plan.get("header") or {}).items() if k != "source"}}


def split_lock(split: str) -> str:
    """Name of the lock file a split's writer holds in the store folder."""
    return f".lock.{split}"


# ---------------------------------------------------------------- shard jobs


def _example_to_dict(ex: Example) -> dict:
    return {"uid": ex.uid, "texts": list(ex.texts), "label": ex.label,
            "answers": [[a.text, a.start] for a in ex.answers], "is_impossible": bool(ex.is_impossible),
            "labels": ex.labels, "words": list(ex.words), "tags": list(ex.tags)}


def _example_from_dict(d: dict) -> Example:
    return Example(uid=d["uid"], texts=tuple(d["texts"]), label=d["label"],
                   answers=tuple(Answer(text, start) for text, start in d["answers"]),
                   is_impossible=d["is_impossible"], labels=d.get("labels"), words=tuple(d.get("words", ())),
                   tags=tuple(d.get("tags", ())))


@dataclass
class ShardJob:
    """One shard of a split's plan, with everything needed to write it.

    ``start``/``end``: the shard's records (model inputs) in the split;
    ``examples``: the examples whose inputs those are, from split position
    ``first_example`` on, the first of them starting at record
    ``first_row`` (``<= start`` when its windows began in the previous shard).
    A job is a line of JSON (`to_json`), the element a Beam pipeline passes on.
    """

    split: str
    index: int
    count: int
    start: int
    end: int
    first_example: int
    first_row: int
    examples: list

    @property
    def name(self) -> str:
        return st.shard_name(self.split, self.index, self.count)

    @property
    def records(self) -> int:
        return self.end - self.start

    def to_json(self) -> str:
        fields = {k: getattr(self, k) for k in ("split", "index", "count", "start", "end", "first_example",
                                                "first_row")}
        return json.dumps({**fields, "examples": [_example_to_dict(e) for e in self.examples]}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "ShardJob":
        data = json.loads(text)
        data["examples"] = [_example_from_dict(e) for e in data["examples"]]
        return cls(**data)


def make_forward(backbone, layers: list[int], config: ExtractConfig):
    """``batch -> numpy activations``: the jit-compiled `AllLayersEncoder`
    on this machine's devices (``--strategy mirrored``: every local GPU)."""
    strategy = get_strategy(config.strategy)
    with strategy.scope():
        # int8 stores quantize the float32 activations as each record is written
        dtype = "float32" if config.dtype == "int8" else config.dtype
        encoder = AllLayersEncoder(backbone, layers, config.token_mode, dtype, config.jit_compile)
    if strategy.num_replicas_in_sync == 1:
        return lambda batch: encoder(batch).numpy()

    def run(batch):
        dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
        out = None
        for x in dist:
            out = strategy.gather(strategy.run(encoder, args=(x,)), axis=0)
        return out.numpy()

    return run


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

    def __enter__(self) -> "_Writer":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()  # waits for the last records; raises the writer's error
            return
        try:  # already failing: stop the thread, keep the first error
            self.close()
        except BaseException:
            pass


class ShardExtractor:
    """Writes shards: the one writer of store shards, run by `Extractor` in
    this process and by `bertvision.store.beam` on Beam workers.

    `forward` is ``batch -> activations`` (`make_forward`); `config` gives
    the store settings (its ``split`` is not used: each job names its own).
    """

    def __init__(self, config: ExtractConfig, tokenizer, forward):
        self.config = config
        self.task = config.spec
        self.heads = [get_task(h) for h in config.heads or ()]
        self.featurizer = config.featurizer(tokenizer)
        self.forward = forward

    def write_shard(self, job: ShardJob, progress=None) -> None:
        """Write `job`'s shard, its records serialized by a background thread."""
        with _Writer() as writer:
            self.write(job, writer.submit, progress)

    def write(self, job: ShardJob, submit, progress=None) -> None:
        """Extract `job`'s shard, handing serialization and the final commit
        to `submit` (a `_Writer`'s, to overlap them with the forward pass);
        `progress(n)` after every batch."""
        c, kind, per = self.config, self.task.kind, self.config.rows_per_record
        f = self.featurizer.encode(self.task, job.examples, c.pair_mode)
        bounds = f.record_bounds(per, c.windows)  # record r: rows bounds[r] .. bounds[r + 1] - 1
        lo, hi = job.start - job.first_row, job.end - job.first_row  # records; rows bounds[lo] .. bounds[hi] - 1
        if not (0 <= lo < hi < len(bounds)) or int(f.example_index[bounds[hi] - 1]) != len(job.examples) - 1:
            raise StoreError(f"{job.name}: featurizing its {len(job.examples)} example(s) gives {len(f)} model "
                             f"inputs, which does not fit the plan's records {job.start}..{job.end - 1}; the "
                             "tokenizer or featurizer differs from the one that planned the split")
        lengths = f.padding_mask.sum(axis=1)
        windows = f.window_index() if kind in PER_TOKEN_KINDS else None
        seq, quantize = c.token_mode == "sequence", c.dtype == "int8"
        inputs = f.inputs()
        writer = st.ShardWriter(io.join(c.out, job.name))

        def serialize(first, arrays):
            for r, a in enumerate(arrays, start=first):
                n, e = int(lengths[bounds[r]:bounds[r + 1]].max()), int(f.example_index[bounds[r]])
                span = None
                if kind == "span":
                    span = {"start_position": f.start_positions[r], "end_position": f.end_positions[r],
                            "window_index": windows[r], "offsets": f.offsets[r]}
                tokens = None
                if kind == "token_classification":
                    tokens = {"labels": f.token_labels[r], "word_ids": f.word_ids[r], "window_index": windows[r]}
                scales = None
                if quantize:
                    a, scales = (t.numpy() for t in st.quantize_int8(a))
                example = job.examples[e]
                heads = head_labels(self.heads, example) if self.heads and kind != "token_classification" else None
                record = st.serialize_record(a, length=n if seq else None, uid=example.uid,
                                             example_index=job.first_example + e, label=example.label,
                                             task_kind=kind, span=span, scales=scales, labels=heads, tokens=tokens,
                                             window_lengths=lengths[bounds[r]:bounds[r + 1]] if c.windows else None)
                writer.write(record, a.nbytes)

        def complete(r):  # record r's rows are all extracted
            return all(k in ready for k in range(bounds[r], bounds[r + 1]))

        def record(r):  # [layers, ...]; [2, layers, hidden] for a separately encoded pair; [windows, layers, ...]
            arrays = [ready.pop(k) for k in range(bounds[r], bounds[r + 1])]
            if not c.windows:
                return arrays[0] if per == 1 else np.stack(arrays)
            if seq:  # a document's windows padded to its longest (only the last one can be shorter)
                t = max(a.shape[1] for a in arrays)
                arrays = [np.pad(a, [(0, 0), (0, t - a.shape[1]), (0, 0)]) for a in arrays]
            return np.stack(arrays)

        # Forward in length-sorted batches; write in record order as soon as
        # the next record's activations are there (at most one shard held).
        ready, next_row = {}, lo
        for rows in length_sorted_batches(lengths, np.arange(bounds[lo], bounds[hi]), c.batch_size):
            t = bucket_length(int(lengths[rows].max()), c.max_seq_len)
            acts = self.forward({k: v[rows, :t] for k, v in inputs.items()})
            for j, r in enumerate(rows):
                ready[int(r)] = np.ascontiguousarray(acts[j, :, :int(lengths[r]), :]) if seq else acts[j]
            first = next_row
            while next_row < hi and complete(next_row):
                next_row += 1
            if next_row > first:
                arrays = [record(r) for r in range(first, next_row)]
                submit(lambda first=first, arrays=arrays: serialize(first, arrays))
            if progress is not None:  # records: a document's windows count as one
                progress(next_row - first if c.windows else len(rows) if per == 1 else len(rows) / per)
        if ready or next_row != hi:  # cannot happen: every row is in exactly one batch
            raise AssertionError(f"{job.name}: rows {lo}..{hi - 1} were not all extracted")
        submit(writer.commit)


def head_labels(heads: list[TaskSpec], example: Example) -> dict:
    """A user task's record labels: ``{label/<column>: (kind, value)}`` per
    head; an unlabelled example's are -1 / NaN (multi-label: -1 for every label)."""
    out = {}
    for head in heads:
        value = (example.labels or {}).get(head.label_column)
        if value is None and head.kind == "multi_label":
            value = [-1] * head.num_labels
        out[head.label_key] = (head.kind, value)
    return out


def stale_files(store_dir: str, shard: str) -> list[str]:
    """Leftover temporary files of `shard` (from a killed writer)."""
    return io.glob(io.join(store_dir, shard) + ".tmp-*")


def finalize_splits(store_dir: str, splits: list[str], verify: bool = True) -> dict:
    """Check every planned shard of `splits` is written and record them in
    the manifest (`store.finalize_split`, under the manifest lock); remove the
    splits' leftover temporary files and job files. Returns the manifest."""
    manifest = None
    with io.exclusive_lock(store_dir, "updating the manifest", StoreError, wait=True):
        for split in splits:
            manifest = st.finalize_split(store_dir, split, verify=verify)
            for info in manifest["splits"][split]["shards"]:
                for stale in stale_files(store_dir, info["file"]):
                    io.remove(stale)
            io.remove(io.join(store_dir, split + JOBS_SUFFIX))
    return manifest


class Extractor:
    """Plans a split (`plan_split`) and, in this process, writes it (`run`).
    See the module docstring."""

    def __init__(self, config: ExtractConfig, backbone=None, tokenizer=None, loaded: LoadResult | None = None):
        """`backbone`/`tokenizer` may be passed in already loaded (they must
        be the ones `config.backbone` names) to save loading them again.
        `loaded`: the split's examples as read already (a user task's files,
        `bertvision.data.files.read_source`); else `load_examples` reads them."""
        self.config = config
        self._backbone, self._tokenizer = backbone, tokenizer
        self.task = config.spec
        self._loaded = loaded

    # ------------------------------------------------------------------
    def prepare(self):
        """Load examples, tokenizer and backbone; featurize. Returns the features."""
        c = self.config
        if c.heads and self._loaded is None:
            raise ConfigError(f"{c.split}: a user task's examples are read by bertvision.data.files.read_source "
                              "and passed in (Extractor(..., loaded=...))")
        loaded = self._loaded or load_examples(c.task, c.split, c.data_dir, use_tfds=c.use_tfds, limit=c.limit)
        if self._loaded is not None and c.limit is not None:
            loaded = dataclasses.replace(loaded, examples=loaded.examples[:c.limit])
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
        self.features = c.featurizer(self.tokenizer).encode(self.task, self.examples, c.pair_mode)
        self.bounds = self.features.record_bounds(c.rows_per_record, c.windows)  # each record's first row
        self.record_example = self.features.example_index[self.bounds[:-1]]  # example of each record
        self.backbone = self._backbone or load_backbone(self.ref)
        self.layers = backbone_layers(c.layers, self.backbone.num_layers)
        featurizer_config = {"max_seq_len": c.max_seq_len}
        if self.task.kind == "span":
            featurizer_config.update(doc_stride=c.doc_stride, max_query_len=c.max_query_len)
        elif self.task.kind == "token_classification":
            featurizer_config.update(doc_stride=c.doc_stride)
        elif c.windows:  # documents as windows: serving splits a text as extraction did
            featurizer_config.update(doc_stride=c.doc_stride, windows=True, max_windows=c.max_windows)
        self.spec = st.StoreSpec(
            task=self.task.name, task_kind=self.task.kind, label_names=list(self.task.label_names),
            backbone=backbone_identity(self.ref), tokenizer=type(self.tokenizer).__name__,
            layers=self.layers, num_model_layers=int(self.backbone.num_layers),
            hidden=int(self.backbone.hidden_dim), token_mode=c.token_mode, max_seq_len=c.max_seq_len,
            dtype=c.dtype, featurizer=featurizer_config, pair_mode=c.pair_mode, task_spec=self.task.to_dict(),
            heads=list(c.heads) if c.heads else None, source=c.source,
        )
        return self.features

    def record_bytes(self) -> np.ndarray:
        """Activation bytes of each record (sequence stores keep real tokens only)."""
        per_token = len(self.layers) * self.spec.hidden * st.bytes_per_value(self.config.dtype)
        rows = np.diff(self.bounds)  # rows (windows, or a pair's two texts) of each record
        if self.config.token_mode == "sequence":
            lengths = self.features.padding_mask.sum(axis=1).astype(np.int64)
            if self.config.windows:  # a document's windows are stored padded to its longest
                return rows * np.maximum.reduceat(lengths, self.bounds[:-1]) * per_token
            return lengths * per_token
        return rows.astype(np.int64) * per_token

    def _example_rows(self) -> list[str]:
        rows = []
        for ex in self.examples:
            row = {"uid": ex.uid, "label": ex.label}
            if self.task.kind == "span":
                row.update(question=ex.texts[0], context=ex.texts[1],
                           answers=[a.text for a in ex.answers], is_impossible=bool(ex.is_impossible))
            elif self.task.kind == "token_classification":
                row.update(texts=list(ex.texts), words=list(ex.words), tags=list(ex.tags))
            else:
                row["texts"] = list(ex.texts)
            if ex.labels is not None:
                row["labels"] = ex.labels
            rows.append(json.dumps(row, ensure_ascii=False))
        return rows

    # ------------------------------------------------------------------
    def check_out(self) -> None:
        """Refuse an --out that holds files but is not a store."""
        out = self.config.out
        if io.exists(out) and not io.isdir(out):
            raise StoreError(f"--out {out} is a file; give a folder for the store")
        if io.isdir(out):
            names = [n.rstrip("/") for n in io.listdir(out)]
            ours = [n for n in names if n == st.MANIFEST or n.endswith(".plan.json")]
            # another writer's locks and the temporary files of its atomic writes (its plan, before the
            # rename): a store being started, not the user's files
            starting = {n for n in names if n == io.LOCK_FILE or n.startswith(".lock")
                        or (n.startswith(".") and ".tmp-" in n)}
            if names and not ours and set(names) - starting:
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
        uids = [self.examples[i].uid for i in self.record_example]
        plan = {
            "split": c.split,
            "num_examples": len(self.examples),
            "num_records": len(uids),
            "uids_sha256": io.sha256_bytes("\n".join(uids).encode()),
            "shards": [list(b) for b in bounds],
            **({"max_windows": int(np.diff(self.bounds).max()),  # the most windows of one document, and how
                "truncated_documents": int(self.features.cut_examples.size)}  # many had more than the cap
               if c.windows else {}),
            "header": self.spec.header(),
            "skipped": self.skipped,
            "provenance": {"command": c.command or sys.argv, "config": c.to_dict(),
                           "versions": package_versions()},
        }
        plan_path = io.join(out, f"{c.split}.plan.json")
        if io.exists(plan_path):
            old = io.read_json(plan_path, StoreError)
            for key in ("num_records", "uids_sha256", "shards", "header"):
                if _plan_settings(old).get(key) != _plan_settings(plan)[key]:
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

    def jobs(self) -> list[ShardJob]:
        """One `ShardJob` per shard of the plan (`write_plan` first)."""
        index = self.record_example  # ascending: an example's inputs are consecutive records
        first_rows = np.searchsorted(index, np.arange(len(self.examples)))
        jobs, count = [], len(self.plan["shards"])
        for i, (start, end) in enumerate(self.plan["shards"]):
            a, b = int(index[start]), int(index[end - 1])
            jobs.append(ShardJob(self.config.split, i, count, int(start), int(end), a, int(first_rows[a]),
                                 self.examples[a:b + 1]))
        return jobs

    def plan_split(self) -> list[ShardJob]:
        """Check --out, load and featurize the split, write (or check) its
        plan and examples file; return its shard jobs (step 1)."""
        self.check_out()
        self.prepare()
        self.write_plan()
        return self.jobs()

    # ------------------------------------------------------------------
    def run(self) -> dict:
        """Extract the split in this process (the shards not yet done) and
        write the manifest; returns it."""
        c = self.config
        self.check_out()
        created = not io.exists(c.out)
        self._locked = False
        try:
            return self._run()
        except BaseException:
            # failed before writing anything: leave no trace (unless another writer holds the folder: its lock
            # file is all there is while it prepares)
            if created and self._locked and io.is_local(c.out) and all(n.startswith(".lock")
                                                                       for n in os.listdir(c.out)):
                shutil.rmtree(c.out, ignore_errors=True)
            raise

    def _run(self) -> dict:
        c = self.config
        with io.exclusive_lock(c.out, f"extracting {c.split}", StoreError, name=split_lock(c.split)):
            self._locked = True
            jobs = self.plan_split()
            todo = [job for job in jobs if st.finished_shard(c.out, job.name) is None]
            for job in todo:  # leftovers of a killed run (nobody else writes these shards: we hold the lock)
                for stale in stale_files(c.out, job.name):
                    io.remove(stale)
            if todo:
                shards = ShardExtractor(c, self.tokenizer, make_forward(self.backbone, self.layers, c))
                self._write(shards, todo)
            return finalize_splits(c.out, [c.split], verify=True)

    def _write(self, shards: ShardExtractor, todo: list[ShardJob]) -> None:
        c = self.config
        total = self.plan["num_records"]
        bar = tqdm(total=total, initial=total - sum(job.records for job in todo), unit="ex",
                   desc=f"extract {c.task}/{c.split}", disable=not c.progress, dynamic_ncols=True, file=sys.stderr)
        try:
            with _Writer() as writer:
                for job in todo:
                    shards.write(job, writer.submit, bar.update)
        finally:
            bar.close()
