"""bertvision.training on small real stores: every adapter kind learns, runs
save and reload exactly, the training fraction is seeded, the schedule and the
backbone parameter count are right, a killed fit resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.stores import REPO_ROOT, run_cli, sst2_cls_store, sst2_seq_store, squad_store  # noqa: F401


def _train_loss(model, store, split="train"):
    """Mean training loss of `model` over every record of `split` (no dropout)."""
    import keras

    from bertvision.predict import make_infer_fn, pad_to_for

    infer = make_infer_fn(model)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    total, count = 0.0, 0
    for features, labels in store.dataset(split, 32, pad_to=pad_to_for(model)):
        out = infer(features)
        if store.task_kind == "span":
            total += 0.5 * float(ce(labels["start_positions"], out["start_logits"]) +
                                 ce(labels["end_positions"], out["end_logits"]))
        else:
            total += float(ce(labels, out))
        count += int(features["activations"].shape[0])
    return total / count


def _fit(store_path, out, kind, **kw):
    from bertvision.training import FitConfig, fit

    model = kw.pop("model", {})
    settings = dict(epochs=6, batch_size=16, lr=3e-3, warmup=0.1, verbose=0, jit_compile=False)
    settings.update(kw)
    config = FitConfig(store=store_path, out=str(out), model={"kind": kind, **model}, **settings)
    return config, fit(config)


@pytest.mark.parametrize("kind", ["linear_probe", "scalar_mix", "adapter_pooler", "cnn"])
def test_each_kind_learns_and_reloads_exactly(kind, sst2_seq_store, tmp_path):  # noqa: F811
    from bertvision.models import ModelConfig, build_model
    from bertvision.predict import load_run_model, predict_arrays
    from bertvision.store import open_store

    import keras

    store = open_store(sst2_seq_store)
    config, results = _fit(sst2_seq_store, tmp_path / kind, kind, epochs=8)
    keras.utils.set_random_seed(config.seed)  # the same initial weights fit started from
    untrained = build_model(ModelConfig.from_dict(config.model))
    trained = load_run_model(tmp_path / kind)
    before, after = _train_loss(untrained, store), _train_loss(trained, store)
    assert after < 0.9 * before, f"{kind}: training loss {before:.4f} -> {after:.4f}"
    assert results["method"] == kind and results["trainable_params"] > 0
    assert len(results["history"]) == 8 and results["best_epoch"] in range(1, 9)
    # the saved model predicts exactly what the best in-memory model did
    saved = np.load(tmp_path / kind / "predictions" / "dev.npz")
    again = predict_arrays(trained, store, "dev")
    np.testing.assert_array_equal(again.uids, saved["uids"])
    np.testing.assert_allclose(again.probabilities, saved["probabilities"], rtol=1e-6, atol=1e-7)
    assert again.evaluate() == results["dev_metrics"]


def test_vector_store_fit_with_jit(sst2_cls_store, tmp_path):  # noqa: F811
    from bertvision.predict import load_run_model, predict_arrays
    from bertvision.store import open_store

    config, results = _fit(sst2_cls_store, tmp_path / "run", "adapter_pooler", epochs=3, jit_compile=True)
    assert results["jit_compile"] is True
    store = open_store(sst2_cls_store)
    preds = predict_arrays(load_run_model(tmp_path / "run"), store, "dev")
    assert preds.probabilities.shape == (64, 2)
    assert np.allclose(preds.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert len(results["layer_weights"]) == 7 and abs(sum(results["layer_weights"]) - 1) < 1e-5
    # config.json reproduces the config, including the store-derived model fields
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["num_layers"] == 7 and saved["model"]["hidden"] == 384
    assert saved["model"]["tokens"] is None and saved["model"]["kind"] == "adapter_pooler"


def test_span_fit_learns_and_scores_with_official_squad(squad_store, tmp_path):  # noqa: F811
    from bertvision.predict import load_run_model
    from bertvision.store import open_store

    store = open_store(squad_store)
    _, results = _fit(squad_store, tmp_path / "squad", "adapter_pooler", epochs=3, batch_size=8, lr=5e-3)
    for key in ("exact", "f1", "HasAns_f1", "best_f1", "best_f1_thresh", "total"):
        assert key in results["dev_metrics"]
    assert results["dev_metrics"]["total"] == 16.0 and results["main_metric"] == "f1"
    first_loss = results["history"][0]["loss"]
    assert results["history"][-1]["loss"] < first_loss
    assert _train_loss(load_run_model(tmp_path / "squad"), store) < first_loss
    saved = np.load(tmp_path / "squad" / "predictions" / "dev.npz")
    assert saved["start_logits"].shape == saved["offsets"].shape[:2] == (store.num_records("dev"), 128)


def test_train_fraction_is_seeded_and_keeps_whole_questions(sst2_cls_store, squad_store):  # noqa: F811
    from bertvision.store import open_store
    from bertvision.training import record_uids, select_train_records

    store = open_store(sst2_cls_store)
    a, n = select_train_records(store, "train", 0.25, seed=3)
    b, _ = select_train_records(store, "train", 0.25, seed=3)
    c, _ = select_train_records(store, "train", 0.25, seed=4)
    assert n == 16 and len(a) == 16 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0) and a.max() < 64
    assert select_train_records(store, "train", 1.0, seed=0) == (None, 64)
    # the store reader keeps exactly those records
    uids = [u.decode() for u in record_uids(store, "train")]
    got = [u.decode() for f, _ in store.dataset("train", 64, with_meta=True, take_indices=a)
           for u in f["uid"].numpy()]
    assert got == [uids[i] for i in a]

    squad = open_store(squad_store)
    idx, questions = select_train_records(squad, "train", 0.5, seed=0)
    uids = np.array([u.decode() for u in record_uids(squad, "train")])
    chosen = set(uids[idx])
    assert questions == 8 == len(chosen)
    assert squad.num_records("train") > 16  # several windows per question
    # every window of a chosen question is in, none of the others
    assert sorted(idx.tolist()) == [i for i, u in enumerate(uids) if u in chosen]


def test_warmup_decay_schedule_and_serialisation():
    import keras

    from bertvision.training import WarmupDecay

    lr = WarmupDecay(1e-3, total_steps=100, warmup_steps=10)
    values = [float(lr(s)) for s in (0, 5, 10, 55, 100, 150)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    cosine = WarmupDecay(1e-3, total_steps=110, warmup_steps=10, decay="cosine")
    np.testing.assert_allclose(float(cosine(60)), 5e-4, rtol=1e-5)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cosine))
    assert isinstance(again, WarmupDecay) and again.get_config() == cosine.get_config()
    with pytest.raises(ValueError, match="decay"):
        WarmupDecay(1e-3, 10, decay="step")


def test_backbone_param_count_matches_keras_hub(sst2_cls_store):  # noqa: F811
    import keras_hub

    from bertvision.store import open_store
    from bertvision.training import backbone_params, bert_param_count

    store = open_store(sst2_cls_store)
    count = backbone_params(store.manifest["model"])
    assert count == 22_713_216
    cfg = json.loads(open(os.path.join(store.manifest["model"]["path"], "config.json")).read())
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=cfg["vocab_size"], num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"], hidden_dim=cfg["hidden_size"],
        intermediate_dim=cfg["intermediate_size"], max_sequence_length=cfg["max_position_embeddings"],
        num_segments=cfg["type_vocab_size"])
    assert bert.count_params() == count == bert_param_count(cfg)
    preset = {"module": "keras_hub.src.models.bert.bert_backbone", "class_name": "BertBackbone",
              "config": bert.get_config()}
    assert bert_param_count(preset) == count


def test_fit_config_validation_errors(sst2_cls_store, tmp_path):  # noqa: F811
    from bertvision.training import FitConfig, FitError

    with pytest.raises(FitError, match="unknown model kind 'mlp'"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), model={"kind": "mlp"})
    with pytest.raises(FitError, match="train_fraction"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), model={"kind": "cnn"}, train_fraction=0.0)
    with pytest.raises(FitError, match="warmup"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), model={"kind": "cnn"}, warmup=1.5)
    with pytest.raises(FitError, match="unknown FitConfig fields"):
        FitConfig.from_dict({"store": "s", "out": "o", "learning_rate": 1.0})


def test_killed_fit_resumes_from_its_last_epoch(sst2_seq_store, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    args = ["--store", sst2_seq_store, "--model", "scalar_mix", "--out", str(out), "--epochs", "40",
            "--batch-size", "4", "--no-jit-compile", "--quiet"]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.fit", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = out / "backup" / "state.json"
    deadline = time.time() + 120
    state = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "backup" / "training_metadata.json").exists() and state_path.exists():
                try:
                    state = json.loads(state_path.read_text())
                except json.JSONDecodeError:
                    state = None
                if state and len(state["history"]) >= 2:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert state is not None and len(state["history"]) < 40, "the fit finished before it could be killed"
    assert not (out / "results.json").exists()
    done = json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    kept = {h["epoch"]: h for h in json.loads(state_path.read_text())["history"]}

    result = run_cli("pipelines.fit", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [float(e) for e in range(1, 41)]
    # the epochs finished before the kill were not trained again
    for epoch in range(1, done + 1):
        assert results["history"][epoch - 1] == kept[float(epoch)]
    assert not (out / "backup").exists()
