"""bertvision.runs (the run and search folder contract) and
bertvision.lifecycle (the one run lifecycle) as modules: fast, no BERT, no
store. The end-to-end runs (fit, fine-tuning, answerability, ensembles) are
in their own test files."""

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from bertvision.config import ConfigBase
from bertvision.errors import EnsembleError, RunError, SearchError
from bertvision.inference.ensemble import EnsembleConfig, run_ensemble
from bertvision.lifecycle import RunTask, TrainOutcome, run_task
from bertvision.metrics import odds_threshold
from bertvision.runs import (CHECKPOINT_INFO, HistoryPoint, Predictions, RunFolder, RunResults, SearchFolder,
                             checkpoint_name, checkpoint_path, latest_checkpoint, merge_split_metrics,
                             read_checkpoint_info)
from bertvision.data.tasks import get_task


def _results(**kw):
    base = dict(task="sst2", method="linear_probe", run_type="fit", main_metric="accuracy",
                dev_metrics={"accuracy": 0.8})
    return RunResults(**{**base, **kw})


# ------------------------------------------------------------------ results


def test_results_round_trip_and_refusals():
    r = _results(history=[HistoryPoint(epoch=1.0, dev={"accuracy": 0.8}, step=10)], seed=3)
    back = RunResults.from_dict(json.loads(json.dumps(r.to_dict())), "x")
    assert back == r and back.main_value == 0.8
    with pytest.raises(RunError, match="missing key"):
        RunResults.from_dict({"task": "sst2"}, "x")
    with pytest.raises(RunError, match="unknown key"):
        RunResults.from_dict({**r.to_dict(), "surprise": 1}, "x")
    with pytest.raises(RunError, match="main_metric 'f1' is not in dev_metrics"):
        RunResults.from_dict({**r.to_dict(), "main_metric": "f1"}, "x")
    with pytest.raises(RunError, match="run_type"):
        RunResults.from_dict({**r.to_dict(), "run_type": "other"}, "x")
    with pytest.raises(RunError, match="finite number"):
        RunResults.from_dict({**r.to_dict(), "seed": "three"}, "x")


def test_best_null_odds_is_the_one_threshold_rule():
    assert _results(dev_metrics={"accuracy": 1.0}).best_null_odds == 0.0  # no best_f1_thresh: BERT's rule
    r = _results(main_metric="f1", dev_metrics={"f1": 50.0, "best_f1_thresh": 0.8})
    assert r.best_null_odds == pytest.approx(math.log(0.8 / 0.2))
    assert odds_threshold(0.0) == -math.inf and odds_threshold(1.0) == math.inf


def test_merge_split_metrics_names_every_split_of_mnli():
    mnli = get_task("mnli")
    merged = merge_split_metrics({"dev_matched": {"accuracy": 0.8}, "dev_mismatched": {"accuracy": 0.7}}, mnli)
    assert merged["accuracy"] == 0.8
    assert {k for k in merged if k != "accuracy"} == {"matched_accuracy", "mismatched_accuracy"}


def test_predictions_save_load_and_evaluate(tmp_path):
    p = Predictions("sst2", "dev", np.array(["a", "b", "c"]),
                    probabilities=np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), labels=np.array([0, 1, 1]))
    path = p.save(tmp_path / "predictions" / "dev.npz")
    back = Predictions.load(path)
    assert back.uids.tolist() == ["a", "b", "c"] and back.evaluate() == pytest.approx({"accuracy": 2 / 3})
    with pytest.raises(RunError, match="duplicate uids"):
        Predictions("sst2", "dev", np.array(["a", "a"]), probabilities=np.ones((2, 2)) / 2)
    with pytest.raises(RunError, match="no predictions file"):
        Predictions.load(tmp_path / "missing.npz")


# ------------------------------------------------------------------ folders


@dataclass
class _Config(ConfigBase):
    out: str
    lr: float = 0.1
    command: list = None


def test_run_folder_begin_refuses_what_it_must(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        RunFolder(tmp_path / "file").begin(_Config(out="x"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(RunError, match="holding other files"):
        RunFolder(tmp_path / "other").begin(_Config(out="x"))
    run = RunFolder(tmp_path / "run")
    assert run.begin(_Config(out="x")) is False  # new
    assert run.begin(_Config(out="x", command=["again"]), ignore=("command",)) is True  # resumes
    with pytest.raises(RunError, match=r"other settings \(lr\)"):
        run.begin(_Config(out="x", lr=0.2), ignore=("command",))
    run.write_results(_results())
    with pytest.raises(RunError, match="already holds a finished run"):
        run.begin(_Config(out="x"))
    run.check_same(_Config(out="x"), ignore=("command",))
    with pytest.raises(Exception, match=r"finished run with other settings \(lr\)"):
        run.check_same(_Config(out="x", lr=0.3), ignore=("command",))


def test_checkpoints_and_state_belong_to_the_run_folder(tmp_path):
    run = RunFolder(tmp_path)
    assert checkpoint_name(0.1) == "epoch-0.10" and run.checkpoint(1.0) == checkpoint_path(tmp_path, 1.0)
    assert latest_checkpoint(tmp_path) is None and read_checkpoint_info(tmp_path) is None
    for step, epoch in ((10, 0.1), (100, 1.0), (30, 0.3)):
        folder = run.checkpoint(epoch)
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_INFO).write_text(json.dumps({"step": step, "epoch": epoch, "label": folder.name}))
    (run.checkpoints_dir / "epoch-2.00").mkdir()  # an unfinished checkpoint (no checkpoint.json) is skipped
    assert latest_checkpoint(tmp_path) == run.checkpoint(1.0)
    assert read_checkpoint_info(run.checkpoint(0.3))["step"] == 30
    (run.state_dir / "step-1").mkdir(parents=True)
    run.clear_state()
    assert not run.state_dir.exists()


def test_search_folder_begin_and_record(tmp_path):
    config = _Config(out=str(tmp_path / "s"))
    folder = SearchFolder(tmp_path / "s")
    assert folder.begin(config, ("command",), SearchError) is None  # new
    folder.write_record({"run_type": "search", "config": config.to_dict()})
    assert folder.begin(config, ("command",), SearchError)["run_type"] == "search"
    with pytest.raises(SearchError, match=r"other settings \(lr\)"):
        folder.begin(_Config(out=config.out, lr=0.5), ("command",), SearchError)
    folder.write_trials("trial_id\n0\n")
    assert folder.trials_file.read_text() == "trial_id\n0\n" and folder.best.path == folder.path / "best"
    folder.write_record({"run_type": "fit"})
    with pytest.raises(SearchError, match="not a search record"):
        folder.read_record(config, (), SearchError)
    (tmp_path / "t" / "tuner").mkdir(parents=True)
    with pytest.raises(SearchError, match="KerasTuner project but no search.json"):
        SearchFolder(tmp_path / "t").begin(config, (), SearchError)



def test_search_resumed_on_another_store_is_refused(tmp_path):
    """Issue 32 item 1 for searches: trials of two stores are never compared."""
    config = _Config(out=str(tmp_path / "s"))
    folder = SearchFolder(config.out)
    started = {"store": "tfrecords/x", "manifest_sha256": "a" * 64}
    folder.write_record({"run_type": "search", "config": config.to_dict(), "store_identity": started})
    record = folder.begin(config, ("command",), SearchError)
    folder.check_store(record, dict(started), SearchError)  # the same store: resumes
    folder.check_store(None, dict(started, manifest_sha256="b" * 64), SearchError)  # a new search: nothing to compare
    with pytest.raises(SearchError, match=r"started on the store tfrecords/x .*another one now"):
        folder.check_store(record, dict(started, manifest_sha256="b" * 64), SearchError)

# ---------------------------------------------------------------- lifecycle


class _MajorityClass(RunTask):
    """A real (if tiny) run: the majority class of the training labels,
    scored on dev. Counts how often it trained."""

    what = "a majority-class fit"

    def __init__(self, config, train, dev, reuse_finished=False):
        self.config, self.train_labels, self.dev_labels = config, np.asarray(train), np.asarray(dev)
        self.reuse_finished = reuse_finished
        self.trained = 0

    def train(self, run):
        self.trained += 1
        run.state_dir.mkdir(parents=True, exist_ok=True)  # what a trainer leaves while training
        majority = np.bincount(self.train_labels).argmax()
        probs = np.eye(2)[np.full(len(self.dev_labels), majority)]
        preds = Predictions("sst2", "dev", np.array([str(i) for i in range(len(self.dev_labels))]),
                            probabilities=probs, labels=self.dev_labels)
        metrics = preds.evaluate()
        return TrainOutcome(history=[HistoryPoint(epoch=1.0, dev=metrics, step=1)], best_epoch=1.0,
                            best_metrics=metrics, predictions={"dev": preds}, train_seconds=0.01)

    def result_fields(self, outcome):
        return dict(task="sst2", method="majority", main_metric="accuracy", seed=0,
                    train_examples=len(self.train_labels))

    def environment(self):
        return {"jit_compile": False}

    def save(self, run, outcome):
        (run.path / "majority.txt").write_text(str(np.bincount(self.train_labels).argmax()))


def test_run_task_writes_one_results_json_and_cleans_up(tmp_path):
    run = RunFolder(tmp_path / "run")
    task = _MajorityClass(_Config(out=str(run.path)), [1, 1, 0], [1, 0, 1, 1])
    results = run_task(task, run)
    assert results == run.results()  # what it returns is what it wrote
    assert results.dev_metrics == {"accuracy": 0.75} and results.run_type == "fit"
    assert results.train_examples == 3 and results.history[0].epoch == 1.0
    assert results.peak_memory_mib > 0 and results.total_wall_time_s >= 0
    assert results.environment["jit_compile"] is False and "numpy" in results.environment["versions"]
    assert results.predictions == {"dev": "predictions/dev.npz"} and run.load_predictions("dev").evaluate()
    assert (run.path / "majority.txt").read_text() == "1" and not run.state_dir.exists()
    with pytest.raises(RunError, match="already holds a finished run"):
        run_task(_MajorityClass(_Config(out=str(run.path)), [0], [0]), run)
    again = _MajorityClass(_Config(out=str(run.path)), [0], [0], reuse_finished=True)
    assert run_task(again, run) == results and again.trained == 0  # the finished run's results


def test_an_ensemble_goes_through_the_lifecycle(tmp_path):
    labels = np.array([0, 1, 1, 0])
    uids = np.array(["a", "b", "c", "d"])
    for name, probs in (("r1", [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.8, 0.2]]),
                        ("r2", [[0.7, 0.3], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])):
        RunFolder(tmp_path / name).save_predictions(
            {"dev": Predictions("sst2", "dev", uids, probabilities=np.array(probs), labels=labels)})
    config = EnsembleConfig(runs=[str(tmp_path / "r1"), str(tmp_path / "r2")], out=str(tmp_path / "ens"))
    results = run_ensemble(config)
    assert results.run_type == "ensemble" and results.dev_metrics == {"accuracy": 1.0}
    assert [m["dev_metrics"]["accuracy"] for m in results.members] == [0.75, 0.75]
    assert results.train_wall_time_s is None and results.environment == {}  # nothing trained
    assert RunFolder(tmp_path / "ens").results() == results
    with pytest.raises(RunError, match="already holds a finished run"):
        run_ensemble(config)
    with pytest.raises(EnsembleError, match="at least two runs"):
        EnsembleConfig(runs=[str(tmp_path / "r1")], out=str(tmp_path / "e2"))
