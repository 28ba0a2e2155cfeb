"""python -m pipelines.fit end to end: run folder contents, results.json
fields, TensorBoard scalars, re-running a run from its config.json, errors."""

import glob
import json

import numpy as np

from pipelines.fit import main as fit_main
from tests.stores import run_main, sst2_cls_store  # noqa: F401



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
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--adapter", "adapter_pooler", "--out", run,
                     "--epochs", "3", "--batch-size", "8", "--lr", "2e-3", "--adapter-dim", "16",
                     "--dropout", "0.2", "--layer-pooling", "attention", "--train-fraction", "0.5",
                     "--seed", "7", "--patience", "5", "--schedule", "cosine", "--quiet")
    assert code == 0, err[-3000:]
    assert "adapter_pooler on sst2" in out
    from bertvision.runs import RunFolder

    results = RunFolder(run).results()
    assert results.run_type == "fit" and results.task == "sst2" and results.method == "adapter_pooler"
    assert results.train_examples == 32 and results.train_fraction == 0.5
    assert results.backbone_params == 22_713_216
    assert np.isclose(results.param_share, results.trainable_params / 22_713_216)
    hp = results.hyperparameters
    assert (hp["adapter_dim"], hp["dropout"], hp["layer_pooling"], hp["lr"], hp["schedule"]) == \
        (16, 0.2, "attention", 2e-3, "cosine")
    assert [h.epoch for h in results.history] == [1.0, 2.0, 3.0] and [h.step for h in results.history] == [4, 8, 12]
    best = results.history[int(results.best_epoch) - 1]
    assert results.dev_metrics == best.dev == {"accuracy": max(h.dev["accuracy"] for h in results.history)}
    # the score says how it was chosen: best of 3 epochs on dev, the split it reports, the last epoch beside it
    sel = results.selection
    assert (sel["chosen_on"], sel["marks"], sel["chosen_on_reported_split"], sel["last_epoch"]) == ("dev", 3, True, 3.0)
    assert sel["last_metrics"] == results.history[-1].dev and sel["best_epoch"] == results.best_epoch
    assert f"(best of 3 epoch(s), chosen on dev (the split reported: optimistic); last epoch 3: accuracy=" in out
    assert len(results.layer_weights) == 7 and abs(sum(results.layer_weights) - 1) < 1e-5  # attention: the mean
    assert results.backbone["name"] == "all-MiniLM-L6-v2" and len(results.backbone["weights_sha256"]) == 64
    assert results.predictions == {"dev": "predictions/dev.npz"}
    for name in ("config.json", "model.keras", "predictions/dev.npz"):
        assert (run / name).is_file(), name
    assert not (run / "state").exists()
    train, dev = _scalars(run / "logs" / "train"), _scalars(run / "logs" / "validation")
    assert [s for s, _ in train["epoch_loss"]] == [4, 8, 12] and "epoch_learning_rate" in train
    assert [v for _, v in dev["epoch_accuracy"]] == [h.dev["accuracy"] for h in results.history]

    # the folder's config.json re-runs the same run
    again = tmp_path / "again"
    code, out, err = run_main(fit_main, "--config", run / "config.json", "--out", again, "--quiet")
    assert code == 0, err[-3000:]
    first, second = json.loads((run / "config.json").read_text()), json.loads((again / "config.json").read_text())
    for cfg in (first, second):
        cfg.pop("out"), cfg.pop("command")
    assert first == second
    rerun = RunFolder(again).results()
    assert rerun.train_examples == 32 and rerun.hyperparameters == results.hyperparameters
    np.testing.assert_allclose([h.loss for h in rerun.history], [h.loss for h in results.history], rtol=1e-4)

    # a finished run folder is not overwritten
    code, out, err = run_main(fit_main, "--config", run / "config.json", "--out", run, "--quiet")
    assert code == 2 and "already holds a finished run" in err


def test_fit_cli_clear_errors(sst2_cls_store, tmp_path):  # noqa: F811
    code, out, err = run_main(fit_main, "--store", tmp_path / "nowhere", "--adapter", "cnn", "--out", tmp_path / "r")
    assert code == 2 and "not a BERTVision store" in err
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--adapter", "cnn", "--out", tmp_path / "r",
                     "--eval-split", "test")
    assert code == 2 and "no split(s) ['test']" in err
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--out", tmp_path / "r")
    assert code == 2 and "--adapter required" in err
    for flag, value, message in (("--batch-size", "-4", "--batch-size must be a positive integer, got -4"),
                                 ("--batch-size", "0", "--batch-size must be a positive integer, got 0"),
                                 ("--epochs", "0", "--epochs must be a positive integer, got 0"),
                                 ("--lr", "-1", "--lr must be > 0, got -1.0"),
                                 ("--patience", "0", "--patience must be a positive integer, got 0")):
        code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--adapter", "cnn", "--out", tmp_path / "r",
                                  flag, value)
        assert code == 2 and err.strip().splitlines()[-1] == f"error: {message}", (flag, err)
    (tmp_path / "file").write_text("x")
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--adapter", "cnn", "--out", tmp_path / "file")
    assert code == 2 and "is a file" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    code, out, err = run_main(fit_main, "--store", sst2_cls_store, "--adapter", "cnn", "--out", tmp_path / "mine")
    assert code == 2 and "holding other files" in err and (tmp_path / "mine" / "notes.txt").read_text() == "x"
    assert not (tmp_path / "r").exists()


def test_a_saved_config_from_before_a_field_existed_compares_at_its_default():
    """`ConfigBase.differences` (what refuses a resume) reads a config saved
    by an earlier version, without a field added since, at that field's
    default; a real change is still named, and so is any field of a saved
    config that no longer loads."""
    from bertvision.training.fit import FitConfig
    from bertvision.models import ModelConfig

    config = FitConfig(store="s", out="o")
    saved = config.to_dict()
    del saved["patience"]
    assert config.differences(saved) == []
    assert config.replace(patience=3).differences(saved) == ["patience"]
    assert config.differences({**saved, "lr": 5e-3}) == ["lr"]
    assert config.differences({**saved, "colour": "red", "lr": 5e-3}) == ["colour", "lr"]
    # the adapter's own fields likewise: a run fitted before transformer_blocks existed resumes
    adapter = ModelConfig(kind="adapter_pooler", max_seq_len=64).to_dict()
    config = FitConfig(store="s", out="o", adapter=adapter)
    old = {**config.to_dict(), "adapter": {k: v for k, v in adapter.items()
                                           if k not in ("transformer_blocks", "transformer_heads")}}
    assert config.differences(old) == []
    assert config.replace(adapter={**adapter, "transformer_blocks": 1}).differences(old) == ["adapter"]
