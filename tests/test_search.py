"""bertvision.search / python -m tuning.search on a small real SST-2 store:
a random search writes trials.csv and a best run folder that predicts, a
search killed with SIGKILL resumes without redoing finished trials, and bad
spaces or stores fail before any trial runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.stores import REPO_ROOT, run_cli, sst2_cls_store  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def read_rows(search_dir) -> list[dict]:
    with open(Path(search_dir) / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def trial_states(search_dir) -> dict[str, str]:
    """trial id -> status, from KerasTuner's own trial.json files."""
    out = {}
    for path in (Path(search_dir) / "tuner").glob("trial_*/trial.json"):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):  # being written
            continue
        out[data["trial_id"]] = data["status"]
    return out


@pytest.fixture(scope="module")
def finished_search(sst2_cls_store, tmp_path_factory):  # noqa: F811
    from bertvision.search import SearchConfig, search

    out = tmp_path_factory.mktemp("search") / "sst2"
    record = search(SearchConfig(store=sst2_cls_store, out=str(out), max_trials=3, epochs=2, seed=1, verbose=0))
    return out, record


def test_random_search_writes_trials_and_best_run(finished_search):
    out, record = finished_search
    rows = read_rows(out)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert list(rows[0])[:3] == ["trial_id", "status", "kind"]
    assert list(rows[0])[-3:] == ["accuracy", "trainable_params", "wall_time_s"]
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0
        assert int(r["trainable_params"]) > 0 and float(r["wall_time_s"]) > 0
        assert r["kind"] in ("linear_probe", "scalar_mix", "adapter_pooler", "cnn")
        assert (r["adapter_dim"] != "") == (r["kind"] == "adapter_pooler")  # conditional hyperparameter
    best_row = max(rows, key=lambda r: float(r["accuracy"]))
    assert record["best_search_metric"] == pytest.approx(float(best_row["accuracy"]))

    saved = json.loads((out / "search.json").read_text())
    assert saved["run_type"] == "search" and saved["status"] == "complete"
    assert saved["objective"] == {"name": "val_accuracy", "direction": "max"}
    assert saved["best_trial_id"] in {r["trial_id"] for r in rows}
    assert saved["best_hyperparameters"]["kind"] == next(
        r for r in rows if r["trial_id"] == saved["best_trial_id"])["kind"]
    assert saved["config"]["max_trials"] == 3

    best = out / "best"
    for name in ("config.json", "model.keras", "results.json", "predictions/dev.npz"):
        assert (best / name).is_file(), name
    from bertvision.runs import RunFolder

    results = RunFolder(best).results()
    assert results.run_type == "fit" and results.method == saved["best_hyperparameters"]["kind"]
    assert results.dev_metrics["accuracy"] == pytest.approx(saved["best_metric"])
    assert results.hyperparameters["lr"] == pytest.approx(saved["best_hyperparameters"]["lr"])
    assert results.search["trial_id"] == saved["best_trial_id"]
    assert results.search["layer_subset"] == saved["best_hyperparameters"].get("layers", "all")

    # the report command reads this folder as a search (trials.csv + best/results.json)
    from bertvision.report import load_runs

    [run] = load_runs([out])
    assert run.search_dir == str(out)


def test_best_run_predicts_with_the_cli(finished_search, sst2_cls_store, tmp_path):  # noqa: F811
    out, record = finished_search
    target = tmp_path / "SST-2.tsv"
    proc = run_cli("pipelines.predict", "--run", out / "best", "--store", sst2_cls_store, "--split", "dev",
                   "--out", target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = target.read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + 64
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}  # GLUE wants SST-2 classes as 0/1
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(record["best_metric"], abs=1e-4)


def test_layer_subset_model_is_exact_and_predicts_from_all_layers(sst2_cls_store):  # noqa: F811
    import keras

    from bertvision.models import ModelConfig, build_model, trainable_params
    from bertvision.search import layer_indices
    from bertvision.store import open_store

    assert layer_indices("every_other", 7) == [0, 2, 4, 6]
    assert layer_indices("every_other", 6) == [1, 3, 5]
    assert layer_indices("last2", 7) == [5, 6] and layer_indices("last7", 7) is None
    store = open_store(sst2_cls_store)
    features, _ = next(iter(store.dataset("dev", 8)))
    acts = features["activations"].numpy()
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(kind="adapter_pooler", num_layers=7, layer_pooling="attention", layers=[2, 4, 6]))
    reference = build_model(ModelConfig(kind="adapter_pooler", num_layers=3, layer_pooling="attention",
                                        input_dtype="float32"))
    reference.set_weights(model.get_weights())
    assert trainable_params(model) == trainable_params(reference)
    got = np.asarray(model({"activations": acts}, training=False))
    want = np.asarray(reference({"activations": acts[:, [2, 4, 6]].astype("float32")}, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _popen_search(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "tuning.search", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_search_resumes_without_redoing_finished_trials(sst2_cls_store, tmp_path):  # noqa: F811
    out = tmp_path / "resume"
    args = ["--store", sst2_cls_store, "--out", str(out), "--max-trials", "3", "--epochs", "3", "--seed", "3",
            "--kinds", "scalar_mix,adapter_pooler", "--quiet", "--no-retrain"]
    proc = _popen_search(args)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if "COMPLETED" in trial_states(out).values():
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"search ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = trial_states(out)
    done = sorted(t for t, s in before.items() if s == "COMPLETED")
    assert done and len(done) < 3 and not (out / "trials.csv").exists()
    records = {t: (out / "tuner" / f"trial_{t}" / "bertvision_trial.json").read_bytes() for t in done}
    checkpoints = {t: (out / "tuner" / f"trial_{t}" / "best.weights.npz").stat().st_mtime_ns for t in done}

    resumed = run_cli("tuning.search", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = trial_states(out)
    assert sorted(after) == ["0", "1", "2"] and set(after.values()) == {"COMPLETED"}
    assert sorted(p.name for p in (out / "tuner").glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    for t in done:  # finished trials were not trained again
        assert (out / "tuner" / f"trial_{t}" / "bertvision_trial.json").read_bytes() == records[t]
        assert (out / "tuner" / f"trial_{t}" / "best.weights.npz").stat().st_mtime_ns == checkpoints[t]
    rows = read_rows(out)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    assert json.loads((out / "search.json").read_text())["status"] == "complete"

    # a finished search run again trains nothing; other settings are refused
    again = run_cli("tuning.search", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    for t in ("0", "1", "2"):
        assert read_rows(out)[int(t)]["wall_time_s"] == rows[int(t)]["wall_time_s"]
    other = run_cli("tuning.search", *args, "--lr", "0.01,0.02")
    assert other.returncode == 2 and "other settings (space)" in other.stderr


@pytest.mark.parametrize("change, message", [
    ({"max_trials": 0}, "--max-trials must be a positive integer"),
    ({"tuner": "grid"}, "unknown tuner 'grid'"),
    ({"space": {"adapter_dims": [0, 64]}}, "adapter_dims: must be positive integers"),
    ({"space": {"kinds": ["transformer"]}}, "unknown ['transformer']"),
    ({"space": {"dropout": [0.2, 1.0]}}, "search space dropout"),
    ({"space": {"layer_subsets": ["all", "first2"]}}, "unknown layer subset 'first2'"),
])
def test_invalid_search_settings_fail_clearly(change, message, tmp_path):
    from bertvision.errors import SearchError
    from bertvision.search import SearchConfig

    with pytest.raises(SearchError) as err:
        SearchConfig(store="unused", out=str(tmp_path / "s"), **change)
    assert message in str(err.value)
    assert not (tmp_path / "s").exists()


def test_store_that_does_not_fit_fails_before_any_trial(sst2_cls_store, tmp_path):  # noqa: F811
    from bertvision.errors import SearchError, StoreError
    from bertvision.search import SearchConfig, search

    out = tmp_path / "s"
    with pytest.raises(SearchError, match=r"last9.*the store has 7 layers"):
        search(SearchConfig(store=sst2_cls_store, out=str(out), space={"layer_subsets": ["all", "last9"]}))
    with pytest.raises(SearchError, match=r"no split\(s\) \['test'\]"):
        search(SearchConfig(store=sst2_cls_store, out=str(out), eval_split="test"))
    with pytest.raises(StoreError, match="no manifest.json"):
        search(SearchConfig(store=str(tmp_path / "missing"), out=str(out)))
    assert not out.exists()
    proc = run_cli("tuning.search", "--store", sst2_cls_store, "--out", out, "--max-trials", "0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == \
        "error: --max-trials must be a positive integer, got 0"
    assert not out.exists()
