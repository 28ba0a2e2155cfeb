"""The embedding store: per-layer activations in sharded TFRecords.

A store is a folder (local or any `tf.io.gfile` path such as ``gs://``)::

    manifest.json                         what a reader needs; nothing implicit
    SPLIT.plan.json                       the shard plan of a split (resume, workers)
    SPLIT-00000-of-00004.tfrecord         shards, written atomically
    SPLIT-00000-of-00004.tfrecord.done    a finished shard's record count + sha256
    SPLIT.examples.jsonl                  uid, label, answers, context per example

One `tf.train.Example` per model input (a SQuAD window or a GLUE example):

- ``activations``: raw bytes in the stored dtype. ``cls``/``mean`` stores hold
  ``[layers, hidden]``; ``sequence`` stores hold ``[layers, length, hidden]``
  (only the ``length`` real tokens: the reader zero-pads each batch). A pair
  task extracted with ``pair_mode="separate"`` (each text encoded on its own;
  ``cls``/``mean`` only) holds ``[2, layers, hidden]``: text a, then text b.
- ``scales`` (``int8`` stores only): one float16 scale per stored vector (the
  activations' shape without ``hidden``); the reader gives back
  ``int8 value * scale`` as float16 (`quantize_int8`, `dequantize_int8`).
- ``uid``; ``length`` (sequence stores); ``label`` (int64 class, float
  score; -1 / NaN where the split has no labels); a user task's store
  (`bertvision.data.files`) one ``label/<column>`` per label column named at
  extraction instead (multi-label: int64 ``[labels]`` 0/1, all -1 where
  unlabelled), so that one store feeds a head per column; span stores also
  ``example_index``, ``start_position``, ``end_position``, ``window_index`` and ``offsets``
  (int32 ``[length, 2]`` character offsets into the context, stored +1 so that
  zero padding reads back as -1 = "not in the context"); token classification
  stores, instead of ``label``, ``labels`` and ``word_ids`` (int32 ``[length]``,
  stored +1: the tag index and the word index at each word's first sub-word
  in the one window that predicts it, -1 elsewhere) with ``example_index`` and
  ``window_index``.

Long documents (a sentence-level task extracted with ``--doc-stride``; the
manifest's ``featurizer`` holds ``windows: true``, the ``doc_stride`` and the
``max_windows`` cap; each split its ``max_windows`` (the most windows of one
document) and ``truncated_documents`` (how many were cut to the cap)): one
record per document holding its windows (its first ``max_windows``), ``activations`` ``[windows,
layers, hidden]`` or ``[windows, layers, length, hidden]`` (``length`` its
longest window; shorter windows zero-padded), with ``window_lengths`` (int32
bytes ``[windows]``: each window's real tokens). The reader pads a batch to
its most windows and gives ``window_mask`` ``[batch, windows]`` (and, for
sequence stores, ``padding_mask`` ``[batch, windows, tokens]``). A record is a
document, so shuffling, caching, fractions, predictions and metrics count
documents.

Reading:

>>> store = open_store(STORE, expect={"token_mode": "cls"})   # a MiniLM cls store of 32 SST-2 examples
>>> ds = store.training_dataset("train", batch_size=8, seed=0, steps_per_epoch=4, epochs=10)
>>> features, labels = next(iter(ds))
>>> features["activations"].shape, features["activations"].dtype.name, labels.shape
(TensorShape([8, 7, 384]), 'float16', TensorShape([8]))
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from bertvision import io
from bertvision.config import PAIR_MODES, PER_TOKEN_KINDS, STORE_DTYPES, TOKEN_MODES, pair_texts
from bertvision.data.readers import Example
from bertvision.data.tasks import TASKS, TaskSpec, get_task
from bertvision.errors import ConfigError, StoreError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "RecordReader", "ShardWriter", "Store", "StoreError", "StoreSpec",
           "bytes_per_value", "check_compatible", "dequantize_int8", "finalize_split", "finished_shard", "open_store",
           "plan_shards", "quantize_int8", "record_index", "serialize_record", "shard_name", "write_split"]

FORMAT = "bertvision-store"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
# format 2 named these manifest keys differently; they are read under their new names
_V2_KEYS = {"model": "backbone", "tokens": "token_mode"}
# training keeps a split's parsed records in memory after the first epoch when they fit in this
# budget (env override, MiB); a larger split streams from its shards every epoch
CACHE_BUDGET_BYTES = int(float(os.environ.get("BERTVISION_CACHE_MB", "512")) * (1 << 20))
# a store that cannot be read at random offsets (not a local path) streams through a shuffle buffer
# of at most this many bytes of records (env override, MiB): 10,000 sequence records of SQuAD
# windows are ~10 GB
SHUFFLE_BUDGET_BYTES = int(float(os.environ.get("BERTVISION_SHUFFLE_MB", "256")) * (1 << 20))
# the autotuned buffers of a pipeline (batches prepared ahead of the step, maps in flight) hold at
# most this many bytes (env override, MiB; tf.data's own default is half the machine's RAM). Unbounded,
# a prefetch buffer doubles its limit each time the step has waited for it and fills up to it whenever
# the step pauses (the evaluation after every epoch): a small adapter on GoEmotions' 4.5 GB sequence
# store held ~0.8 GB more after every epoch, up to 5.7 GB
PREFETCH_BUDGET_BYTES = int(float(os.environ.get("BERTVISION_PREFETCH_MB", "256")) * (1 << 20))


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def bytes_per_value(dtype: str) -> int:
    return {"float32": 4, "int8": 1}.get(dtype, 2)


def quantize_int8(x) -> tuple[tf.Tensor, tf.Tensor]:
    """Symmetric int8 quantization with one scale per vector (the last axis):
    ``(values int8 [..., hidden], scales float16 [...])``, ``scale = max|x| /
    127`` (1 for an all-zero vector). Extraction writes ``int8`` stores with
    it, and serving applies the same round trip to an adapter trained on one,
    so both give the adapter what the store's reader gives.

    >>> q, scales = quantize_int8(np.full([7, 384], 0.5, np.float32))
    >>> x = dequantize_int8(q, scales)
    >>> x.shape, x.dtype.name, float(x[0, 0])
    (TensorShape([7, 384]), 'float16', 0.5)
    """
    x = tf.cast(x, tf.float32)
    scales = tf.cast(tf.reduce_max(tf.abs(x), axis=-1) / 127.0, tf.float16)
    scales = tf.where(scales > 0, scales, tf.ones_like(scales))
    q = tf.clip_by_value(tf.round(x / tf.cast(scales, tf.float32)[..., None]), -127.0, 127.0)
    return tf.cast(q, tf.int8), scales


def dequantize_int8(q, scales, dtype=tf.float16) -> tf.Tensor:
    """``q * scale`` per vector (see `quantize_int8`), as `dtype`."""
    return tf.cast(tf.cast(q, tf.float32) * tf.cast(scales, tf.float32)[..., None], dtype)


# --------------------------------------------------------------------------
# writing


@dataclass
class StoreSpec:
    """What every split of a store shares; becomes the manifest's header."""

    task: str
    task_kind: str
    label_names: list
    backbone: dict  # identity: name, kind, path, config_sha256, weights_sha256
    tokenizer: str
    layers: list
    num_model_layers: int
    hidden: int
    token_mode: str
    max_seq_len: int
    dtype: str
    featurizer: dict
    pair_mode: str = "cross"  # separate: each text of a pair encoded on its own, both stored
    task_spec: dict | None = None  # the task (`TaskSpec.to_dict`): kind, columns, label names, metrics
    heads: list | None = None  # a user task's spec of every label column stored (the first is task_spec)
    source: dict | None = None  # a user task's files, and how dev was drawn from train

    def __post_init__(self):
        if self.token_mode not in TOKEN_MODES:
            raise StoreError(f"token mode must be one of {', '.join(TOKEN_MODES)}, got {self.token_mode!r}")
        if self.dtype not in STORE_DTYPES:
            raise StoreError(f"dtype must be one of {', '.join(STORE_DTYPES)}, got {self.dtype!r}")
        if self.pair_mode not in PAIR_MODES:
            raise StoreError(f"pair mode must be one of {', '.join(PAIR_MODES)}, got {self.pair_mode!r}")

    def example_shape(self) -> list:
        return example_shape(self.pair_mode, self.token_mode, len(self.layers), self.max_seq_len, self.hidden)

    def header(self) -> dict:
        header = dict(self.__dict__)
        header["example_shape"] = self.example_shape()
        return header


def example_shape(pair_mode: str, token_mode: str, layers: int, max_seq_len: int, hidden: int) -> list:
    """Shape of one record's activations."""
    if token_mode == "sequence":
        return [layers, max_seq_len, hidden]
    return [2, layers, hidden] if pair_mode == "separate" else [layers, hidden]


# the fields that must agree between a store and a new split written into it
_COMPATIBLE_KEYS = ("task", "task_kind", "backbone", "layers", "hidden", "token_mode", "max_seq_len", "dtype",
                    "featurizer", "pair_mode", "task_spec", "heads")
_IDENTITY_KEYS = ("config_sha256", "weights_sha256", "path")


def check_compatible(existing: dict, spec: StoreSpec, path: str) -> None:
    """Refuse to mix splits made with different settings in one store."""
    new = spec.header()
    for key in _COMPATIBLE_KEYS:
        a, b = existing.get(key), new.get(key)
        if key == "pair_mode":  # stores from before pair modes are cross-encoded
            a, b = a or "cross", b or "cross"
        if key in ("task_spec", "heads") and a is None and existing.get("task") in TASKS:
            continue  # a benchmark store from before task specs were kept: its task is the preset
        if key == "backbone" and isinstance(a, dict) and isinstance(b, dict):
            a = {k: a.get(k) for k in _IDENTITY_KEYS}
            b = {k: b.get(k) for k in _IDENTITY_KEYS}
        if a != b:
            raise StoreError(
                f"{path} was built with {key}={json.dumps(a)} but this run uses {key}={json.dumps(b)}; "
                "use another --out or the same settings"
            )


def plan_shards(record_bytes: np.ndarray, shard_size_mb: float) -> list[tuple[int, int]]:
    """Cut records into contiguous shards of about `shard_size_mb` each."""
    target = max(1, int(shard_size_mb * (1 << 20)))
    bounds, start, acc = [], 0, 0
    for i, size in enumerate(record_bytes.tolist()):
        if acc and acc + size > target:
            bounds.append((start, i))
            start, acc = i, 0
        acc += size
    bounds.append((start, len(record_bytes)))
    return bounds


def _int_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float_feature(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _bytes_feature(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _label_feature(kind: str, value) -> tf.train.Feature:
    if kind == "classification":
        return _int_feature([-1 if value is None else int(value)])
    if kind == "multi_label":
        return _int_feature([int(v) for v in value])
    return _float_feature([float("nan") if value is None else float(value)])


def serialize_record(activations: np.ndarray, *, length: int | None, uid: str, example_index: int,
                     label=None, task_kind: str = "classification", span: dict | None = None,
                     scales: np.ndarray | None = None, labels: dict | None = None, tokens: dict | None = None,
                     window_lengths: np.ndarray | None = None) -> bytes:
    """One `tf.train.Example` as bytes (see the module docstring); `scales`
    (float16) for int8 `activations`; `labels` (a user task's) maps each
    record feature (``label/<column>``) to ``(kind, value)``, multi-label
    values a 0/1 list (-1s where unlabelled), in place of `label`; `tokens`
    (token classification): ``labels``, ``word_ids`` (a row of
    `Features.token_labels` / ``word_ids``) and ``window_index``;
    `window_lengths` (a document stored as windows) each window's real
    tokens. The
    serialization is deterministic (features in a fixed order), so two
    extractions of the same data write the same bytes and checksums."""
    feats = {
        "activations": _bytes_feature([np.ascontiguousarray(activations).tobytes()]),
        "uid": _bytes_feature([uid.encode()]),
    }
    if scales is not None:
        feats["scales"] = _bytes_feature([np.ascontiguousarray(scales, dtype="<f2").tobytes()])
    if length is not None:  # sequence stores only
        feats["length"] = _int_feature([int(length)])
    if window_lengths is not None:
        feats["window_lengths"] = _bytes_feature([np.asarray(window_lengths, dtype="<i4").tobytes()])
    if task_kind == "token_classification":
        for key in ("labels", "word_ids"):  # stored +1: zero padding reads back as -1 (IGNORE)
            feats[key] = _bytes_feature([(np.asarray(tokens[key], dtype=np.int32)[:length] + 1).astype("<i4").tobytes()])
        feats["window_index"] = _int_feature([int(tokens["window_index"])])
        feats["example_index"] = _int_feature([int(example_index)])
    elif labels is not None:
        for key, (kind, value) in labels.items():
            feats[key] = _label_feature(kind, value)
    elif task_kind != "span":
        feats["label"] = _label_feature(task_kind, label)
    else:
        feats["start_position"] = _int_feature([int(span["start_position"])])
        feats["end_position"] = _int_feature([int(span["end_position"])])
        feats["window_index"] = _int_feature([int(span["window_index"])])
        feats["example_index"] = _int_feature([int(example_index)])
        offsets = (np.asarray(span["offsets"], dtype=np.int32)[:length] + 1).astype("<i4")
        feats["offsets"] = _bytes_feature([offsets.tobytes()])
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


class ShardWriter:
    """Writes one shard under a temporary name; `commit` renames it and
    writes its ``.done`` marker (record count, sha256, bytes)."""

    def __init__(self, path: str):
        self.path = path
        self.tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        self.count = 0
        self.activation_bytes = 0
        try:
            self._writer = tf.io.TFRecordWriter(self.tmp)
        except Exception as err:
            raise StoreError(str(io.write_error(path, err))) from err

    def write(self, record: bytes, activation_bytes: int) -> None:
        try:
            self._writer.write(record)
        except Exception as err:
            self.abort()
            raise StoreError(str(io.write_error(self.path, err))) from err
        self.count += 1
        self.activation_bytes += activation_bytes

    def commit(self) -> dict:
        try:
            self._writer.close()
            info = {
                "file": os.path.basename(self.path),
                "records": self.count,
                "bytes": io.size(self.tmp),
                "activation_bytes": self.activation_bytes,
                "sha256": io.sha256_file(self.tmp),
            }
            tf.io.gfile.rename(self.tmp, self.path, overwrite=True)
        except Exception as err:
            self.abort()
            raise StoreError(str(io.write_error(self.path, err))) from err
        io.atomic_write_json(self.path + ".done", info)
        return info

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass
        io.remove(self.tmp)


def finished_shard(store_dir: str, name: str) -> dict | None:
    """The ``.done`` info of a shard that was completely written, else None."""
    done = io.join(store_dir, name + ".done")
    if not (io.exists(done) and io.exists(io.join(store_dir, name))):
        return None
    try:
        return io.read_json(done, StoreError)
    except StoreError:
        return None


def finalize_split(store_dir: str, split: str, spec_header: dict | None = None,
                   provenance: dict | None = None, verify: bool = True) -> dict:
    """Check every planned shard of `split` is written and record it in the manifest.

    Called by `bertvision.store.extract.finalize_splits` once every shard is
    written (by this process, or by a Beam pipeline's workers).
    """
    plan_path = io.join(store_dir, f"{split}.plan.json")
    if not io.exists(plan_path):
        raise StoreError(f"{store_dir}: no plan for split {split!r} (was it extracted into this folder?)")
    plan = io.read_json(plan_path, StoreError)
    count = len(plan["shards"])
    shards, missing = [], []
    for i in range(count):
        name = shard_name(split, i, count)
        info = finished_shard(store_dir, name)
        if info is None:
            missing.append(name)
            continue
        if info["records"] != plan["shards"][i][1] - plan["shards"][i][0]:
            raise StoreError(f"{io.join(store_dir, name)}: {info['records']} records, plan says "
                             f"{plan['shards'][i][1] - plan['shards'][i][0]}")
        if verify and io.sha256_file(io.join(store_dir, name)) != info["sha256"]:
            raise StoreError(f"{io.join(store_dir, name)}: sha256 does not match what was written; re-extract it")
        shards.append(info)
    if missing:
        raise StoreError(f"{store_dir}: split {split!r} is incomplete, {len(missing)} of {count} shards missing "
                         f"(e.g. {missing[0]}); run the same extraction again to write them")
    examples_file = io.join(store_dir, f"{split}.examples.jsonl")
    manifest_path = io.join(store_dir, MANIFEST)
    manifest = io.read_json(manifest_path, StoreError) if io.exists(manifest_path) else None
    header = spec_header or plan["header"]
    if manifest is None:
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **header, "splits": {}}
    split_info = {
        "num_examples": plan["num_examples"],
        "num_records": sum(s["records"] for s in shards),
        "skipped": plan.get("skipped", []),
        "activation_bytes": sum(s["activation_bytes"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "examples_file": f"{split}.examples.jsonl",
        "examples_sha256": io.sha256_file(examples_file),
        "shards": shards,
        "created_by": provenance or plan.get("provenance", {}),
    }
    for key in ("max_windows", "truncated_documents"):  # documents as windows: the most windows of one
        if key in plan:  # document, and how many documents were cut to the store's featurizer max_windows
            split_info[key] = plan[key]
    manifest["splits"][split] = split_info
    io.atomic_write_json(manifest_path, manifest)
    return manifest



def write_split(store_dir: str, spec: StoreSpec, split: str, activations, labels, uids=None,
                shard_size_mb: float = 64.0) -> dict:
    """Write a whole split from arrays with the real writer (plan, examples
    file, `ShardWriter` shards, `finalize_split`): a store made without a
    backbone, e.g. a synthetic one whose answer is known. `activations` is
    any sequence of per-record arrays in ``spec.dtype`` and
    ``spec.example_shape()`` (vector stores: ``cls``/``mean``); `labels` one
    label per record. Returns the manifest.

    >>> spec = StoreSpec(task="sst2", task_kind="classification", label_names=["negative", "positive"],
    ...                  backbone={"name": "synthetic"}, tokenizer="none", layers=list(range(7)),
    ...                  num_model_layers=6, hidden=384, token_mode="cls", max_seq_len=64, dtype="float16",
    ...                  featurizer={})
    >>> write_split("stores/synthetic", spec, "train", np.zeros((8, 7, 384), "float16"), [0, 1] * 4)  # doctest: +SKIP
    """
    if spec.token_mode == "sequence" or spec.dtype not in ("float16", "float32"):
        raise StoreError("write_split writes float16/float32 vector (cls/mean) stores only")
    count = len(activations)
    if len(labels) != count:
        raise StoreError(f"write_split: {count} activations but {len(labels)} labels")
    uids = [str(i) for i in range(count)] if uids is None else [str(u) for u in uids]
    sizes = np.array([np.asarray(activations[i]).nbytes for i in range(count)])
    bounds = plan_shards(sizes, shard_size_mb)
    io.makedirs(store_dir)
    io.atomic_write_json(io.join(store_dir, f"{split}.plan.json"),
                         {"split": split, "num_examples": count, "num_records": count,
                          "shards": [list(b) for b in bounds], "header": spec.header(), "skipped": [],
                          "provenance": {}})
    io.atomic_write_text(io.join(store_dir, f"{split}.examples.jsonl"),
                         "".join(json.dumps({"uid": u, "label": _plain(y)}) + "\n" for u, y in zip(uids, labels)))
    for index, (start, end) in enumerate(bounds):
        writer = ShardWriter(io.join(store_dir, shard_name(split, index, len(bounds))))
        for i in range(start, end):
            values = np.asarray(activations[i], dtype=spec.dtype)
            writer.write(serialize_record(values, length=None, uid=uids[i], example_index=i, label=labels[i],
                                          task_kind=spec.task_kind), values.nbytes)
        writer.commit()
    return finalize_split(store_dir, split, spec.header(), {})


def _plain(value):
    """A label as a JSON value (numpy scalars included)."""
    return value.item() if isinstance(value, np.generic) else value

# --------------------------------------------------------------------------
# reading


def _scan_tfrecords(path: str) -> tuple[str, int, bytes | None]:
    """``(sha256, number of records, first record)`` of a TFRecord file, in
    one pass over its bytes. A truncated file (a record cut short) gives a
    record count that cannot match."""
    digest = hashlib.sha256()
    records, first, pending, skip = 0, None, b"", 0
    with tf.io.gfile.GFile(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
            view = pending + block if pending else block
            pos = skip
            while pos + 12 <= len(view):  # length (8 bytes) + its crc (4), then data + crc (4)
                length = struct.unpack_from("<Q", view, pos)[0]
                if records == 0 and first is None and pos + 12 + length <= len(view):
                    first = bytes(view[pos + 12:pos + 12 + length])
                records += 1
                pos += 12 + length + 4
            skip = max(0, pos - len(view))
            pending = view[pos:] if pos < len(view) else b""
    if pending or skip:  # the last record is cut short
        records = -1
    return digest.hexdigest(), records, first


def record_index(path: str) -> np.ndarray:
    """``[records, 2]`` int64: each record's data offset and length in the
    local TFRecord file `path`, from the framing headers alone (12 bytes
    read per record), so that a record can be read at random."""
    rows, pos = [], 0
    with open(path, "rb") as handle:
        while head := handle.read(12):  # length (8 bytes) + its crc (4), then data + crc (4)
            if len(head) < 12:
                raise StoreError(f"{path}: truncated (its last record is cut short); extract it again")
            length = struct.unpack_from("<Q", head)[0]
            rows.append((pos + 12, length))
            pos += 12 + length + 4
            handle.seek(pos)
    if pos != os.path.getsize(path):
        raise StoreError(f"{path}: truncated (its last record is cut short); extract it again")
    return np.asarray(rows, np.int64).reshape(-1, 2)


class RecordReader:
    """Reads the records of a local split at random: ``reader(positions)``
    yields the serialized records at those positions of the split (positions
    count over its shards in order), one file seek each. Holds the record
    index (16 bytes a record) and one open file per shard, never the data."""

    def __init__(self, paths: list[str]):
        self.paths = list(paths)
        indexes = [record_index(p) for p in self.paths]
        self.shard = np.concatenate([np.full(len(x), i, np.int32) for i, x in enumerate(indexes)] or
                                    [np.zeros(0, np.int32)])
        self.index = np.concatenate(indexes or [np.zeros([0, 2], np.int64)])

    def __len__(self) -> int:
        return len(self.index)

    def __call__(self, positions):
        handles = {}
        try:
            for pos in positions:
                shard = int(self.shard[pos])
                handle = handles.get(shard) or handles.setdefault(shard, open(self.paths[shard], "rb"))
                offset, length = self.index[pos]
                handle.seek(int(offset))
                yield handle.read(int(length))
        finally:
            for handle in handles.values():
                handle.close()


def _header(key: str, convert=lambda v: v, doc: str = ""):
    """A read-only `Store` property of the manifest's `key`."""
    return property(lambda self: convert(self.manifest.get(key)), doc=doc or f"the manifest's {key}")


class Store:
    """An opened, validated store. Build one with `open_store`.

    Everything a reader needs is a property or a method: nothing outside
    this class reads the manifest's keys or parses its shards.
    """

    def __init__(self, path: str, manifest: dict, manifest_sha256: str | None = None):
        self.path = path
        self.manifest = manifest
        # the store's identity: its manifest lists every shard's sha256, so another extraction has another one
        self.manifest_sha256 = manifest_sha256

    # -- what the store holds (the manifest's header)
    task = _header("task")
    task_kind = _header("task_kind")
    token_mode = _header("token_mode", doc="cls, mean or sequence")
    layers = _header("layers", list, "the backbone layers stored (0 = the embeddings)")
    hidden = _header("hidden", int)
    max_seq_len = _header("max_seq_len", int)
    dtype = _header("dtype", doc="how activations are stored: float16, bfloat16, float32 or int8 (+ scales)")
    label_names = _header("label_names", lambda v: list(v or []))
    example_shape = _header("example_shape", list)
    backbone = _header("backbone", lambda v: dict(v or {}),
                       "identity of the backbone the activations come from (name, path, sha256 of config and weights)")
    featurizer = _header("featurizer", lambda v: dict(v or {}))
    pair_mode = _header("pair_mode", lambda v: v or "cross",
                        "cross (a pair encoded together) or separate (each text on its own: "
                        "records [2, layers, hidden])")

    @property
    def task_spec(self) -> TaskSpec:
        """The task (of the head this `Store` reads: `head`): the manifest's
        spec, or for a store from before specs were kept, the preset."""
        spec = self.manifest.get("task_spec")
        return get_task(spec if spec is not None else self.manifest["task"])

    @property
    def heads(self) -> list[TaskSpec]:
        """One spec per label column the store keeps (the first is the default head)."""
        heads = self.manifest.get("heads")
        return [get_task(h) for h in heads] if heads else [self.task_spec]

    @property
    def label_columns(self) -> list:
        return [h.label_column for h in self.heads]

    def head(self, label_column: str | None) -> "Store":
        """The store read for the head of `label_column` (None: the default
        head): its task kind, label names and labels."""
        if label_column is None:
            return self
        for spec in self.heads:
            if spec.label_column == label_column:
                manifest = {**self.manifest, "task_spec": spec.to_dict(), "task_kind": spec.kind,
                            "label_names": list(spec.label_names)}
                return Store(self.path, manifest)
        raise ConfigError(f"{self.path} keeps no label column {label_column!r}; it keeps "
                          f"{[c for c in self.label_columns if c is not None] or 'only its task label'}")

    @property
    def is_sequence(self) -> bool:
        return self.token_mode == "sequence"

    @property
    def windowed(self) -> bool:
        """Documents stored as windows (``--doc-stride`` on a sentence-level
        task): a record holds every window of one document."""
        return bool(self.featurizer.get("windows"))

    @property
    def quantized(self) -> bool:
        """int8 values with a float16 scale per vector (`quantize_int8`)."""
        return self.dtype == "int8"

    @property
    def value_dtype(self) -> str:
        """The dtype the reader gives (and an adapter reads): float16 for an int8 store."""
        return "float16" if self.quantized else self.dtype

    @property
    def record_vectors(self) -> int:
        """Encoded texts per record: 2 for a ``separate`` pair store, else 1."""
        return pair_texts(self.pair_mode)

    @property
    def splits(self) -> list:
        return list(self.manifest["splits"])

    def num_records(self, split: str) -> int:
        return int(self._split(split)["num_records"])

    def num_examples(self, split: str) -> int:
        return int(self._split(split)["num_examples"])

    def split_bytes(self, split: str) -> int:
        return int(self._split(split)["bytes"])

    def _split(self, split: str) -> dict:
        if split not in self.manifest["splits"]:
            raise StoreError(f"{self.path}: no split {split!r}; it has {', '.join(self.splits) or 'none'}")
        return self.manifest["splits"][split]

    def shard_paths(self, split: str) -> list[str]:
        return [io.join(self.path, s["file"]) for s in self._split(split)["shards"]]

    def signature(self) -> dict:
        """What an adapter trained on this store depends on (saved in its results)."""
        sig = {k: self.manifest[k] for k in SIGNATURE_KEYS}
        if self.pair_mode != "cross":  # absent = cross, as in runs from before pair modes
            sig["pair_mode"] = self.pair_mode
        if self.quantized:  # serving applies the same int8 round trip to the backbone's activations
            sig["dtype"] = self.dtype
        if self.windowed:  # the adapter reads a document's windows (absent: one row per example)
            sig["windows"] = {"doc_stride": int(self.featurizer["doc_stride"])}
            if "max_windows" in self.featurizer:  # stores from before the cap: absent (read with its default)
                sig["windows"]["max_windows"] = int(self.featurizer["max_windows"])
        sig["backbone"] = {k: self.backbone.get(k) for k in ("name", "config_sha256", "weights_sha256")}
        return sig

    def adapter_fields(self) -> dict:
        """The `bertvision.models.ModelConfig` fields this store determines."""
        return {
            "task_kind": self.task_kind,
            "num_labels": 1 if self.task_kind == "regression" else (
                len(self.label_names) if self.task_kind == "multi_label" else max(2, len(self.label_names))),
            "num_layers": len(self.layers),
            "hidden": self.hidden,
            "max_seq_len": self.max_seq_len if self.is_sequence else None,
            "input_dtype": self.value_dtype,
            "pair_mode": self.pair_mode,
            "windows": self.windowed,
        }

    def identity(self) -> dict:
        """Which store this is: ``{"store": path, "manifest_sha256": ...}``
        (a run records it at start; `bertvision.runs.check_store_identity`)."""
        return {"store": str(self.path), "manifest_sha256": self.manifest_sha256}

    def has_labels(self, split: str) -> bool:
        """Whether `split` has gold labels to evaluate against (span tasks: always)."""
        if self.task_kind == "token_classification":
            return any(e.get("tags") for e in self.examples(split))
        column = self.task_spec.label_column  # a user task's head: its column's labels
        return self.task_kind == "span" or any(
            ((e.get("labels") or {}).get(column) if column is not None else e.get("label")) is not None
            for e in self.examples(split))

    def examples(self, split: str) -> list[dict]:
        """The per-example side file: uid, label, and for SQuAD context/answers."""
        text = io.read_text(io.join(self.path, self._split(split)["examples_file"]))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def task_examples(self, split: str, limit: int | None = None) -> list[Example]:
        """The first `limit` examples of `split` as extraction read them (the
        side file, `examples`): uid, texts, the label of this store's head
        (its label column's; multi-label a 0/1 list), words and tags. What
        fine-tuning on a store trains on and what its run predicts."""
        column = self.task_spec.label_column
        return [Example(uid=r["uid"], texts=tuple(r["texts"]),
                        label=(r.get("labels") or {}).get(column, r.get("label")) if column else r["label"],
                        words=tuple(r.get("words") or ()), tags=tuple(r.get("tags") or ()))
                for r in self.examples(split)[:limit]]

    def check_header(self) -> None:
        """Refuse a manifest whose fields contradict each other: the example
        shape against layers, hidden size and token mode; record counts and
        activation bytes against the shards. Cheap: reads no shard."""
        layers, hidden = self.manifest.get("layers"), self.manifest.get("hidden")
        if not isinstance(layers, list) or not layers or not isinstance(hidden, int) or hidden < 1:
            raise StoreError(f"{self.path}: manifest field layers={layers!r} / hidden={hidden!r} is not valid")
        if self.pair_mode not in PAIR_MODES or (self.pair_mode == "separate" and self.is_sequence):
            raise StoreError(f"{self.path}: manifest field pair_mode={self.pair_mode!r} is not valid with token_mode "
                             f"{self.token_mode!r}")
        want = example_shape(self.pair_mode, self.token_mode, len(layers), self.max_seq_len, hidden)
        if self.example_shape != want:
            raise StoreError(f"{self.path}: manifest field example_shape={self.example_shape} does not agree with "
                             f"layers ({len(layers)}), hidden ({hidden}), token_mode ({self.token_mode}) and "
                             f"pair_mode ({self.pair_mode}): expected {want}")
        if self.dtype not in STORE_DTYPES:
            raise StoreError(f"{self.path}: manifest field dtype={self.dtype!r} is not one of "
                             f"{', '.join(STORE_DTYPES)}")
        per_vector = self.record_vectors * len(layers) * hidden * bytes_per_value(self.dtype)
        for split in self.splits:
            info = self._split(split)
            records = sum(int(s["records"]) for s in info["shards"])
            if records != int(info["num_records"]):
                raise StoreError(f"{self.path}: manifest field splits.{split}.num_records={info['num_records']} but "
                                 f"its shards list {records} records")
            act = int(info["activation_bytes"])
            if self.windowed:  # a record holds one or more windows
                bad = act % per_vector != 0 or act < records * per_vector
            else:
                bad = ((act % per_vector != 0 or act > records * self.max_seq_len * per_vector) if self.is_sequence
                       else act != records * per_vector)
            if bad:
                raise StoreError(f"{self.path}: manifest field splits.{split}.activation_bytes={act} does not fit "
                                 f"{records} records of {want} {self.dtype} values")

    def verify(self, split: str) -> None:
        """Check every shard of `split` against the manifest in one pass over
        its bytes: sha256, the number of records (the TFRecord framing) and
        the size of the first record's activations (against the example
        shape). Raises `StoreError` naming the shard or field."""
        per_vector = self.record_vectors * len(self.layers) * self.hidden * bytes_per_value(self.dtype)
        for n, info in enumerate(self._split(split)["shards"]):
            path = io.join(self.path, info["file"])
            if not io.exists(path):
                raise StoreError(f"{path}: shard listed in the manifest is missing")
            digest, records, first = _scan_tfrecords(path)
            if digest != info["sha256"]:
                raise StoreError(f"{path}: checksum mismatch (corrupt, truncated or changed shard); extract it again")
            if records < 0:
                raise StoreError(f"{path}: truncated (its last record is cut short); extract it again")
            if records != int(info["records"]):
                raise StoreError(f"{path}: {records} records, manifest says {info['records']}")
            if n == 0 and first is not None:
                example = tf.train.Example.FromString(first)
                feature = example.features.feature
                acts = len(feature["activations"].bytes_list.value[0])
                vectors = self.record_vectors * len(self.layers)  # scales per token
                if self.windowed:
                    windows = len(feature["window_lengths"].bytes_list.value[0]) // 4 \
                        if "window_lengths" in feature else 0
                    length = feature["length"].int64_list.value[0] if self.is_sequence else 1
                    ok = windows > 0 and acts == windows * length * per_vector and 0 < length <= self.max_seq_len
                    vectors *= windows * length
                elif self.is_sequence:
                    length = feature["length"].int64_list.value[0]
                    ok = acts == length * per_vector and 0 < length <= self.max_seq_len
                    vectors *= length
                else:
                    ok = acts == per_vector
                if not ok:
                    raise StoreError(f"{path}: a record holds {acts} activation bytes, which does not fit the "
                                     f"manifest's example_shape {self.example_shape} of {self.dtype} values")
                scales = list(feature["scales"].bytes_list.value) if "scales" in feature else []
                if self.quantized and (len(scales) != 1 or len(scales[0]) != 2 * vectors):
                    raise StoreError(f"{path}: an int8 record needs {vectors} float16 scales (one per stored "
                                     f"vector); it holds {len(scales[0]) // 2 if len(scales) == 1 else 'none'}")

    def corruption_error(self, splits: list[str], err: Exception) -> StoreError:
        """The one-line error of a corrupt record (`tf.errors.DataLossError`)
        met while reading `splits` without `verify` first (``--no-verify``):
        the shard `verify` finds at fault, or the store and TensorFlow's
        first line when every shard checks out."""
        for split in dict.fromkeys(splits):
            try:
                self.verify(split)
            except StoreError as found:
                return StoreError(f"{found} (met while reading it unverified: delete the shard and run the same "
                                  "extract command, which writes it again; the same command then resumes)")
        first = (str(getattr(err, "message", "")) or str(err)).strip().splitlines()[:1]
        return StoreError(f"{self.path}: a corrupt record in split(s) {', '.join(dict.fromkeys(splits))} "
                          f"({first[0] if first else type(err).__name__}); extract the store again")

    def uids(self, split: str) -> np.ndarray:
        """The uid of every record of `split`, in store order (parses only uids)."""
        if not self.num_records(split):
            return np.zeros([0], object)
        spec = {"uid": self._feature_spec()["uid"]}
        ds = tf.data.TFRecordDataset(self.shard_paths(split)).batch(4096)
        ds = ds.map(lambda s: tf.io.parse_example(s, spec)["uid"])
        return np.concatenate([b.numpy() for b in ds])

    def select_fraction(self, split: str, fraction: float, seed: int) -> tuple[np.ndarray | None, int]:
        """A seeded `fraction` of the examples of `split`: ``(record indices,
        or None for all; number of examples)``. Span stores sample whole
        questions (all windows of a question together); others records.

        >>> indices, n = open_store(STORE).select_fraction("train", 0.25, seed=0)   # 32 train records
        >>> len(indices), n
        (8, 8)
        """
        n_records = self.num_records(split)
        groups = None
        if self.task_kind in PER_TOKEN_KINDS:
            _, groups = np.unique(self.uids(split), return_inverse=True)
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

    # -- the tf.data pipeline
    def _feature_spec(self):
        spec = {
            "activations": tf.io.FixedLenFeature([], tf.string),
            "uid": tf.io.FixedLenFeature([], tf.string),
        }
        if self.is_sequence:
            spec["length"] = tf.io.FixedLenFeature([], tf.int64)
        if self.windowed:
            spec["window_lengths"] = tf.io.FixedLenFeature([], tf.string)
        if self.quantized:
            spec["scales"] = tf.io.FixedLenFeature([], tf.string)
        key = self.task_spec.label_key
        if self.task_kind == "classification":
            spec[key] = tf.io.FixedLenFeature([], tf.int64)
        elif self.task_kind == "multi_label":
            spec[key] = tf.io.FixedLenFeature([len(self.label_names)], tf.int64)
        elif self.task_kind == "regression":
            spec[key] = tf.io.FixedLenFeature([], tf.float32)
        elif self.task_kind == "token_classification":
            spec.update({
                "labels": tf.io.FixedLenFeature([], tf.string),
                "word_ids": tf.io.FixedLenFeature([], tf.string),
                "window_index": tf.io.FixedLenFeature([], tf.int64),
                "example_index": tf.io.FixedLenFeature([], tf.int64),
            })
        else:
            spec.update({
                "start_position": tf.io.FixedLenFeature([], tf.int64),
                "end_position": tf.io.FixedLenFeature([], tf.int64),
                "window_index": tf.io.FixedLenFeature([], tf.int64),
                "example_index": tf.io.FixedLenFeature([], tf.int64),
                "offsets": tf.io.FixedLenFeature([], tf.string),
            })
        return spec

    def _labels(self, ex):
        if self.task_kind == "span":
            return {"start_positions": tf.cast(ex["start_position"], tf.int32),
                    "end_positions": tf.cast(ex["end_position"], tf.int32)}
        if self.task_kind == "token_classification":  # stored +1; the batch's padding reads back as -1
            return tf.io.decode_raw(ex["labels"], tf.int32)
        label = ex[self.task_spec.label_key]
        if self.task_kind == "classification":
            return tf.cast(label, tf.int32)
        if self.task_kind == "multi_label":
            return tf.cast(label, tf.float32)
        return label

    def _parse_record(self, with_meta: bool):
        """The per-record parse: a document's windows, or a sequence record."""
        return self._parse_windows(with_meta) if self.windowed else self._parse_sequence(with_meta)

    def _parse_vectors(self, with_meta: bool):
        """Batched parse of ``cls``/``mean`` records: one op for the whole batch."""
        spec, shape = self._feature_spec(), self.example_shape
        dtype = tf.as_dtype(self.dtype)

        def parse(serialized):
            ex = tf.io.parse_example(serialized, spec)
            acts = tf.reshape(tf.io.decode_raw(ex["activations"], dtype), [-1] + shape)
            if self.quantized:
                acts = dequantize_int8(acts, tf.reshape(tf.io.decode_raw(ex["scales"], tf.float16), [-1] + shape[:-1]))
            features = {"activations": acts}
            if with_meta:
                features["uid"] = ex["uid"]
            return features, self._labels(ex)

        return parse

    def _parse_sequence(self, with_meta: bool):
        """Per-record parse of ``sequence`` records: ``[layers, length, hidden]``."""
        spec = self._feature_spec()
        k, _, h = self.example_shape
        dtype = tf.as_dtype(self.dtype)
        span = self.task_kind == "span"
        tagged = self.task_kind == "token_classification"

        def parse(serialized):
            ex = tf.io.parse_single_example(serialized, spec)
            acts = tf.reshape(tf.io.decode_raw(ex["activations"], dtype), [k, -1, h])
            if self.quantized:
                acts = dequantize_int8(acts, tf.reshape(tf.io.decode_raw(ex["scales"], tf.float16), [k, -1]))
            features = {"activations": acts, "length": tf.cast(ex["length"], tf.int32)}
            if with_meta:
                features["uid"] = ex["uid"]
                if span:
                    features["example_index"] = tf.cast(ex["example_index"], tf.int32)
                    features["window_index"] = tf.cast(ex["window_index"], tf.int32)
                    # stored +1: zero padding reads back as -1 ("not in the context")
                    features["offsets"] = tf.reshape(tf.io.decode_raw(ex["offsets"], tf.int32), [-1, 2])
                if tagged:
                    features["example_index"] = tf.cast(ex["example_index"], tf.int32)
                    features["window_index"] = tf.cast(ex["window_index"], tf.int32)
                    features["word_ids"] = tf.io.decode_raw(ex["word_ids"], tf.int32)  # stored +1
            return features, self._labels(ex)

        return parse

    def _parse_windows(self, with_meta: bool):
        """Per-record parse of a document's windows: ``[windows, layers,
        hidden]`` or ``[windows, layers, length, hidden]``, and each window's
        real tokens (``window_lengths``)."""
        spec = self._feature_spec()
        shape = self.example_shape
        dtype = tf.as_dtype(self.dtype)

        def parse(serialized):
            ex = tf.io.parse_single_example(serialized, spec)
            lengths = tf.io.decode_raw(ex["window_lengths"], tf.int32)
            if self.is_sequence:
                target = [-1, shape[0], tf.cast(ex["length"], tf.int32), shape[2]]
            else:
                target = [-1] + shape
            acts = tf.reshape(tf.io.decode_raw(ex["activations"], dtype), target)
            if self.quantized:
                acts = dequantize_int8(acts, tf.reshape(tf.io.decode_raw(ex["scales"], tf.float16), target[:-1]))
            features = {"activations": acts, "window_lengths": lengths}
            if with_meta:
                features["uid"] = ex["uid"]
            return features, self._labels(ex)

        return parse

    def _finish_window_batch(self, pad_to: str):
        """A batch of documents padded to its most windows: ``window_mask``
        ``[batch, windows]`` (1 = a real window) and for sequence stores the
        token axis padded as `_finish_sequence_batch` does, with
        ``padding_mask`` ``[batch, windows, tokens]``."""
        max_len = self.max_seq_len

        def finish(features, labels):
            lengths = features.pop("window_lengths")
            features["window_mask"] = tf.cast(lengths > 0, tf.int32)
            if self.is_sequence:
                t = _token_bucket(tf.reduce_max(lengths), max_len, pad_to)
                acts = features["activations"]
                features["activations"] = tf.pad(acts, [[0, 0], [0, 0], [0, 0], [0, t - tf.shape(acts)[3]], [0, 0]])
                features["padding_mask"] = tf.sequence_mask(lengths, t, dtype=tf.int32)
            return features, labels

        return finish

    def _finish_sequence_batch(self, pad_to: str):
        """Pad a batch ``[batch, layers, tokens, hidden]`` to a power-of-two
        token length (or ``max_seq_len``) and add the padding mask."""
        max_len = self.max_seq_len
        tagged = self.task_kind == "token_classification"

        def finish(features, labels):
            length = features.pop("length")
            t = _token_bucket(tf.reduce_max(length), max_len, pad_to)
            acts = features["activations"]
            features["activations"] = tf.pad(acts, [[0, 0], [0, 0], [0, t - tf.shape(acts)[2]], [0, 0]])
            features["padding_mask"] = tf.sequence_mask(length, t, dtype=tf.int32)
            if "offsets" in features:
                offs = features["offsets"]
                features["offsets"] = tf.pad(offs, [[0, 0], [0, t - tf.shape(offs)[1]], [0, 0]]) - 1
            if "word_ids" in features:
                ids = features["word_ids"]
                features["word_ids"] = tf.pad(ids, [[0, 0], [0, t - tf.shape(ids)[1]]]) - 1
            if tagged:
                labels = tf.pad(labels, [[0, 0], [0, t - tf.shape(labels)[1]]]) - 1
            return features, labels

        return finish

    def _shard_reader(self, split: str, take_indices: np.ndarray | None):
        """``(number of shards, shard index -> its records)``: the records
        in store order, only those at `take_indices` (positions in the whole
        split) when given."""
        files = tf.constant(self.shard_paths(split))
        infos = self._split(split)["shards"]
        starts = tf.constant(np.cumsum([0] + [int(s["records"]) for s in infos])[:-1], tf.int64)
        keep = None
        if take_indices is not None:
            mask = np.zeros(self.num_records(split), dtype=bool)
            mask[np.asarray(take_indices)] = True
            keep = tf.constant(mask)

        def read(i):
            ds = tf.data.TFRecordDataset(files[i], buffer_size=8 << 20)
            if keep is not None:
                start = starts[i]
                ds = ds.enumerate().filter(lambda j, _rec: keep[start + j]).map(lambda _j, rec: rec)
            return ds

        return len(infos), read

    def _batched(self, records, batch_size: int, with_meta: bool, pad_to: str, parsed: bool,
                 drop_remainder: bool = False, group: int = 0, group_seed: int | None = None):
        """Batches of (possibly already parsed) records: sequence stores padded
        per batch, vector stores parsed in whole batches. ``group`` > 0
        (sequence stores): batches of texts of similar length
        (`_length_grouped`), in an order shuffled with `group_seed`."""
        if self.is_sequence or self.windowed:
            if not parsed:
                records = records.map(self._parse_record(with_meta), num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True)
            if group:  # the batches' order shuffled by a seed of its own, derived from the records' shuffle's
                seed = None if group_seed is None else (group_seed * 7919 + 17) % (1 << 31)
                batches = self._length_grouped(records, batch_size, group).shuffle(
                    group, seed=seed, reshuffle_each_iteration=False)
            else:
                batches = records.padded_batch(batch_size, drop_remainder=drop_remainder)
            finish = self._finish_window_batch(pad_to) if self.windowed else self._finish_sequence_batch(pad_to)
            return batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = records.batch(batch_size, drop_remainder=drop_remainder)
        if not parsed:
            batches = batches.map(self._parse_vectors(with_meta), num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=True)
        return batches

    def _length_grouped(self, records, batch_size: int, group: int):
        """Batches of parsed sequence records with little padding: every run
        of ``group * batch_size`` records (in the order given: shuffled) is
        sorted by length and cut into batches, each trimmed to its longest
        record. Always ``ceil(n / batch_size)`` batches, as without grouping,
        only the last run's last one short (the tf.data twin of
        `bertvision.data.features.length_grouped_batches`, which fine-tuning
        uses). Memory: a run is held padded to its longest record, so it
        grows with ``group * batch_size``."""
        tagged = self.task_kind == "token_classification"

        def cut(features, labels):
            order = tf.argsort(features["length"], stable=True)
            n = tf.shape(order, out_type=tf.int64)[0]

            def take(i):  # one batch gathered at a time: no sorted copy of the whole run
                rows = order[i * batch_size:tf.minimum((i + 1) * batch_size, n)]
                batch = {k: tf.gather(v, rows) for k, v in features.items()}
                longest = tf.reduce_max(batch["length"])
                batch["activations"] = batch["activations"][:, :, :longest]
                ys = tf.nest.map_structure(lambda y: tf.gather(y, rows), labels)
                return batch, (ys[:, :longest] if tagged else ys)

            return tf.data.Dataset.range((n + batch_size - 1) // batch_size).map(take)

        return records.padded_batch(batch_size * group).flat_map(cut)

    def _parsed(self, records, with_meta: bool):
        """Parsed records, one element per record (vector stores parsed in large batches)."""
        if self.is_sequence or self.windowed:
            return records.map(self._parse_record(with_meta), num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True)
        return records.batch(1024).map(self._parse_vectors(with_meta), num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True).unbatch()

    def dataset(self, split: str, batch_size: int, *, with_meta: bool = False, pad_to: str = "bucket",
                take_indices: np.ndarray | None = None):
        """``(features, labels)`` batches of `split` in store order, so that
        predictions line up with the examples file (what prediction and
        evaluation read; training reads `training_dataset`).

        Sequence stores keep only real tokens on disk; a batch is padded to
        the next power of two >= its longest example (``pad_to="bucket"``,
        few distinct shapes, far less work for short texts) or to
        ``max_seq_len`` (``pad_to="max"``). `with_meta` adds ``uid`` (and for
        span stores ``example_index``, ``window_index``, ``offsets``).
        """
        if pad_to not in ("bucket", "max"):
            raise ValueError(f"pad_to must be 'bucket' or 'max', got {pad_to!r}")
        n_files, read = self._shard_reader(split, take_indices)
        records = tf.data.Dataset.range(n_files).flat_map(read)
        return _bounded(self._batched(records, batch_size, with_meta, pad_to, parsed=False).prefetch(tf.data.AUTOTUNE))

    def training_reader(self, split: str, cache: bool | None = None) -> str:
        """How `training_dataset` reads `split` (its memory does not grow with
        the store beyond ``CACHE_BUDGET_BYTES``):

        - ``"cache"``: the parsed records are kept in memory after the first
          epoch, so later epochs never parse again; when they fit in
          ``CACHE_BUDGET_BYTES`` (or `cache` is True).
        - ``"random"``: a local store larger than that streams from its
          shards every epoch, reading the records of a seeded permutation at
          their byte offsets (`RecordReader`): a uniform shuffle that holds
          only the record index in memory, however the file is sorted.
        - ``"buffer"``: a store that is not a local path (``gs://``) streams
          its shards interleaved in a seeded order through a shuffle buffer
          of at most ``SHUFFLE_BUDGET_BYTES``.
        """
        if cache is None:
            cache = self.decoded_bytes(split) <= CACHE_BUDGET_BYTES
        if cache:
            return "cache"
        return "random" if io.is_local(self.path) else "buffer"

    def training_dataset(self, split: str, batch_size: int, *, seed: int, steps_per_epoch: int, epochs: int,
                         first_step: int = 0, take_indices: np.ndarray | None = None, input_context=None,
                         pad_to: str = "bucket", shuffle_buffer: int = 10000, cache: bool | None = None,
                         reader: str | None = None, group_by_length: int = 0):
        """Shuffled training batches of `split` from global step `first_step`
        to the end of epoch `epochs`.

        Epoch ``e``'s order is a function of ``(seed, e)`` only, so a run
        resumed at step ``s`` sees exactly the batches the uninterrupted run
        saw from ``s`` on. `take_indices` keeps only the records at those
        positions of the split (a seeded training fraction, in store order).
        `reader` (default `training_reader` of `cache`) picks how records are
        read and shuffled: ``cache`` and ``buffer`` shuffle with a seeded
        buffer of `shuffle_buffer` records, or fewer when they would take more
        than ``SHUFFLE_BUDGET_BYTES`` (a function of the store, so a resumed
        run shuffles as the first did); ``random`` reads a seeded permutation
        of the records. `group_by_length` N > 0 (a sequence store without
        windows): batches of texts of similar length, cut from every N
        batches' worth of the shuffled records (`_length_grouped`), their
        order shuffled again; as many batches as without. `input_context` (from
        ``strategy.distribute_datasets_from_function``) gives each input
        pipeline its share of every epoch.
        """
        reader = reader or self.training_reader(split, cache)
        if reader not in ("cache", "random", "buffer"):
            raise ValueError(f"reader must be cache, random or buffer, got {reader!r}")
        if group_by_length and (not self.is_sequence or self.windowed):
            raise StoreError(f"{self.path}: grouping by length needs a 'sequence' store of one window per text; "
                             f"this one is {'windowed' if self.windowed else self.token_mode!r}")
        n_files, read = self._shard_reader(split, take_indices)
        # records in the buffer: parsed (cache) or as stored
        held = self.decoded_bytes(split) if reader == "cache" else self.split_bytes(split)
        per_record = held // max(1, self.num_records(split))
        shuffle_buffer = max(1, min(shuffle_buffer, SHUFFLE_BUDGET_BYTES // max(1, per_record)))
        workers = input_context.num_input_pipelines if input_context is not None else 1
        worker = input_context.input_pipeline_id if input_context is not None else 0
        batch = batch_size if input_context is None else input_context.get_per_replica_batch_size(batch_size)

        def mine(records):
            return records.shard(workers, worker) if workers > 1 else records

        def epoch_seed(epoch: int) -> int:  # a Python int: tf.data cannot take a tensor seed with a global seed set
            return (int(seed) * 1_000_003 + epoch) % (1 << 31)

        if reader == "cache":
            parsed = mine(self._parsed(tf.data.Dataset.range(n_files).flat_map(read), False)).cache()

            def epoch_batches(epoch):
                shuffled = parsed.shuffle(shuffle_buffer, seed=epoch_seed(epoch), reshuffle_each_iteration=False)
                return self._batched(shuffled, batch, False, pad_to, parsed=True, group=group_by_length,
                                     group_seed=epoch_seed(epoch))
        elif reader == "random":
            records = RecordReader(self.shard_paths(split))
            if len(records) != self.num_records(split):
                raise StoreError(f"{self.path}: split {split!r} has {len(records)} records in its shards, the "
                                 f"manifest says {self.num_records(split)}")
            chosen = np.arange(len(records)) if take_indices is None else np.sort(np.asarray(take_indices, np.int64))

            def epoch_batches(epoch):
                order = chosen[np.random.default_rng(epoch_seed(epoch)).permutation(len(chosen))][worker::workers]
                stream = tf.data.Dataset.from_generator(lambda: records(order),
                                                        output_signature=tf.TensorSpec([], tf.string))
                return self._batched(stream, batch, False, pad_to, parsed=False, group=group_by_length,
                                     group_seed=epoch_seed(epoch))
        else:
            def epoch_batches(epoch):
                order = tf.data.Dataset.range(n_files).shuffle(n_files, seed=epoch_seed(epoch))
                records = order.interleave(read, cycle_length=min(n_files, 8), block_length=16,
                                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                shuffled = mine(records).shuffle(shuffle_buffer, seed=epoch_seed(epoch))
                return self._batched(shuffled, batch, False, pad_to, parsed=False, group=group_by_length,
                                     group_seed=epoch_seed(epoch))

        first_epoch = first_step // steps_per_epoch
        batches = epoch_batches(first_epoch)
        for epoch in range(first_epoch + 1, max(epochs, first_epoch + 1)):
            batches = batches.concatenate(epoch_batches(epoch))
        return _bounded(batches.skip(first_step - first_epoch * steps_per_epoch).prefetch(tf.data.AUTOTUNE))

    def decoded_bytes(self, split: str) -> int:
        """Memory the split's parsed records take (sequence stores: real tokens only)."""
        if self.is_sequence or self.windowed:
            values = int(self._split(split)["activation_bytes"]) // bytes_per_value(self.dtype)
        else:
            values = self.num_records(split) * int(np.prod(self.example_shape))
        return values * bytes_per_value(self.value_dtype)


def _bounded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` whose autotuned buffers hold at most ``PREFETCH_BUDGET_BYTES``."""
    options = tf.data.Options()
    options.autotune.ram_budget = PREFETCH_BUDGET_BYTES
    return dataset.with_options(options)


def _token_bucket(longest, max_len: int, pad_to: str):
    """The token length a sequence batch is padded to: ``max_len``
    (``pad_to="max"``), or the next power of two >= its longest row (at
    least 16, at most ``max_len``)."""
    if pad_to == "max":
        return tf.constant(max_len)
    longest = tf.maximum(longest, 16)
    return tf.minimum(tf.cast(2 ** tf.math.ceil(tf.math.log(tf.cast(longest, tf.float32)) / tf.math.log(2.0)),
                              tf.int32), max_len)


# store manifest fields an adapter depends on; a store to predict must agree on all of them
SIGNATURE_KEYS = ("task", "task_kind", "layers", "token_mode", "hidden", "max_seq_len", "example_shape")


def _upgrade(manifest: dict) -> dict:
    """Read a format-2 manifest under format 3's key names."""
    if manifest.get("format_version") == 2:
        manifest = {_V2_KEYS.get(k, k): v for k, v in manifest.items()}
        manifest["format_version"] = FORMAT_VERSION
    return manifest


def open_store(path: str, expect: dict | None = None, verify: bool = False) -> Store:
    """Open and validate the store at `path`.

    `expect` maps manifest keys (``task``, ``token_mode``, ``layers``,
    ``hidden``, ``example_shape``, ``backbone`` ...) to the values the caller
    needs; any difference is refused with a message naming it. The
    manifest's fields are checked against each other (`Store.check_header`);
    `verify` also reads every shard once (`Store.verify`: checksum, record
    count, record size). Training and prediction verify by default.
    """
    path = str(path)
    manifest_path = io.join(path, MANIFEST)
    if not io.exists(manifest_path):
        hint = ""
        if io.isdir(path) and any(n.endswith(".plan.json") for n in io.listdir(path)):
            hint = " (extraction started but no split was finalized: run the same extract command again)"
        raise StoreError(f"{path}: no {MANIFEST}; not a BERTVision store{hint}")
    manifest = io.read_json(manifest_path, StoreError)
    manifest_sha256 = io.sha256_file(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise StoreError(f"{manifest_path}: not a BERTVision store manifest (format={fmt!r})")
    manifest = _upgrade(manifest)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{manifest_path}: format version {manifest.get('format_version')} is not "
                         f"{FORMAT_VERSION}, which this version of bertvision reads")
    for key, want in (expect or {}).items():
        have = manifest.get(key)
        if key == "backbone" and isinstance(want, dict) and isinstance(have, dict):
            have = {k: have.get(k) for k in want}
        if have != want:
            raise StoreError(f"{path}: store has {key}={json.dumps(have)}, expected {json.dumps(want)}")
    store = Store(path, manifest, manifest_sha256)
    store.check_header()
    if verify:
        for split in store.splits:
            store.verify(split)
    else:
        for split in store.splits:
            for shard in store.shard_paths(split):
                if not io.exists(shard):
                    raise StoreError(f"{shard}: shard listed in the manifest is missing")
    return store
