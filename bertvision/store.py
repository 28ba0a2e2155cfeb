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

>>> store = open_store("tfrecords/sst2", expect={"tokens": "cls"})
>>> ds = store.dataset("train", batch_size=64, shuffle=True, seed=0)
>>> features, labels = next(iter(ds))
>>> features["activations"].shape  # (64, 7, 384)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass

import numpy as np

FORMAT = "bertvision-store"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DTYPES = ("float16", "bfloat16", "float32")
# reader caches a split's parsed records in memory up to this size (env override, MiB)
CACHE_BUDGET_BYTES = int(float(os.environ.get("BERTVISION_CACHE_MB", "2048")) * (1 << 20))


class StoreError(ValueError):
    """A store that is missing, corrupt, or not what the caller expects."""


# --------------------------------------------------------------------------
# small gfile helpers (work on local paths and gs://)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def join(*parts: str) -> str:
    return "/".join([str(parts[0]).rstrip("/")] + [str(p) for p in parts[1:]])


def exists(path: str) -> bool:
    return _gfile().exists(path)


def read_json(path: str) -> dict:
    try:
        with _gfile().GFile(path, "r") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise StoreError(f"{path}: not valid JSON ({err})") from err


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, then rename."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    local = "://" not in str(path)  # local files need no TensorFlow
    try:
        if local:
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        else:
            with _gfile().GFile(tmp, "wb") as handle:
                handle.write(data)
            _gfile().rename(tmp, path, overwrite=True)
    except Exception as err:
        if local:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        else:
            _remove_quietly(tmp)
        raise _io_error(path, err) from err


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text, creating a local parent folder."""
    parent = os.path.dirname(str(path))
    if parent and "://" not in str(path):
        os.makedirs(parent, exist_ok=True)
    atomic_write_bytes(str(path), text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike):
    """Build a local folder under a temporary name beside it; it replaces
    `folder` only when the block completes, and is removed on any error.

    >>> with atomic_folder("runs/x/checkpoint") as tmp:
    ...     (tmp / "weights.bin").write_bytes(b"...")
    """
    import shutil
    from pathlib import Path

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_quietly(path: str) -> None:
    try:
        if _gfile().exists(path):
            _gfile().remove(path)
    except Exception:
        pass


def _io_error(path: str, err: Exception) -> Exception:
    text = str(err)
    if "No space left" in text or "ENOSPC" in text:
        return StoreError(f"disk full while writing {path}: free space and run the same command again to resume")
    if "Permission denied" in text or "Read-only" in text:
        return StoreError(f"cannot write {path}: permission denied (choose a writable --out)")
    return StoreError(f"writing {path} failed: {text}")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with _gfile().GFile(path, "rb") as handle:
        while True:
            block = handle.read(8 << 20)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


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
    model: dict
    tokenizer: str
    layers: list
    num_model_layers: int
    hidden: int
    tokens: str
    max_seq_len: int
    dtype: str
    featurizer: dict

    def example_shape(self) -> list:
        if self.tokens == "sequence":
            return [len(self.layers), self.max_seq_len, self.hidden]
        return [len(self.layers), self.hidden]

    def header(self) -> dict:
        header = dict(self.__dict__)
        header["example_shape"] = self.example_shape()
        return header


# the fields that must agree between a store and a new split written into it
_COMPATIBLE_KEYS = ("task", "task_kind", "model", "layers", "hidden", "tokens", "max_seq_len", "dtype", "featurizer")


def check_compatible(existing: dict, spec: StoreSpec, path: str) -> None:
    """Refuse to mix splits made with different settings in one store."""
    new = spec.header()
    for key in _COMPATIBLE_KEYS:
        a, b = existing.get(key), new.get(key)
        if key == "model" and isinstance(a, dict) and isinstance(b, dict):
            a = {k: a.get(k) for k in ("config_sha256", "weights_sha256", "path")}
            b = {k: b.get(k) for k in ("config_sha256", "weights_sha256", "path")}
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


def _int_feature(values):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float_feature(values):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _bytes_feature(values):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def serialize_record(activations: np.ndarray, *, length: int | None, uid: str, example_index: int,
                     label=None, task_kind: str = "classification", span: dict | None = None) -> bytes:
    """One `tf.train.Example` as bytes (see the module docstring)."""
    import tensorflow as tf

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
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


class ShardWriter:
    """Writes one shard under a temporary name; `commit` renames it and
    writes its ``.done`` marker (record count, sha256, bytes)."""

    def __init__(self, path: str):
        import tensorflow as tf

        self.path = path
        self.tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        self.count = 0
        self.activation_bytes = 0
        try:
            self._writer = tf.io.TFRecordWriter(self.tmp)
        except Exception as err:
            raise _io_error(path, err) from err

    def write(self, record: bytes, activation_bytes: int) -> None:
        try:
            self._writer.write(record)
        except Exception as err:
            self.abort()
            raise _io_error(self.path, err) from err
        self.count += 1
        self.activation_bytes += activation_bytes

    def commit(self) -> dict:
        try:
            self._writer.close()
            info = {
                "file": os.path.basename(self.path),
                "records": self.count,
                "bytes": _gfile().stat(self.tmp).length,
                "activation_bytes": self.activation_bytes,
                "sha256": sha256_file(self.tmp),
            }
            _gfile().rename(self.tmp, self.path, overwrite=True)
        except StoreError:
            raise
        except Exception as err:
            self.abort()
            raise _io_error(self.path, err) from err
        atomic_write_json(self.path + ".done", info)
        return info

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass
        _remove_quietly(self.tmp)


def finished_shard(store_dir: str, name: str) -> dict | None:
    """The ``.done`` info of a shard that was completely written, else None."""
    done = join(store_dir, name + ".done")
    if not (exists(done) and exists(join(store_dir, name))):
        return None
    try:
        return read_json(done)
    except StoreError:
        return None


def finalize_split(store_dir: str, split: str, spec_header: dict | None = None,
                   provenance: dict | None = None, verify: bool = True) -> dict:
    """Check every planned shard of `split` is written and record it in the manifest.

    Called by the extractor at the end of a single-worker run and by
    ``pipelines.extract --finalize`` after several workers.
    """
    plan_path = join(store_dir, f"{split}.plan.json")
    if not exists(plan_path):
        raise StoreError(f"{store_dir}: no plan for split {split!r} (was it extracted into this folder?)")
    plan = read_json(plan_path)
    count = len(plan["shards"])
    shards, missing = [], []
    for i in range(count):
        name = shard_name(split, i, count)
        info = finished_shard(store_dir, name)
        if info is None:
            missing.append(name)
            continue
        if info["records"] != plan["shards"][i][1] - plan["shards"][i][0]:
            raise StoreError(f"{join(store_dir, name)}: {info['records']} records, plan says "
                             f"{plan['shards'][i][1] - plan['shards'][i][0]}")
        if verify and sha256_file(join(store_dir, name)) != info["sha256"]:
            raise StoreError(f"{join(store_dir, name)}: sha256 does not match what was written; re-extract it")
        shards.append(info)
    if missing:
        raise StoreError(f"{store_dir}: split {split!r} is incomplete, {len(missing)} of {count} shards missing "
                         f"(e.g. {missing[0]}); run the remaining workers, then finalize again")
    examples_file = join(store_dir, f"{split}.examples.jsonl")
    manifest_path = join(store_dir, MANIFEST)
    manifest = read_json(manifest_path) if exists(manifest_path) else None
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
        "examples_sha256": sha256_file(examples_file),
        "shards": shards,
        "created_by": provenance or plan.get("provenance", {}),
    }
    manifest["splits"][split] = split_info
    atomic_write_json(manifest_path, manifest)
    return manifest


# --------------------------------------------------------------------------
# reading


class Store:
    """An opened, validated store. Build one with `open_store`."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest

    # -- properties a model builder needs
    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def task_kind(self) -> str:
        return self.manifest["task_kind"]

    @property
    def tokens(self) -> str:
        return self.manifest["tokens"]

    @property
    def layers(self) -> list:
        return list(self.manifest["layers"])

    @property
    def hidden(self) -> int:
        return int(self.manifest["hidden"])

    @property
    def max_seq_len(self) -> int:
        return int(self.manifest["max_seq_len"])

    @property
    def example_shape(self) -> list:
        return list(self.manifest["example_shape"])

    @property
    def splits(self) -> list:
        return list(self.manifest["splits"])

    def num_records(self, split: str) -> int:
        return int(self._split(split)["num_records"])

    def _split(self, split: str) -> dict:
        if split not in self.manifest["splits"]:
            raise StoreError(f"{self.path}: no split {split!r}; it has {', '.join(self.splits) or 'none'}")
        return self.manifest["splits"][split]

    def shard_paths(self, split: str) -> list[str]:
        return [join(self.path, s["file"]) for s in self._split(split)["shards"]]

    def examples(self, split: str) -> list[dict]:
        """The per-example side file: uid, label, and for SQuAD context/answers."""
        path = join(self.path, self._split(split)["examples_file"])
        with _gfile().GFile(path, "r") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def verify(self, split: str) -> None:
        """Check every shard's sha256 and record count against the manifest."""
        import tensorflow as tf

        for info in self._split(split)["shards"]:
            path = join(self.path, info["file"])
            if not exists(path):
                raise StoreError(f"{path}: shard missing")
            if sha256_file(path) != info["sha256"]:
                raise StoreError(f"{path}: checksum mismatch (corrupt or changed shard)")
            n = sum(1 for _ in tf.data.TFRecordDataset(path))
            if n != info["records"]:
                raise StoreError(f"{path}: {n} records, manifest says {info['records']}")

    # -- the tf.data pipeline
    def _feature_spec(self):
        import tensorflow as tf

        spec = {
            "activations": tf.io.FixedLenFeature([], tf.string),
            "uid": tf.io.FixedLenFeature([], tf.string),
        }
        if self.tokens == "sequence":
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
        import tensorflow as tf

        if self.task_kind == "span":
            return {"start_positions": tf.cast(ex["start_position"], tf.int32),
                    "end_positions": tf.cast(ex["end_position"], tf.int32)}
        if self.task_kind == "classification":
            return tf.cast(ex["label"], tf.int32)
        return ex["label"]

    def _parse_vectors(self, with_meta: bool):
        """Batched parse of ``cls``/``mean`` records: one op for the whole batch."""
        import tensorflow as tf

        spec, shape = self._feature_spec(), self.example_shape
        dtype = tf.as_dtype(self.manifest["dtype"])

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
        import tensorflow as tf

        spec = self._feature_spec()
        k, _, h = self.example_shape
        dtype = tf.as_dtype(self.manifest["dtype"])
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
        import tensorflow as tf

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
        import tensorflow as tf

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
        seq = self.tokens == "sequence"
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
        if self.tokens == "sequence":
            return int(self._split(split)["activation_bytes"])
        return self.num_records(split) * int(np.prod(self.example_shape)) * bytes_per_value(self.manifest["dtype"])


def open_store(path: str, expect: dict | None = None, verify: bool = False) -> Store:
    """Open and validate the store at `path`.

    `expect` maps manifest keys (``task``, ``tokens``, ``layers``, ``hidden``,
    ``example_shape``, ``model`` ...) to the values the caller needs; any
    difference is refused with a message naming it. `verify` also checks
    every shard's checksum and record count.
    """
    manifest_path = join(path, MANIFEST)
    if not exists(manifest_path):
        hint = ""
        if exists(path) and any(n.endswith(".plan.json") for n in _gfile().listdir(path)):
            hint = " (extraction started but no split was finalized: run extract again, or --finalize)"
        raise StoreError(f"{path}: no {MANIFEST}; not a BERTVision store{hint}")
    manifest = read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{manifest_path}: not a BERTVision store manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{manifest_path}: format version {manifest.get('format_version')} is not "
                         f"{FORMAT_VERSION}, which this version of bertvision reads")
    for key, want in (expect or {}).items():
        have = manifest.get(key)
        if key == "model" and isinstance(want, dict) and isinstance(have, dict):
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
                if not exists(shard):
                    raise StoreError(f"{shard}: shard listed in the manifest is missing")
    return store
