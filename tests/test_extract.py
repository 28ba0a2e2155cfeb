"""The store and the extraction pipeline, on the real shared data."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertvision.store import format as st
from bertvision.models.backbone import all_layers_model, load_backbone, load_tokenizer, resolve_backbone
from bertvision.data.readers import load_examples
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.data.features import Featurizer
from pipelines.extract import main as extract_main
from tests.stores import cli_env, run_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bert():
    ref = resolve_backbone(None)
    return load_backbone(ref), load_tokenizer(ref)


def _extract(bert, out, task, split, data_dir, **kw):
    backbone, tokenizer = bert
    config = ExtractConfig(task=task, split=split, out=str(out), data_dir=str(data_dir), progress=False, **kw)
    return Extractor(config, backbone=backbone, tokenizer=tokenizer).run()


def _reference(bert, task, examples, max_seq_len, **kw):
    backbone, tokenizer = bert
    feats = Featurizer(tokenizer, max_seq_len=max_seq_len, **kw).encode(task, examples)
    acts = all_layers_model(backbone)({"token_ids": feats.token_ids, "segment_ids": feats.segment_ids,
                                        "padding_mask": feats.padding_mask}).numpy()
    return feats, acts


def _read_all(store, split, **kw):
    feats, labels = {}, []
    for f, y in store.dataset(split, 16, with_meta=True, pad_to="max", **kw):
        for k, v in f.items():
            feats.setdefault(k, []).append(v.numpy())
        labels.append(y if not isinstance(y, dict) else y["start_positions"])
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate([np.asarray(l) for l in labels])


@pytest.mark.parametrize("tokens", ["cls", "mean", "sequence"])
def test_sst2_round_trip_equals_backbone(bert, shared_data, tmp_path, tokens):
    data_dir = shared_data / "glue" / "SST-2"
    manifest = _extract(bert, tmp_path, "sst2", "dev", data_dir, token_mode=tokens, limit=40, max_seq_len=64,
                        batch_size=16)
    assert manifest["splits"]["dev"]["num_records"] == 40
    store = st.open_store(str(tmp_path), expect={"task": "sst2", "token_mode": tokens}, verify=True)
    got, labels = _read_all(store, "dev")
    examples = load_examples("sst2", "dev", data_dir, limit=40).examples
    feats, ref = _reference(bert, "sst2", examples, 64)
    mask = feats.padding_mask.astype(np.float32)
    if tokens == "cls":
        ref = ref[:, :, 0, :]
    elif tokens == "mean":
        ref = (ref * mask[:, None, :, None]).sum(2) / mask.sum(1)[:, None, None]
    else:
        np.testing.assert_array_equal(got["padding_mask"], feats.padding_mask)
        ref = ref * mask[:, None, :, None]
    acts = got["activations"].astype(np.float32)
    assert acts.shape == ref.shape
    # float16 keeps ~3 significant digits: relative 2^-10 of values up to ~10
    np.testing.assert_allclose(acts, ref, atol=1e-2, rtol=2e-3)
    assert [e.label for e in examples] == labels.tolist()
    assert [u.decode() for u in got["uid"]] == [e.uid for e in examples]


def test_quantize_int8_round_trip():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal([3, 5, 384]) * rng.uniform(0.01, 20, [3, 5, 1])).astype(np.float32)
    x[1, 2] = 0.0  # an all-zero vector (a padding position)
    q, scales = st.quantize_int8(x)
    assert q.dtype == "int8" and q.shape == x.shape and scales.dtype == "float16" and scales.shape == (3, 5)
    assert np.abs(q.numpy()).max() <= 127 and scales.numpy()[1, 2] == 1.0 and not q.numpy()[1, 2].any()
    back = st.dequantize_int8(q, scales).numpy().astype(np.float32)
    peak = np.abs(x).max(-1, keepdims=True)
    # half a quantum (peak / 254) per value, plus float16 rounding of the scale and the result
    assert (np.abs(back - x) <= peak / 254 * 1.01 + np.abs(x) * 2e-3).all()
    np.testing.assert_array_equal(st.dequantize_int8(*st.quantize_int8(back)).numpy(), back.astype(np.float16))


@pytest.mark.parametrize("task, tokens, pair_mode", [("sst2", "cls", "cross"), ("sst2", "sequence", "cross"),
                                                     ("mrpc", "mean", "separate")])
def test_int8_store_reads_back_the_backbone(bert, shared_data, tmp_path, task, tokens, pair_mode):
    data_dir = shared_data / "glue" / task.upper().replace("SST2", "SST-2")
    half = tmp_path / "float16"
    _extract(bert, half, task, "dev", data_dir, token_mode=tokens, limit=24, max_seq_len=64, batch_size=16,
             pair_mode=pair_mode)
    manifest = _extract(bert, tmp_path / "int8", task, "dev", data_dir, token_mode=tokens, limit=24,
                        max_seq_len=64, batch_size=16, dtype="int8", pair_mode=pair_mode)
    assert manifest["dtype"] == "int8"
    store = st.open_store(str(tmp_path / "int8"), verify=True)
    assert store.quantized and store.value_dtype == "float16" and store.signature()["dtype"] == "int8"
    assert store.adapter_fields()["input_dtype"] == "float16"
    reference = st.open_store(str(half))
    assert "dtype" not in reference.signature()
    # half the activation bytes of float16 (the scales: 2 bytes per 384 values on top)
    assert store.manifest["splits"]["dev"]["activation_bytes"] * 2 == reference.manifest["splits"]["dev"][
        "activation_bytes"]
    assert store.split_bytes("dev") < 0.56 * reference.split_bytes("dev")
    assert store.decoded_bytes("dev") == reference.decoded_bytes("dev")
    got, labels = _read_all(store, "dev")
    want, want_labels = _read_all(reference, "dev")
    assert got["activations"].dtype == np.float16 and got["activations"].shape == want["activations"].shape
    a, b = got["activations"].astype(np.float32), want["activations"].astype(np.float32)
    peak = np.abs(b).max(-1, keepdims=True)
    assert (np.abs(a - b) <= peak / 254 * 1.05 + np.abs(b) * 4e-3 + 1e-3).all()
    assert np.abs(a - b).max() > 0  # it really is quantized
    np.testing.assert_array_equal(labels, want_labels)
    # a shard whose records lost their scales (checksums made to agree) is refused by verification, naming it
    import tensorflow as tf

    int8 = tmp_path / "int8"
    manifest = json.loads((int8 / "manifest.json").read_text())
    info = manifest["splits"]["dev"]["shards"][0]
    shard = int8 / info["file"]
    records = []
    for raw in tf.data.TFRecordDataset(str(shard)):
        example = tf.train.Example.FromString(raw.numpy())
        del example.features.feature["scales"]
        records.append(example.SerializeToString(deterministic=True))
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    info["sha256"] = st.io.sha256_file(str(shard))
    (int8 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(st.StoreError, match=f"{shard}: an int8 record needs .* float16 scales .* holds none"):
        st.open_store(str(int8), verify=True)


def test_sequence_batches_pad_to_a_power_of_two(bert, shared_data, tmp_path):
    _extract(bert, tmp_path, "sst2", "dev", shared_data / "glue" / "SST-2", token_mode="sequence", limit=40,
             max_seq_len=128, batch_size=16)
    store = st.open_store(str(tmp_path))
    full = [f for f, _ in store.dataset("dev", 8, pad_to="max")]
    for (f, _), ref in zip(store.dataset("dev", 8), full):
        t = f["activations"].shape[2]
        longest = int(f["padding_mask"].numpy().sum(1).max())
        assert t in (16, 32, 64, 128) and longest <= t and (t == 16 or longest > t // 2)
        np.testing.assert_array_equal(f["activations"].numpy(), ref["activations"].numpy()[:, :, :t])
        np.testing.assert_array_equal(f["padding_mask"].numpy(), ref["padding_mask"].numpy()[:, :t])
        assert not ref["padding_mask"].numpy()[:, t:].any()


@pytest.fixture(scope="module")
def sharded_store(bert, shared_data, module_tmp):
    """40 SST-2 dev examples in several small shards, for the training-reader
    tests (which only read it)."""
    out = module_tmp("sharded") / "store"
    _extract(bert, out, "sst2", "dev", shared_data / "glue" / "SST-2", token_mode="cls", limit=40,
             shard_size_mb=0.02)
    return out


@pytest.mark.parametrize("reader", ["cache", "random", "buffer"])
def test_training_order_is_a_function_of_seed_and_epoch(sharded_store, reader):
    """What exact resume needs: epoch e's batches depend on (seed, e) only, and
    starting at step s gives the batches the whole stream gives from s on."""
    store = st.open_store(str(sharded_store))
    assert len(store.shard_paths("dev")) > 2  # interleaved shards when not cached

    def batches(first_step, steps, seed=1):
        ds = store.training_dataset("dev", 8, seed=seed, steps_per_epoch=5, epochs=3, first_step=first_step,
                                    reader=reader)
        return [[row.tobytes() for row in f["activations"].numpy()] for f, _ in ds.take(steps)]

    whole = batches(0, 15)
    assert batches(0, 15) == whole  # seeded
    assert batches(7, 8) == whole[7:]  # a resume at step 7 (inside epoch 2) sees the same batches
    epochs = [sum(whole[i:i + 5], []) for i in (0, 5, 10)]
    assert all(len(e) == len(set(e)) == 40 for e in epochs)  # every record once per epoch
    assert set(epochs[0]) == set(epochs[1]) and epochs[0] != epochs[1]  # reshuffled each epoch
    assert batches(0, 5, seed=2) != whole[:5]


@pytest.fixture(scope="module")
def sharded_sequence_store(bert, shared_data, module_tmp):
    """40 SST-2 dev sentences as a ``sequence`` store in several shards."""
    out = module_tmp("sharded-seq") / "store"
    _extract(bert, out, "sst2", "dev", shared_data / "glue" / "SST-2", token_mode="sequence", limit=40,
             max_seq_len=128, shard_size_mb=0.3)
    return out


@pytest.mark.parametrize("reader", ["cache", "random", "buffer"])
def test_training_batches_grouped_by_length(sharded_sequence_store, sharded_store, reader):
    """``group_by_length``: the same records once per epoch, with their labels,
    in as many batches as without grouping (resume and the schedule count on
    it), far less padding, and still a function of (seed, epoch)."""
    store = st.open_store(str(sharded_sequence_store))
    assert len(store.shard_paths("dev")) > 2

    def batches(group, first_step=0, seed=1):
        ds = store.training_dataset("dev", 8, seed=seed, steps_per_epoch=5, epochs=2, first_step=first_step,
                                    reader=reader, group_by_length=group)
        out = []
        for f, y in ds:
            lengths = f["padding_mask"].numpy().sum(1)
            acts = f["activations"].numpy()
            assert acts.shape[2] == f["padding_mask"].shape[1] >= lengths.max()  # a bucket of its longest text
            rows = [(acts[i][:, :n].tobytes(), int(y[i])) for i, n in enumerate(lengths)]
            out.append((rows, acts.shape[0] * acts.shape[2]))
        return out

    plain, grouped = batches(0), batches(4)
    assert len(plain) == len(grouped) == 10  # 2 epochs of ceil(40 / 8) batches
    for epoch in (slice(0, 5), slice(5, 10)):
        records = [r for rows, _ in grouped[epoch] for r in rows]
        assert len(records) == 40 and sorted(records) == sorted(r for rows, _ in plain[epoch] for r in rows)
    # each batch holds texts of similar length: fewer padded positions than the shuffled batches
    assert sum(padded for _, padded in grouped) < 0.8 * sum(padded for _, padded in plain)
    assert batches(4) == grouped and batches(4, first_step=7) == grouped[7:]  # seeded; a resume at step 7
    assert batches(4, seed=2) != grouped
    with pytest.raises(st.StoreError, match="grouping by length needs a 'sequence' store .* this one is 'cls'"):
        st.open_store(str(sharded_store)).training_dataset("dev", 8, seed=0, steps_per_epoch=5, epochs=1,
                                                           group_by_length=4)


def test_shuffle_buffer_is_capped_by_bytes(sharded_store, monkeypatch):
    """Large records (SQuAD windows of every layer) must not fill memory with
    10,000 of them: a store streamed through a shuffle buffer (one that is not
    a local path) holds at most SHUFFLE_BUDGET_BYTES of records, and a capped
    buffer still gives every record once per epoch, seeded and resumable."""
    store = st.open_store(str(sharded_store))

    def batches(first_step, steps):
        ds = store.training_dataset("dev", 8, seed=1, steps_per_epoch=5, epochs=2, first_step=first_step,
                                    reader="buffer")
        return [[row.tobytes() for row in f["activations"].numpy()] for f, _ in ds.take(steps)]

    wide = batches(0, 10)
    monkeypatch.setattr(st, "SHUFFLE_BUDGET_BYTES", 3 * store.split_bytes("dev") // 40)  # three records
    narrow = batches(0, 10)
    assert narrow != wide and batches(3, 7) == narrow[3:]
    for epoch in (narrow[:5], narrow[5:]):
        rows = sum(epoch, [])
        assert len(rows) == len(set(rows)) == 40


def test_training_memory_is_bounded_by_the_cache_budget(sharded_store, monkeypatch):
    """A split whose parsed records exceed CACHE_BUDGET_BYTES is not cached:
    it streams from its shards, reading a seeded permutation of the records
    at their byte offsets (only the record index in memory). The permutation
    is uniform over the whole split (not shard by shard), and a training
    fraction reads only its records."""
    import tensorflow as tf

    store = st.open_store(str(sharded_store))
    size = store.decoded_bytes("dev")
    monkeypatch.setattr(st, "CACHE_BUDGET_BYTES", size)
    assert store.training_reader("dev") == "cache"
    monkeypatch.setattr(st, "CACHE_BUDGET_BYTES", size - 1)
    assert store.training_reader("dev") == "random"
    assert st.Store("gs://bucket/store", store.manifest).training_reader("dev") == "buffer"

    paths = store.shard_paths("dev")
    reader = st.RecordReader(paths)
    in_order = [r.numpy() for r in tf.data.TFRecordDataset(paths)]
    assert len(paths) > 2 and len(reader) == 40 and list(reader(range(40))) == in_order
    assert list(reader([39, 0, 17])) == [in_order[39], in_order[0], in_order[17]]

    (features, _), = store.dataset("dev", 40)
    position = {row.tobytes(): i for i, row in enumerate(features["activations"].numpy())}

    def positions(take=None, epochs=1):
        ds = store.training_dataset("dev", 8, seed=3, steps_per_epoch=5, epochs=epochs, take_indices=take)
        return [position[row.tobytes()] for f, _ in ds for row in f["activations"].numpy()]

    stream = positions(epochs=2)
    assert sorted(stream[:40]) == sorted(stream[40:]) == list(range(40)) and stream[:40] != stream[40:]
    per_shard = int(store.manifest["splits"]["dev"]["shards"][0]["records"])
    assert len({p // per_shard for p in stream[:8]}) > 2  # one batch draws from across the split
    take = np.array([3, 5, 11, 20, 21, 30, 38, 39])
    assert sorted(positions(take)) == take.tolist()


def test_training_read_ahead_is_bounded_by_the_prefetch_budget(sharded_store, monkeypatch):
    """A reader slower than the training step (a small adapter on a sequence
    store, where a batch is megabytes), then a pause (the evaluation after
    every epoch), six times: the batches read ahead stay within
    PREFETCH_BUDGET_BYTES. Unbounded, tf.data's autotuned prefetch buffer
    doubles its limit each time the step has waited for it and fills up to
    it during every pause (GoEmotions' 4.5 GB store: ~0.8 GB more per epoch,
    up to 5.7 GB)."""
    store = st.open_store(str(sharded_store))
    batch = 4
    batch_bytes = batch * store.decoded_bytes("dev") // store.num_records("dev")
    monkeypatch.setattr(st, "PREFETCH_BUDGET_BYTES", 8 * batch_bytes)
    read = []
    records = st.RecordReader.__call__

    def slow(self, positions):  # the reader, 2 ms a record: the consumer below is always faster
        for record in records(self, positions):
            time.sleep(0.002)
            read.append(1)
            yield record

    monkeypatch.setattr(st.RecordReader, "__call__", slow)
    batches = iter(store.training_dataset("dev", batch, seed=0, steps_per_epoch=10, epochs=40, reader="random"))
    consumed, ahead = 0, []
    for _ in range(6):  # train (the reader is the bottleneck), then pause (the reader fills what is held ahead)
        for _ in range(20):
            next(batches)
        consumed += 20
        time.sleep(0.5)
        ahead.append(len(read) - batch * consumed)
    cores = len(os.sched_getaffinity(0))
    # the budget's 8 batches, plus the batch being assembled and the record parses and the read in flight
    # (without a budget: 16, 24, 40, 72, 136, 136 records ahead after the six pauses)
    assert max(ahead) <= batch * (8 + 1) + cores + 1, ahead


def test_store_size_close_to_raw_bytes(bert, shared_data, tmp_path):
    manifest = _extract(bert, tmp_path, "sst2", "dev", shared_data / "glue" / "SST-2", token_mode="cls", limit=64)
    info = manifest["splits"]["dev"]
    assert info["activation_bytes"] == 64 * 7 * 384 * 2
    assert info["bytes"] / info["activation_bytes"] < 1.02


def test_squad_store_keeps_windows_offsets_and_positions(bert, shared_data, tmp_path):
    data_dir = shared_data / "squad2"
    kw = dict(max_seq_len=128, doc_stride=64, max_query_len=32)
    manifest = _extract(bert, tmp_path, "squad_v2", "dev-v2.0.Rhine", data_dir, token_mode="sequence", limit=12,
                        layers="last2", **kw)
    assert manifest["layers"] == [5, 6]
    store = st.open_store(str(tmp_path), verify=True)
    got, starts = _read_all(store, "dev-v2.0.Rhine")
    examples = load_examples("squad_v2", "dev-v2.0.Rhine", data_dir, limit=12).examples
    feats, ref = _reference(bert, "squad_v2", examples, kw["max_seq_len"], doc_stride=64, max_query_len=32)
    assert len(starts) == len(feats.token_ids) > len(examples)  # several windows per question
    np.testing.assert_array_equal(starts, feats.start_positions)
    np.testing.assert_array_equal(got["offsets"], feats.offsets)
    np.testing.assert_array_equal(got["example_index"], feats.example_index)
    assert (got["offsets"][starts > 0] >= 0).any()
    mask = feats.padding_mask[:, None, :, None]
    np.testing.assert_allclose(got["activations"].astype(np.float32), ref[:, 5:] * mask, atol=1e-2, rtol=2e-3)
    side = store.examples("dev-v2.0.Rhine")
    assert [r["uid"] for r in side] == [e.uid for e in examples]
    assert side[0]["context"] == examples[0].texts[1]


def test_mismatched_store_and_corrupt_shard_are_refused(bert, shared_data, tmp_path):
    data_dir = shared_data / "glue" / "SST-2"
    _extract(bert, tmp_path, "sst2", "dev", data_dir, token_mode="cls", limit=20)
    with pytest.raises(st.StoreError, match="token_mode"):
        st.open_store(str(tmp_path), expect={"token_mode": "sequence"})
    with pytest.raises(st.StoreError, match="layers"):  # another split with other settings
        _extract(bert, tmp_path, "sst2", "train", data_dir, token_mode="cls", limit=20, layers="last2")
    with pytest.raises(st.StoreError, match="backbone"):
        st.open_store(str(tmp_path), expect={"backbone": {"weights_sha256": "0" * 64}})
    shard = next(tmp_path.glob("dev-*.tfrecord"))
    original = shard.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(st.StoreError, match="checksum"):
        st.open_store(str(tmp_path), verify=True)
    shard.write_bytes(original)
    text = (tmp_path / "manifest.json").read_text()
    manifest = json.loads(text)
    manifest["splits"]["dev"]["shards"][0]["records"] = 21
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(st.StoreError, match="21"):
        st.open_store(str(tmp_path), verify=True)
    (tmp_path / "manifest.json").write_text(text)
    shard.unlink()
    with pytest.raises(st.StoreError, match="missing"):
        st.open_store(str(tmp_path))


def test_not_a_store_is_refused(tmp_path):
    with pytest.raises(st.StoreError, match="manifest.json"):
        st.open_store(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(st.StoreError, match="not valid JSON"):
        st.open_store(str(tmp_path))


def _cli(*args, **popen):
    env = cli_env()
    return subprocess.Popen([sys.executable, "-m", "pipelines.extract", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _record_uids(path, split):
    store = st.open_store(str(path), verify=True)
    uids = [u.decode() for f, _ in store.dataset(split, 64, with_meta=True) for u in f["uid"].numpy()]
    return store, uids


def test_kill_9_then_resume_gives_identical_example_set(shared_data, tmp_path):
    args = ["--task", "sst2", "--data-dir", str(shared_data / "glue" / "SST-2"), "--split", "dev",
            "--tokens", "mean", "--limit", "300", "--shard-size-mb", "0.2", "--batch-size", "8", "--no-progress",
            "--no-jit"]  # XLA's compilation is tested above; here it would only add seconds to each process
    out = tmp_path / "store"
    proc = _cli(*args, "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.done"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("*.done")))
    assert 2 <= done_before < 8, "the run should be killed part-way"
    assert not (out / "manifest.json").exists()
    with pytest.raises(st.StoreError, match="no split was finalized"):
        st.open_store(str(out))
    proc = _cli(*args, "--out", str(out))
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    assert not list(out.glob("*.tmp-*")), "temporary files left behind"
    store, uids = _record_uids(out, "dev")
    assert len(uids) == len(set(uids)) == 300
    assert store.manifest["splits"]["dev"]["num_records"] == 300
    expected = [e.uid for e in load_examples("sst2", "dev", shared_data / "glue" / "SST-2", limit=300).examples]
    assert uids == expected


def test_cli_errors_are_clear(tmp_path, shared_data):
    proc = _cli("--task", "sst2", "--data-dir", str(tmp_path / "nope"), "--split", "dev", "--out", str(tmp_path / "s"))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert "error:" in stderr and "nope" in stderr
    # the same error boundary in this process (main(argv)): no second TensorFlow start-up
    code, _, stderr = run_main(extract_main, "--task", "squad_v2", "--data-dir", shared_data / "squad2", "--split",
                               "dev", "--tokens", "cls", "--out", tmp_path / "s")
    assert code == 2 and "--token-mode sequence" in stderr


def test_seeded_subset_is_reproducible_and_ordered():
    from bertvision.data.readers import seeded_subset

    items = list(range(100))
    a, b = seeded_subset(items, 10, seed=3), seeded_subset(items, 10, seed=3)
    assert a == b == sorted(a) and len(set(a)) == 10
    assert seeded_subset(items, 10, seed=4) != a
    with pytest.raises(ValueError, match="cannot sample"):
        seeded_subset(items, 101)


def test_length_sorted_batches_cover_a_shard_once():
    from bertvision.data.features import length_sorted_batches

    lengths = np.random.default_rng(0).integers(1, 129, size=300)
    batches = length_sorted_batches(lengths, np.arange(40, 250), 32)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(40, 250))
    assert all(len(b) == 32 for b in batches[:-1]) and len(batches[-1]) == 210 - 6 * 32
    assert (np.diff(lengths[rows]) >= 0).all()  # shortest first: each batch pads to little more than its rows


def test_two_identical_extractions_write_identical_bytes(bert, shared_data, tmp_path):
    """Deterministic serialization: the manifests' shard checksums tell whether two stores are the same."""
    for name in ("a", "b"):
        _extract(bert, tmp_path / name, "squad_v2", "dev-v2.0.Rhine", shared_data / "squad2",
                 token_mode="sequence", limit=6, max_seq_len=96, doc_stride=48)
    a, b = (st.open_store(str(tmp_path / n)) for n in ("a", "b"))
    shards = [[s["sha256"] for s in x.manifest["splits"]["dev-v2.0.Rhine"]["shards"]] for x in (a, b)]
    assert shards[0] == shards[1]
    for pa, pb in zip(a.shard_paths("dev-v2.0.Rhine"), b.shard_paths("dev-v2.0.Rhine")):
        assert Path(pa).read_bytes() == Path(pb).read_bytes()


def test_a_second_writer_is_refused_and_nothing_is_lost(shared_data, tmp_path):
    out = tmp_path / "store"
    args = ["--task", "sst2", "--data-dir", str(shared_data / "glue" / "SST-2"), "--split", "dev", "--token-mode",
            "cls", "--limit", "300", "--shard-size-mb", "0.3", "--batch-size", "8", "--no-progress", "--no-jit",
            "--out", str(out)]
    # deterministic: while a writer (here this process) holds the split's lock, extraction is refused, naming
    # it, and leaves the holder's files alone (it used to delete the other writer's live .tmp shard); the
    # refused command runs in this process (its main(argv): the lock is a file lock, which a second open of
    # the file cannot take, as a second process cannot); the race of two processes follows
    from bertvision import io
    from bertvision.errors import StoreError
    from bertvision.store.extract import split_lock

    live = out / "dev-00000-of-00002.tfrecord.tmp-live0001"
    with io.exclusive_lock(out, "a test holding the lock", StoreError, name=split_lock("dev")):
        plan_tmp = out / ".dev.plan.tmp-0123abcd.json"  # the holder writing its plan (atomic: renamed when done)
        plan_tmp.write_text("{")
        for stage in ("writing its plan", "writing a shard"):
            if stage == "writing a shard":
                plan_tmp.rename(out / "dev.plan.json")
                live.write_bytes(b"another writer's shard in progress")
            code, _, err = run_main(extract_main, *args)
            assert code == 2, (stage, err[-2000:])
            assert f"{out} is in use by pid {os.getpid()} (extracting dev)" in err.strip().splitlines()[-1], stage
        assert live.read_bytes() == b"another writer's shard in progress"
        live.unlink()
        (out / "dev.plan.json").unlink()
    # two writers at once, as a user starts them: one extracts, the other is refused, or (when it starts after
    # the first finished) finds the split complete; either way nothing is lost and nothing is left behind
    procs = [_cli(*args) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 2], [0, 0]), outputs
    if codes == [0, 2]:
        loser = next(err for p, (_, err) in zip(procs, outputs) if p.returncode == 2)
        last = loser.strip().splitlines()[-1]
        # "by pid N", or "by another process" when it read the lock file before the holder wrote its pid
        assert f"{out} is in use by " in last and "(extracting dev)" in last, loser[-1500:]
    assert not list(out.glob("*.tmp-*")), "temporary files left behind"
    store, uids = _record_uids(out, "dev")
    assert len(uids) == len(set(uids)) == 300


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "-4"], "--batch-size must be a positive integer, got -4"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--limit", "0"], "--limit must be a positive integer, got 0"),
    (["--max-seq-len", "2"], "max_seq_len=2 is too small"),
    (["--shard-size-mb", "0"], "--shard-size-mb must be > 0, got 0.0"),
    (["--doc-stride", "0"], "--doc-stride must be a positive integer, got 0"),
])
def test_bad_flags_are_refused_before_anything_is_written(shared_data, tmp_path, flags, message):
    out = tmp_path / "store"
    code, _, err = run_main(extract_main, "--task", "sst2", "--data-dir", shared_data / "glue" / "SST-2",
                            "--split", "dev", "--out", out, *flags)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and message in last, err[-1000:]
    assert not out.exists()


def test_out_must_be_a_store_or_a_new_folder(shared_data, tmp_path):
    (tmp_path / "file").write_text("x")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    common = ["--task", "sst2", "--data-dir", shared_data / "glue" / "SST-2", "--split", "dev", "--limit", "4"]
    code, _, err = run_main(extract_main, *common, "--out", tmp_path / "file")
    assert code == 2 and "is a file" in err
    code, _, err = run_main(extract_main, *common, "--out", mine)
    assert code == 2 and "holding other files and no store" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
