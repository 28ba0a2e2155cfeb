"""Sentence pairs encoded separately (``--pair-mode separate``) on real MRPC:
the store holds each text's own activations, adapters train and predict on
it, serving gives predict-from-a-store's outputs (sharing rows with one-text
tasks), the zero-shot cosine baseline, and the commands end to end."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from bertvision.models.backbone import AllLayersEncoder
from bertvision.data.readers import Example
from bertvision.errors import ConfigError, RunError, ServeError, StoreError
from bertvision.inference.export import export_runs
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.training.fit import FitConfig, fit
from bertvision.metrics import compute_metrics
from bertvision.inference.cosine import best_threshold, cosine_baseline, pair_cosines
from bertvision.inference.predict import predict_run
from bertvision.runs import RunFolder
from bertvision.inference.serving import Predictor
from bertvision.store.format import open_store
from tests.serving_runs import mrpc_store, sst2_mean_store  # noqa: F401
from pipelines.extract import main as extract_main
from tests.stores import _model, mrpc_separate_store, run_main, run_pipeline  # noqa: F401


@pytest.fixture(scope="module")
def pair_run(mrpc_separate_store, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("pairs") / "mrpc-separate-pooler"
    fit(FitConfig(store=mrpc_separate_store, out=str(out), adapter={"kind": "adapter_pooler"}, epochs=2,
                  batch_size=16, seed=0, verbose=0))
    return out


def test_store_holds_each_text_encoded_alone(mrpc_separate_store):  # noqa: F811
    store = open_store(mrpc_separate_store, verify=True)
    assert store.pair_mode == "separate" and store.example_shape == [2, 7, 384]
    assert store.num_records("train") == store.num_examples("train") == 48  # one record per pair
    assert store.signature()["pair_mode"] == "separate"
    rows = store.examples("dev")[:6]
    features, labels = next(iter(store.dataset("dev", 6)))
    acts = features["activations"].numpy()
    assert acts.shape == (6, 2, 7, 384) and acts.dtype == np.float16
    assert labels.numpy().tolist() == [r["label"] for r in rows]
    # side k of record i = the backbone's masked mean over text k of pair i encoded on its own
    backbone, tokenizer = _model()
    featurizer = ExtractConfig(task="sst2", split="dev", out="unused", max_seq_len=64).featurizer(tokenizer)
    alone = featurizer.encode("sst2", [Example(f"{r['uid']}-{k}", (r["texts"][k],), 0) for r in rows for k in (0, 1)])
    encoder = AllLayersEncoder(backbone, list(range(7)), "mean", "float32", False)
    want = encoder(alone.inputs()).numpy().reshape(6, 2, 7, 384)
    np.testing.assert_allclose(acts.astype(np.float32), want, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("edit,message", [({"pair_mode": "cross"}, "example_shape=[2, 7, 384] does not agree"),
                                          ({"pair_mode": "both"}, "pair_mode='both' is not valid"),
                                          ({"example_shape": [7, 384]}, "expected [2, 7, 384]")])
def test_a_manifest_contradicting_its_pair_mode_is_refused(mrpc_separate_store, tmp_path, edit, message):  # noqa: F811
    copy = tmp_path / "store"
    shutil.copytree(mrpc_separate_store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, **edit}))
    with pytest.raises(StoreError, match=re.escape(message)):
        open_store(str(copy))


def test_settings_that_cannot_work_are_refused(mrpc_separate_store, shared_data):  # noqa: F811
    with pytest.raises(ConfigError, match="not a sentence-pair task"):
        ExtractConfig(task="sst2", split="dev", out="x", pair_mode="separate", token_mode="mean")
    with pytest.raises(ConfigError, match="--token-mode mean or cls, not sequence"):
        ExtractConfig(task="mrpc", split="dev", out="x", pair_mode="separate", token_mode="sequence")
    # a cross-encoded split is not written into a separate store
    config = ExtractConfig(task="mrpc", split="test", out=mrpc_separate_store, token_mode="mean", max_seq_len=64,
                           data_dir=str(shared_data / "glue" / "MRPC"), limit=8, progress=False)
    backbone, tokenizer = _model()
    with pytest.raises(StoreError, match='pair_mode="separate" but this run uses pair_mode="cross"'):
        Extractor(config, backbone=backbone, tokenizer=tokenizer).run()


def test_adapter_trains_and_predicts_from_the_store(pair_run, mrpc_separate_store, mrpc_store):  # noqa: F811
    results = RunFolder(pair_run).results()
    assert results.store_signature["pair_mode"] == "separate"
    assert json.loads((pair_run / "config.json").read_text())["adapter"]["pair_mode"] == "separate"
    stored = RunFolder(pair_run).load_predictions("dev")
    again = predict_run(pair_run, mrpc_separate_store, "dev")
    np.testing.assert_allclose(again.probabilities, stored.probabilities, atol=1e-6)
    assert again.evaluate() == pytest.approx(results.dev_metrics)
    with pytest.raises(RunError, match="pair_mode: run \"separate\", store null"):
        predict_run(pair_run, mrpc_store, "dev")  # a cross-encoded store


def test_served_like_the_store_and_rows_shared_with_one_text_tasks(pair_run, mrpc_separate_store,  # noqa: F811
                                                                   sst2_mean_store, tmp_path):  # noqa: F811
    sst2_run = tmp_path / "sst2-scalar-mix"
    fit(FitConfig(store=sst2_mean_store, out=str(sst2_run), adapter={"kind": "scalar_mix"}, epochs=1,
                  batch_size=16, seed=0, verbose=0))
    predictor = Predictor.from_runs([("mrpc", str(pair_run)), ("sst2", str(sst2_run))])
    assert predictor.model("mrpc").info()["pair_mode"] == "separate"
    store = open_store(mrpc_separate_store)
    examples = [Example(r["uid"], tuple(r["texts"]), r["label"]) for r in store.examples("dev")]
    served = predictor.predict_examples("mrpc", examples, split="dev", batch_size=20)
    stored = RunFolder(pair_run).load_predictions("dev")
    assert list(served.uids) == list(stored.uids)
    np.testing.assert_allclose(served.probabilities, stored.probabilities, atol=2e-3)
    # one forward pass for both tasks: a pair's texts are rows of their own, shared with a one-text
    # input of the same text (both stores tokenized to 64)
    before = predictor.stats()
    out = predictor.predict({"sst2": ["a gorgeous, witty film"],
                             "mrpc": [{"text": "a gorgeous, witty film", "text_pair": "The film was witty."}]})
    after = predictor.stats()
    group = predictor.model("mrpc").group
    assert after["forward_passes"][group] - before["forward_passes"][group] == 1
    assert after["rows_forwarded"][group] - before["rows_forwarded"][group] == 2
    assert out["mrpc"][0]["label"] in ("equivalent", "not_equivalent") and len(out["mrpc"]) == 1
    with pytest.raises(ServeError, match="pair-mode separate"):
        export_runs([str(pair_run)], str(tmp_path / "export"), predictor=predictor)


def test_cosine_baseline_threshold_from_train_only(mrpc_separate_store, mrpc_store):  # noqa: F811
    store = open_store(mrpc_separate_store)
    result = cosine_baseline(store, "train", "dev")
    train_cos, train_y = pair_cosines(store, "train")
    dev_cos, dev_y = pair_cosines(store, "dev")
    assert train_cos.shape == (48,) and np.all(np.abs(dev_cos) <= 1 + 1e-6)
    # the threshold is the best on train; dev is scored with it, not tuned on it
    assert (result.threshold, result.positive_label == "equivalent") == \
        (best_threshold(train_cos, train_y, "f1")[0], True)
    pred = (dev_cos >= result.threshold).astype(int)
    assert result.metrics == pytest.approx(compute_metrics(["accuracy", "f1"], pred, dev_y))
    assert result.fit_metrics["f1"] >= compute_metrics(["f1"], (train_cos >= np.median(train_cos)).astype(int),
                                                       train_y)["f1"]
    with pytest.raises(ConfigError, match="--pair-mode separate"):
        cosine_baseline(open_store(mrpc_store), "train", "dev")


def test_fit_adapter_cosine_is_the_baseline_as_a_run(mrpc_separate_store, mrpc_store, tmp_path):  # noqa: F811
    from pipelines.fit import main as fit_main

    code, out, err = run_main(fit_main, "--store", mrpc_separate_store, "--adapter", "cosine", "--out",
                              tmp_path / "cos", "--quiet", "--no-jit-compile")
    assert code == 0, err[-2000:]
    baseline = cosine_baseline(open_store(mrpc_separate_store), "train", "dev")
    results = RunFolder(tmp_path / "cos").results()
    assert results.method == "cosine" and results.trainable_params == 0 and results.history == []
    assert results.dev_metrics["f1"] == pytest.approx(baseline.metrics["f1"])
    assert results.dev_metrics["accuracy"] == pytest.approx(baseline.metrics["accuracy"])
    hp = results.hyperparameters
    assert (hp["threshold"], hp["positive_label"], hp["threshold_chosen_on"]) == \
        (pytest.approx(baseline.threshold), baseline.positive_label, "train")
    assert "zero-shot, no training, threshold" in out and "chosen on train" in out
    # the saved model predicts the baseline's decision: predict from the run gives the same metrics
    again = predict_run(str(tmp_path / "cos"), mrpc_separate_store, "dev")
    assert again.evaluate()["f1"] == pytest.approx(baseline.metrics["f1"])
    code, out, err = run_main(fit_main, "--store", mrpc_store, "--adapter", "cosine", "--out", tmp_path / "no")
    assert code == 2 and "--adapter cosine scores a separately encoded pair" in err
    assert not (tmp_path / "no").exists()


def test_best_threshold_finds_the_separating_cut_and_its_direction():
    cos = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    threshold, positive = best_threshold(cos, np.array([0, 0, 0, 1, 1, 1]), "accuracy")
    assert 0.3 < threshold <= 0.7 and positive == 1
    threshold, positive = best_threshold(cos, np.array([1, 1, 1, 0, 0, 0]), "accuracy")
    assert 0.3 < threshold <= 0.7 and positive == 0  # high cosine means class 0 here
    with pytest.raises(ConfigError, match="no labelled records"):
        best_threshold(cos, -np.ones(6, int), "accuracy")


def test_commands_end_to_end(shared_data, tmp_path):
    """extract --pair-mode separate, fit, then raw-text predict: the real commands (their main(argv), in this
    process: no TensorFlow start-up each)."""
    store, run = tmp_path / "store", tmp_path / "run"
    run_pipeline("pipelines.extract", "--task", "mrpc", "--data-dir", shared_data / "glue" / "MRPC",
                 "--split", "train", "--split", "dev", "--out", store, "--pair-mode", "separate",
                 "--token-mode", "mean", "--max-seq-len", "48", "--limit", "24", "--no-progress", "--no-jit")
    assert json.loads((store / "manifest.json").read_text())["example_shape"] == [2, 7, 384]
    run_pipeline("pipelines.fit", "--store", store, "--adapter", "cnn", "--out", run, "--epochs", "1",
                 "--batch-size", "8")
    printed = run_pipeline("pipelines.predict", "--run", run, "--text", "He left early.", "--text-pair",
                           "He went away.")
    result = json.loads(printed)["mrpc"]
    assert result["label"] in ("equivalent", "not_equivalent")
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    code, _, err = run_main(extract_main, "--task", "sst2", "--data-dir", shared_data / "glue" / "SST-2", "--split",
                            "dev", "--out", tmp_path / "bad", "--pair-mode", "separate", "--token-mode", "mean")
    assert code == 2 and "not a sentence-pair task" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_pairs_benchmark_runs_and_resumes(shared_data, tmp_path, capsys):
    """experiments.pairs on 16 pairs: the cosine, both stores, a kind and a --variant over two seeds; a rerun
    redoes nothing and prints the same table."""
    from experiments.pairs import main as bench_main

    argv = ["--data-dir", str(shared_data / "glue" / "MRPC"), "--limit", "16", "--max-seq-len", "48",
            "--epochs", "1", "--kinds", "linear_probe", "--variant", "scalar_mix:dropout=0.2", "--seeds", "0,1",
            "--work", str(tmp_path / "work"), "--no-jit"]
    assert bench_main(argv) == 0
    table = (tmp_path / "work" / "pairs.md").read_text()
    for method in ("zero-shot cosine", "linear_probe on the frozen backbone, pair separate",
                   "scalar_mix dropout=0.2 on the frozen backbone, pair cross"):
        assert method in table
    assert table.count(" ± ") >= 8  # two seeds: every adapter row has a spread
    stages = json.loads((tmp_path / "work" / "stages.json").read_text())
    assert len(stages) == 4 + 2 * 2 * 2 and all(s["peak_mib"] > 0 for s in stages.values())
    assert (tmp_path / "work" / "separate-scalar_mix_dropout=0.2-seed1" / "results.json").is_file()
    capsys.readouterr()
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert "[run ]" not in out and out.count("[skip]") == len(stages)
    assert (tmp_path / "work" / "pairs.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]
