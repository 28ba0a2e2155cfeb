"""Ensembles: combining aligned predictions, refusing misaligned runs, the CLI on real runs."""

import json
import shutil

import numpy as np
import pytest

from bertvision.inference.ensemble import combine
from bertvision.errors import EnsembleError
from bertvision.runs import Predictions, RunFolder
from pipelines import ensemble as ensemble_cli
from tests.stores import sst2_finetune_run  # noqa: F401  (a fixture)


def _cls(uids, probs, labels, source):
    return Predictions("sst2", "dev", np.asarray(uids), probabilities=np.asarray(probs, np.float32),
                       labels=np.asarray(labels), source=source)


def test_mean_and_max_of_probabilities():
    a = _cls(["a", "b", "c"], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], [0, 0, 1], "A")
    b = _cls(["a", "b", "c"], [[0.6, 0.4], [0.8, 0.2], [0.45, 0.55]], [0, 0, 1], "B")
    mean = combine([a, b], "mean")
    np.testing.assert_allclose(mean.probabilities, [[0.75, 0.25], [0.6, 0.4], [0.375, 0.625]], rtol=1e-6)
    assert mean.evaluate() == {"accuracy": 1.0}
    assert a.evaluate()["accuracy"] == pytest.approx(2 / 3)
    mx = combine([a, b], "max")
    np.testing.assert_allclose(mx.probabilities[1], [0.8 / 1.4, 0.6 / 1.4], rtol=1e-6)


def test_regression_mean_and_no_max():
    kw = dict(labels=np.array([1.0, 2.0, 3.0]))
    a = Predictions("stsb", "dev", np.array(["x", "y", "z"]), scores=np.array([1.0, 3.0, 2.0]), source="A", **kw)
    b = Predictions("stsb", "dev", np.array(["x", "y", "z"]), scores=np.array([1.0, 1.0, 4.0]), source="B", **kw)
    np.testing.assert_allclose(combine([a, b]).scores, [1.0, 2.0, 3.0])
    with pytest.raises(EnsembleError, match="mean of their scores"):
        combine([a, b], "max")


def _span(order, start, source):
    ctx = "Paris is in France"
    offsets = {("q", 0): [[-1, -1], [0, 5], [6, 8]], ("q", 1): [[-1, -1], [9, 11], [12, 18]]}
    keys = [("q", 0), ("q", 1)]
    keys = [keys[i] for i in order]
    return Predictions("squad_v2", "dev", np.array(["q"]), window_uids=np.array([k[0] for k in keys]),
                       window_index=np.array([k[1] for k in keys]),
                       start_logits=np.asarray([start[k] for k in keys], np.float32),
                       end_logits=np.asarray([start[k] for k in keys], np.float32),
                       offsets=np.asarray([offsets[k] for k in keys]), contexts=np.array([ctx]),
                       answers=np.array([json.dumps(["France"])]), source=source)


def test_span_logits_are_aligned_by_window_then_decoded():
    a = _span([0, 1], {("q", 0): [0.0, 4.0, 0.0], ("q", 1): [0.0, 0.0, 3.0]}, "A")  # says "Paris"
    b = _span([1, 0], {("q", 0): [0.0, 0.0, 0.0], ("q", 1): [0.0, 0.0, 6.0]}, "B")  # windows in other order
    assert a.decode().predictions == {"q": "Paris"}
    ens = combine([a, b])
    np.testing.assert_allclose(ens.start_logits, [[0.0, 2.0, 0.0], [0.0, 0.0, 4.5]])
    assert ens.decode().predictions == {"q": "France"}
    assert ens.evaluate()["f1"] == 100.0
    c = _span([0, 1], {("q", 0): [0.0, 4.0, 0.0], ("q", 1): [0.0, 0.0, 3.0]}, "C")
    c.window_index = np.array([0, 2])
    with pytest.raises(EnsembleError, match="different windows"):
        combine([a, c])


def test_misaligned_and_mixed_tasks_are_refused():
    a = _cls(["a", "b", "c"], np.full((3, 2), 0.5), [0, 1, 0], "A")
    with pytest.raises(EnsembleError, match=r"3 vs 2 examples, 1 only in the first"):
        combine([a, _cls(["a", "b"], np.full((2, 2), 0.5), [0, 1], "B")])
    with pytest.raises(EnsembleError, match="different order"):
        combine([a, _cls(["b", "a", "c"], np.full((3, 2), 0.5), [1, 0, 0], "B")])
    with pytest.raises(EnsembleError, match="cannot combine tasks"):
        combine([a, Predictions("mrpc", "dev", np.array(["a", "b", "c"]), probabilities=np.full((3, 2), 0.5))])
    with pytest.raises(EnsembleError, match="at least two"):
        combine([a])


def predictions_path(run_dir, split):
    return RunFolder(run_dir).prediction_file(split)


@pytest.fixture
def runs(sst2_finetune_run, tmp_path):  # noqa: F811
    """A folder for the ensembles, and in it ``a``: a link to a BERT fine-tuning
    run on 48 SST-2 examples with a checkpoint at 0.5 epochs
    (tests.stores.sst2_finetune_run, shared read-only with other modules)."""
    (tmp_path / "a").symlink_to(sst2_finetune_run, target_is_directory=True)
    return tmp_path


def test_cli_ensemble_of_a_run_and_a_checkpoint(runs, capsys):
    a, half = runs / "a", runs / "a" / "checkpoints" / "epoch-0.50"
    out = runs / "ens"
    assert ensemble_cli.main(["--runs", str(a), str(half), "--split", "dev", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["run_type"] == "ensemble" and r["method"] == "ensemble(mean: bert_finetune+bert_finetune@epoch-0.50)"
    members = [m["dev_metrics"]["accuracy"] for m in r["members"]]
    assert members[0] == json.loads((a / "results.json").read_text())["dev_metrics"]["accuracy"]
    ens = Predictions.load(predictions_path(out, "dev"))
    pa, pb = Predictions.load(predictions_path(a, "dev")), Predictions.load(predictions_path(half, "dev"))
    np.testing.assert_allclose(ens.probabilities, (pa.probabilities + pb.probabilities) / 2, rtol=1e-6)
    # Two classes: where both members are right (wrong) the mean is too, so the
    # ensemble's accuracy lies between "both right" and "either right".
    right_a = pa.probabilities.argmax(1) == pa.labels
    right_b = pb.probabilities.argmax(1) == pb.labels
    assert (right_a & right_b).mean() <= r["dev_metrics"]["accuracy"] <= (right_a | right_b).mean()
    assert "->" in capsys.readouterr().out


def test_cli_refuses_runs_over_other_examples(runs, capsys):
    # What a --limit 24 run writes: the first 24 dev examples of the same split.
    short = runs / "short"
    shutil.copytree(runs / "a", short, ignore=shutil.ignore_patterns("checkpoints"))
    p = Predictions.load(predictions_path(short, "dev"))
    Predictions("sst2", "dev", p.uids[:24], probabilities=p.probabilities[:24], labels=p.labels[:24]).save(
        predictions_path(short, "dev"))
    with pytest.raises(SystemExit) as err:
        ensemble_cli.main(["--runs", str(runs / "a"), str(short), "--out", str(runs / "bad")])
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert "do not predict the same dev examples" in msg and "48 vs 24 examples" in msg
    assert not (runs / "bad" / "results.json").exists()
    with pytest.raises(SystemExit):
        ensemble_cli.main(["--runs", str(runs / "a"), str(runs / "nope"), "--out", str(runs / "bad")])
    assert "does not exist" in capsys.readouterr().err
