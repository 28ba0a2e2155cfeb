"""Your own data end to end, with the real commands on small seeded samples of
../shared/data/banking77 and goemotions: extract -> fit -> predict (a store
split, a file, a text), multi-label thresholds, two heads on one store, and
bad input that leaves nothing behind."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from bertvision.runs import Predictions, RunFolder
from pipelines.extract import main as extract_main
from pipelines.fit import main as fit_main
from pipelines.predict import main as predict_main
from tests.stores import goemotions_store, run_main  # noqa: F401  (a fixture)

SMALL = ("--max-seq-len", "32", "--no-progress", "--no-jit")


@pytest.fixture(scope="module")
def banking77(module_tmp, shared_data):
    """The acceptance example's commands on a seeded sample of 48 examples a split."""
    root = module_tmp("banking77")
    store, run = root / "store", root / "run"
    code, out, err = run_main(extract_main, "--data-dir", shared_data / "banking77", "--split", "train=train.csv",
                              "--split", "test=test.csv", "--dev-fraction", "0.1", "--seed", "0", "--text-column",
                              "text", "--label-column", "category", "--token-mode", "sequence", "--out", store,
                              "--sample", "48", *SMALL)
    assert code == 0, err[-3000:]
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "adapter_pooler", "--out", run, "--epochs",
                              "2", "--batch-size", "16", "--lr", "3e-3", "--quiet", "--no-jit-compile")
    assert code == 0, err[-3000:]
    return store, run, root


def test_acceptance_flow_metrics_equal_the_predictions_file(banking77):
    store, run, root = banking77
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["task"] == "banking77" and manifest["task_kind"] == "classification"
    assert len(manifest["label_names"]) == 77 and "reverted_card_payment?" in manifest["label_names"]
    assert manifest["task_spec"]["text_columns"] == ["text"] and manifest["task_spec"]["label_column"] == "category"
    assert manifest["source"]["dev_split"]["stratified"] and list(manifest["splits"]) == ["train", "dev", "test"]
    results = RunFolder(run).results()
    assert results.eval_splits == ["dev"] and results.main_metric == "accuracy"  # chosen on dev, never test
    assert set(results.dev_metrics) == {"accuracy", "macro_f1", "micro_f1"}

    out_file = root / "banking77-test.jsonl"
    code, out, err = run_main(predict_main, "--run", run, "--split", "test", "--out", out_file)
    assert code == 0, err[-3000:]
    printed = json.loads(out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 48 and all(r["id"].startswith("test-") for r in rows)
    assert all(set(r["probabilities"]) == set(manifest["label_names"]) for r in rows)
    pred, gold = [r["label"] for r in rows], [r["gold"] for r in rows]
    assert printed["accuracy"] == round(skm.accuracy_score(gold, pred), 4)
    assert printed["macro_f1"] == round(skm.f1_score(gold, pred, average="macro", zero_division=0), 4)

    code, out, err = run_main(predict_main, "--run", run, "--text", "I still have not received my new card")
    assert code == 0, err[-3000:]
    answer = json.loads(out)["banking77"]
    assert answer["label"] in manifest["label_names"] and abs(sum(answer["probabilities"].values()) - 1) < 1e-4


def test_predict_input_csv_keeps_ids_and_scores_labelled_rows(banking77, tmp_path):
    _, run, _ = banking77
    (tmp_path / "new.csv").write_text('text,category,ticket\n"where is my card, it is late",card_arrival,T1\n'
                                      'top up failed,top_up_failed,T2\n')
    code, out, err = run_main(predict_main, "--run", run, "--input", tmp_path / "new.csv", "--out",
                              tmp_path / "new.pred.csv")
    assert code == 0, err[-3000:]
    table = pd.read_csv(tmp_path / "new.pred.csv")
    assert list(table.columns) == ["id", "label", "probability", "gold"]
    assert table["id"].tolist() == ["new-2", "new-3"] and table["gold"].tolist() == ["card_arrival", "top_up_failed"]
    assert json.loads(out.strip().splitlines()[-1])["accuracy"] == round(float(np.mean(table.label == table.gold)), 4)


def test_goemotions_task_file_multi_label_thresholds(module_tmp, goemotions_store):
    root = module_tmp("goemotions")
    store, run = goemotions_store, root / "run"
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "linear_probe", "--out", run, "--epochs", "2",
                              "--batch-size", "8", "--lr", "1e-2", "--quiet")
    assert code == 0, err[-3000:]
    results = RunFolder(run).results()
    assert results.main_metric == "micro_f1" and len(results.thresholds) == 28
    assert set(results.dev_metrics) == {"micro_f1", "macro_f1", "subset_accuracy"}
    dev = RunFolder(run).load_predictions("dev")
    assert dev.thresholds.tolist() == pytest.approx(results.thresholds)
    assert dev.evaluate()["micro_f1"] == pytest.approx(results.dev_metrics["micro_f1"])

    code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", root / "dev.jsonl")
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (root / "dev.jsonl").read_text().splitlines()]
    thresholds = dict(zip(dev.spec.label_names, results.thresholds))
    for row in rows:  # every label over its threshold, with its probability
        assert all(row["probabilities"][name] >= thresholds[name] - 1e-6 for name in row["labels"])
    # at the run's thresholds (chosen on dev), not 0.5 each: the raw outputs written beside the file say so,
    # and every label at or over its threshold is listed, and only those
    raw = Predictions.load(root / "dev.npz")
    assert min(results.thresholds) < 0.5 and raw.thresholds.tolist() == pytest.approx(results.thresholds)
    assert [r["id"] for r in rows] == raw.uids.tolist()
    for row, probs in zip(rows, raw.probabilities):
        assert sorted(row["labels"]) == sorted(n for n, p, t in zip(dev.spec.label_names, probs, results.thresholds)
                                               if p >= t)
    hot = np.array([[name in r["labels"] for name in dev.spec.label_names] for r in rows], int)
    gold = np.array([[name in r["gold"] for name in dev.spec.label_names] for r in rows], int)
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["micro_f1"] == round(skm.f1_score(gold, hot, average="micro"), 4)
    assert printed["micro_f1"] == pytest.approx(results.dev_metrics["micro_f1"], abs=2e-3)  # fit's, at its thresholds


def test_two_heads_on_one_store_are_served_together(module_tmp, shared_data):
    root = module_tmp("heads")
    table = pd.read_csv(shared_data / "banking77" / "train.csv").sample(60, random_state=0)
    table["words"] = table.text.str.split().str.len()
    table.to_csv(root / "train.csv", index=False)
    task = root / "task.json"
    task.write_text(json.dumps({"name": "tickets", "data_dir": str(root), "splits": {"train": "train.csv"},
                                "dev_fraction": 0.25, "text_column": "text", "label_columns": ["category", "words"],
                                "kind": {"category": "classification", "words": "regression"}}))
    store = root / "store"
    code, out, err = run_main(extract_main, "--task-file", task, "--out", store, "--token-mode", "mean", *SMALL)
    assert code == 0, err[-3000:]
    for name, column in (("topic", None), ("words", "words")):
        extra = ["--label-column", column] if column else []
        code, out, err = run_main(fit_main, "--store", store, "--adapter", "linear_probe", "--out", root / name,
                                  "--epochs", "1", "--batch-size", "16", "--quiet", *extra)
        assert code == 0, err[-3000:]
    words = RunFolder(root / "words").results()
    assert words.spec.kind == "regression" and words.main_metric == "pearson" and "mse" in words.dev_metrics
    code, out, err = run_main(predict_main, "--run", f"topic={root / 'topic'}", "--run", f"words={root / 'words'}",
                              "--text", "my card has not arrived")
    assert code == 0, err[-3000:]
    answer = json.loads(out)
    assert set(answer) == {"topic", "words"} and isinstance(answer["words"]["score"], float)
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "linear_probe", "--out", root / "x",
                              "--label-column", "colour")
    assert code == 2 and "keeps no label column 'colour'" in err and not (root / "x").exists()


@pytest.mark.parametrize("args, message", [
    (("--label-column", "intent"), "train.csv: no column 'intent'; its columns are ['text', 'category']"),
    (("--label-column", "category", "--encoding", "ascii"), "train.csv: line 2: not valid ascii"),
    (("--label-column", "category", "--split", "test=bad.csv"), "bad.csv: row 3, column 'category': label 'nope'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "train.csv").write_text("text,category\ncafé,a\nhello,b\nbye,a\n")
    (tmp_path / "bad.csv").write_text("text,category\nx,a\ny,nope\n")
    out = tmp_path / "store"
    code, _, err = run_main(extract_main, "--data-dir", tmp_path, "--split", "train=train.csv",
                            "--text-column", "text", *args, "--out", out, *SMALL)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_beam_extraction_of_your_own_data_writes_the_same_store(tmp_path):
    (tmp_path / "train.csv").write_text("text,tags\n" + "".join(
        f'"message {i} about {w}","{w},{"urgent" if i % 3 == 0 else "calm"}"\n'
        for i, w in enumerate(["cards", "fees", "loans"] * 4)))
    args = ["--data-dir", tmp_path, "--split", "train=train.csv", "--dev-fraction", "0.25", "--text-column", "text",
            "--label-column", "tags", "--kind", "multi_label", "--token-mode", "cls", *SMALL]
    code, _, err = run_main(extract_main, *args, "--out", tmp_path / "local")
    assert code == 0, err[-3000:]
    code, _, err = run_main(extract_main, *args, "--out", tmp_path / "beam", "--runner", "DirectRunner")
    assert code == 0, err[-3000:]
    local, beam = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("local", "beam"))
    assert local["task_spec"] == beam["task_spec"] and local["label_names"] == ["calm", "cards", "fees", "loans",
                                                                                 "urgent"]
    for split in ("train", "dev"):
        assert [s["sha256"] for s in local["splits"][split]["shards"]] == \
            [s["sha256"] for s in beam["splits"][split]["shards"]]


def test_a_store_without_dev_takes_a_dev_file_later(tmp_path):
    rows = "".join(f"message {i} about {w},{w}\n" for i, w in enumerate(["cards", "fees", "loans"] * 4))
    (tmp_path / "train.csv").write_text("text,topic\n" + rows)
    (tmp_path / "dev.csv").write_text("text,topic\nwhere are my cards,cards\nfees again,fees\n")
    store, run = tmp_path / "store", tmp_path / "run"
    common = ["--data-dir", tmp_path, "--text-column", "text", "--label-column", "topic", "--token-mode", "cls",
              "--out", store, *SMALL]
    code, _, err = run_main(extract_main, "--split", "train=train.csv", *common)
    assert code == 0, err[-3000:]
    fit = ["--store", store, "--adapter", "linear_probe", "--out", run, "--epochs", "1", "--quiet"]
    code, _, err = run_main(fit_main, *fit)
    assert code == 2 and "no dev split to choose the best epoch on" in err and not run.exists()
    code, _, err = run_main(extract_main, "--split", "train=train.csv", "--split", "dev=dev.csv", *common)
    assert code == 0, err[-3000:]
    code, _, err = run_main(fit_main, *fit)
    assert code == 0, err[-3000:]


def test_the_python_api_extracts_your_own_data(tmp_path):
    import bertvision
    from bertvision.data.files import DataSource

    (tmp_path / "train.csv").write_text("text,topic,stars\n" + "".join(
        f"note {i} on {w},{w},{i % 5}\n" for i, w in enumerate(["cards", "fees"] * 5)))
    source = DataSource(splits={"train": "train.csv"}, text_column="text", label_columns=["topic", "stars"],
                        kind={"topic": "classification", "stars": "regression"}, dev_fraction=0.2,
                        data_dir=str(tmp_path), name="notes")
    store = bertvision.extract(source, tmp_path / "store", token_mode="cls", max_seq_len=16, progress=False,
                               jit_compile=False)
    assert store.splits == ["train", "dev"] and store.task_spec.label_column == "topic"
    assert [(h.label_column, h.kind) for h in store.heads] == [("topic", "classification"), ("stars", "regression")]
    stars = store.head("stars")
    assert stars.task_kind == "regression" and stars.has_labels("dev") and stars.adapter_fields()["num_labels"] == 1
