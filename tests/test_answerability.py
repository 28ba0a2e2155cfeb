"""SQuAD 2.0 answerability: a layer-mix classifier on the [CLS] activations, and
the same decision read off any span run."""

import json

import numpy as np
import pytest

from bertvision.training.answerability import (AnswerabilityConfig, answerability_metrics, fit_answerability,
                                      gold_answerable, span_decisions)
from bertvision.errors import FitError
from bertvision.runs import Predictions, RunFolder
from tests.stores import sst2_cls_store, squad_store  # noqa: F401


def test_metrics_of_the_answerable_class():
    gold = {"a": True, "b": True, "c": False, "d": False}
    m = answerability_metrics({"a": True, "b": False, "c": True, "d": False}, gold)
    assert m["answerable_accuracy"] == 0.5 and m["answerable_precision"] == 0.5 and m["answerable_recall"] == 0.5
    assert m["answerable_f1"] == 0.5 and m["answerable_share"] == 0.5
    with pytest.raises(FitError, match="no answerability decision for 1 question"):
        answerability_metrics({"a": True}, {"a": True, "b": False})


def test_span_decisions_follow_the_null_threshold():
    ctx = "Paris is in France"
    p = Predictions("squad_v2", "dev", np.array(["q1", "q2"]), window_uids=np.array(["q1", "q2"]),
                    window_index=np.array([0, 0]), start_logits=np.array([[0.0, 5.0, 0.0], [9.0, 1.0, 0.0]]),
                    end_logits=np.array([[0.0, 5.0, 0.0], [9.0, 1.0, 0.0]]),
                    offsets=np.array([[[-1, -1], [0, 5], [6, 8]]] * 2), contexts=np.array([ctx, ctx]),
                    answers=np.array([json.dumps(["Paris"]), json.dumps([])]))
    assert span_decisions(p) == {"q1": True, "q2": False}
    assert span_decisions(p, threshold=100.0) == {"q1": True, "q2": True}
    assert gold_answerable(p) == {"q1": True, "q2": False}


def test_classifier_on_cls_activations(squad_store, tmp_path):  # noqa: F811
    out = tmp_path / "answerable"
    results = fit_answerability(AnswerabilityConfig(store=squad_store, out=str(out), epochs=3, batch_size=16,
                                                    verbose=0, jit_compile=False))
    assert RunFolder(out).results() == results
    assert results.method == "answerability:scalar_mix" and results.main_metric == "answerable_f1"
    assert 0 <= results.dev_metrics["answerable_accuracy"] <= 1 and len(results.history) >= 1
    assert results.trainable_params == 7 + 1 + 384 * 2 + 2  # layer weights, scale, dense(2): a few hundred
    assert len(results.layer_weights) == 7


def test_needs_a_span_sequence_store(sst2_cls_store, tmp_path):  # noqa: F811
    with pytest.raises(FitError, match="answerability needs a SQuAD sequence store"):
        fit_answerability(AnswerabilityConfig(store=sst2_cls_store, out=str(tmp_path / "x")))
