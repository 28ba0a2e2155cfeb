"""`python -m experiments.own_data --quick`: issue 28's table (adapters, the
peer baseline and a tuned MiniLM, fine-tuned on Banking77 and LoRA on
GoEmotions, in one run) on a few dozen real Banking77 and GoEmotions
examples, and its resume (finished runs are read back, not trained again).
The benchmark's ``main(argv)`` runs in this process; its stages are still
the commands it spawns, each measured on its own."""

import re
from argparse import Namespace

from bertvision.runs import RunFolder
from experiments.own_data import ADAPTER_DEFAULTS, adapter_recipe
from tests.stores import run_pipeline


def bench(work, data):
    return run_pipeline("experiments.own_data", "--quick", "--work", work, "--data-root", data)


def table_rows(out):
    return [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| method")]


def test_own_data_bench_quick_table_and_resume(tmp_path, shared_data):
    work = tmp_path / "own"
    out = bench(work, shared_data)
    assert "## banking77 (test; main metric accuracy)" in out
    assert "## goemotions (dev; main metric micro_f1)" in out
    rows = table_rows(out)
    # linear_probe, the peer baseline and one tuned MiniLM per dataset (GoEmotions: multi-label)
    assert len(rows) == 6 and "not run" not in out
    tuned = [r.split("|")[1].strip() for r in (rows[2], rows[5])]
    # --finetune-pooling auto: the embedded MiniLM declares mean pooling, and the run's config records it
    assert tuned == ["MiniLM fine-tuned (0.5 epochs, head on the mean)",
                     "MiniLM LoRA r=8 (0.5 epochs, head on the mean)"]
    # Banking77 is scored on test, with dev (where every choice was made) beside it; GoEmotions on dev
    assert "| method | seeds | accuracy | dev accuracy | macro F1 |" in out
    assert "| method | seeds | micro_f1 | macro F1 |" in out
    for index, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if index < 3:
            method, seeds, main, dev, macro, params, seconds, peak = cells
            assert 0 <= float(dev) <= 1
        else:
            method, seeds, main, macro, params, seconds, peak = cells
        assert seeds == "1" and 0 <= float(main) <= 1 and 0 <= float(macro) <= 1
        assert int(params.replace(",", "")) > 0 and float(seconds) >= 0 and float(peak) > 100
    peers = [r for r in rows if "peer baseline" in r]
    bert, lora = (int(r.strip("| ").split("|")[-3].strip().replace(",", "")) for r in (rows[2], rows[5]))
    assert bert > 20_000_000 > lora > 10_000  # the whole MiniLM; LoRA's adapters and the head
    assert "one-vs-rest" in peers[1] and "one-vs-rest" not in peers[0]
    # logistic regression's parameters: (384 + 1) per class the training sample holds
    params = [int(re.split(r"\s*\|\s*", r.strip("| "))[-3].replace(",", "")) for r in peers]
    assert all(p % 385 == 0 and 385 <= p <= 77 * 385 for p in params)
    assert (work / "results.md").read_text().strip() in out
    # an adapter run's folder names the recipe flags --quick changed (1 epoch)
    finished = [work / "banking77" / "linear_probe-ep1-seed0", work / "banking77" / "finetune-pooling-auto",
                work / "goemotions" / "linear_probe-ep1-seed0", work / "goemotions" / "lora-pooling-auto"]
    stamps = [(run / "results.json").stat().st_mtime_ns for run in finished]
    # the frozen flow's commands against the fine-tuning run's, timed in this work folder (Banking77 only:
    # GoEmotions' tuned row is LoRA under --quick)
    flows = [line for line in out.splitlines() if line.startswith("The flow against fine-tuning")]
    assert len(flows) == 1 and "extract " in flows[0] and "+ fit " in flows[0] and "+ predict test " in flows[0]
    flow, tuned, share = (float(v) for v in re.search(r"= \*\*([\d.]+) s\*\*.*: ([\d.]+) s; the flow takes "
                                                     r"\*\*([\d.]+)\*\*", flows[0]).groups())
    assert flow > 0 and tuned > 0 and abs(share - flow / tuned) < 0.01
    again = bench(work, shared_data)
    assert flows[0] in again  # the times of the commands it does not run again are kept
    assert [r for r in table_rows(again) if "peer baseline" not in r] == [r for r in rows if "peer baseline" not in r]
    assert [(run / "results.json").stat().st_mtime_ns for run in finished] == stamps
    # Banking77 fine-tuned as one label of 77, scored on test; GoEmotions (LoRA) as a multi-label
    # task: a threshold per label, chosen on dev
    assert RunFolder(work / "banking77" / "finetune-pooling-auto").results().spec.kind == "classification"
    results = RunFolder(work / "goemotions" / "lora-pooling-auto").results()
    assert results.spec.kind == "multi_label" and len(results.thresholds) == 28


def test_adapter_run_folders_name_the_recipe_flags_that_differ_from_the_defaults():
    assert ADAPTER_DEFAULTS["adapter_dim"] == 64  # pipelines.fit's (ModelConfig's) default
    assert adapter_recipe(Namespace(**ADAPTER_DEFAULTS), "adapter_pooler") == ""
    tuned = Namespace(**{**ADAPTER_DEFAULTS, "adapter_dim": 256, "lr": 3e-3})
    assert adapter_recipe(tuned, "adapter_pooler") == "-dim256-lr0.003"
    assert adapter_recipe(tuned, "scalar_mix") == "-lr0.003"  # the width is adapter_pooler's alone
