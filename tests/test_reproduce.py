"""`python -m bench.reproduce --quick`: the whole reproduction (fine-tuning,
extraction, four adapter kinds on two backbones, ensembles, data fractions,
report) on a few dozen real examples of SST-2 and SQuAD 2.0, then resume
behaviour."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

from bench.reproduce import KINDS, ReproduceConfig, _share, markdown

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}


def reproduce(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "bench.reproduce", "--quick", "--no-progress", *args],
                          cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench.reproduce failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, shared_data):
    work = tmp_path_factory.mktemp("reproduce") / "work"
    docs = work.parent / "docs"
    reproduce("--work", str(work), "--data-root", str(shared_data), "--docs", str(docs))
    return work, docs, shared_data


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        ReproduceConfig(work=str(tmp_path), data_root=str(tmp_path), tasks=["cola"])
    with pytest.raises(ValueError, match="must include 1.0"):
        ReproduceConfig(work=str(tmp_path), data_root=str(tmp_path), finetune_checkpoints=[0.1, 0.3])
    assert _share(0.5) == "50.00%" and _share(3.4e-5) == "0.0034%"


def test_quick_reproduction_table(quick_run):
    work, docs, _ = quick_run
    results = json.loads((work / "results.json").read_text())
    rows = results["rows"]
    assert {r["task"] for r in rows} == {"sst2", "squad_v2"}  # --quick's default tasks
    for task in ("sst2", "squad_v2"):
        task_rows = [r for r in rows if r["task"] == task]
        methods = [r["method"] for r in task_rows]
        bert = [m for m in methods if m.startswith("BERT fine-tuned")]
        assert "BERT fine-tuned 1 ep" in bert and "BERT fine-tuned 2 ep" in bert
        if task != "squad_v2":  # a dozen SQuAD windows: 0.1 and 0.3 epoch can share a step
            assert bert[:2] == ["BERT fine-tuned 0.1 ep", "BERT fine-tuned 0.3 ep"]
        for backbone in ("frozen MiniLM", "MiniLM fine-tuned 1 epoch"):
            assert sorted(r["method"] for r in task_rows if r["backbone"] == backbone
                          and r["method"] in KINDS) == sorted(KINDS)
        assert sum(m.startswith("ensemble") for m in methods) == 2
        fractions = [r for r in task_rows if " of train" in r["method"]]
        assert [r["method"].split(" on ")[1] for r in fractions] == [f"{p} of train" for p in ("10%", "25%", "50%", "100%")]
        for r in task_rows:
            main = r["dev_metrics"][r["main_metric"]]
            assert math.isfinite(main), r
            assert r["trainable_params"] > 0 and r["param_share"] > 0
            if r["method"] in KINDS:
                assert r["param_share"] < 0.01, r  # an adapter is under 1% of the backbone
                assert r["extract_s"] > 0 and r["fit_s"] > 0 and r["store_bytes"] > 0
                assert (r["finetune_s"] > 0) == (r["backbone"] != "frozen MiniLM")
    # the fine-tuned backbone's store really differs from the frozen one
    frozen = json.loads((work / "sst2" / "store-frozen" / "manifest.json").read_text())
    tuned = json.loads((work / "sst2" / "store-ft1" / "manifest.json").read_text())
    assert frozen["backbone"]["weights_sha256"] != tuned["backbone"]["weights_sha256"]
    # tables, charts and the docs copy
    text = (work / "results.md").read_text()
    for title in ("## SST-2", "## SQuAD 2.0", "| BERT fine-tuned 1 ep |", "HasAns_f1"):
        assert title in text
    assert (docs / "results.md").read_text().count("| adapter_pooler |") == 4
    charts = sorted(p.name for p in (docs / "results").glob("*.png"))
    assert "finetune_curve.png" in charts and "metric_vs_fraction.png" in charts, charts
    assert (work / "report" / "summary.md").is_file()
    stages = json.loads((work / "stages.json").read_text())
    assert "sst2/bert" in stages and "squad_v2/store-ft1/dev" in stages
    assert all(s["wall_s"] >= 0 for s in stages.values())


def test_quick_reproduction_resumes(quick_run):
    work, _, data = quick_run
    before = json.loads((work / "results.json").read_text())["rows"]
    # a finished reproduction: nothing runs again
    proc = reproduce("--work", str(work), "--data-root", str(data))
    assert "this invocation: 0 stage(s) run" in proc.stdout
    # a lost run folder: only its stage runs again, and gives the same seeded result
    shutil.rmtree(work / "sst2" / "cnn-frozen")
    proc = reproduce("--work", str(work), "--data-root", str(data))
    meta = json.loads((work / "results.json").read_text())["meta"]
    assert meta["stages_run_now"] == ["sst2/cnn-frozen"], proc.stdout[-2000:]
    after = json.loads((work / "results.json").read_text())["rows"]
    key = [(r["task"], r["method"], r["backbone"]) for r in before]
    assert key == [(r["task"], r["method"], r["backbone"]) for r in after]
    redone = [(b, a) for b, a in zip(before, after) if a["run"].endswith("cnn-frozen")]
    assert redone and all(b["dev_metrics"] == pytest.approx(a["dev_metrics"]) for b, a in redone)
    # other settings on the same folder are refused, naming the difference
    proc = reproduce("--work", str(work), "--data-root", str(data), "--seed", "1", check=False)
    assert proc.returncode == 2 and "seed" in proc.stderr


def test_missing_data_root_is_a_clear_error(tmp_path):
    proc = reproduce("--work", str(tmp_path / "w"), "--data-root", str(tmp_path / "nowhere"), "--tasks", "sst2",
                     check=False)
    assert proc.returncode == 2 and "no such data folder" in proc.stderr


def test_markdown_names_machine_and_rows():
    rows = [{"task": "sst2", "method": "BERT fine-tuned 1 ep", "backbone": "-", "train_data": "8000 ex",
             "dev_metrics": {"accuracy": 0.85}, "main_metric": "accuracy", "trainable_params": 22713986,
             "param_share": 1.0, "finetune_s": 215.0, "extract_s": None, "fit_s": None, "store_bytes": None,
             "run": "x"}]
    meta = {"quick": False, "date": "2026-11-23", "backbone": "all-MiniLM-L6-v2", "backbone_params": 22713216,
            "total_stage_s": 600.0, "machine": {"cpu": "CPU X", "cores": 2, "memory_gib": 24.0, "gpus": "none",
                                                "tensorflow": "2.21.0", "python": "3.11"}}
    text = markdown(rows, meta)
    assert "2026-11-23" in text and "CPU X, 2 cores" in text and "| 0.8500 |" in text and "| 215 |" in text
