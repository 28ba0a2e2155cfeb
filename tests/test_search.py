"""bertvision.search.tuner / python -m tuning.search on a small real SST-2 store:
a random search writes trials.csv and a best run folder that predicts; a
search killed with SIGKILL at many points resumes without redoing finished
trials; KerasTuner's chief and two workers on loopback share one search (a
killed worker's trial is retried); bad spaces, stores and distributed
settings fail before any trial runs."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertvision.search.tuner import TRIAL_RECORD
from pipelines.predict import main as predict_main
from tests.stores import REPO_ROOT, cli_env, run_main, sst2_cls_store, sst2_seq_store  # noqa: F401
from tuning.search import main as search_main

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
    from bertvision.search.tuner import SearchConfig, search

    out = tmp_path_factory.mktemp("search") / "sst2"
    record = search(SearchConfig(store=sst2_cls_store, out=str(out), max_trials=3, epochs=2, seed=1, verbose=0))
    return out, record


def test_random_search_writes_trials_and_best_run(finished_search):
    out, record = finished_search
    rows = read_rows(out)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert list(rows[0])[:3] == ["trial_id", "status", "kind"]
    assert list(rows[0])[-4:] == ["accuracy", "trainable_params", "wall_time_s", "tuner_id"]
    assert {r["tuner_id"] for r in rows} == {"tuner0"}
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
    code, stdout, err = run_main(predict_main, "--run", out / "best", "--store", sst2_cls_store, "--split", "dev",
                                 "--out", target)
    assert code == 0, err[-2000:]
    lines = target.read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + 64
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}  # GLUE wants SST-2 classes as 0/1
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(record["best_metric"], abs=1e-4)


def test_layer_subset_model_is_exact_and_predicts_from_all_layers(sst2_cls_store):  # noqa: F811
    import keras

    from bertvision.models import ModelConfig, build_model, trainable_params
    from bertvision.search.tuner import layer_indices
    from bertvision.store.format import open_store

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


def _popen_search(args: list[str], env: dict | None = None) -> subprocess.Popen:
    env = cli_env(env)
    return subprocess.Popen([sys.executable, "-m", "tuning.search", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state_files(out: Path) -> dict[Path, int]:
    """KerasTuner's state files (oracle.json, <tuner id>.json, trial_*/trial.json) -> mtime; not the
    hidden temporary files a kill during an atomic write leaves (``.oracle.tmp-1a2b3c4d.json``)."""
    tuner = out / "tuner"
    paths = [p for p in tuner.glob("*.json") if not p.name.startswith(".")] + \
        list(tuner.glob("trial_*/trial.json")) if tuner.is_dir() else []
    found = {}
    for path in paths:
        try:
            found[path] = path.stat().st_mtime_ns
        except FileNotFoundError:  # renamed over between glob and stat
            pass
    return found


def _kill_point(proc: subprocess.Popen, out: Path, rng: random.Random, started: float) -> str:
    """Wait for `proc` to begin its search (it rewrites search.json), then
    SIGKILL it at a random point: after a random delay, or right after the
    k-th change of a KerasTuner state file (in or just after a write)."""
    search_json = out / "search.json"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if search_json.exists() and search_json.stat().st_mtime >= started:
            break
        time.sleep(0.02)
    if rng.random() < 0.5:  # a trial takes about a second here: kill within the first few
        where = f"{rng.uniform(0, 3):.2f}s into the search"
        end = time.monotonic() + float(where.split("s")[0])
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
    else:
        k = rng.randint(1, 6)
        where = f"state-file change {k}"
        seen, changes = _state_files(out), 0
        while proc.poll() is None and changes < k and time.monotonic() < deadline:
            now = _state_files(out)
            changes += sum(1 for p, m in now.items() if seen.get(p) != m)
            seen = now
            time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return where


def test_search_resumes_after_kill_9_anywhere(sst2_cls_store, tmp_path):  # noqa: F811
    """Issue 14 item 3: a real `python -m tuning.search` killed with SIGKILL at
    random points (during trials, inside KerasTuner's state writes), resumed
    each time, then run to the end: every state file stays whole JSON, no
    finished trial is trained again, every trial completes once, and
    trials.csv / search.json are the trials' own results."""
    out = tmp_path / "resume"
    args = ["--store", sst2_cls_store, "--out", str(out), "--max-trials", "6", "--epochs", "2", "--seed", "3",
            "--kinds", "linear_probe,scalar_mix", "--quiet", "--no-retrain", "--no-jit-compile"]
    trial_ids = [str(i) for i in range(6)]
    rng = random.Random(14)
    records: dict[str, bytes] = {}  # trial id -> its bertvision_trial.json when first seen (training finished)
    kills = []
    for _ in range(10):  # until three kills landed (a quiet machine may finish a search between two)
        if len(kills) >= 3:
            break
        started = time.time() - 1
        proc = _popen_search(args)
        where = _kill_point(proc, out, rng, started)
        if proc.returncode == 0:  # the search ended before the kill
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
        kills.append(where)
        for path in _state_files(out):  # whole files: a kill never leaves half of one
            json.loads(path.read_text())
        for path in (out / "tuner").glob(f"trial_*/{TRIAL_RECORD}"):
            trial_id = path.parent.name[len("trial_"):]
            assert records.setdefault(trial_id, path.read_bytes()) == path.read_bytes(), \
                f"trial {trial_id} was trained again after kill(s) at {kills}"
    assert len(kills) >= 3, kills

    # what a kill between a temporary state file's creation and its rename leaves: removed on resume
    stale = [out / "tuner" / ".oracle.tmp-deadbeef.json", out / "tuner" / "trial_0" / ".trial.tmp-deadbeef.json"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    # the resume to the end, the uninterrupted search and the reruns below: the command's main(argv) in this
    # process (no TensorFlow start-up each; the killed searches above are processes)
    code, _, err = run_main(search_main, *args)
    assert code == 0, f"kills at {kills}: {err[-3000:]}"
    assert not [p for p in stale if p.exists()] and not list((out / "tuner").rglob(".*.tmp-*"))
    after = trial_states(out)
    assert sorted(after) == trial_ids and set(after.values()) == {"COMPLETED"}, (after, kills)
    assert sorted(p.name for p in (out / "tuner").glob("trial_*")) == [f"trial_{i}" for i in trial_ids]
    rows = read_rows(out)
    assert [r["trial_id"] for r in rows] == trial_ids and {r["status"] for r in rows} == {"COMPLETED"}
    for row in rows:  # what trials.csv reports is what each trial recorded
        record = json.loads((out / "tuner" / f"trial_{row['trial_id']}" / TRIAL_RECORD).read_bytes())
        if row["trial_id"] in records:
            assert record == json.loads(records[row["trial_id"]]), row["trial_id"]
        assert float(row["accuracy"]) == pytest.approx(record["executions"][0]["dev_metrics"]["accuracy"])
        assert float(row["wall_time_s"]) == record["wall_time_s"]
    saved = json.loads((out / "search.json").read_text())
    assert saved["status"] == "complete" and saved["trials"] == 6
    best = max(rows, key=lambda r: float(r["accuracy"]))
    assert saved["best_search_metric"] == pytest.approx(float(best["accuracy"]))

    # issue 14 item 4: the killed and resumed search is the search an uninterrupted run makes: the same
    # hyperparameters for every trial, the same scores, the same best trial
    whole = tmp_path / "whole"
    code, _, err = run_main(search_main, *[str(whole) if a == str(out) else a for a in args])
    assert code == 0, err[-3000:]
    unchanged = read_rows(whole)
    for a, b in zip(rows, unchanged, strict=True):
        a, b = ({k: v for k, v in r.items() if k not in ("wall_time_s", "tuner_id")} for r in (a, b))
        assert a == b, (kills, a, b)
    assert json.loads((whole / "search.json").read_text())["best_trial_id"] == saved["best_trial_id"]

    # a finished search run again trains nothing; other settings are refused
    code, _, err = run_main(search_main, *args)
    assert code == 0, err[-2000:]
    assert [r["wall_time_s"] for r in read_rows(out)] == [r["wall_time_s"] for r in rows]
    code, _, err = run_main(search_main, *args, "--lr", "0.01,0.02")
    assert code == 2 and "other settings (space)" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def test_distributed_search_chief_two_workers_and_a_killed_worker(sst2_cls_store, tmp_path):  # noqa: F811
    """KerasTuner's chief/worker set-up on loopback: one chief, two workers;
    worker tuner1 is killed with SIGKILL in the middle of a trial and started
    again with the same id, and runs that trial again. Every trial runs to
    completion once, the results land in the chief's one trials.csv, and the
    chief alone writes search.json and best/."""
    out = tmp_path / "dist"
    args = ["--store", sst2_cls_store, "--out", str(out), "--max-trials", "5", "--epochs", "2", "--seed", "2",
            "--kinds", "linear_probe,scalar_mix", "--quiet", "--no-jit-compile"]
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
    procs = {name: _popen_search(args, {**env, "KERASTUNER_TUNER_ID": name}) for name in ("chief", "tuner0", "tuner1")}
    try:
        killed, deadline = None, time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and procs["tuner1"].poll() is None:
            try:  # the chief's oracle: which trial each worker holds
                oracle = json.loads((out / "tuner" / "oracle.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                oracle = {}
            killed = oracle.get("ongoing_trials", {}).get("tuner1")
            time.sleep(0.05)
        assert killed is not None, procs["tuner1"].stderr.read()[-3000:] if procs["tuner1"].poll() is not None else ""
        time.sleep(0.5)  # into the trial's training (building, fitting and scoring take seconds)
        os.kill(procs["tuner1"].pid, signal.SIGKILL)
        procs["tuner1"].wait()
        assert not (out / "tuner" / f"trial_{killed}" / TRIAL_RECORD).exists(), "killed after the trial finished"
        procs["tuner1"] = _popen_search(args, {**env, "KERASTUNER_TUNER_ID": "tuner1"})  # as a job manager would
        outputs = {name: _finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    rows = read_rows(out)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2", "3", "4"] and {r["status"] for r in rows} == {"COMPLETED"}
    by_trial = {r["trial_id"]: r["tuner_id"] for r in rows}
    assert by_trial[killed] == "tuner1" and set(by_trial.values()) == {"tuner0", "tuner1"}
    oracle = json.loads((out / "tuner" / "oracle.json").read_text())
    assert all(oracle["run_times"][t] == 1 for t in by_trial), oracle["run_times"]  # each ended once
    for name in ("tuner0", "tuner1"):
        ran = [t for t, who in by_trial.items() if who == name]
        line = outputs[name].strip().splitlines()[-1]
        assert line.startswith(f"worker {name}: trained trial(s) ") and sorted(line.split(")")[1].split(" for")[0]
                                                                          .strip().split(", ")) == sorted(ran), line
    assert outputs["tuner1"].strip().splitlines()[-1].startswith(f"worker tuner1: trained trial(s) {killed}")
    saved = json.loads((out / "search.json").read_text())
    assert saved["status"] == "complete" and saved["trials"] == 5
    assert saved["distributed"] == {"oracle": f"127.0.0.1:{env['KERASTUNER_ORACLE_PORT']}", "chief": "chief"}
    assert f"best trial {saved['best_trial_id']}" in outputs["chief"]
    assert (out / "best" / "results.json").is_file()


def test_half_set_distributed_environment_is_refused(sst2_cls_store, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "s"
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    code, _, err = run_main(search_main, "--store", sst2_cls_store, "--out", out)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: KERASTUNER_ORACLE_PORT must be the chief's")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.delenv("KERASTUNER_TUNER_ID")
    code, _, err = run_main(search_main, "--store", sst2_cls_store, "--out", out)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: KERASTUNER_TUNER_ID must name this process")
    assert not out.exists()


def test_keras_tuner_internals_we_rely_on(tmp_path, monkeypatch):
    """The one place bertvision.search.tuner touches KerasTuner's private parts
    (`atomic_tuner_state`, `_retry_unfinished`); fails loudly if an upgrade
    moves them. Every state file goes through the atomic writer, and a
    reloaded oracle retries a trial whose trial.json was written but which
    the saved oracle never heard of. KerasTuner has no public hook for either,
    so pyproject.toml pins the keras-tuner range these internals are tested
    on: the installed version must lie inside it."""
    import tomllib

    import keras_tuner as kt
    from packaging.requirements import Requirement

    from bertvision.search import tuner as bs

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    (pin,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("keras-tuner")]
    assert pin.specifier.contains(kt.__version__), (kt.__version__, str(pin.specifier))

    written = []

    def spy(path, obj):
        written.append(os.path.basename(str(path)))
        return atomic(path, obj)

    atomic = bs._atomic_save_json
    monkeypatch.setattr(bs, "_atomic_save_json", spy)

    def tuner():
        return kt.RandomSearch(hypermodel=lambda hp: hp.Choice("x", [1, 2, 3]) and None, objective="val_loss",
                               max_trials=3, directory=str(tmp_path), project_name="p", seed=0)

    with bs.atomic_tuner_state():
        first = tuner()
        first.save()
        oracle_file = tmp_path / "p" / "oracle.json"
        before = oracle_file.read_bytes()
        trial = first.oracle.create_trial("tuner0")  # writes trial_0/trial.json, then oracle.json
        assert trial.status == "RUNNING"
        oracle_file.write_bytes(before)  # a kill between the two writes: the oracle never heard of trial 0
        second = tuner()
        bs._retry_unfinished(second.oracle)
        assert second.oracle._retry_queue == [trial.trial_id]
        assert second.oracle.create_trial("tuner0").trial_id == trial.trial_id  # the trial is retried, not lost
    assert {"oracle.json", "tuner0.json", "trial.json"} <= set(written), written
    assert bs.kt_utils.save_json is not spy and bs.kt_utils.save_json is not atomic  # restored after the block


@pytest.mark.parametrize("change, message", [
    ({"max_trials": 0}, "--max-trials must be a positive integer"),
    ({"tuner": "grid"}, "unknown tuner 'grid'"),
    ({"space": {"adapter_dims": [0, 64]}}, "adapter_dims: must be positive integers"),
    ({"space": {"kinds": ["transformer"]}}, "unknown ['transformer']"),
    ({"space": {"dropout": [0.2, 1.0]}}, "search space dropout"),
    ({"space": {"layer_subsets": ["all", "first2"]}}, "unknown layer subset 'first2'"),
    ({"space": {"transformer_blocks": [0, -1]}}, "transformer_blocks: must be integers >= 0"),
    ({"space": {"window_poolings": ["mean", "median"]}}, "window_poolings: unknown ['median']"),
])
def test_invalid_search_settings_fail_clearly(change, message, tmp_path):
    from bertvision.errors import SearchError
    from bertvision.search.tuner import SearchConfig

    with pytest.raises(SearchError) as err:
        SearchConfig(store="unused", out=str(tmp_path / "s"), **change)
    assert message in str(err.value)
    assert not (tmp_path / "s").exists()


def test_store_that_does_not_fit_fails_before_any_trial(sst2_cls_store, tmp_path):  # noqa: F811
    from bertvision.errors import SearchError, StoreError
    from bertvision.search.tuner import SearchConfig, search

    out = tmp_path / "s"
    with pytest.raises(SearchError, match=r"last9.*the store has 7 layers"):
        search(SearchConfig(store=sst2_cls_store, out=str(out), space={"layer_subsets": ["all", "last9"]}))
    with pytest.raises(SearchError, match=r"transformer_blocks=1 .*'sequence' store"):
        search(SearchConfig(store=sst2_cls_store, out=str(out), space={"transformer_blocks": [0, 1]}))
    with pytest.raises(SearchError, match=r"no split\(s\) \['test'\]"):
        search(SearchConfig(store=sst2_cls_store, out=str(out), eval_split="test"))
    with pytest.raises(StoreError, match="no manifest.json"):
        search(SearchConfig(store=str(tmp_path / "missing"), out=str(out)))
    assert not out.exists()
    code, _, err = run_main(search_main, "--store", sst2_cls_store, "--out", out, "--max-trials", "0")
    assert code == 2 and err.strip().splitlines()[-1] == "error: --max-trials must be a positive integer, got 0"
    assert not out.exists()


def test_search_over_transformer_blocks_on_a_sequence_store(sst2_seq_store, tmp_path):  # noqa: F811
    """Issue 17 item 4: the side network's blocks are a searchable
    hyperparameter of adapter_pooler on sequence stores; the best run is
    built with the blocks of the best trial."""
    from bertvision.runs import RunFolder
    from bertvision.search.tuner import SearchConfig, search

    out = tmp_path / "s"
    search(SearchConfig(store=sst2_seq_store, out=str(out), max_trials=3, epochs=1, seed=0, verbose=0,
                        jit_compile=False,
                        space={"kinds": ["adapter_pooler"], "adapter_dims": [16], "layer_poolings": ["scalar_mix"],
                               "transformer_blocks": [0, 1]}))
    rows = read_rows(out)
    by_blocks = {r["transformer_blocks"]: int(r["trainable_params"]) for r in rows}
    assert set(by_blocks) == {"0", "1"}, rows  # the seeded random search tried both
    d = 16  # one block adds attention (4 d^2 + 4 d), a 2d-wide feed-forward (4 d^2 + 3 d) and two layer norms
    assert by_blocks["1"] - by_blocks["0"] == 8 * d * d + 11 * d
    saved = json.loads((out / "search.json").read_text())
    best = RunFolder(out / "best").results()
    assert best.hyperparameters["transformer_blocks"] == saved["best_hyperparameters"]["transformer_blocks"]


def test_a_search_recorded_before_a_space_field_existed_still_resumes(tmp_path):
    """A search.json written before `transformer_blocks` joined the space
    holds no value for it; resuming it with the same flags must not be
    refused as 'other settings' (the field's default is what it searched)."""
    from bertvision.errors import SearchError
    from bertvision.runs import SearchFolder
    from bertvision.search.tuner import RESUMABLE, SearchConfig

    folder = SearchFolder(tmp_path)
    config = SearchConfig(store="unused", out=str(tmp_path))
    old = config.to_dict()
    del old["space"]["transformer_blocks"]
    (tmp_path / "search.json").write_text(json.dumps({"run_type": "search", "config": old}))
    assert folder.read_record(config, RESUMABLE, SearchError)["config"] == old
    searched = SearchConfig(store="unused", out=str(tmp_path), space={"transformer_blocks": [0, 1]})
    with pytest.raises(SearchError, match=r"other settings \(space\)"):
        folder.read_record(searched, RESUMABLE, SearchError)
