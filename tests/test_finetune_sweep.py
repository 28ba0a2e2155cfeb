"""`python -m experiments.finetune_sweep`: the recipe sweep's table and summary on 16 real SST-2 examples
(8 dev), and its resume (finished runs are read back, not trained again)."""

import json

from tests.stores import run_pipeline


def sweep(work, data):
    """The sweep's ``main(argv)`` in this process (its fine-tunings run in-process too: no TensorFlow start-up)."""
    return run_pipeline("experiments.finetune_sweep", "--work", work, "--data-root", data, "--tasks", "sst2",
                        "--lrs", "5e-5,3e-4", "--epochs", "2", "--limit", "16", "--eval-limit", "8")


def test_sweep_table_summary_and_resume(tmp_path, shared_data):
    work = tmp_path / "sweep"
    out = sweep(work, shared_data)
    summary = json.loads((work / "summary.json").read_text())["sst2"]
    assert summary["metric"] == "accuracy"
    best = summary["best"]
    assert best["lr"] in (5e-5, 3e-4) and best["epoch"] in (1.0, 2.0) and 0 <= best["value"] <= 1
    # the fixed recipe (lr 5e-5) is read at epochs 1 and 2 of the same sweep
    assert all(0 <= summary["fixed_recipe"][e] <= 1 for e in ("1", "2"))
    assert best["value"] >= max(summary["fixed_recipe"].values())
    lines = [line for line in out.splitlines() if line.startswith("| sst2 (accuracy) |")]
    assert len(lines) == 2 and "(fixed recipe)" in lines[0] and lines[0].count("**") + lines[1].count("**") == 2
    for lr in ("lr5e-05", "lr0.0003"):
        results = json.loads((work / "sst2" / lr / "results.json").read_text())
        assert results["train_examples"] == 16 and [h["epoch"] for h in results["history"]] == [1.0, 2.0]
    # a second call reads the finished runs back: same table, nothing trained
    stamp = (work / "sst2" / "lr5e-05" / "results.json").stat().st_mtime_ns
    again = sweep(work, shared_data)
    assert [line for line in again.splitlines() if line.startswith("| sst2")] == lines
    assert (work / "sst2" / "lr5e-05" / "results.json").stat().st_mtime_ns == stamp
