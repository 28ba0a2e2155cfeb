"""bertvision.training.fit on small real stores: every adapter kind learns, runs
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

from tests.stores import REPO_ROOT, cli_env, run_pipeline, sst2_cls_run, sst2_cls_store, sst2_seq_store, squad_store  # noqa: F401


def _train_loss(model, store, split="train"):
    """Mean training loss of `model` over every record of `split` (no dropout)."""
    import keras

    from bertvision.inference.predict import make_infer_fn, pad_to_for

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
    from bertvision.training.fit import FitConfig, fit

    adapter = kw.pop("adapter", {})
    settings = dict(epochs=6, batch_size=16, lr=3e-3, warmup=0.1, verbose=0, jit_compile=False)
    settings.update(kw)
    config = FitConfig(store=store_path, out=str(out), adapter={"kind": kind, **adapter}, **settings)
    return config, fit(config)


def _load(run_dir):
    from bertvision.inference.predict import load_adapter_run

    return load_adapter_run(run_dir)[1]


@pytest.mark.parametrize("kind", ["linear_probe", "scalar_mix", "adapter_pooler", "cnn"])
def test_each_kind_learns_and_reloads_exactly(kind, sst2_seq_store, tmp_path):  # noqa: F811
    import keras

    from bertvision.models import ModelConfig, build_model
    from bertvision.inference.predict import predict_store
    from bertvision.runs import RunFolder
    from bertvision.store.format import open_store

    store = open_store(sst2_seq_store)
    config, results = _fit(sst2_seq_store, tmp_path / kind, kind, epochs=8)
    keras.utils.set_random_seed(config.seed)  # the same initial weights fit started from
    untrained = build_model(ModelConfig.from_dict(config.adapter))
    trained = _load(tmp_path / kind)
    before, after = _train_loss(untrained, store), _train_loss(trained, store)
    assert after < 0.9 * before, f"{kind}: training loss {before:.4f} -> {after:.4f}"
    assert results.method == kind and results.trainable_params > 0
    assert len(results.history) == 8 and results.best_epoch in range(1, 9)
    assert RunFolder(tmp_path / kind).results() == results  # what was written is what was returned
    # the saved model predicts exactly what the best in-memory model did
    saved = np.load(tmp_path / kind / "predictions" / "dev.npz")
    again = predict_store(trained, store, "dev")
    np.testing.assert_array_equal(again.uids, saved["uids"])
    np.testing.assert_allclose(again.probabilities, saved["probabilities"], rtol=1e-6, atol=1e-7)
    assert again.evaluate() == results.dev_metrics


def test_vector_store_fit_with_jit(sst2_cls_store, tmp_path):  # noqa: F811
    from bertvision.inference.predict import predict_store
    from bertvision.store.format import open_store

    config, results = _fit(sst2_cls_store, tmp_path / "run", "adapter_pooler", epochs=3, jit_compile=True)
    assert results.environment["jit_compile"] is True
    store = open_store(sst2_cls_store)
    preds = predict_store(_load(tmp_path / "run"), store, "dev")
    assert preds.probabilities.shape == (64, 2)
    assert np.allclose(preds.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert len(results.layer_weights) == 7 and abs(sum(results.layer_weights) - 1) < 1e-5
    # config.json reproduces the config, including the store-derived adapter fields
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["adapter"]["num_layers"] == 7 and saved["adapter"]["hidden"] == 384
    assert saved["adapter"]["max_seq_len"] is None and saved["adapter"]["kind"] == "adapter_pooler"


def test_span_fit_learns_and_scores_with_official_squad(squad_store, tmp_path):  # noqa: F811
    from bertvision.store.format import open_store

    store = open_store(squad_store)
    _, results = _fit(squad_store, tmp_path / "squad", "adapter_pooler", epochs=3, batch_size=8, lr=5e-3)
    for key in ("exact", "f1", "HasAns_f1", "best_f1", "best_f1_thresh", "total"):
        assert key in results.dev_metrics
    assert results.dev_metrics["total"] == 16.0 and results.main_metric == "f1"
    first_loss = results.history[0].loss
    assert results.history[-1].loss < first_loss
    assert _train_loss(_load(tmp_path / "squad"), store) < first_loss
    saved = np.load(tmp_path / "squad" / "predictions" / "dev.npz")
    assert saved["start_logits"].shape == saved["offsets"].shape[:2] == (store.num_records("dev"), 128)


def test_train_fraction_is_seeded_and_keeps_whole_questions(sst2_cls_store, squad_store):  # noqa: F811
    from bertvision.store.format import open_store

    store = open_store(sst2_cls_store)
    a, n = store.select_fraction("train", 0.25, seed=3)
    b, _ = store.select_fraction("train", 0.25, seed=3)
    c, _ = store.select_fraction("train", 0.25, seed=4)
    assert n == 16 and len(a) == 16 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0) and a.max() < 64
    assert store.select_fraction("train", 1.0, seed=0) == (None, 64)
    # the store reader keeps exactly those records
    uids = [u.decode() for u in store.uids("train")]
    got = [u.decode() for f, _ in store.dataset("train", 64, with_meta=True, take_indices=a)
           for u in f["uid"].numpy()]
    assert got == [uids[i] for i in a]

    squad = open_store(squad_store)
    idx, questions = squad.select_fraction("train", 0.5, seed=0)
    uids = np.array([u.decode() for u in squad.uids("train")])
    chosen = set(uids[idx])
    assert questions == 8 == len(chosen)
    assert squad.num_records("train") > 16  # several windows per question
    # every window of a chosen question is in, none of the others
    assert sorted(idx.tolist()) == [i for i, u in enumerate(uids) if u in chosen]


def test_warmup_decay_schedule_and_serialisation():
    import keras

    from bertvision.training.trainer import WarmupDecay

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

    from bertvision.models.backbone import backbone_param_count, bert_param_count
    from bertvision.store.format import open_store

    store = open_store(sst2_cls_store)
    count = backbone_param_count(store.backbone)
    assert count == 22_713_216
    cfg = json.loads(open(os.path.join(store.backbone["path"], "config.json")).read())
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
    from bertvision.errors import FitError
    from bertvision.training.fit import FitConfig

    with pytest.raises(FitError, match="--adapter must be one of .*, got 'mlp'"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), adapter={"kind": "mlp"})
    with pytest.raises(FitError, match="--train-fraction must be in"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), adapter={"kind": "cnn"}, train_fraction=0.0)
    with pytest.raises(FitError, match="--warmup"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), adapter={"kind": "cnn"}, warmup=1.5)
    with pytest.raises(FitError, match=r"--batch-size must be a positive integer, got -4"):
        FitConfig(store=sst2_cls_store, out=str(tmp_path), adapter={"kind": "cnn"}, batch_size=-4)
    with pytest.raises(FitError, match=r"unknown FitConfig field\(s\) \['learning_rate'\]"):
        FitConfig.from_dict({"store": "s", "out": "o", "learning_rate": 1.0})


def test_fit_grouped_by_length(sst2_seq_store, sst2_cls_store, tmp_path):  # noqa: F811
    """``--group-by-length``: a sequence store trains on batches of similar
    length (as many steps as without; Store.training_dataset's test), and the
    run records it; a vector store refuses it in one line."""
    from bertvision.errors import FitError

    config, results = _fit(sst2_seq_store, tmp_path / "grouped", "scalar_mix", epochs=3, group_by_length=2)
    plain = _fit(sst2_seq_store, tmp_path / "plain", "scalar_mix", epochs=3)[1]
    assert results.hyperparameters["group_by_length"] == 2 and "group_by_length" not in plain.hyperparameters
    assert [h.epoch for h in results.history] == [h.epoch for h in plain.history] == [1.0, 2.0, 3.0]
    assert [h.loss for h in results.history] != [h.loss for h in plain.history]  # other batches
    assert results.train_records == plain.train_records == 48
    with pytest.raises(FitError, match="--group-by-length batches the texts of a 'sequence' store by length; "
                                       ".* is a 'cls' store"):
        _fit(sst2_cls_store, tmp_path / "cls", "scalar_mix", epochs=1, group_by_length=2)
    assert not (tmp_path / "cls").exists()  # refused before the run folder is made
    with pytest.raises(FitError, match="--group-by-length must be"):
        _fit(sst2_seq_store, tmp_path / "bad", "scalar_mix", group_by_length=-1)


def _latest_state(out):
    """The newest complete training state a fit saved (``None`` if none yet)."""
    states = sorted((out / "state").glob("step-*/state.json")) if (out / "state").is_dir() else []
    for path in reversed(states):
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):  # being replaced
            continue
    return None


def test_killed_fit_resumes_exactly_wherever_it_is_killed(sst2_seq_store, tmp_path):  # noqa: F811
    """kill -9 at two kinds of points (just after a save, inside an epoch), one
    after the other, then finish: the history and the saved weights are those
    of the uninterrupted run. The killed commands are processes; the
    uninterrupted run and the final resume are the command's main(argv) in
    this process (no TensorFlow start-up each)."""
    args = ["--store", sst2_seq_store, "--adapter", "adapter_pooler", "--epochs", "8", "--batch-size", "8",
            "--dropout", "0.3", "--no-jit-compile", "--quiet"]
    whole = tmp_path / "whole"
    run_pipeline("pipelines.fit", *args, "--out", whole)
    out = tmp_path / "killed"
    env = cli_env()
    resumed_at = []
    # kill just after the state of epoch 2 is saved, then a moment into epoch 5 (resumed from epoch 2's state)
    for epochs_done, delay in ((2, 0.0), (4, 0.3)):
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.fit", *args, "--out", str(out)], cwd=REPO_ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 180
            while proc.poll() is None and time.time() < deadline:
                state = _latest_state(out)
                if state and len(state["history"]) >= epochs_done:
                    time.sleep(delay)
                    break
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the fit finished before it could be killed"
        resumed_at.append(len(_latest_state(out)["history"]))
    assert resumed_at[0] >= 2 and resumed_at[-1] >= 4 and not (out / "results.json").exists()
    run_pipeline("pipelines.fit", *args, "--out", out)
    a, b = json.loads((whole / "results.json").read_text()), json.loads((out / "results.json").read_text())
    assert [(h["epoch"], h["loss"], h["dev"]) for h in a["history"]] == \
        [(h["epoch"], h["loss"], h["dev"]) for h in b["history"]]
    for x, y in zip(_load(whole).get_weights(), _load(out).get_weights()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated shard", "edited count", "edited shape",
                                    "edited shape and bytes", "corrupt dev shard"])
def test_corrupt_store_is_refused_before_training(sst2_cls_store, sst2_cls_run, tmp_path, damage):  # noqa: F811
    """What a user meets with a damaged store: one line naming the shard or the
    manifest field, exit 2, and no run folder."""
    import shutil

    from pipelines.fit import main as fit_main
    from tests.stores import run_main

    store = tmp_path / "store"
    shutil.copytree(sst2_cls_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    train = store / manifest["splits"]["train"]["shards"][0]["file"]
    if damage == "flipped byte":
        data = bytearray(train.read_bytes())
        data[len(data) // 2] ^= 0x01
        train.write_bytes(bytes(data))
        expect = f"{train}: checksum mismatch"
    elif damage == "truncated shard":
        train.write_bytes(train.read_bytes()[:-1000])
        expect = f"{train}: checksum mismatch"
    elif damage == "corrupt dev shard":
        dev = store / manifest["splits"]["dev"]["shards"][0]["file"]
        data = bytearray(dev.read_bytes())
        data[100] ^= 0x10
        dev.write_bytes(bytes(data))
        expect = f"{dev}: checksum mismatch"
    elif damage == "edited count":
        manifest["splits"]["train"]["num_records"] = 50
        expect = "manifest field splits.train.num_records=50 but its shards list 64 records"
    else:  # one layer less in the header: the records still hold 7
        manifest["layers"] = manifest["layers"][1:]
        manifest["example_shape"] = [6, 384]
        expect = "manifest field splits.train.activation_bytes"
        if damage == "edited shape and bytes":
            for split in manifest["splits"].values():
                split["activation_bytes"] = split["num_records"] * 6 * 384 * 2
            expect = "a record holds 5376 activation bytes, which does not fit the manifest's example_shape [6, 384]"
    (store / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "run"
    code, _, err = run_main(fit_main, "--store", store, "--adapter", "linear_probe", "--out", out, "--epochs", "1",
                            "--quiet")
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expect in last, last
    assert not out.exists()
    # prediction and search open stores the same way: the same one line, nothing written
    from pipelines.predict import main as predict_main
    from tuning.search import main as search_main

    written = tmp_path / "preds.tsv"
    code, _, err = run_main(predict_main, "--run", sst2_cls_run, "--store", store, "--split", "dev", "--out", written)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and expect in last and not written.exists(), err[-2000:]
    search = tmp_path / "search"
    code, _, err = run_main(search_main, "--store", store, "--out", search, "--max-trials", "1", "--epochs", "1",
                            "--quiet")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and expect in last, err[-2000:]
    assert not list(search.rglob("trial_*"))
