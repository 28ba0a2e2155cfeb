"""Long documents (issue 28 item 4): a sentence-level text longer than one
window is stored as windows (``pipelines.extract --doc-stride``), one record
per document, and read back as a batch of documents with a window mask.

Real data: SST-2 sentences (``../shared/data/glue/SST-2``) with a short
``--max-seq-len 16`` so that most of them span several windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertvision.data.features import Featurizer, FeaturizerConfig
from bertvision.data.readers import Example
from bertvision.data.tasks import get_task
from pipelines.extract import main as extract_main
from pipelines.fit import main as fit_main
from pipelines.predict import main as predict_main
from tests.stores import _model, run_main

SST2 = ("--split", "train=train.tsv", "--split", "test=dev.tsv", "--dev-fraction", "0.25", "--seed", "0",
        "--text-column", "sentence", "--label-column", "label", "--sample", "48", "--no-progress", "--no-jit")
WINDOWS = ("--max-seq-len", "16", "--doc-stride", "8")
CAP = 4  # the store's --max-windows: SST-2's longest sentences span up to 7 windows of 16 tokens


@pytest.fixture(scope="module")
def long_store(module_tmp, shared_data):
    """SST-2 as long documents: the real extract command, sequence tokens."""
    root = module_tmp("long")
    store = root / "store"
    code, out, err = run_main(extract_main, "--data-dir", shared_data / "glue" / "SST-2", *SST2, *WINDOWS,
                              "--max-windows", CAP, "--token-mode", "sequence", "--out", store)
    assert code == 0, err[-3000:]
    return store, out, root


@pytest.fixture(scope="module")
def long_run(long_store):
    """An adapter fit on the documents' windows (learned attention over them)."""
    store, _, root = long_store
    run = root / "run"
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "adapter_pooler", "--out", run, "--epochs",
                              "2", "--batch-size", "16", "--lr", "3e-3", "--window-pooling", "attention", "--quiet",
                              "--no-jit-compile")
    assert code == 0, err[-3000:]
    return store, run, root


# ------------------------------------------------------------------ windows


def test_featurizer_windows_cover_a_long_text_and_short_ones_stay_one_row():
    _, tokenizer = _model()
    featurizer = Featurizer(tokenizer, max_seq_len=16, doc_stride=8, windows=True)
    text = "the film is a gorgeous , witty , seductive movie that lingers in the mind long after the credits roll ."
    examples = [Example(uid="long", texts=(text,), label=1), Example(uid="short", texts=("a gem",), label=1)]
    f = featurizer.encode(get_task("sst2"), examples)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = featurizer.token_windows(len(ids))  # capacity 14, step min(8, 7) = 7
    assert windows[0] == (0, 14) and all(b[0] - a[0] == 7 for a, b in zip(windows, windows[1:]))
    assert f.example_index.tolist() == [0] * len(windows) + [1]
    for row, (first, end) in enumerate(windows):  # [CLS] the window's sub-words [SEP], padded
        n = end - first
        assert f.token_ids[row, 1:1 + n].tolist() == ids[first:end]
        assert f.token_ids[row, 0] == tokenizer.cls_token_id and f.token_ids[row, 1 + n] == tokenizer.sep_token_id
        assert f.padding_mask[row].sum() == n + 2
    assert f.record_bounds(windows=True).tolist() == [0, len(windows), len(windows) + 1]
    # without windows the same text is truncated to one row, as before
    assert len(Featurizer(tokenizer, max_seq_len=16).encode(get_task("sst2"), examples)) == 2
    assert len(windows) >= 3
    # --max-windows: a text keeps its first windows, and is named as cut
    capped = Featurizer(tokenizer, max_seq_len=16, doc_stride=8, windows=True, max_windows=2).encode(
        get_task("sst2"), examples)
    assert np.array_equal(capped.token_ids, f.token_ids[[0, 1, len(windows)]])
    assert capped.cut_examples.tolist() == [0] and f.cut_examples.tolist() == []
    assert capped.select(slice(0, 2)).cut_examples is None  # not a row field


def test_featurizer_config_without_windows_reads_as_before():
    assert FeaturizerConfig(max_seq_len=64).to_dict() == {"max_seq_len": 64, "doc_stride": 128, "max_query_len": 64}
    config = FeaturizerConfig.from_dict({"max_seq_len": 16, "doc_stride": 8, "windows": True})
    assert config.to_dict()["windows"] is True
    assert config.max_windows == 32  # a store from before the cap reads with the default
    with pytest.raises(Exception, match="windows"):
        FeaturizerConfig(windows="yes")
    for bad in (0, -1, True, 2.5):
        with pytest.raises(Exception, match="max_windows"):
            FeaturizerConfig(windows=True, max_windows=bad)


def test_windows_refuse_a_pair_task():
    _, tokenizer = _model()
    featurizer = Featurizer(tokenizer, max_seq_len=16, doc_stride=8, windows=True)
    with pytest.raises(Exception, match="sentence-pair"):
        featurizer.encode(get_task("mrpc"), [Example(uid="a", texts=("one", "two"), label=0)])


# ------------------------------------------------------------------ the store


def test_extract_stores_one_record_per_document(long_store):
    store_dir, out, _ = long_store
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert manifest["featurizer"] == {"max_seq_len": 16, "doc_stride": 8, "windows": True, "max_windows": CAP}
    _, tokenizer = _model()
    featurizer = Featurizer(tokenizer, max_seq_len=16, doc_stride=8)
    for split in ("train", "dev", "test"):
        info = manifest["splits"][split]
        assert info["num_records"] == info["num_examples"] and 3 <= info["max_windows"] <= CAP
        texts = [json.loads(line)["texts"][0] for line in (store_dir / f"{split}.examples.jsonl").open()]
        n_windows = [len(featurizer.token_windows(len(tokenizer(t, add_special_tokens=False)["input_ids"])))
                     for t in texts]  # without the cap
        assert info["truncated_documents"] == sum(n > CAP for n in n_windows)
        assert f"{split}: {info['truncated_documents']} document(s) longer than {CAP} windows" in out
    assert "documents (up to" in out
    assert sum(manifest["splits"][s]["truncated_documents"] for s in ("train", "dev", "test")) > 0

    from bertvision.store.format import open_store

    store = open_store(str(store_dir), verify=True)
    assert store.windowed and store.adapter_fields()["windows"]
    assert store.signature()["windows"] == {"doc_stride": 8, "max_windows": CAP}
    features, labels = next(iter(store.dataset("test", 8, with_meta=True)))
    acts, windows, mask = features["activations"], features["window_mask"], features["padding_mask"]
    assert acts.shape[:2] == windows.shape and mask.shape == acts.shape[:2] + acts.shape[3:4]
    assert labels.shape == (8,) and windows.shape[1] == int(windows.numpy().sum(axis=1).max())
    assert np.array_equal(windows.numpy(), (mask.numpy().sum(axis=2) > 0).astype(np.int32))


def test_stored_windows_are_the_backbones_activations_of_each_window(long_store):
    """A document's record holds, window by window, what the backbone gives
    for the featurizer's windows of its text (the examples file's)."""
    store_dir, _, _ = long_store
    from bertvision.models.backbone import AllLayersEncoder
    from bertvision.store.format import open_store

    store = open_store(str(store_dir))
    rows = store.examples("test")
    features, _ = next(iter(store.dataset("test", 4, with_meta=True)))
    backbone, tokenizer = _model()
    encoder = AllLayersEncoder(backbone, store.layers, "sequence", "float16", jit_compile=False)
    featurizer = Featurizer(tokenizer, **store.featurizer)
    for d in range(4):
        example = Example(uid=rows[d]["uid"], texts=tuple(rows[d]["texts"]), label=rows[d]["label"])
        f = featurizer.encode(store.task_spec, [example])
        want = np.asarray(encoder(f.inputs()), np.float32)  # [windows, K, T, H]
        have = features["activations"].numpy()[d].astype(np.float32)
        assert int(features["window_mask"].numpy()[d].sum()) == len(f)
        for w in range(len(f)):
            n = int(f.padding_mask[w].sum())
            assert np.allclose(have[w, :, :n], want[w, :, :n], atol=2e-2)
            assert not have[w, :, n:].any()


def test_cls_store_of_documents_and_int8(module_tmp, shared_data):
    """cls (vector) stores and int8 stores keep a document's windows too."""
    store_dir = module_tmp("cls") / "store"
    code, out, err = run_main(extract_main, "--data-dir", shared_data / "glue" / "SST-2", "--split", "train=dev.tsv",
                              "--text-column", "sentence", "--label-column", "label", "--limit", "12",
                              "--no-progress", "--no-jit", *WINDOWS, "--token-mode", "cls", "--dtype", "int8",
                              "--out", store_dir)
    assert code == 0, err[-3000:]
    from bertvision.store.format import open_store

    store = open_store(str(store_dir), verify=True)
    features, labels = next(iter(store.dataset("train", 12)))
    acts, windows = features["activations"].numpy(), features["window_mask"].numpy()
    assert acts.shape == (12, windows.shape[1], 7, 384) and "padding_mask" not in features
    assert np.abs(acts[windows == 0]).max() == 0 and np.abs(acts[windows == 1]).max(axis=(-2, -1)).min() > 0
    assert (windows.sum(axis=1) > 1).sum() >= 6  # real sentences span several windows of 16 tokens


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("extra, message", [
    (("--max-seq-len", "16", "--doc-stride", "16"), "--doc-stride 16 must be less than --max-seq-len 16"),
    (("--max-seq-len", "16", "--doc-stride", "8", "--text-pair-column", "sentence"), "text pair"),
    (("--max-seq-len", "16", "--doc-stride", "8", "--max-windows", "0"), "--max-windows must be a positive integer, got 0"),
    (("--max-windows", "4",), "--max-windows 4 caps a long document's windows; it needs --doc-stride"),
])
def test_bad_doc_stride_is_one_line_and_leaves_no_folder(tmp_path, shared_data, extra, message):
    out_dir = tmp_path / "NEW"
    code, out, err = run_main(extract_main, "--data-dir", shared_data / "glue" / "SST-2", "--split", "train=dev.tsv",
                              "--text-column", "sentence", "--label-column", "label", "--limit", "4",
                              "--no-progress", *extra, "--out", out_dir)
    assert code == 2 and message in err, err[-2000:]
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not out_dir.exists()


# ------------------------------------------------------------------ pooling a document's windows


def test_window_layers_merge_split_and_pool_with_the_mask():
    import keras

    from bertvision.models.layers import WINDOW_POOLING_LAYERS, MergeWindows, SplitWindows

    rng = np.random.default_rng(0)
    docs = rng.normal(size=(2, 3, 4)).astype("float32")  # 2 documents, up to 3 windows, 4 features
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.int32)
    merged = MergeWindows()(docs)
    assert merged.shape == (6, 4) and np.allclose(merged, docs.reshape(6, 4))
    split = np.asarray(SplitWindows()([merged, mask]))
    assert np.allclose(split[mask == 1], docs[mask == 1]) and not split[mask == 0].any()
    mean = np.asarray(WINDOW_POOLING_LAYERS["mean"]()(split, padding_mask=mask))
    assert np.allclose(mean, [docs[0, :2].mean(axis=0), docs[1, 0]], atol=1e-6)
    big = split.copy()
    big[mask == 0] = 1e6  # a padded window never wins the max, whatever it holds
    top = np.asarray(WINDOW_POOLING_LAYERS["max"]()(big, padding_mask=mask))
    assert np.allclose(top, [docs[0, :2].max(axis=0), docs[1, 0]], atol=1e-6)
    attention = WINDOW_POOLING_LAYERS["attention"]()
    assert np.allclose(attention(big, padding_mask=mask)[1], docs[1, 0], atol=1e-5)  # one real window: itself
    query = np.array([1.0, -2.0, 0.5, 0.0], np.float32)
    attention.set_weights([query])
    scores = docs[0, :2] @ query
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    assert np.allclose(attention(big, padding_mask=mask)[0], weights @ docs[0, :2], atol=1e-5)
    for layer in (MergeWindows(name="m"), SplitWindows(name="s")):
        assert type(layer).from_config(layer.get_config()).name == layer.name
    assert keras.saving.get_registered_object("bertvision>SplitWindows") is SplitWindows


@pytest.mark.parametrize("seq", [False, True])
def test_windowed_model_pools_the_encoders_features_of_the_real_windows(seq, tmp_path):
    """A windowed adapter equals its window encoder run on each real window,
    mean-pooled, then the head; padded windows change nothing; save/load
    keeps it."""
    import keras

    from bertvision.models import ModelConfig, build_model

    config = ModelConfig(kind="adapter_pooler", num_labels=3, num_layers=3, hidden=8, adapter_dim=4, dropout=0.0,
                         max_seq_len=8 if seq else None, windows=True, window_pooling="mean")
    model = build_model(config)
    rng = np.random.default_rng(1)
    shape = (2, 3, 3, 5, 8) if seq else (2, 3, 3, 8)
    acts = rng.normal(size=shape).astype("float16")
    window_mask = np.array([[1, 1, 1], [1, 0, 0]], np.int32)
    inputs = {"activations": acts, "window_mask": window_mask}
    if seq:
        inputs["padding_mask"] = np.array([[[1] * 5, [1] * 5, [1, 1, 1, 0, 0]], [[1] * 4 + [0], [0] * 5, [0] * 5]],
                                          np.int32)
    out = np.asarray(model(inputs))
    encoder, head = model.get_layer("window_encoder"), model.get_layer("head")
    for d, n in enumerate(window_mask.sum(axis=1)):
        args = [acts[d, :n]] + ([inputs["padding_mask"][d, :n]] if seq else [])
        want = head(np.asarray(encoder(args)).mean(axis=0, keepdims=True))
        assert np.allclose(out[d], np.asarray(want)[0], atol=1e-4)
    noisy = dict(inputs, activations=np.where(window_mask[(...,) + (None,) * (acts.ndim - 2)] == 1, acts,
                                              np.float16(7)))
    assert np.allclose(np.asarray(model(noisy)), out, atol=1e-4)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert np.allclose(np.asarray(again(inputs)), out, atol=1e-5)


def test_windows_config_is_for_sentence_level_tasks_of_one_text():
    from bertvision.errors import ConfigError
    from bertvision.models import ModelConfig

    with pytest.raises(ConfigError, match="windows"):
        ModelConfig(task_kind="span", max_seq_len=32, windows=True)
    with pytest.raises(ConfigError, match="--window-pooling"):
        ModelConfig(window_pooling="median")
    with pytest.raises(ConfigError, match="--window-pooling max pools a long document's windows"):
        ModelConfig(window_pooling="max")  # a store without windows
    assert ModelConfig(windows=True).input_shape == (None, 7, 384)


# ------------------------------------------------------------------ fit, predict, serve


def test_fit_and_predict_count_documents_and_metrics_equal_the_predictions_file(long_run):
    from sklearn import metrics as skm

    from bertvision.runs import RunFolder

    store, run, root = long_run
    results = RunFolder(run).results()
    assert results.store_signature["windows"] == {"doc_stride": 8, "max_windows": CAP}
    config = json.loads((run / "config.json").read_text())["adapter"]
    assert config["windows"] is True and config["window_pooling"] == "attention"
    manifest = json.loads((store / "manifest.json").read_text())
    assert results.train_records == results.train_examples == manifest["splits"]["train"]["num_examples"] == 48
    out_file = root / "test.jsonl"
    code, out, err = run_main(predict_main, "--run", run, "--split", "test", "--out", out_file)
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == manifest["splits"]["test"]["num_examples"] == 48  # one row per document
    assert len({r["id"] for r in rows}) == 48
    printed = json.loads(out.strip().splitlines()[-1])
    pred, gold = [r["label"] for r in rows], [r["gold"] for r in rows]
    assert printed["accuracy"] == round(skm.accuracy_score(gold, pred), 4)
    assert printed["macro_f1"] == round(skm.f1_score(gold, pred, average="macro", zero_division=0), 4)


def test_predict_text_longer_than_one_window(long_run):
    _, run, _ = long_run
    text = ("it 's a charming and often affecting journey that , for all its length and its many detours through "
            "the lives of its characters , never once loses sight of what it wants to say .")
    _, tokenizer = _model()
    assert len(tokenizer(text)["input_ids"]) > 2 * 16  # 38 sub-words: 5 windows of 14, 7 apart
    code, out, err = run_main(predict_main, "--run", run, "--text", text)
    assert code == 0, err[-3000:]
    (answer,) = json.loads(out).values()
    assert answer["label"] in ("0", "1") and abs(sum(answer["probabilities"].values()) - 1) < 1e-4


def test_a_text_beyond_the_cap_predicts_as_its_first_windows(long_run):
    """--max-windows at inference: a text of more than CAP windows gives the
    prediction of its prefix that fills exactly CAP windows (the cap is read
    from the run's store), and the store keeps exactly CAP windows of such a
    document."""
    store_dir, run, _ = long_run
    _, tokenizer = _model()
    text = ("it 's a charming and often affecting journey that , for all its length and its many detours through "
            "the lives of its characters , never once loses sight of what it wants to say , and it says it well .")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    featurizer = Featurizer(tokenizer, max_seq_len=16, doc_stride=8)
    windows = featurizer.token_windows(len(enc["input_ids"]))
    assert len(windows) > CAP + 1
    prefix = text[:enc["offset_mapping"][windows[CAP - 1][1] - 1][1]]  # the text of the first CAP windows
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    assert prefix_ids == enc["input_ids"][:windows[CAP - 1][1]]
    assert len(featurizer.token_windows(len(prefix_ids))) == CAP
    answers, notes = [], []
    for t in (text, prefix, text[:len(prefix) // 2]):
        code, out, err = run_main(predict_main, "--run", run, "--text", t)
        assert code == 0, err[-3000:]
        (answer,) = json.loads(out).values()
        answers.append(answer)
        notes.append([line for line in err.splitlines() if line.startswith("note:")])
    assert answers[0] == answers[1]
    assert notes[0] == [f"note: SST-2: 1 of 1 text(s) longer than {CAP} windows of 16 tokens; their "
                        f"first {CAP} windows were read (the store's --max-windows)"] and notes[1] == notes[2] == []
    assert answers[2]["probabilities"] != answers[0]["probabilities"]  # the cut is what makes them equal

    from bertvision.store.format import open_store

    store = open_store(str(store_dir))
    split = next(s for s in ("test", "dev", "train") if store.manifest["splits"][s]["truncated_documents"])
    rows = store.examples(split)
    n_windows = [len(featurizer.token_windows(len(tokenizer(r["texts"][0], add_special_tokens=False)["input_ids"])))
                 for r in rows]
    kept = np.concatenate([f["window_mask"].numpy().sum(axis=1)
                           for f, _ in store.dataset(split, 16, with_meta=True)])
    assert kept.tolist() == [min(n, CAP) for n in n_windows] and CAP in kept.tolist()


def test_serving_splits_documents_as_the_store_did(long_run, capsys):
    """The server's predictor (raw text, windows gathered per document, one
    forward pass for a batch of documents) gives what predicting the store's
    records gives."""
    from bertvision.data.readers import Example
    from bertvision.inference.predict import predict_run
    from bertvision.inference.serving import Predictor

    store, run, _ = long_run
    from bertvision.store.format import open_store

    rows = open_store(str(store)).examples("test")
    examples = [Example(uid=r["uid"], texts=tuple(r["texts"]), label=r["label"]) for r in rows]
    predictor = Predictor.from_runs([str(run)])
    (name,) = predictor.names
    served = predictor.predict_examples(name, examples, split="test", batch_size=16)
    stored = predict_run(run, str(store), "test")
    assert served.uids.tolist() == stored.uids.tolist()
    assert np.allclose(served.probabilities, stored.probabilities, atol=2e-3)
    # a small batch bounds the windows of one forward pass too (whole documents, at most CAP + 1 rows here)
    jobs = predictor.encode_batches(name, examples, CAP + 1)
    assert all(job.rows <= CAP + 1 for job in jobs) and [e.uid for j in jobs for e in j.examples] == served.uids.tolist()
    assert len(jobs) > len(examples) / (CAP + 1) and any(len(job.examples) > 1 for job in jobs)
    group = predictor.groups[predictor.model(name).group]
    group.forward_passes = group.rows_forwarded = 0
    capsys.readouterr()
    small = predictor.predict_examples(name, examples, split="test", batch_size=CAP + 1)
    cut = open_store(str(store)).manifest["splits"]["test"]["truncated_documents"]
    assert cut > 0 and f"note: {name}: {cut} of {len(examples)} text(s) longer than {CAP} windows" in \
        capsys.readouterr().err  # counted over the parts of the split batches too
    assert group.forward_passes == len(jobs) and group.rows_forwarded == sum(job.rows for job in jobs)
    assert small.uids.tolist() == served.uids.tolist()
    assert np.allclose(small.probabilities, served.probabilities, atol=1e-4)
    result = predictor.predict({name: [rows[0]["texts"][0], "short"]})[name]
    assert [r["id"] for r in result] == ["0", "1"]
    assert np.isclose(result[0]["probabilities"][result[0]["label"]], stored.probabilities[0].max(), atol=2e-3)


def test_serve_over_http_answers_one_prediction_per_document(long_run, tmp_path):
    """``python -m pipelines.serve`` on loopback: a batch of documents, some
    many windows long, gets one answer each, equal to the store's
    predictions; with ``--max-batch-size`` below their windows the request
    goes through in parts of whole documents, no pass over the limit."""
    from bertvision.inference.predict import predict_run
    from bertvision.store.format import open_store
    from tests.test_serve_http import Server

    store, run, _ = long_run
    opened = open_store(str(store))
    rows = opened.examples("test")[:6]
    stored = predict_run(run, str(store), "test")
    windows = len(Featurizer(_model()[1], **opened.featurizer).encode(
        opened.task_spec, [Example(uid=str(d), texts=tuple(r["texts"])) for d, r in enumerate(rows)]))
    assert windows > CAP + 1
    server = Server(["--run", f"docs={run}", "--max-wait-ms", "50", "--max-batch-size", str(CAP + 1)],
                    tmp_path).start()
    try:
        status, answer = server.predict({"task": "docs", "inputs": [r["texts"][0] for r in rows]})
        assert status == 200, answer
        results = answer["results"]["docs"]
        assert [r["id"] for r in results] == [str(d) for d in range(len(rows))]
        for d, result in enumerate(results):
            assert result["label"] == stored.records()[d]["label"]
            assert np.isclose(result["probabilities"][result["label"]], stored.probabilities[d].max(), atol=2e-3)
        status, stats = server.request("GET", "/v1/stats")
        (passes,), (forwarded,) = stats["forward_passes"].values(), stats["rows_forwarded"].values()
        assert stats["requests"] == passes == stats["batches"] > 1  # one pass per part (after the warm-up's)
        assert stats["rows"] == windows and passes >= -(-windows // (CAP + 1)) and forwarded <= windows
        status, models = server.request("GET", "/v1/models")
        assert models["tasks"][0]["featurizer"]["windows"] is True
    finally:
        server.stop()


def test_multi_label_documents_choose_thresholds_per_document(module_tmp, shared_data):
    """GoEmotions comments (real texts and labels) as documents of 12-token
    windows: a multi-label head over max-pooled windows, its thresholds and
    metrics over documents."""
    from bertvision.runs import RunFolder

    root, go = module_tmp("goemotions"), shared_data / "goemotions"
    store, run = root / "store", root / "run"
    code, out, err = run_main(extract_main, "--data-dir", go, "--split", "train=train.tsv", "--split", "dev=dev.tsv",
                              "--no-header", "--text-column", "0", "--label-column", "1", "--id-column", "2",
                              "--kind", "multi_label", "--label-names", go / "labels.txt", "--sample", "32",
                              "--token-mode", "mean", "--max-seq-len", "12", "--doc-stride", "4", "--out", store,
                              "--no-progress", "--no-jit")
    assert code == 0, err[-3000:]
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["splits"]["dev"]["num_records"] == 32 and manifest["splits"]["dev"]["max_windows"] >= 3
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "scalar_mix", "--out", run, "--epochs", "1",
                              "--batch-size", "8", "--lr", "1e-2", "--window-pooling", "max", "--quiet",
                              "--no-jit-compile")
    assert code == 0, err[-3000:]
    results = RunFolder(run).results()
    assert len(results.thresholds) == 28 and results.train_examples == 32
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(results.dev_metrics)


def test_export_refuses_a_long_document_run_before_writing(long_run, tmp_path):
    from bertvision.errors import ServeError
    from bertvision.inference.export import export_runs

    _, run, _ = long_run
    with pytest.raises(ServeError, match="long documents stored as windows"):
        export_runs([str(run)], str(tmp_path / "exported"))
    assert not (tmp_path / "exported").exists()


# ------------------------------------------------------------------ the rest of the tool on windowed runs


@pytest.fixture(scope="module")
def second_run(long_store):
    """A second adapter on the same documents: scalar_mix, max over windows."""
    store, _, root = long_store
    run = root / "run_max"
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "scalar_mix", "--out", run, "--epochs", "1",
                              "--batch-size", "16", "--lr", "1e-2", "--window-pooling", "max", "--quiet",
                              "--no-jit-compile")
    assert code == 0, err[-3000:]
    return run


def test_ensemble_of_two_windowed_runs_averages_their_documents(long_run, second_run):
    """``pipelines.ensemble`` of two long-document runs: one row per document,
    the mean of what each run predicts from the store, metrics over documents."""
    from sklearn import metrics as skm

    from bertvision.inference.predict import predict_run
    from bertvision.runs import RunFolder
    from pipelines.ensemble import main as ensemble_main

    store, run, root = long_run
    out = root / "ensemble"
    code, printed, err = run_main(ensemble_main, "--runs", run, second_run, "--split", "test", "--out", out)
    assert code == 0, err[-3000:]
    members = [predict_run(r, str(store), "test") for r in (run, second_run)]
    ensembled = RunFolder(out).load_predictions("test")
    assert len(ensembled.uids) == 48 and ensembled.uids.tolist() == members[0].uids.tolist()
    assert np.allclose(ensembled.probabilities, (members[0].probabilities + members[1].probabilities) / 2, atol=1e-5)
    metrics = json.loads(printed.strip().splitlines()[-1])
    assert np.isclose(metrics["accuracy"], skm.accuracy_score(ensembled.labels, ensembled.probabilities.argmax(1)))
    results = RunFolder(out).results()
    assert results.run_type == "ensemble" and results.dev_metrics["accuracy"] == metrics["accuracy"]


def test_report_on_windowed_runs_names_their_window_pooling(long_run, second_run, tmp_path):
    import csv

    from pipelines.report import main as report_main

    _, run, _ = long_run
    out = tmp_path / "report"
    code, printed, err = run_main(report_main, run, second_run, "--out", out, "--formats", "html")
    assert code == 0, err[-3000:]
    assert "confusion_matrix" in printed and "per_class_f1" in printed
    rows = {Path(r["run_dir"]).name: r for r in csv.DictReader((out / "summary.csv").open())}
    assert rows["run"]["window_pooling"] == "attention" and rows["run_max"]["window_pooling"] == "max"
    assert "| window_pooling |" in (out / "summary.md").read_text()


def test_search_on_windowed_store_searches_the_window_pooling(long_store, tmp_path):
    """``tuning.search`` on a store of documents: every trial pools windows,
    the pooling is a searched hyperparameter, and the best retrain keeps it."""
    import csv

    from bertvision.runs import RunFolder
    from tuning.search import main as search_main

    store, _, _ = long_store
    out = tmp_path / "search"
    code, printed, err = run_main(search_main, "--store", store, "--out", out, "--max-trials", "3", "--epochs", "1",
                                  "--kinds", "scalar_mix", "--window-poolings", "max,attention", "--batch-sizes",
                                  "16", "--no-jit-compile", "--quiet")
    assert code == 0, err[-3000:]
    trials = list(csv.DictReader((out / "trials.csv").open()))
    assert len(trials) == 3 and {t["window_pooling"] for t in trials} <= {"max", "attention"}
    record = json.loads((out / "search.json").read_text())
    best = record["best_hyperparameters"]
    adapter = json.loads((out / "best" / "config.json").read_text())["adapter"]
    assert adapter["windows"] is True and adapter["window_pooling"] == best["window_pooling"]
    assert RunFolder(out / "best").results().train_examples == 48  # documents


def test_search_refuses_window_poolings_on_a_store_without_windows(module_tmp, shared_data, tmp_path):
    from tuning.search import main as search_main

    store = module_tmp("plain") / "store"
    code, _, err = run_main(extract_main, "--data-dir", shared_data / "glue" / "SST-2", "--split", "train=dev.tsv",
                            "--text-column", "sentence", "--label-column", "label", "--limit", "8",
                            "--no-progress", "--no-jit", "--out", store)
    assert code == 0, err[-3000:]
    out = tmp_path / "search"
    code, _, err = run_main(search_main, "--store", store, "--out", out, "--window-poolings", "max", "--eval-split",
                            "train", "--quiet")
    assert code == 2 and "--window-poolings searches how a long document's windows are pooled" in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_finetune_refuses_a_windowed_store_in_one_line(long_store, tmp_path):
    from pipelines.finetune import main as finetune_main

    store, _, _ = long_store
    out = tmp_path / "ft"
    code, _, err = run_main(finetune_main, "--store", store, "--out", out, "--epochs", "0.5", "--no-progress")
    assert code == 2, err[-2000:]
    assert len(err.strip().splitlines()) == 1
    assert f"{store} keeps long documents as windows" in err and "pipelines.fit" in err
    assert not out.exists()
