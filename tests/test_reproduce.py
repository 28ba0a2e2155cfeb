"""`python -m experiments.reproduce --quick`: the whole reproduction (fine-tuning,
extraction, the four adapter kinds on each task, ensembles, data fractions,
report) on a few dozen real examples of SST-2 and SQuAD 2.0, with a second
seed, then resume behaviour."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.stores import cli_env

from experiments.reproduce import (KINDS, QUICK_PLANS, QUICK_SETTINGS, ReproduceConfig, Stages, TaskStages, _share,
                                  markdown, seed_summary)
from experiments.reproduce import main as reproduce_main
from bertvision.store.format import open_store


# a guard against a hang, not a speed check: the quick run took about 4 min on a quiet 2-core machine before
# its plans were cut down (2026-12-07) and went past 15 min beside a second test suite and a fine-tuning run (load 8)
TIMEOUT_S = 2700


def reproduce(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--quick", "--no-progress", *args],
                          cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"experiments.reproduce failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def quick_run(module_tmp, shared_data):
    work = module_tmp("reproduce") / "work"
    docs = work.parent / "docs"
    reproduce("--work", str(work), "--data-root", str(shared_data), "--docs", str(docs), "--seeds", "0,1")
    return work, docs, shared_data


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        ReproduceConfig(work=str(tmp_path), data_root=str(tmp_path), tasks=["cola"])
    with pytest.raises(ValueError, match="must include 1.0"):
        ReproduceConfig(work=str(tmp_path), data_root=str(tmp_path), finetune_checkpoints=[0.1, 0.3])
    assert _share(0.5) == "50.00%" and _share(3.4e-5) == "0.0034%"
    with pytest.raises(ValueError, match="--layer-seeds must list distinct seeds not in --seeds"):
        ReproduceConfig(work=str(tmp_path), data_root=str(tmp_path), seeds=[0, 1], layer_seeds=[1, 2])


def test_pair_task_frozen_store_encodes_sentences_separately(tmp_path, shared_data):
    """MRPC's plan: the frozen backbone's store holds each sentence on its own (masked means) and its
    adapters take the plan's width; the fine-tuned checkpoints' stores stay cross-encoded."""
    config = ReproduceConfig(work=str(tmp_path), data_root=str(shared_data), tasks=["mrpc"], quick=True,
                             progress=False, jit_compile=False)
    task = TaskStages(config, "mrpc", Stages(tmp_path), seed=0)
    task.extract("frozen")
    task.fit("adapter_pooler", "frozen")
    store = open_store(str(tmp_path / "mrpc" / "store-frozen"))
    assert (store.pair_mode, store.token_mode) == ("separate", "mean")
    assert task.store_encoding("ft1") == ("sequence", "cross")
    assert store.num_records("train") == 48 and store.num_records("dev") == 24
    fitted = json.loads((tmp_path / "mrpc" / "adapter_pooler-frozen" / "config.json").read_text())
    assert fitted["adapter"]["adapter_dim"] == 32 and fitted["adapter"]["kind"] == "adapter_pooler"
    results = json.loads((tmp_path / "mrpc" / "adapter_pooler-frozen" / "results.json").read_text())
    assert 0 <= results["dev_metrics"]["f1"] <= 1
    assert task.stores()[0]["backbone"] == "frozen MiniLM, sentences encoded separately"
    # the zero-shot cosine beside the pair adapters: no training, no parameters, scored on dev
    task.cosine()
    cosine = json.loads((tmp_path / "mrpc" / "cosine-frozen" / "results.json").read_text())
    assert cosine["method"] == "cosine" and cosine["trainable_params"] == 0
    assert tmp_path / "mrpc" / "cosine-frozen" in task.expected_runs()
    # a --layer-seeds seed: the mixing kinds only, on the first seed's stores, fine-tuning nothing
    config.layer_seeds = [1]
    mixes = TaskStages(config, "mrpc", Stages(tmp_path), seed=1)
    assert not mixes.finetunes and not mixes.trains_lora
    assert mixes.store("frozen") == task.store("frozen") and mixes.store("ft1") == tmp_path / "mrpc" / "store-ft1"
    assert mixes.expected_runs() == [tmp_path / "mrpc" / "seed1" / f"{k}-{b}" for b in ("frozen", "ft1")
                                     for k in ("scalar_mix", "adapter_pooler") if k in mixes.kinds(b)]
    mixes.fit("scalar_mix", "frozen")
    weights = json.loads((tmp_path / "mrpc" / "seed1" / "scalar_mix-frozen" / "results.json").read_text())
    assert weights["seed"] == 1 and len(weights["layer_weights"]) == len(store.layers)


def test_quick_reproduction_table(quick_run):
    work, docs, _ = quick_run
    results = json.loads((work / "reproduction.json").read_text())
    rows = [r for r in results["rows"] if r["seed"] == 0]  # the first seed runs every row
    assert {r["task"] for r in rows} == {"sst2", "squad_v2"}  # --quick's default tasks
    for task, tuned in (("sst2", ["1"]), ("squad_v2", ["0.3", "1"])):
        task_rows = [r for r in rows if r["task"] == task]
        methods = [r["method"] for r in task_rows]
        bert = [m for m in methods if m.startswith("BERT fine-tuned")]
        assert QUICK_SETTINGS["finetune_checkpoints"] == [0.3, 1.0, 2.0]  # the full run's also 0.1
        assert bert == ["BERT fine-tuned 0.3 ep", "BERT fine-tuned 1 ep", "BERT fine-tuned 2 ep"]
        lora = [r for r in task_rows if r["method"].startswith("LoRA r=8")]
        # the quick plans train LoRA on SST-2 (2 epochs) and not on SQuAD (the same code, another head)
        assert [r["method"] for r in lora] == (["LoRA r=8 1 ep", "LoRA r=8 2 ep"] if task == "sst2" else [])
        assert all(r["trainable_params"] < 0.05 * r["trainable_params"] / r["param_share"] for r in lora)
        backbones = ["frozen MiniLM"] + [f"MiniLM fine-tuned {e} ep" for e in tuned]
        # the quick plans: every kind on the backbone the fraction rows read, adapter_pooler on the others
        plan_kinds = QUICK_PLANS[task].backbone_kinds
        for key, backbone in zip(["frozen"] + [f"ft{e}" for e in tuned], backbones):
            assert sorted(r["method"] for r in task_rows if r["backbone"] == backbone
                          and r["method"] in KINDS) == sorted(plan_kinds.get(key, KINDS))
        assert {r["method"] for r in task_rows if r["method"] in KINDS} == set(KINDS)
        ensembles = [r for r in task_rows if r["method"].startswith("ensemble")]
        assert sorted(r["backbone"] for r in ensembles) == sorted(backbones[1:] * 2)
        fractions = [r for r in task_rows if " of train" in r["method"]]
        # the best kind on 50% (+ its full run, 100%); the full run: the best two on 10, 25 and 50%
        assert len(fractions) == 1 * 2
        # on the frozen store, except SQuAD's: on the 1-epoch checkpoint's (its frozen adapters say nothing)
        assert {r["backbone"] for r in fractions} == {backbones[-1] if task == "squad_v2" else backbones[0]}
        assert QUICK_SETTINGS["fractions"] == [0.5, 1.0] and QUICK_SETTINGS["fraction_kinds"] == 1
        assert {r["method"].split(" on ")[1] for r in fractions} == {"50% of train", "100% of train"}
        counts = {r["method"].split(" on ")[1]: int(r["train_data"].split()[0]) for r in fractions}
        assert counts["50% of train"] == round(counts["100% of train"] / 2), counts
        for r in task_rows:
            main = r["dev_metrics"][r["main_metric"]] if r["main_metric"] in r["dev_metrics"] else None
            assert r["method"].startswith("answerability") or math.isfinite(main), r
            assert r["trainable_params"] > 0 and r["param_share"] > 0
            if r["method"] in KINDS:
                assert r["param_share"] < 0.01, r  # an adapter is under 1% of the backbone
                assert r["fit_s"] > 0 and r["peak_mib"] > 0
                assert (r["finetune_s"] > 0) == (r["backbone"] != "frozen MiniLM")
            if r["method"].startswith(("BERT", "LoRA")):
                assert r["peak_mib"] > 0 and r["finetune_s"] > 0
        stores = [s for s in results["stores"] if s["task"] == task and s["seed"] == 0]
        assert sorted(s["backbone"] for s in stores) == sorted(backbones)
        assert all(s["bytes"] > 0 and s["extract_s"] > 0 and s["peak_mib"] > 0 for s in stores)
        # SQuAD's stores: the last 4 layers as int8 (the plan's budget choices); SST-2's all 7 in float16
        expected = (4, "int8") if task == "squad_v2" else (7, "float16")
        assert {(s["layers"], s["dtype"]) for s in stores} == {expected}
    answer = [r for r in rows if r["method"].startswith("answerability")]
    assert len(answer) == 2 and all(r["task"] == "squad_v2" for r in answer)
    assert all(0 <= r["dev_metrics"]["answerable_f1"] <= 1 for r in answer)
    # the fine-tuned backbone's store really differs from the frozen one
    frozen = json.loads((work / "sst2" / "store-frozen" / "manifest.json").read_text())
    tuned = json.loads((work / "sst2" / "store-ft1" / "manifest.json").read_text())
    assert frozen["backbone"]["weights_sha256"] != tuned["backbone"]["weights_sha256"]
    # tables, charts and the docs copy
    text = (work / "results.md").read_text()
    for title in ("## SST-2", "## SQuAD 2.0", "| BERT fine-tuned 1 ep |", "HasAns_f1", "best_f1", "| LoRA r=8 2 ep |",
                  "Answerability", "Stores (train + dev)", "peak MiB", "load average"):
        assert title in text, title
    # 2 SST-2 + 3 SQuAD backbones; --quick has no labelled test split, so each adapter row was chosen on the
    # split it reports and is marked (*)
    assert (docs / "reproduction.md").read_text().count("| adapter_pooler (*) |") == 5
    # the layer weights over seeds count each seed's run on the whole training split once (seeds 0 and 1), not
    # the fraction rows nor the 100% fraction row (the same run again)
    mixes = text.split("## Learned layer weights over seeds 0, 1")[1].split("\n## ")[0]
    counts = [int(line.split("|")[4]) for line in mixes.splitlines() if line.startswith("| sst2 ")]
    assert counts and max(counts) <= 2, mixes
    charts = sorted(p.name for p in (docs / "results").glob("*.png"))
    assert "finetune_curve.png" in charts and "metric_vs_fraction.png" in charts, charts
    assert (work / "report" / "summary.md").is_file()
    stages = json.loads((work / "stages.json").read_text())
    assert "sst2/bert" in stages and "squad_v2/store-ft0.3/dev" in stages and "squad_v2/answerability-ft1" in stages
    assert "sst2/seed1/bert" in stages and "squad_v2/seed1/adapter_pooler-frozen" in stages
    assert all(s["wall_s"] >= 0 and len(s["load_avg"]) == 2 for s in stages.values())
    # the second seed: the headline rows again in their own folders (SQuAD: the frozen adapter alone; its
    # fine-tuning is not repeated per seed), and their spread
    seed1 = [r for r in results["rows"] if r["seed"] == 1]
    assert {r["task"] for r in seed1} == {"sst2", "squad_v2"}
    assert all("/seed1/" in r["run"] for r in seed1)
    assert not any(r["method"].startswith(("BERT", "LoRA")) for r in seed1 if r["task"] == "squad_v2")
    assert any(r["method"].startswith("BERT") for r in seed1 if r["task"] == "sst2")
    assert not any(r["method"].startswith("LoRA") for r in seed1)  # the quick plans: LoRA on the first seed only
    spread = {(s["task"], s["row"]): s for s in results["seeds"]}
    assert spread[("sst2", "BERT 2 ep")]["seeds"] == [0, 1] and spread[("sst2", "BERT 2 ep")]["std"] is not None
    assert any(row.startswith("ensemble") for _, row in spread)
    assert "Headline rows over seeds 0, 1" in (work / "results.md").read_text()


def run_here(capsys, *args) -> tuple[int, str, str]:
    """`experiments.reproduce --quick` in this process (for the invocations that train nothing or one
    small adapter: no second TensorFlow start-up)."""
    capsys.readouterr()
    code = reproduce_main(["--quick", "--no-progress", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_quick_reproduction_resumes(quick_run, capsys):
    work, _, data = quick_run
    before = json.loads((work / "reproduction.json").read_text())["rows"]
    # a finished reproduction: nothing runs again (with fewer seeds too: the table then shows seed 0 alone)
    code, out, err = run_here(capsys, "--work", work, "--data-root", data, "--seeds", "0")
    assert code == 0 and "this invocation: 0 stage(s) run" in out, err
    assert {r["seed"] for r in json.loads((work / "reproduction.json").read_text())["rows"]} == {0}
    # other settings on the same folder are refused, naming the difference
    code, _, err = run_here(capsys, "--work", work, "--data-root", data, "--tasks", "sst2,mrpc", "--seeds", "0,1")
    assert code == 2 and "tasks" in err
    # a lost run folder: only its stage runs again, and gives the same seeded result
    shutil.rmtree(work / "sst2" / "cnn-frozen")
    code, out, err = run_here(capsys, "--work", work, "--data-root", data, "--seeds", "0,1")
    results = json.loads((work / "reproduction.json").read_text())
    assert code == 0 and results["meta"]["stages_run_now"] == ["sst2/cnn-frozen"], out[-2000:] + err[-2000:]
    after = results["rows"]
    key = [(r["task"], r["seed"], r["method"], r["backbone"]) for r in before]
    assert key == [(r["task"], r["seed"], r["method"], r["backbone"]) for r in after]
    redone = [(b, a) for b, a in zip(before, after) if a["run"].endswith("cnn-frozen")]
    assert redone and all(b["dev_metrics"] == pytest.approx(a["dev_metrics"]) for b, a in redone)
    assert {s["row"] for s in results["seeds"] if s["seeds"] == [0, 1]}  # the second seed's spread is back


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_here(capsys, "--work", tmp_path / "w", "--data-root", tmp_path / "nowhere", "--tasks", "sst2")
    assert code == 2 and "no such data folder" in err


def _row(task="sst2", seed=0, value=0.85, headline="BERT 1 ep", method="BERT fine-tuned 1 ep"):
    return {"task": task, "seed": seed, "method": method, "backbone": "-", "train_data": "8000 ex",
            "dev_metrics": {"accuracy": value}, "main_metric": "accuracy", "trainable_params": 22713986,
            "param_share": 1.0, "finetune_s": 215.0, "fit_s": None, "peak_mib": 1500, "run": "x",
            "headline": headline}


def test_seed_summary_mean_and_spread():
    rows = [_row(seed=0, value=0.85), _row(seed=1, value=0.87), _row(seed=2, value=0.86),
            _row(seed=0, value=0.80, headline=None, method="cnn"),  # not a headline row: not aggregated
            _row(task="mrpc", seed=0, value=0.70, headline="LoRA 2 ep", method="LoRA r=8 2 ep")]
    summary = seed_summary(rows)
    assert [(s["task"], s["row"]) for s in summary] == [("sst2", "BERT 1 ep"), ("mrpc", "LoRA 2 ep")]
    bert = summary[0]
    assert bert["seeds"] == [0, 1, 2] and bert["mean"] == pytest.approx(0.86)
    assert bert["std"] == pytest.approx(0.01)  # sample standard deviation
    assert summary[1]["std"] is None  # one seed: no spread to report


def test_markdown_names_machine_and_rows():
    rows = [_row(seed=0, value=0.85), _row(seed=1, value=0.87)]
    meta = {"quick": False, "date": "2026-11-23", "backbone": "all-MiniLM-L6-v2", "backbone_params": 22713216,
            "seeds": [0, 1], "total_stage_s": 600.0, "task_seconds": {"sst2": 600.0}, "mean_load": 1.5,
            "machine": {"cpu": "CPU X", "cores": 2, "memory_gib": 24.0, "gpus": "none", "tensorflow": "2.21.0",
                        "python": "3.11"}}
    text = markdown(rows, [], seed_summary(rows), meta)
    assert "2026-11-23" in text and "CPU X, 2 cores" in text and "| 0.8500 |" in text and "| 215 |" in text
    assert "--seeds 0,1" in text and "| SST-2 | BERT 1 ep | accuracy | 0.8600 | 0.0141 | 2 | 0.8500, 0.8700 |" in text
    assert "Learned layer weights over seeds" not in text  # no run with a layer mix
    marked = markdown([{**_row(seed=0, value=0.85, method="scalar_mix"), "chosen_on_reported_split": True}], [],
                      seed_summary(rows), meta)
    assert "| scalar_mix (*) |" in marked and "(*) marks a row whose epoch was chosen on the split it reports" in marked
    text = markdown(rows, [], seed_summary(rows), {**meta, "layer_mix": "| task | mix |"})
    assert "## Learned layer weights over seeds 0, 1" in text and "| task | mix |" in text
