"""Tests for bertvision.metrics: GLUE metrics and the official SQuAD 2.0 evaluation.

Every expected value is computed by hand in the comment next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from bertvision.metrics import (
    METRIC_FUNCTIONS,
    SquadGold,
    accuracy,
    compute_exact,
    compute_f1,
    compute_metrics,
    f1,
    find_best_thresh,
    get_tokens,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    spearmanr,
    squad_evaluate,
    squad_evaluate_examples,
)

# ---------------------------------------------------------------------------
# GLUE metrics
# ---------------------------------------------------------------------------


def test_accuracy_indices_and_logits():
    assert accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 0.75
    # argmax rows: 1, 0, 2 -> two of three right
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.1, 0.3]])
    assert accuracy(logits, [1, 0, 0]) == pytest.approx(2 / 3)


def test_binary_f1_hand_computed():
    # TP=2 (idx 0,3), FP=1 (idx 1), FN=1 (idx 2): P=R=2/3 -> F1=2/3
    assert f1([1, 1, 0, 1, 0], [1, 0, 1, 1, 0]) == pytest.approx(2 / 3)
    # TP=1, FP=0, FN=2: P=1, R=1/3 -> F1 = 2*(1/3)/(4/3) = 0.5
    assert f1([1, 0, 0, 0], [1, 1, 1, 0]) == pytest.approx(0.5)
    # no positive anywhere: undefined -> 0
    assert f1([0, 0], [0, 0]) == 0.0


def test_binary_f1_rejects_non_binary():
    with pytest.raises(ValueError, match="classes 0/1"):
        f1([0, 2, 1], [0, 1, 1])


def test_mcc_binary_hand_computed():
    # TP=2, FP=1, TN=2, FN=0: (2*2-1*0)/sqrt(3*2*3*2) = 4/6
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == pytest.approx(2 / 3)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_mcc_multiclass_hand_computed():
    # t_sum=p_sum=[2,1,1], correct=2, n=4: (2*4-6)/sqrt((16-6)*(16-6)) = 0.2
    assert matthews_corrcoef([0, 2, 1, 0], [0, 1, 2, 0]) == pytest.approx(0.2)


def test_mcc_undefined_is_zero():
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
    assert matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0


def test_pearson_hand_computed():
    # xm=[-1,0,1], ym=[-4/3,-1/3,5/3]: 3 / sqrt(2 * 42/9) = 9/sqrt(84)
    assert pearson([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(9 / math.sqrt(84))
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_pearson_constant_input_is_nan_like_scipy():
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_spearman_with_ties_uses_average_ranks():
    # ranks x=[1,2.5,2.5,4], y=[1,3,2,4]: 4.5/sqrt(4.5*5) = 3/sqrt(10)
    # (the no-ties shortcut 1 - 6*sum(d^2)/(n(n^2-1)) would give 0.95)
    assert spearmanr([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(
        3 / math.sqrt(10)
    )
    # monotone but non-linear -> 1
    assert spearmanr([1.0, 2.0, 3.0, 4.0], [1.0, 8.0, 27.0, 64.0]) == pytest.approx(1.0)


def test_compute_metrics_by_names():
    out = compute_metrics(["accuracy", "f1"], [1, 1, 0, 1, 0], [1, 0, 1, 1, 0])
    assert out == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(2 / 3)}
    out = compute_metrics(["matthews_corrcoef"], [1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert out == {"matthews_corrcoef": pytest.approx(2 / 3)}
    # regression predictions of shape [N, 1] are squeezed
    out = compute_metrics(["pearson", "spearmanr"], [[1.0], [2.0], [3.0]], [1.0, 2.0, 4.0])
    assert out["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert out["spearmanr"] == pytest.approx(1.0)


def test_compute_metrics_accepts_task_spec_like_object():
    @dataclass
    class Spec:
        metrics: tuple[str, ...]

    out = compute_metrics(Spec(("accuracy",)), [[0.2, 0.8], [0.9, 0.1]], [1, 1])
    assert out == {"accuracy": 0.5}


def test_compute_metrics_errors():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        compute_metrics(["bleu"], [1], [1])
    with pytest.raises(ValueError, match="squad_evaluate"):
        compute_metrics(["exact"], [1], [1])
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(["accuracy"], [1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(["pearson"], [1.0, float("nan"), 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(["pearson"], np.zeros((3, 2)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-integer"):
        compute_metrics(["accuracy"], [0.5, 1.0], [1, 1])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(["accuracy"], [], [])


def test_metric_registry_names_are_official():
    assert set(METRIC_FUNCTIONS) == {"accuracy", "f1", "matthews_corrcoef", "pearson", "spearmanr", "macro_f1",
                                     "micro_f1", "subset_accuracy", "mse"}


def test_mnli_metrics_are_merged_per_eval_split():
    from bertvision.runs import merge_split_metrics
    from bertvision.data.tasks import get_task

    out = merge_split_metrics({"dev_matched": compute_metrics("mnli", [0, 1, 2], [0, 1, 1]),
                               "dev_mismatched": compute_metrics("mnli", [[0.1, 0.2, 0.7]], [2])}, get_task("mnli"))
    assert out == {"accuracy": pytest.approx(2 / 3), "matched_accuracy": pytest.approx(2 / 3),
                   "mismatched_accuracy": 1.0}


# ---------------------------------------------------------------------------
# SQuAD 2.0
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Quick, Brown Fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theatre another", "theatre another"),  # articles only as whole words
        ("A.B.C.", "abc"),  # punctuation removed before articles
        ("the-end", "theend"),
        ("  multiple   spaces\tand\nnewlines ", "multiple spaces and newlines"),
        ("THE", ""),
        ("l'Amour", "lamour"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_get_tokens_and_exact():
    assert get_tokens("") == []
    assert get_tokens("The cat, the hat.") == ["cat", "hat"]
    assert compute_exact("The Cat!", "cat") == 1
    assert compute_exact("cat", "cats") == 0


def test_compute_f1_hand_computed():
    # gold [big, red, dog], pred [red, dog, barks, loudly]: P=2/4, R=2/3 -> 4/7
    assert compute_f1("the big red dog", "red dog barks loudly") == pytest.approx(4 / 7)
    # repeated tokens count with multiplicity: common dog x2, P=R=2/3
    assert compute_f1("dog dog cat", "dog dog dog") == pytest.approx(2 / 3)
    assert compute_f1("", "") == 1
    assert compute_f1("", "something") == 0
    assert compute_f1("something", "") == 0
    assert compute_f1("the", "") == 1  # "the" normalizes to nothing
    assert compute_f1("red", "blue") == 0


def _qa(qid, answers):
    return {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in answers]}


DATASET = {
    "version": "v2.0",
    "data": [
        {
            "title": "A",
            "paragraphs": [
                {"context": "...", "qas": [_qa("q1", ["Denver Broncos"]), _qa("q2", ["the big red dog"])]}
            ],
        },
        {"title": "B", "paragraphs": [{"context": "...", "qas": [_qa("q3", []), _qa("q4", [])]}]},
    ],
}
PREDS = {"q1": "Denver Broncos", "q2": "red dog barks loudly", "q3": "", "q4": "something"}


def test_squad_evaluate_hand_computed():
    out = squad_evaluate(DATASET, PREDS)
    # exact: q1 1, q2 0, q3 1 (empty vs empty), q4 0 -> 50
    # f1:    q1 1, q2 4/7, q3 1, q4 0 -> 100 * (18/7) / 4 = 450/7
    assert list(out) == [
        "exact", "f1", "total",
        "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total",
    ]  # fmt: skip
    assert out["exact"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(450 / 7)
    assert out["total"] == 4
    assert out["HasAns_exact"] == pytest.approx(50.0)
    assert out["HasAns_f1"] == pytest.approx(100 * (1 + 4 / 7) / 2)
    assert out["HasAns_total"] == 2
    assert out["NoAns_exact"] == pytest.approx(50.0)
    assert out["NoAns_f1"] == pytest.approx(50.0)
    assert out["NoAns_total"] == 2
    # the "data" list alone gives the same
    assert squad_evaluate(DATASET["data"], PREDS) == out


def test_squad_evaluate_best_thresholds_hand_computed():
    na_probs = {"q1": 0.1, "q2": 0.6, "q4": 0.7, "q3": 0.9}
    out = squad_evaluate(DATASET, PREDS, na_probs)
    # Start: 2 (both no-answer right). Walk by na_prob:
    # exact: q1 +1 -> 3 (best, 0.1); q2 +0 -> 3; q4 -1 -> 2; q3 +0 -> 2  => 75 at 0.1
    # f1:    q1 +1 -> 3; q2 +4/7 -> 3.571 (best, 0.6); q4 -1; q3 +0    => 100*(25/7)/4 at 0.6
    assert out["best_exact"] == pytest.approx(75.0)
    assert out["best_exact_thresh"] == pytest.approx(0.1)
    assert out["best_f1"] == pytest.approx(625 / 7)
    assert out["best_f1_thresh"] == pytest.approx(0.6)
    # na_prob_thresh 1.0 changes nothing
    assert out["exact"] == pytest.approx(50.0)
    assert list(out)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def test_squad_evaluate_na_prob_thresh():
    na_probs = {"q1": 0.1, "q2": 0.6, "q4": 0.7, "q3": 0.9}
    out = squad_evaluate(DATASET, PREDS, na_probs, na_prob_thresh=0.5)
    # q2, q3, q4 predicted no-answer: q2 -> 0, q3 -> 1, q4 -> 1; q1 stays 1
    assert out["exact"] == pytest.approx(75.0)
    assert out["f1"] == pytest.approx(75.0)
    assert out["HasAns_f1"] == pytest.approx(50.0)
    assert out["NoAns_exact"] == pytest.approx(100.0)


def test_find_best_thresh_all_no_answer_is_best():
    # answering anything only hurts: best stays at the starting score and thresh 0.0
    preds = {"a": "x", "b": "y"}
    score, thresh = find_best_thresh(preds, {"a": 0, "b": 0}, {"a": 0.3, "b": 0.4}, {"a": False, "b": False})
    assert (score, thresh) == (100.0, 0.0)


def test_several_gold_answers_take_max():
    data = [{"paragraphs": [{"qas": [_qa("q", ["Denver Broncos", "the Broncos", "Broncos team"])]}]}]
    out = squad_evaluate(data, {"q": "Broncos"})
    assert out["exact"] == 100.0  # matches "the Broncos"
    out = squad_evaluate(data, {"q": "Denver"})
    # vs "Denver Broncos": P=1, R=1/2 -> 2/3; others 0
    assert out["exact"] == 0.0
    assert out["f1"] == pytest.approx(200 / 3)


def test_gold_answers_normalizing_to_empty_are_dropped():
    data = [{"paragraphs": [{"qas": [_qa("q", ["the", "cat"]), _qa("r", ["."])]}]}]
    out = squad_evaluate(data, {"q": "", "r": ""})
    # q: gold ["cat"] vs "" -> 0; r: gold [""] vs "" -> 1 (but still a HasAns question)
    assert out["exact"] == 50.0
    assert out["HasAns_total"] == 2
    assert "NoAns_total" not in out


def test_unanswerable_predicted_non_empty_scores_zero():
    data = [{"paragraphs": [{"qas": [_qa("q", [])]}]}]
    assert squad_evaluate(data, {"q": ""})["exact"] == 100.0
    out = squad_evaluate(data, {"q": "a guess"})
    assert (out["exact"], out["f1"], out["NoAns_total"]) == (0.0, 0.0, 1)
    assert "HasAns_total" not in out


def test_squad_evaluate_errors():
    with pytest.raises(ValueError, match="missing predictions for 1"):
        squad_evaluate(DATASET, {k: v for k, v in PREDS.items() if k != "q2"})
    with pytest.raises(ValueError, match="missing na_probs"):
        squad_evaluate(DATASET, PREDS, {"q1": 0.5})
    with pytest.raises(ValueError, match="must be a string"):
        squad_evaluate(DATASET, {**PREDS, "q1": None})


@dataclass
class _Answer:
    text: str
    start: int = 0


@dataclass
class _Example:
    uid: str
    answers: tuple
    is_impossible: bool


def test_examples_path_matches_json_path():
    examples = [
        _Example("q1", (_Answer("Denver Broncos"),), False),
        _Example("q2", (_Answer("the big red dog"),), False),
        _Example("q3", (), True),
        # impossible even though a plausible answer is attached
        _Example("q4", (_Answer("plausible"),), True),
    ]
    na_probs = {"q1": 0.1, "q2": 0.6, "q4": 0.7, "q3": 0.9}
    expected = squad_evaluate(DATASET, PREDS, na_probs)
    assert squad_evaluate_examples(examples, PREDS, na_probs) == expected
    assert squad_evaluate(examples, PREDS, na_probs) == expected
    golds = [SquadGold("q1", ("Denver Broncos",)), SquadGold("q2", ("the big red dog",)),
             SquadGold("q3", ()), SquadGold("q4", ())]  # fmt: skip
    assert squad_evaluate_examples(golds, PREDS, na_probs) == expected


def test_compute_metrics_with_task_names_from_tasks_module():
    tasks = pytest.importorskip("bertvision.data.tasks")
    assert compute_metrics("cola", [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == {
        "matthews_corrcoef": pytest.approx(2 / 3)
    }
    out = compute_metrics(tasks.get_task("mrpc"), [1, 1, 0, 1, 0], [1, 0, 1, 1, 0])
    assert out == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="squad_evaluate"):
        compute_metrics("squad_v2", [1], [1])


def test_examples_from_data_module():
    data = pytest.importorskip("bertvision.data.readers")
    examples = [
        data.Example(uid="q1", texts=("Who?", "Denver Broncos won."),
                     answers=(data.Answer("Denver Broncos", 0),)),
        data.Example(uid="q3", texts=("Why?", "No idea."), is_impossible=True),
    ]  # fmt: skip
    out = squad_evaluate(examples, {"q1": "the denver broncos", "q3": ""})
    assert (out["exact"], out["HasAns_total"], out["NoAns_total"]) == (100.0, 1, 1)
