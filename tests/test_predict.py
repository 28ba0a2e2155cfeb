"""python -m pipelines.predict and bertvision.inference.predict: GLUE submission files,
SQuAD prediction files (exact substrings of the contexts), raw outputs in the
ensemble format, and stores a run was not trained on refused."""

import json

import numpy as np
import pytest

from pipelines.predict import main as predict_main
from tests.stores import run_main, sst2_cls_run, sst2_cls_store, sst2_seq_store, squad_store  # noqa: F401


def test_glue_submission_file(sst2_cls_run, sst2_cls_store, tmp_path):  # noqa: F811
    from bertvision.store.format import open_store

    path = tmp_path / "SST-2.tsv"
    code, out, err = run_main(predict_main, "--run", sst2_cls_run, "--split", "dev", "--out", path)
    assert code == 0, err[-3000:]
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    rows = [line.split("\t") for line in lines[1:]]
    examples = open_store(sst2_cls_store).examples("dev")
    assert [r[0] for r in rows] == [e["uid"] for e in examples]  # store order, index = uid
    assert {r[1] for r in rows} <= {"0", "1"}  # GLUE's server wants SST-2's classes as 0/1
    raw = np.load(tmp_path / "SST-2.npz")
    assert str(raw["task"]) == "sst2" and raw["probabilities"].shape == (64, 2)
    assert raw["probabilities"].argmax(axis=1).astype(str).tolist() == [r[1] for r in rows]
    # the metrics printed are the official ones the run reported
    metrics = json.loads(out.strip().splitlines()[-1])
    results = json.loads((sst2_cls_run / "results.json").read_text())
    assert metrics["accuracy"] == round(results["dev_metrics"]["accuracy"], 4)


def test_predict_run_is_what_the_ensemble_reads(sst2_cls_run, sst2_cls_store):  # noqa: F811
    from bertvision.inference.predict import predict_run

    preds = predict_run(str(sst2_cls_run), sst2_cls_store, "dev")
    saved = np.load(sst2_cls_run / "predictions" / "dev.npz")
    assert set(saved.files) == set(preds.to_arrays())
    np.testing.assert_allclose(preds.probabilities, saved["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(preds.labels, saved["labels"])


def test_store_run_mismatch_refused(sst2_cls_run, sst2_seq_store, squad_store, tmp_path):  # noqa: F811
    from bertvision.errors import RunError
    from bertvision.inference.predict import predict_run

    with pytest.raises(RunError, match='token_mode: run "cls", store "sequence"'):
        predict_run(str(sst2_cls_run), sst2_seq_store, "dev")
    code, out, err = run_main(predict_main, "--run", sst2_cls_run, "--store", squad_store, "--split", "dev",
                     "--out", tmp_path / "x.tsv")
    assert code == 2
    assert 'task: run "sst2", store "squad_v2"' in err and not (tmp_path / "x.tsv").exists()
    code, out, err = run_main(predict_main, "--run", tmp_path, "--split", "dev", "--out", tmp_path / "y.tsv")
    assert code == 2 and "not a finished run" in err


def test_squad_predictions_are_context_substrings(squad_store, tmp_path):  # noqa: F811
    from bertvision.store.format import open_store
    from bertvision.training.fit import FitConfig, fit

    run = tmp_path / "squad_run"
    fit(FitConfig(store=squad_store, out=str(run), adapter={"kind": "cnn"}, epochs=2, batch_size=8, lr=3e-3,
                  verbose=0, jit_compile=False))
    path = tmp_path / "predictions.json"
    code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", path, "--threshold", "inf")
    assert code == 0, err[-3000:]
    predictions = json.loads(path.read_text())
    na_probs = json.loads((tmp_path / "predictions.na_prob.json").read_text())
    examples = {e["uid"]: e for e in open_store(squad_store).examples("dev")}
    assert set(predictions) == set(na_probs) == set(examples)
    for qid, text in predictions.items():
        assert text and text in examples[qid]["context"], (qid, text)  # always answers at --threshold inf
        assert 0.0 <= na_probs[qid] <= 1.0
    # the default threshold (the run's best_f1_thresh) may abstain; answers are still substrings
    code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", tmp_path / "best.json")
    assert code == 0, err[-3000:]
    best = json.loads((tmp_path / "best.json").read_text())
    for qid, text in best.items():
        assert text == "" or text == predictions[qid]
    # what the command prints is the official score of the file it wrote, whatever the threshold, and it
    # says which threshold wrote the file
    from bertvision.metrics import squad_evaluate_examples, SquadGold

    golds = [SquadGold(q, () if e["is_impossible"] else tuple(e["answers"])) for q, e in examples.items()]
    scores = {}
    for threshold in ("best", "0", "inf", "-inf"):
        path = tmp_path / f"t{threshold}.json"
        args = [f"--threshold={threshold}"] if threshold != "best" else []  # = : "-inf" is not a flag
        code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", path, *args)
        assert code == 0, err[-3000:]
        assert f"--threshold {threshold}; the metrics below are this file's" in out
        written = json.loads(path.read_text())
        official = squad_evaluate_examples(golds, written, json.loads(path.with_suffix(".na_prob.json").read_text()))
        printed = json.loads(out.strip().splitlines()[-1])
        assert printed["exact"] == round(official["exact"], 4) and printed["f1"] == round(official["f1"], 4)
        scores[threshold] = printed["f1"]
    assert written == {q: "" for q in examples}  # -inf: never answers
    assert scores["inf"] != scores["-inf"]  # the threshold changes the file, and the printed score with it


def test_a_truncated_model_is_reported_as_damaged_not_missing(sst2_cls_run, tmp_path):  # noqa: F811
    """Keras reported a truncated model.keras as 'File not found' although the file is there."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sst2_cls_run, run)
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", tmp_path / "x.tsv")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{run / 'model.keras'}: damaged or truncated" in err and "File not found" not in err
