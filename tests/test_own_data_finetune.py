"""Fine-tuning BERT (and LoRA) on your own multi-label data, with the real
commands on a seeded 40 examples a split of ../shared/data/goemotions
(`tests.stores.goemotions_store`, extracted from a task file): extract ->
finetune --store -> predict --split / --input / --text, one threshold per
label chosen on dev and used everywhere after, serving, an ensemble, and a
killed run resumed."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from bertvision.api import open_run
from bertvision.metrics import best_thresholds
from bertvision.runs import Predictions, RunFolder
from bertvision.store.format import open_store
from pipelines.ensemble import main as ensemble_main
from pipelines.extract import main as extract_main
from pipelines.finetune import main as finetune_main
from pipelines.predict import main as predict_main
from tests.stores import goemotions_store, kill_when_saved, run_main  # noqa: F401  (a fixture)

FT = ("--epochs", "1", "--batch-size", "8", "--max-seq-len", "32", "--checkpoint-every", "0.5", "--no-jit",
      "--no-progress")


@pytest.fixture(scope="module")
def finetuned(module_tmp, goemotions_store):
    """MiniLM fine-tuned 1 epoch on the store's 40 training examples (dev checkpoints at 0.5 and 1)."""
    run = module_tmp("go-finetune") / "bert"
    code, out, err = run_main(finetune_main, "--store", goemotions_store, "--out", run, "--lr", "1e-3", *FT)
    assert code == 0, err[-3000:]
    return goemotions_store, run


def check_thresholds_chosen_on_dev(run):
    """The run's thresholds are each label's best F1 on its final dev predictions, saved with them."""
    results = RunFolder(run).results()
    dev = RunFolder(run).load_predictions("dev")
    keep = dev.labelled_mask()
    assert results.thresholds == pytest.approx(best_thresholds(dev.probabilities[keep], dev.labels[keep]).tolist())
    assert dev.thresholds.tolist() == pytest.approx(results.thresholds)
    assert dev.evaluate() == pytest.approx({k: results.dev_metrics[k] for k in ("micro_f1", "macro_f1",
                                                                                "subset_accuracy")})
    final = run / results.checkpoints["final"] / "predictions" / "dev.npz"
    assert Predictions.load(final).thresholds.tolist() == pytest.approx(results.thresholds)
    return results, dev


def test_finetune_a_multi_label_store_end_to_end(finetuned, shared_data, tmp_path):
    store, run = finetuned
    results, dev = check_thresholds_chosen_on_dev(run)
    assert results.run_type == "finetune" and results.method == "bert_finetune" and results.store == str(store)
    assert results.spec.kind == "multi_label" and results.main_metric == "micro_f1" and len(results.thresholds) == 28
    assert set(results.dev_metrics) == {"micro_f1", "macro_f1", "subset_accuracy"}
    assert [h.epoch for h in results.history] == [0.5, 1.0] and results.eval_splits == ["dev"]
    assert np.isin(dev.labels, (0, 1)).all() and dev.labels.shape == (40, 28)
    # each checkpoint's thresholds are chosen on its own dev predictions, never on test
    half = Predictions.load(run / "checkpoints" / "epoch-0.50" / "predictions" / "dev.npz")
    assert half.thresholds.tolist() == pytest.approx(best_thresholds(half.probabilities, half.labels).tolist())
    assert json.loads((run / "checkpoints" / "epoch-0.50" / "checkpoint.json").read_text())["metrics"] == \
        pytest.approx(half.evaluate())

    # predict the store's dev split: the printed metrics are the written file's, by scikit-learn
    names = list(results.spec.label_names)
    code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", tmp_path / "dev.jsonl")
    assert code == 0, err[-3000:]
    printed = json.loads(out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == dev.uids.tolist()
    thresholds = dict(zip(names, results.thresholds))
    for row in rows:  # every label at or over its threshold, with its probability, most probable first
        assert all(row["probabilities"][name] >= thresholds[name] - 1e-6 for name in row["labels"])
        assert list(row["probabilities"]) == row["labels"] and \
            sorted(row["probabilities"].values(), reverse=True) == list(row["probabilities"].values())
    hot = np.array([[name in r["labels"] for name in names] for r in rows], int)
    gold = np.array([[name in r["gold"] for name in names] for r in rows], int)
    assert gold.tolist() == dev.labels.tolist()
    assert printed == {"micro_f1": round(skm.f1_score(gold, hot, average="micro", zero_division=0), 4),
                       "macro_f1": round(skm.f1_score(gold, hot, average="macro", zero_division=0), 4),
                       "subset_accuracy": round(skm.accuracy_score(gold, hot), 4)}
    # the same model as at training time: the predictions of the run's own dev evaluation
    np.testing.assert_allclose(Predictions.load(tmp_path / "dev.npz").probabilities, dev.probabilities, atol=1e-5)
    assert printed == {k: round(v, 4) for k, v in results.dev_metrics.items()}
    assert open_run(run).evaluate("dev") == pytest.approx(results.dev_metrics)  # the Python API: the same path

    # the test split (labelled, never used for a choice) and raw text
    code, out, err = run_main(predict_main, "--run", run, "--split", "test", "--out", tmp_path / "test.csv")
    assert code == 0, err[-3000:]
    assert out.startswith(f"40 predictions -> {tmp_path / 'test.csv'}")
    # a file in the task's own format (TSV without a header; the id column kept)
    lines = (shared_data / "goemotions" / "dev.tsv").read_text().splitlines()[:3]
    (tmp_path / "new.tsv").write_text("\n".join(lines) + "\n")
    code, out, err = run_main(predict_main, "--run", run, "--input", tmp_path / "new.tsv", "--out",
                              tmp_path / "new.jsonl")
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [line.split("\t")[2] for line in lines]
    assert all(r["probabilities"][n] >= thresholds[n] - 1e-6 for r in rows for n in r["labels"])
    code, out, err = run_main(predict_main, "--run", run, "--text", "Thank you so much, this made my day!")
    assert code == 0, err[-3000:]
    answer = json.loads(out)["goemotions"]
    assert set(answer) == {"id", "labels", "probabilities"} and set(answer["labels"]) <= set(names)
    assert all(answer["probabilities"][n] >= thresholds[n] - 1e-6 for n in answer["labels"])


def test_lora_on_a_multi_label_store_and_an_ensemble_with_the_finetuned_run(finetuned, shared_data, tmp_path):
    store, bert = finetuned
    lora = tmp_path / "lora"
    code, out, err = run_main(finetune_main, "--store", store, "--out", lora, "--lora-rank", "8", "--lr", "4e-3", *FT)
    assert code == 0, err[-3000:]
    results, dev = check_thresholds_chosen_on_dev(lora)
    assert results.method == "bert_lora" and results.hyperparameters["lora_rank"] == 8
    # LoRA's factors on query and value of MiniLM's 6 layers, and the sigmoid head: 28 logits
    assert results.trainable_params == 6 * 2 * (384 * 12 * 8 + 8 * 32) + 384 * 28 + 28
    assert results.param_share == pytest.approx(results.trainable_params / results.backbone_params)
    assert results.param_share < 0.05
    assert results.peak_memory_mib and results.peak_memory_mib > 100

    # the final checkpoint is a plain backbone (the factors merged) that extraction loads: the embeddings
    # (not adapted) are the embedded MiniLM's, the attention layers moved
    acts = {}
    for name, backbone in (("base", []), ("lora", ["--backbone", lora / results.checkpoints["final"]])):
        code, _, err = run_main(extract_main, "--task", "sst2", "--data-dir", shared_data / "glue" / "SST-2", "--split",
                                "dev", "--limit", "8", "--max-seq-len", "32", "--no-jit", "--no-progress", "--out",
                                tmp_path / f"store-{name}", *backbone)
        assert code == 0, err[-3000:]
        extracted = open_store(str(tmp_path / f"store-{name}"))
        acts[name] = np.concatenate([f["activations"].numpy() for f, _ in extracted.dataset("dev", 8)]).astype(
            np.float32)
    diff = np.abs(acts["base"] - acts["lora"]).mean(axis=(0, 2))
    assert diff[0] == 0 and diff[-1] > 1e-4, diff

    # an ensemble of the two: each label's mean probability, at the first run's thresholds
    code, out, err = run_main(ensemble_main, "--runs", bert, lora, "--split", "dev", "--out", tmp_path / "ens")
    assert code == 0, err[-3000:]
    ens = RunFolder(tmp_path / "ens").load_predictions("dev")
    first = RunFolder(bert).load_predictions("dev")
    np.testing.assert_allclose(ens.probabilities, (first.probabilities + dev.probabilities) / 2, atol=1e-6)
    assert ens.thresholds.tolist() == pytest.approx(first.thresholds.tolist())

    # served beside the fine-tuned run: both answer, each at its own thresholds
    from bertvision.inference.serving import Predictor

    predictor = Predictor.from_runs([f"bert={bert}", f"lora={lora}"])
    answers = predictor.predict({"bert": ["what a lovely surprise"], "lora": ["what a lovely surprise"]})
    for name, run in (("bert", bert), ("lora", lora)):
        thresholds = dict(zip(results.spec.label_names, RunFolder(run).results().thresholds))
        assert all(answers[name][0]["probabilities"][n] >= thresholds[n] - 1e-6 for n in answers[name][0]["labels"])


def test_a_killed_multi_label_finetune_resumes_exactly(finetuned, tmp_path):
    """kill -9 after the first checkpoint's state is saved, run again: the
    uninterrupted run's history, thresholds and predictions."""
    import signal

    store, original = finetuned
    run = tmp_path / "bert"
    args = ["--store", str(store), "--out", str(run), "--lr", "1e-3", *FT]
    assert kill_when_saved(args, run, step=2) == -signal.SIGKILL, "the run finished before it could be killed"
    # the resume: the command's main(argv) in this process (the kill needed a process; this needs none)
    code, _, err = run_main(finetune_main, *args)
    assert code == 0, err[-3000:]
    assert "resuming from step 2/5" in err
    r, o = RunFolder(run).results(), RunFolder(original).results()
    assert r.resumed_from == {"step": 2, "epoch": 0.5}
    assert [(h.epoch, h.step, h.loss, h.dev) for h in r.history] == [(h.epoch, h.step, h.loss, h.dev)
                                                                      for h in o.history]
    assert r.thresholds == o.thresholds
    np.testing.assert_array_equal(RunFolder(run).load_predictions("dev").probabilities,
                                  RunFolder(original).load_predictions("dev").probabilities)
