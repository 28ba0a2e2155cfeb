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
  (only the ``length`` real tokens: the reader zero-pads each batch).
- ``uid``; ``length`` (sequence stores); ``label`` (int64 class, float
  score; -1 / NaN where the split has no labels); span stores also
  ``example_index``, ``start_position``, ``end_position``, ``window_index`` and ``offsets``
  (int32 ``[length, 2]`` character offsets into the context, stored +1 so that
  zero padding reads back as -1 = "not in the context").

Reading:

>>> store = open_store("tfrecords/sst2", expect={"token_mode": "cls"})
>>> ds = store.dataset("train", batch_size=64, shuffle=True, seed=0)
>>> features, labels = next(iter(ds))
>>> features["activations"].shape  # (64, 7, 384)
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from bertvision import io
from bertvision.config import DTYPES, TOKEN_MODES
from bertvision.errors import StoreError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ShardWriter", "Store", "StoreError", "StoreSpec",
           "bytes_per_value", "check_compatible", "finalize_split", "finished_shard", "open_store", "plan_shards",
           "serialize_record", "shard_name"]

FORMAT = "bertvision-store"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
# format 2 named these manifest keys differently; they are read under their new names
_V2_KEYS = {"model": "backbone", "tokens": "token_mode"}
# reader caches a split's parsed records in memory up to this size (env override, MiB)
CACHE_BUDGET_BYTES = int(float(os.environ.get("BERTVISION_CACHE_MB", "2048")) * (1 << 20))


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def bytes_per_value(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


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

    def __post_init__(self):
        if self.token_mode not in TOKEN_MODES:
            raise StoreError(f"token mode must be one of {', '.join(TOKEN_MODES)}, got {self.token_mode!r}")
        if self.dtype not in DTYPES:
            raise StoreError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def example_shape(self) -> list:
        if self.token_mode == "sequence":
            return [len(self.layers), self.max_seq_len, self.hidden]
        return [len(self.layers), self.hidden]

    def header(self) -> dict:
        header = dict(self.__dict__)
        header["example_shape"] = self.example_shape()
        return header


# the fields that must agree between a store and a new split written into it
_COMPATIBLE_KEYS = ("task", "task_kind", "backbone", "layers", "hidden", "token_mode", "max_seq_len", "dtype",
                    "featurizer")
_IDENTITY_KEYS = ("config_sha256", "weights_sha256", "path")


def check_compatible(existing: dict, spec: StoreSpec, path: str) -> None:
    """Refuse to mix splits made with different settings in one store."""
    new = spec.header()
    for key in _COMPATIBLE_KEYS:
        a, b = existing.get(key), new.get(key)
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


def serialize_record(activations: np.ndarray, *, length: int | None, uid: str, example_index: int,
                     label=None, task_kind: str = "classification", span: dict | None = None) -> bytes:
    """One `tf.train.Example` as bytes (see the module docstring). The
    serialization is deterministic (features in a fixed order), so two
    extractions of the same data write the same bytes and checksums."""
    feats = {
        "activations": _bytes_feature([np.ascontiguousarray(activations).tobytes()]),
        "uid": _bytes_feature([uid.encode()]),
    }
    if length is not None:  # sequence stores only
        feats["length"] = _int_feature([int(length)])
    if task_kind == "classification":
        feats["label"] = _int_feature([-1 if label is None else int(label)])
    elif task_kind == "regression":
        feats["label"] = _float_feature([float("nan") if label is None else float(label)])
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

    Called by `bertvision.extract.finalize_splits` once every shard is
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
    manifest["splits"][split] = split_info
    io.atomic_write_json(manifest_path, manifest)
    return manifest


# --------------------------------------------------------------------------
# reading


def _header(key: str, convert=lambda v: v, doc: str = ""):
    """A read-only `Store` property of the manifest's `key`."""
    return property(lambda self: convert(self.manifest.get(key)), doc=doc or f"the manifest's {key}")


class Store:
    """An opened, validated store. Build one with `open_store`.

    Everything a reader needs is a property or a method: nothing outside
    this class reads the manifest's keys or parses its shards.
    """

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest

    # -- what the store holds (the manifest's header)
    task = _header("task")
    task_kind = _header("task_kind")
    token_mode = _header("token_mode", doc="cls, mean or sequence")
    layers = _header("layers", list, "the backbone layers stored (0 = the embeddings)")
    hidden = _header("hidden", int)
    max_seq_len = _header("max_seq_len", int)
    dtype = _header("dtype")
    label_names = _header("label_names", lambda v: list(v or []))
    example_shape = _header("example_shape", list)
    backbone = _header("backbone", lambda v: dict(v or {}),
                       "identity of the backbone the activations come from (name, path, sha256 of config and weights)")
    featurizer = _header("featurizer", lambda v: dict(v or {}))

    @property
    def is_sequence(self) -> bool:
        return self.token_mode == "sequence"

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
        sig["backbone"] = {k: self.backbone.get(k) for k in ("name", "config_sha256", "weights_sha256")}
        return sig

    def adapter_fields(self) -> dict:
        """The `bertvision.models.ModelConfig` fields this store determines."""
        return {
            "task_kind": self.task_kind,
            "num_labels": 1 if self.task_kind == "regression" else max(2, len(self.label_names)),
            "num_layers": len(self.layers),
            "hidden": self.hidden,
            "max_seq_len": self.max_seq_len if self.is_sequence else None,
            "input_dtype": self.dtype,
        }

    def examples(self, split: str) -> list[dict]:
        """The per-example side file: uid, label, and for SQuAD context/answers."""
        text = io.read_text(io.join(self.path, self._split(split)["examples_file"]))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def verify(self, split: str) -> None:
        """Check every shard's sha256 and record count against the manifest."""
        for info in self._split(split)["shards"]:
            path = io.join(self.path, info["file"])
            if not io.exists(path):
                raise StoreError(f"{path}: shard missing")
            if io.sha256_file(path) != info["sha256"]:
                raise StoreError(f"{path}: checksum mismatch (corrupt or changed shard)")
            n = sum(1 for _ in tf.data.TFRecordDataset(path))
            if n != info["records"]:
                raise StoreError(f"{path}: {n} records, manifest says {info['records']}")

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

        >>> indices, n = store.select_fraction("train", 0.1, seed=0)
        """
        n_records = self.num_records(split)
        groups = None
        if self.task_kind == "span":
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
        if self.task_kind == "classification":
            spec["label"] = tf.io.FixedLenFeature([], tf.int64)
        elif self.task_kind == "regression":
            spec["label"] = tf.io.FixedLenFeature([], tf.float32)
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
        if self.task_kind == "classification":
            return tf.cast(ex["label"], tf.int32)
        return ex["label"]

    def _parse_vectors(self, with_meta: bool):
        """Batched parse of ``cls``/``mean`` records: one op for the whole batch."""
        spec, shape = self._feature_spec(), self.example_shape
        dtype = tf.as_dtype(self.dtype)

        def parse(serialized):
            ex = tf.io.parse_example(serialized, spec)
            flat = tf.io.decode_raw(ex["activations"], dtype)
            features = {"activations": tf.reshape(flat, [-1] + shape)}
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

        def parse(serialized):
            ex = tf.io.parse_single_example(serialized, spec)
            acts = tf.reshape(tf.io.decode_raw(ex["activations"], dtype), [k, -1, h])
            features = {"activations": acts, "length": tf.cast(ex["length"], tf.int32)}
            if with_meta:
                features["uid"] = ex["uid"]
                if span:
                    features["example_index"] = tf.cast(ex["example_index"], tf.int32)
                    features["window_index"] = tf.cast(ex["window_index"], tf.int32)
                    # stored +1: zero padding reads back as -1 ("not in the context")
                    features["offsets"] = tf.reshape(tf.io.decode_raw(ex["offsets"], tf.int32), [-1, 2])
            return features, self._labels(ex)

        return parse

    def _finish_sequence_batch(self, pad_to: str):
        """Pad a batch ``[batch, layers, tokens, hidden]`` to a power-of-two
        token length (or ``max_seq_len``) and add the padding mask."""
        max_len = self.max_seq_len

        def finish(features, labels):
            length = features.pop("length")
            if pad_to == "max":
                t = tf.constant(max_len)
            else:
                longest = tf.maximum(tf.reduce_max(length), 16)
                t = tf.minimum(tf.cast(2 ** tf.math.ceil(tf.math.log(tf.cast(longest, tf.float32)) / tf.math.log(2.0)), tf.int32), max_len)
            acts = features["activations"]
            features["activations"] = tf.pad(acts, [[0, 0], [0, 0], [0, t - tf.shape(acts)[2]], [0, 0]])
            features["padding_mask"] = tf.sequence_mask(length, t, dtype=tf.int32)
            if "offsets" in features:
                offs = features["offsets"]
                features["offsets"] = tf.pad(offs, [[0, 0], [0, t - tf.shape(offs)[1]], [0, 0]]) - 1
            return features, labels

        return finish

    def dataset(self, split: str, batch_size: int, *, shuffle: bool = False, repeat: bool = False,
                seed: int | None = None, with_meta: bool = False, drop_remainder: bool = False,
                input_context=None, take_indices: np.ndarray | None = None,
                shuffle_buffer: int = 10000, cache: bool | None = None, pad_to: str = "bucket"):
        """A `tf.data.Dataset` of ``(features, labels)`` batches for `split`.

        Follows the tf.data performance guide: parallel interleave over
        shards (when shuffling; otherwise records come in store order),
        shuffle before batching, parallel parsing (batched for vector
        stores), prefetch. `input_context` (from
        ``strategy.distribute_datasets_from_function``) shards the input per
        worker. `take_indices` keeps only the records at those positions of
        the split (a seeded training fraction). `cache` keeps the parsed
        records in memory after the first pass (default: when they fit in
        ``CACHE_BUDGET_BYTES``), so later epochs never parse again.

        Sequence stores keep only real tokens on disk; a batch is padded to
        the next power of two >= its longest example (``pad_to="bucket"``,
        few distinct shapes, far less work for short texts) or to
        ``max_seq_len`` (``pad_to="max"``).
        """
        if pad_to not in ("bucket", "max"):
            raise ValueError(f"pad_to must be 'bucket' or 'max', got {pad_to!r}")
        files = self.shard_paths(split)
        ds = tf.data.Dataset.from_tensor_slices(files)
        deterministic = not shuffle or seed is not None  # seeded runs repeat exactly
        sharded_by_file = False
        workers = input_context.num_input_pipelines if input_context is not None else 1
        if workers > 1 and len(files) >= workers and take_indices is None:
            ds = ds.shard(workers, input_context.input_pipeline_id)
            sharded_by_file = True
        if shuffle:  # read several shards at once
            ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
            ds = ds.interleave(
                lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
                cycle_length=min(len(files), 8), block_length=16,
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
            )
        else:  # store order, so predictions line up with the examples file
            ds = ds.flat_map(lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20))
        if take_indices is not None:
            keep = np.zeros(self.num_records(split), dtype=bool)
            keep[np.asarray(take_indices)] = True
            keep_t = tf.constant(keep)
            ds = ds.enumerate().filter(lambda i, _rec: keep_t[i]).map(lambda _i, rec: rec)
        if workers > 1 and not sharded_by_file:
            ds = ds.shard(workers, input_context.input_pipeline_id)
        if cache is None:
            cache = self.decoded_bytes(split) <= CACHE_BUDGET_BYTES
        seq = self.is_sequence
        if seq:
            ds = ds.map(self._parse_sequence(with_meta), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=deterministic)
        elif cache:  # parse once in large batches
            ds = ds.batch(1024).map(self._parse_vectors(with_meta), num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        if cache:
            ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        if seq:
            ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
            ds = ds.map(self._finish_sequence_batch(pad_to), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=deterministic)
        else:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            if not cache:
                ds = ds.map(self._parse_vectors(with_meta), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=deterministic)
        return ds.prefetch(tf.data.AUTOTUNE)

    def decoded_bytes(self, split: str) -> int:
        """Memory the split's parsed records take (sequence stores: real tokens only)."""
        if self.is_sequence:
            return int(self._split(split)["activation_bytes"])
        return self.num_records(split) * int(np.prod(self.example_shape)) * bytes_per_value(self.dtype)


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
    needs; any difference is refused with a message naming it. `verify` also
    checks every shard's checksum and record count.
    """
    path = str(path)
    manifest_path = io.join(path, MANIFEST)
    if not io.exists(manifest_path):
        hint = ""
        if io.isdir(path) and any(n.endswith(".plan.json") for n in io.listdir(path)):
            hint = " (extraction started but no split was finalized: run the same extract command again)"
        raise StoreError(f"{path}: no {MANIFEST}; not a BERTVision store{hint}")
    manifest = io.read_json(manifest_path, StoreError)
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
    store = Store(path, manifest)
    if verify:
        for split in store.splits:
            store.verify(split)
    else:
        for split in store.splits:
            for shard in store.shard_paths(split):
                if not io.exists(shard):
                    raise StoreError(f"{shard}: shard listed in the manifest is missing")
    return store
