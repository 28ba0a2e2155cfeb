"""`python -m experiments.recipe_small_data`: the small, unbalanced SST-2 draw, one fine-tuning run of the
head on the mean over tokens (`--pooling mean`) on 8 of its rows, its table, and its resume."""

import numpy as np

from bertvision.runs import RunFolder
from tests.stores import run_pipeline


def small_data(work, data):
    return run_pipeline("experiments.recipe_small_data", "--work", work, "--data-root", data, "--tasks", "sst2",
                        "--lrs", "1e-4", "--poolings", "mean", "--seeds", "0", "--epochs", "1",
                        "--limit", "8", "--eval-limit", "8")


def test_small_unbalanced_draw_mean_pooling_run_and_table(tmp_path, shared_data):
    work = tmp_path / "small"
    out = small_data(work, shared_data)
    rows = (work / "data" / "sst2" / "train.tsv").read_text().splitlines()
    assert rows[0] == "sentence\tlabel" and len(rows) == 1001
    labels = np.array([int(r.rsplit("\t", 1)[1]) for r in rows[1:]])
    assert labels.sum() == 200  # 20% positive, the minority class
    assert (work / "data" / "sst2" / "dev.tsv").read_text() == (shared_data / "glue" / "SST-2" / "dev.tsv").read_text()
    run = RunFolder(work / "sst2" / "lr0.0001-mean-seed0")
    results = run.results()
    assert results.hyperparameters["pooling"] == "mean" and results.train_examples == 8
    assert results.history[-1].epoch == 1.0  # (8 rows are one step: no half-epoch checkpoint)
    line = [x for x in out.splitlines() if x.startswith("| sst2 (accuracy) |")]
    assert len(line) == 1
    cells = [c.strip() for c in line[0].strip("|").split("|")]
    assert cells[1:3] == ["0.0001", "mean"] and len(cells) == 3 + len(results.history)
    for cell in cells[3:]:
        mcc, accuracy = cell.split(" (")[0].split(" / ")
        assert -1 <= float(mcc) <= 1 and 0 <= float(accuracy) <= 100
    assert small_data(work, shared_data).splitlines()[-3:] == out.splitlines()[-3:]  # read back, not retrained
