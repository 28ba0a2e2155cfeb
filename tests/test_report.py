"""Reports: results.json loading and checks, the summary table, the charts,
and `python -m pipelines.report` end to end on real small runs (a store
extracted from SST-2 and adapters trained on it by `pipelines.fit`)."""

from __future__ import annotations

import csv
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from pipelines.report import main as report_main
from tests.stores import run_main, run_pipeline, sst2_finetune_run  # noqa: F401  (a fixture)

from bertvision.report import (CHARTS, ReportError, build_charts, build_report, find_results, load_runs,
                               markdown_table, read_run, summary_frame)


def results(task="sst2", method="linear_probe", run_type="fit", metric="accuracy", value=0.8, **extra) -> dict:
    data = {"task": task, "method": method, "run_type": run_type, "main_metric": metric,
            "dev_metrics": {metric: value}, "trainable_params": 770, "backbone_params": 22713216,
            "param_share": 770 / 22713216, "train_fraction": 1.0, "train_wall_time_s": 2.5,
            "history": [{"epoch": 1.0, "loss": 0.6, "dev": {metric: value}, "train_time_s": 2.5}]}
    data.update(extra)
    return data


def write_run(folder: Path, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return folder


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


# ------------------------------------------------------------------ loading


def test_find_results_recursive_dedup_and_labels(tmp_path):
    write_run(tmp_path / "runs" / "a", results())
    write_run(tmp_path / "runs" / "deep" / "b", results(method="scalar_mix"))
    write_run(tmp_path / "runs" / ".hidden" / "c", results())
    found = find_results([tmp_path / "runs", tmp_path / "runs" / "a", tmp_path / "runs" / "a" / "results.json"])
    assert [p.parent.name for p in found] == ["a", "b"]
    runs = load_runs([tmp_path / "runs"])
    assert sorted(r.label for r in runs) == ["a", "deep/b"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"task": "sst2", "method": "m"}), "missing key(s) run_type, main_metric, dev_metrics"),
    (json.dumps(results(run_type="train")), "run_type 'train' is not one of"),
    (json.dumps(results(main_metric="f1")), "main_metric 'f1' is not in dev_metrics"),
    (json.dumps(results(dev_metrics={"accuracy": "high"})), "dev_metrics.accuracy: expected a finite number"),
    (json.dumps(results(history=[{"loss": 1.0}])), "history[0]: expected an object with 'epoch'"),
    (json.dumps(results(trainable_params="many")), "trainable_params: expected a finite number"),
    (json.dumps(results(layer_weights=[])), "layer_weights must be a non-empty list"),
], ids=["json", "not-object", "missing-keys", "run-type", "main-metric", "metric-value", "history", "params",
        "layer-weights"])
def test_bad_results_json_names_the_file(tmp_path, content, message):
    folder = write_run(tmp_path / "bad-run", content)
    with pytest.raises(ReportError) as err:
        load_runs([tmp_path])
    assert str(folder / "results.json") in str(err.value)
    assert message in str(err.value)


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="no such file or folder"):
        find_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"empty: no results.json in this folder or below"):
        find_results([tmp_path / "empty"])
    with pytest.raises(ReportError, match=r"results.json: no such file"):
        read_run(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ReportError, match="notes.txt: not a results.json file"):
        find_results([tmp_path / "notes.txt"])


def test_search_folder_best_run_is_marked(tmp_path):
    search = tmp_path / "searches" / "sst2"
    write_run(search / "best", results(run_type="fit", method="adapter_pooler"))
    (search / "trials.csv").write_text("trial,adapter_dim,accuracy,trainable_params,time_s\n0,32,0.8,100,1\n"
                                       "1,64,0.82,200,2\n")
    [run] = load_runs([search])
    assert run.search_dir == str(search) and run.run_type == "fit"
    report = build_report([search], tmp_path / "rep", formats=["svg"])
    assert "2 trial(s) in trials.csv" in (tmp_path / "rep" / "summary.md").read_text()
    assert report.runs == 1


# -------------------------------------------------------------------- table


def test_summary_frame_columns_and_order(tmp_path):
    write_run(tmp_path / "lp", results(value=0.7))
    write_run(tmp_path / "mix", results(method="scalar_mix", value=0.9, train_fraction=0.5))
    write_run(tmp_path / "mrpc", results(task="mrpc", metric="f1", value=0.85,
                                         dev_metrics={"f1": 0.85, "accuracy": 0.8}))
    write_run(tmp_path / "ens", results(method="ensemble(mean: a+b)", run_type="ensemble", value=0.95,
                                        trainable_params=None, param_share=None, backbone_params=None,
                                        train_wall_time_s=None, history=None, train_fraction=None))
    frame = summary_frame(load_runs([tmp_path]))
    assert list(frame.columns) == ["task", "method", "run_type", "trainable_params", "param_share_pct",
                                   "main_metric", "dev_main", "dev_accuracy", "dev_f1", "train_fraction",
                                   "train_wall_time_s", "run_dir"]
    # by task, then best main metric first
    assert list(zip(frame["task"], frame["method"], frame["dev_main"])) == [
        ("mrpc", "linear_probe", 0.85), ("sst2", "ensemble(mean: a+b)", 0.95), ("sst2", "scalar_mix", 0.9),
        ("sst2", "linear_probe", 0.7)]
    sst2_lp = frame[frame["run_dir"] == str(tmp_path / "lp")].iloc[0]
    assert sst2_lp["param_share_pct"] == pytest.approx(100 * 770 / 22713216)
    assert frame["dev_f1"].isna().sum() == 3 and frame["trainable_params"].isna().sum() == 1
    table = markdown_table(frame[frame["task"] == "sst2"])
    assert "dev_f1" not in table  # empty columns dropped
    assert "| sst2 | ensemble(mean: a+b) | ensemble |  |  | accuracy | 0.9500 |" in table
    assert "| 770 | 0.00339% |" in table and "| 2.5 s |" in table


def test_param_share_computed_when_absent(tmp_path):
    write_run(tmp_path / "a", results(param_share=None, trainable_params=1000, backbone_params=100000))
    [run] = load_runs([tmp_path])
    assert run.param_share_pct == pytest.approx(1.0)


# ------------------------------------------------------------------- charts


def test_charts_skip_without_data_and_say_why(tmp_path):
    write_run(tmp_path / "ens", {"task": "sst2", "method": "ensemble(mean: a+b)", "run_type": "ensemble",
                                 "main_metric": "accuracy", "dev_metrics": {"accuracy": 0.9}})
    report = build_report([tmp_path], tmp_path / "rep", formats=["svg"])
    assert report.charts == {}
    assert set(report.skipped) == set(CHARTS)
    assert "no finetune run" in report.skipped["finetune_curve"]
    assert "trainable_params" in report.skipped["metric_vs_params"]
    assert "layer_weights" in report.skipped["layer_weights"]
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Charts not drawn (no data)" in summary and "**wall_time**: no run records train_wall_time_s" in summary
    assert not list((tmp_path / "rep").glob("*.svg"))


def test_layer_weights_are_drawn_at_the_stores_layer_ids(tmp_path):
    # a `--layers last4` store of a 7-layer backbone: the first weight belongs to layer 3, not the embeddings
    write_run(tmp_path / "last4", results(method="scalar_mix", layers=[3, 4, 5, 6],
                                          layer_weights=[0.1, 0.2, 0.3, 0.4]))
    write_run(tmp_path / "all", results(method="scalar_mix", layer_weights=[0.5, 0.5]))  # no ids recorded
    [chart] = [c for c in build_charts(load_runs([tmp_path])) if c.name == "layer_weights"]
    values = chart.chart.to_dict()["data"]["values"]
    assert sorted((v["run"], v["layer"], v["weight"]) for v in values) == [
        ("all", 0, 0.5), ("all", 1, 0.5), ("last4", 3, 0.1), ("last4", 4, 0.2), ("last4", 5, 0.3), ("last4", 6, 0.4)]


def test_layers_by_task_puts_every_task_of_one_backbone_on_one_axis(tmp_path):
    frozen = {"name": "all-MiniLM-L6-v2"}
    write_run(tmp_path / "ner", results(task="conll", method="scalar_mix", metric="f1", backbone=frozen,
                                        layer_weights=[0.1, 0.2, 0.7]))
    write_run(tmp_path / "sst", results(method="adapter_pooler", backbone=frozen, layer_weights=[0.5, 0.3, 0.2]))
    write_run(tmp_path / "other", results(method="scalar_mix", backbone={"name": "bert-base"}, layers=[11, 12],
                                          layer_weights=[0.4, 0.6]))
    write_run(tmp_path / "lp", results(method="linear_probe", backbone=frozen))  # no weights: not drawn
    [result] = [c for c in build_charts(load_runs([tmp_path])) if c.name == "layers_by_task"]
    panels = result.chart.to_dict()["vconcat"]
    assert [p["title"].split(":")[0] for p in panels] == ["all-MiniLM-L6-v2 (frozen backbone)",
                                                          "bert-base (frozen backbone)"]
    rows = panels[0]["data"]["values"]
    assert sorted({(r["task"], r["run"]) for r in rows}) == [("conll", "ner"), ("sst2", "sst")]
    assert {r["centre"] for r in rows if r["task"] == "conll"} == {1.6}  # 0.2 * 1 + 0.7 * 2
    assert sorted((r["layer"], r["weight"]) for r in panels[1]["data"]["values"]) == [(11, 0.4), (12, 0.6)]


def test_layer_weights_over_seeds_centre_of_gravity_and_spread(tmp_path):
    # three seeds of one mix on MRPC, two of another task's last4 mix, one seed of a third
    mrpc = [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4], [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3],
            [0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3]]
    for seed, weights in enumerate(mrpc):
        write_run(tmp_path / f"mrpc{seed}", results(task="mrpc", metric="f1", method="scalar_mix", seed=seed,
                                                    layer_weights=weights))
    for seed, weights in enumerate([[0.25, 0.25, 0.25, 0.25], [0.24, 0.26, 0.25, 0.25]]):
        write_run(tmp_path / f"squad{seed}", results(task="squad_v2", metric="f1", method="adapter_pooler",
                                                     hyperparameters={"layer_pooling": "scalar_mix"}, seed=seed,
                                                     layers=[3, 4, 5, 6], layer_weights=weights))
    write_run(tmp_path / "sst", results(method="adapter_pooler", hyperparameters={"layer_pooling": "attention"},
                                        layer_weights=[0.5, 0.5]))
    runs = load_runs([tmp_path])
    from bertvision.report.table import layer_mix_frame

    frame = layer_mix_frame(runs).set_index("task")
    m = frame.loc["mrpc"]
    assert m["mix"] == "scalar_mix" and m["seeds"] == 3 and m["layers"] == list(range(7))
    centres = [sum(i * w for i, w in enumerate(ws)) for ws in mrpc]
    assert m["centre"] == pytest.approx(sum(centres) / 3)
    assert m["centre_std"] == pytest.approx(float(np.std(centres, ddof=1)))
    assert m["weight_mean"][6] == pytest.approx(1 / 3)
    assert m["beyond_spread"] == [1, 2, 3, 4, 6]  # layers 0 and 5 vary by more than they differ from 1/7
    s = frame.loc["squad_v2"]
    assert s["mix"] == "adapter_pooler (scalar_mix)" and s["layers"] == [3, 4, 5, 6]
    assert s["centre"] == pytest.approx(4.5 + (0.01 * -1 + 0.01 * 0) / 2, abs=0.01) and s["beyond_spread"] == []
    a = frame.loc["sst2"]
    assert a["mix"] == "adapter_pooler (attention)" and np.isnan(a["centre_std"]) and a["beyond_spread"] is None
    [chart] = [c for c in build_charts(runs) if c.name == "layer_spread"]
    spec = chart.chart.to_dict()
    assert spec["facet"]["column"]["field"] == "task"
    rows = [r for r in spec["data"]["values"] if r["task"] == "mrpc" and r["layer"] == 6]
    assert rows[0]["low"] < rows[0]["mean"] < rows[0]["high"] and rows[0]["uniform"] == pytest.approx(1 / 7)
    report = build_report([tmp_path], tmp_path / "rep", formats=["svg"])
    assert "layer_spread" in report.charts
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Learned layer weights over seeds" in summary and "| mrpc | scalar_mix | frozen backbone | 3 |" in summary


def test_one_fraction_is_not_a_fraction_chart_and_tasks_get_own_axes(tmp_path):
    write_run(tmp_path / "a", results(value=0.7))
    write_run(tmp_path / "b", results(task="mrpc", metric="f1", value=0.8, train_fraction=0.5))
    write_run(tmp_path / "c", results(task="mrpc", metric="f1", value=0.85, train_fraction=1.0))
    charts = {c.name: c for c in build_charts(load_runs([tmp_path]))}
    frac = charts["metric_vs_fraction"]
    assert frac.chart is not None
    assert frac.notes == ["sst2: every run uses the same training fraction (1)"]
    spec = charts["metric_vs_params"].chart.to_dict()
    titles = [sub["encoding"]["y"]["title"] for sub in spec["vconcat"]]
    assert titles == ["dev f1", "dev accuracy"]


def test_finetune_curve_from_finetune_history(tmp_path):
    write_run(tmp_path / "bert", results(method="bert_finetune", run_type="finetune", value=0.9,
                                         history=[{"epoch": e / 4, "loss": 1 / e, "dev": {"accuracy": 0.5 + e / 20},
                                                   "train_time_s": float(e)} for e in range(1, 9)]))
    write_run(tmp_path / "lora", results(method="bert_lora", run_type="finetune", value=0.6,
                                         history=[{"epoch": 1.0, "loss": 1.0, "dev": {"accuracy": 0.6},
                                                   "train_time_s": 1.0}]))
    write_run(tmp_path / "lp1", results(value=0.7))
    write_run(tmp_path / "lp2", results(value=0.75, train_fraction=0.5))
    tuned = {"name": "epoch-1.00", "kind": "keras_hub", "finetuned_epoch": 1.0}
    write_run(tmp_path / "lp-ft1", results(value=0.8, backbone=tuned))
    write_run(tmp_path / "lp-ft03", results(value=0.72, backbone={"name": "epoch-0.30", "kind": "keras_hub"}))
    [curve] = [c for c in build_charts(load_runs([tmp_path])) if c.name == "finetune_curve"]
    spec = curve.chart.to_dict()
    lines, rules = spec["layer"]  # no text labels: they printed on top of each other
    assert lines["mark"]["type"] == "line" and rules["mark"]["type"] == "rule"
    bert = [p for p in lines["data"]["values"] if p["tuning"] == "BERT fine-tuning"]
    assert [p["epoch"] for p in bert] == [e / 4 for e in range(1, 9)]
    # LoRA is its own line, told apart by colour in a legend: black for BERT, grey for LoRA
    assert [(p["tuning"], p["epoch"]) for p in lines["data"]["values"] if p not in bert] == [("LoRA", 1.0)]
    assert lines["encoding"]["color"]["scale"] == {"domain": ["BERT fine-tuning", "LoRA"],
                                                   "range": ["black", "#9e9e9e"]}
    # one rule per (method, backbone), the backbone as the dash pattern
    assert sorted((r["method"], r["backbone"], r["runs"], r["value"]) for r in rules["data"]["values"]) == [
        ("linear_probe", "backbone fine-tuned 0.3 ep", 1, 0.72), ("linear_probe", "backbone fine-tuned 1 ep", 1, 0.8),
        ("linear_probe", "frozen backbone", 2, 0.75)]
    assert rules["encoding"]["strokeDash"]["field"] == "backbone"
    assert lines["encoding"]["y"]["title"] == "dev accuracy"
    assert lines["encoding"]["color"]["field"] == "tuning" and spec["resolve"]["scale"]["color"] == "independent"
    [params] = [c for c in build_charts(load_runs([tmp_path])) if c.name == "metric_vs_params"]
    assert params.chart.to_dict()["encoding"]["shape"]["field"] == "backbone"


def _dash_scales(spec: dict) -> list[dict]:
    """The strokeDash scale of every layer of every stacked sub-chart."""
    return [layer["encoding"]["strokeDash"]["scale"] for sub in spec["vconcat"]
            for layer in sub.get("layer", [sub]) if "strokeDash" in layer.get("encoding", {})]


def test_stacked_tasks_share_one_dash_per_backbone(tmp_path):
    # Vega-Lite merges the dash scales of stacked sub-charts into one legend: task-by-task scales gave
    # the 1-epoch backbone (only on squad_v2) the frozen backbone's solid line (seen in the 2026-12-02 run)
    tuned = {"name": "epoch-1.00", "kind": "keras_hub", "finetuned_epoch": 1.0}
    for task, metric in [("sst2", "accuracy"), ("squad_v2", "f1")]:
        write_run(tmp_path / task / "bert", results(task=task, metric=metric, method="bert_finetune",
                                                    run_type="finetune", value=0.9))
    for fraction in (0.5, 1.0):
        write_run(tmp_path / "sst2" / f"frozen{fraction}", results(value=0.7 + fraction / 10, train_fraction=fraction))
        write_run(tmp_path / "squad_v2" / f"ft1-{fraction}",
                  results(task="squad_v2", metric="f1", value=40 + fraction, train_fraction=fraction, backbone=tuned))
    charts = {c.name: c for c in build_charts(load_runs([tmp_path]))}
    for name in ("finetune_curve", "metric_vs_fraction"):
        scales = _dash_scales(charts[name].chart.to_dict())
        assert len(scales) == 2 and scales[0] == scales[1], name
        assert scales[0]["domain"] == ["frozen backbone", "backbone fine-tuned 1 ep"], name
        assert scales[0]["range"][0] != scales[0]["range"][1], name


# ------------------------------------------------------- end to end (real)


@pytest.fixture(scope="module")
def real_runs(module_tmp, shared_data, sst2_finetune_run) -> Path:  # noqa: F811
    """Real small runs on SST-2 (64 train / 64 dev examples): a cls store
    from `pipelines.extract`, three adapter runs on it from `pipelines.fit`
    (linear_probe, scalar_mix, scalar_mix on half the training data) and a
    BERT fine-tuning run from `pipelines.finetune` evaluated every half epoch
    (tests.stores.sst2_finetune_run, 48 examples, shared with other modules:
    its folder copied in beside the others, without the weights, which a
    report does not read). Nothing is XLA-compiled (a few dozen examples)."""
    root = module_tmp("report-real")
    sst2 = shared_data / "glue" / "SST-2"
    store = root / "store"
    run_pipeline("pipelines.extract", "--task", "sst2", "--data-dir", sst2, "--split", "train", "--split", "dev",
                 "--out", store, "--token-mode", "cls", "--limit", "64", "--no-progress", "--no-jit")
    runs = root / "runs"
    for name, extra in [("linear_probe", ["--adapter", "linear_probe"]), ("scalar_mix", ["--adapter", "scalar_mix"]),
                        ("scalar_mix-half", ["--adapter", "scalar_mix", "--train-fraction", "0.5"])]:
        run_pipeline("pipelines.fit", "--store", store, "--out", runs / name, "--epochs", "2",
                     "--batch-size", "16", "--seed", "0", "--quiet", "--no-jit-compile", *extra)
    shutil.copytree(sst2_finetune_run, runs / "bert", ignore=shutil.ignore_patterns("*.weights.h5"))
    return runs


def test_report_cli_on_real_runs(real_runs, tmp_path):
    out = tmp_path / "report"
    printed = run_pipeline("pipelines.report", real_runs, "--out", out)  # its main(argv), in this process
    assert "4 run(s), task(s): sst2" in printed
    manifest = json.loads((out / "report.json").read_text())
    assert set(manifest["charts"]) == set(CHARTS) and manifest["skipped"] == {}
    assert manifest["runs"] == 4 and manifest["summary"] == {"csv": "summary.csv", "md": "summary.md"}
    for name, files in manifest["charts"].items():
        assert set(files) == {"html", "png", "svg"}
        html = (out / files["html"]).read_text()
        assert '"$schema": "https://vega.github.io/schema/vega-lite/' in html and "vegaEmbed" in html
        width, height = png_size(out / files["png"])
        assert width > 200 and height > 200, (name, width, height)
        assert (out / files["svg"]).read_text().lstrip().startswith("<svg")
    with (out / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert sorted((r["method"], r["run_type"], r["train_fraction"]) for r in rows) == [
        ("bert_finetune", "finetune", "1.0"), ("linear_probe", "fit", "1.0"), ("scalar_mix", "fit", "0.5"),
        ("scalar_mix", "fit", "1.0")]
    assert all(r["task"] == "sst2" and r["main_metric"] == "accuracy" and 0 <= float(r["dev_accuracy"]) <= 1
               and int(r["trainable_params"]) > 0 and float(r["train_wall_time_s"]) > 0 for r in rows)
    shares = {r["method"]: float(r["param_share_pct"]) for r in rows}
    # fine-tuning trains the whole backbone but its pooler (the head reads the mean: 147,840 of 22.7M frozen)
    assert 99 < shares["bert_finetune"] < 100 and 0.1 > shares["linear_probe"] > 0
    summary = (out / "summary.md").read_text()
    assert "## sst2 (main metric: accuracy)" in summary and "[png](finetune_curve.png)" in summary


def test_finetune_curve_on_real_runs(real_runs):
    """The study's main chart: the fine-tuning run's two half-epoch evaluations
    as a line, each adapter method's best run as a labelled rule."""
    [curve] = [c for c in build_charts(load_runs([real_runs])) if c.name == "finetune_curve"]
    lines, rules = curve.chart.to_dict()["layer"]
    assert [p["epoch"] for p in lines["data"]["values"]] == [0.5, 1.0]
    assert sorted((r["method"], r["backbone"], r["runs"]) for r in rules["data"]["values"]) == [
        ("linear_probe", "frozen backbone", 1), ("scalar_mix", "frozen backbone", 2)]


def test_report_cli_error_is_one_line(tmp_path):
    write_run(tmp_path / "bad", "{oops")
    code, _, err = run_main(report_main, tmp_path, "--out", tmp_path / "r")  # its main(argv), in this process
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bad/results.json: not valid JSON" in last


def test_names_from_run_folders_cannot_inject_markup(tmp_path):
    evil = "</script><script>alert(1)</script>"
    write_run(tmp_path / "runs" / "a`b|<i>x</i>", results(method=evil, value=0.7))
    write_run(tmp_path / "runs" / "plain", results(method="scalar_mix", value=0.8))
    build_report([tmp_path / "runs"], tmp_path / "rep", formats=["html"])
    for html in (tmp_path / "rep").glob("*.html"):
        text = html.read_text()
        assert "<script>alert(1)" not in text and "</script><script>alert" not in text, html.name
    html = (tmp_path / "rep" / "metric_vs_params.html").read_text()
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in html
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "<script>" not in summary and "<i>" not in summary
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in summary
    assert "a\\`b\\|&lt;i&gt;x&lt;/i&gt;" in summary


def test_class_charts_on_a_real_run(real_runs):
    """The confusion matrix and per-class F1 of the best classification run
    agree with the run's own dev accuracy (scored by the project's metrics)
    and with its predictions: every dev example counted once, in its class."""
    from bertvision.report.classes import class_scores

    runs = load_runs([real_runs])
    fit_run = next(r for r in runs if r.label == "scalar_mix")
    scores = class_scores(fit_run)
    assert scores.split == "dev" and scores.names == ["negative", "positive"]  # from the store's manifest
    assert scores.accuracy == pytest.approx(fit_run.dev_metrics["accuracy"], abs=1e-9)
    table = scores.per_class
    assert table["support"].sum() == scores.examples == 64 and table["predicted"].sum() == 64
    assert scores.confusion["count"].sum() == 64
    diagonal = scores.confusion[scores.confusion["true"] == scores.confusion["predicted"]].set_index("true")
    for row in table.itertuples():
        assert row.recall == pytest.approx(diagonal.loc[row._1, "count"] / row.support)
    charts = {c.name: c for c in build_charts(runs)}
    for name in ("confusion_matrix", "per_class_f1"):
        assert charts[name].chart is not None, charts[name].reason
    spec = charts["confusion_matrix"].chart.to_dict()
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == ["negative", "positive"]


def test_class_charts_stay_readable_at_77_classes(tmp_path, shared_data):
    """77 classes (Banking77's names): one square cell and one bar row per
    class at a size a screen shows whole, every name on its axis, labels
    not cut; the confusion matrix's PNG is drawn at that size."""
    import numpy as np

    from bertvision.data.tasks import user_task
    from bertvision.runs import Predictions, RunFolder, RunResults

    names = json.loads((shared_data / "banking77" / "categories.json").read_text())
    assert len(names) == 77
    spec = user_task("banking77", "classification", ("text",), "category", tuple(names))
    rng = np.random.default_rng(0)
    gold = np.repeat(np.arange(77), 4)
    guess = np.where(rng.random(len(gold)) < 0.8, gold, rng.integers(0, 77, len(gold)))
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    preds = Predictions(spec, "test", np.arange(len(gold)).astype(str), probabilities=np.eye(77)[guess],
                        labels=gold)
    folder.write_results(RunResults(task="banking77", task_spec=spec.to_dict(), method="adapter_pooler",
                                    run_type="fit", main_metric="accuracy",
                                    dev_metrics={"accuracy": float((gold == guess).mean())}, eval_splits=["test"],
                                    predictions=folder.save_predictions({"test": preds})))
    report = build_report([folder.path], tmp_path / "rep", formats=["png"])
    charts = {c.name: c.chart.to_dict() for c in build_charts(load_runs([folder.path])) if c.chart is not None}
    matrix, bars = charts["confusion_matrix"], charts["per_class_f1"]
    assert 11 * 77 <= matrix["width"] == matrix["height"] <= 900
    assert matrix["layer"][0]["encoding"]["y"]["scale"]["domain"] == names
    assert matrix["layer"][0]["encoding"]["y"]["axis"]["labelLimit"] >= 260  # reverted_card_payment? and the longest
    rows = {r["class"] for r in bars["layer"][0]["data"]["values"]}
    assert rows == set(names) and bars["height"]["step"] >= 11
    width, height = png_size(tmp_path / "rep" / report.charts["confusion_matrix"]["png"])
    assert 1800 <= width <= 2800 and 1800 <= height <= 2800
