"""python -m pipelines.fit end to end: run folder contents, results.json
fields, TensorBoard scalars, re-running a run from its config.json, errors."""

import glob
import json

import numpy as np

from pipelines.fit import main as fit_main
from tests.stores import run_main, sst2_cls_store  # noqa: F401

RESULT_KEYS = {"task", "method", "run_type", "hyperparameters", "train_fraction", "train_examples",
               "trainable_params", "backbone_params", "param_share", "history", "main_metric", "dev_metrics",
               "train_wall_time_s", "train_examples_per_s", "store", "backbone", "layer_weights", "seed"}


def _scalars(folder):
    import tensorflow as tf

    tags = {}
    for path in glob.glob(f"{folder}/*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return tags


def test_fit_cli_writes_a_reproducible_run(sst2_cls_store, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--model", "adapter_pooler", "--out", run,
                     "--epochs", "3", "--batch-size", "8", "--lr", "2e-3", "--adapter-dim", "16",
                     "--dropout", "0.2", "--layer-pooling", "attention", "--train-fraction", "0.5",
                     "--seed", "7", "--patience", "5", "--schedule", "cosine", "--quiet")
    assert code == 0, err[-3000:]
    assert "adapter_pooler on sst2" in out
    results = json.loads((run / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["run_type"] == "fit" and results["task"] == "sst2" and results["method"] == "adapter_pooler"
    assert results["train_examples"] == 32 and results["train_fraction"] == 0.5
    assert results["backbone_params"] == 22_713_216
    assert np.isclose(results["param_share"], results["trainable_params"] / 22_713_216)
    hp = results["hyperparameters"]
    assert (hp["adapter_dim"], hp["dropout"], hp["layer_pooling"], hp["lr"], hp["schedule"]) == \
        (16, 0.2, "attention", 2e-3, "cosine")
    assert [h["epoch"] for h in results["history"]] == [1.0, 2.0, 3.0]
    best = results["history"][results["best_epoch"] - 1]
    assert results["dev_metrics"] == best["dev"] == {"accuracy": max(h["dev"]["accuracy"] for h in results["history"])}
    assert results["backbone"]["name"] == "all-MiniLM-L6-v2" and len(results["backbone"]["sha256"]) == 64
    for name in ("config.json", "model.keras", "predictions/dev.npz"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()
    train, dev = _scalars(run / "logs" / "train"), _scalars(run / "logs" / "validation")
    assert [s for s, _ in train["epoch_loss"]] == [1, 2, 3] and "epoch_learning_rate" in train
    assert [v for _, v in dev["epoch_accuracy"]] == [h["dev"]["accuracy"] for h in results["history"]]

    # the folder's config.json re-runs the same run
    again = tmp_path / "again"
    code, out, err = run_main(fit_main, "--config", run / "config.json", "--out", again, "--quiet")
    assert code == 0, err[-3000:]
    first, second = json.loads((run / "config.json").read_text()), json.loads((again / "config.json").read_text())
    for cfg in (first, second):
        cfg.pop("out"), cfg.pop("command")
    assert first == second
    rerun = json.loads((again / "results.json").read_text())
    assert rerun["train_examples"] == 32 and rerun["hyperparameters"] == results["hyperparameters"]
    np.testing.assert_allclose([h["loss"] for h in rerun["history"]], [h["loss"] for h in results["history"]],
                               rtol=1e-4)

    # a finished run folder is not overwritten
    code, out, err = run_main(fit_main, "--config", run / "config.json", "--out", run, "--quiet")
    assert code == 2 and "already holds a finished run" in err


def test_fit_cli_clear_errors(sst2_cls_store, tmp_path):  # noqa: F811
    code, out, err = run_main(fit_main, "--store", tmp_path / "nowhere", "--model", "cnn", "--out", tmp_path / "r")
    assert code == 2 and "not a BERTVision store" in err
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--model", "cnn", "--out", tmp_path / "r",
                     "--eval-split", "test")
    assert code == 2 and "no split(s) ['test']" in err
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--out", tmp_path / "r")
    assert code == 2 and "--model required" in err
