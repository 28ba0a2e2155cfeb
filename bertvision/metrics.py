"""Official evaluation metrics: GLUE (numpy), a user task's by kind
(scikit-learn) and SQuAD 2.0 (the official script).

numpy, scipy and scikit-learn; no TensorFlow. GLUE metrics follow the
definitions used by the GLUE benchmark (scikit-learn semantics; correlations
from scipy). A user task's metrics (`bertvision.data.tasks.KIND_METRICS`)
are scikit-learn's: macro/micro F1 of class indices or, for multi-label,
of ``[N, C]`` 0/1 indicator matrices, subset accuracy, MSE; and
`per_class_metrics` gives each class's precision, recall, F1 and support.
SQuAD follows ``evaluate-v2.0.py`` line for line, values in percent.

Example:
    >>> compute_metrics(["accuracy", "f1"], [1, 0, 1, 1], [1, 0, 0, 1])
    {'accuracy': 0.75, 'f1': 0.8}
    >>> squad_evaluate_examples([SquadGold("q1", ("Paris",))], {"q1": "paris"})["exact"]
    100.0
"""

from __future__ import annotations

import collections
import math
import re
import string
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats
from seqeval.metrics import sequence_labeling as seqeval_metrics
from seqeval.scheme import IOB2
from sklearn import metrics as skm

from bertvision.data.tasks import get_task

__all__ = [
    "METRIC_FUNCTIONS",
    "MetricFunction",
    "SquadGold",
    "TAGGING_METRICS",
    "accuracy",
    "best_thresholds",
    "compute_exact",
    "compute_f1",
    "compute_metrics",
    "f1",
    "find_best_thresh",
    "get_tokens",
    "macro_f1",
    "matthews_corrcoef",
    "micro_f1",
    "mse",
    "normalize_answer",
    "odds_threshold",
    "pearson",
    "per_class_metrics",
    "spearmanr",
    "subset_accuracy",
    "squad_evaluate",
    "tagging_metrics",
    "squad_evaluate_examples",
]


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


def _as_1d(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as a finite 1-D float/int array (``[N, 1]`` is squeezed)."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must have shape [N] (or [N, 1]); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{what} must be numeric; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s)")
    return arr


def _class_indices(values: Any, what: str) -> np.ndarray:
    """Class indices from indices ``[N]`` or scores ``[N, C]`` (argmax, C >= 2)."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] >= 2:
        if arr.shape[0] == 0:
            raise ValueError(f"{what} is empty")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contains NaN or infinite scores")
        return np.argmax(arr, axis=1).astype(np.int64)
    arr = _as_1d(arr, what)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{what} must be class indices or [N, C] scores; got non-integer floats "
                f"of shape {arr.shape}"
            )
    return arr.astype(np.int64)


def _paired(predictions: Any, labels: Any, classes: bool) -> tuple[np.ndarray, np.ndarray]:
    prep = _class_indices if classes else _as_1d
    pred = prep(predictions, "predictions")
    gold = prep(labels, "labels")
    if pred.shape[0] != gold.shape[0]:
        raise ValueError(
            f"predictions and labels differ in length: {pred.shape[0]} vs {gold.shape[0]}"
        )
    if not classes:
        pred, gold = pred.astype(np.float64), gold.astype(np.float64)
    return pred, gold


# ---------------------------------------------------------------------------
# GLUE metrics
# ---------------------------------------------------------------------------


def accuracy(predictions: Any, labels: Any) -> float:
    """Fraction of predictions equal to the labels.

    >>> accuracy([[0.1, 0.9], [0.8, 0.2]], [1, 1])
    0.5
    """
    pred, gold = _paired(predictions, labels, classes=True)
    return float(np.mean(pred == gold))


def f1(predictions: Any, labels: Any) -> float:
    """Binary F1 of the positive class 1 (0.0 when there are no positives at all).

    >>> f1([1, 1, 0, 0], [1, 0, 1, 0])
    0.5
    """
    pred, gold = _paired(predictions, labels, classes=True)
    for arr, what in ((pred, "predictions"), (gold, "labels")):
        extra = sorted(set(np.unique(arr).tolist()) - {0, 1})
        if extra:
            raise ValueError(f"binary f1 needs classes 0/1; {what} contain {extra}")
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    denom = 2.0 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(predictions: Any, labels: Any) -> float:
    """Matthews correlation (multiclass form, as scikit-learn); 0.0 when undefined.

    >>> matthews_corrcoef([1, 1, 0, 0], [1, 1, 0, 0])
    1.0
    """
    pred, gold = _paired(predictions, labels, classes=True)
    _, inverse = np.unique(np.concatenate([gold, pred]), return_inverse=True)
    n = gold.shape[0]
    k = int(inverse.max()) + 1
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (inverse[:n], inverse[n:]), 1.0)
    t_sum = confusion.sum(axis=1)
    p_sum = confusion.sum(axis=0)
    n_correct = np.trace(confusion)
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = float(n) ** 2 - np.dot(p_sum, p_sum)
    cov_ytyt = float(n) ** 2 - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def _correlation(fn, predictions: Any, labels: Any) -> float:
    pred, gold = _paired(predictions, labels, classes=False)
    if pred.shape[0] < 2:
        raise ValueError(f"correlation needs at least 2 values; got {pred.shape[0]}")
    with warnings.catch_warnings():  # a constant input gives NaN, as the metric is undefined
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(fn(pred, gold).statistic)


def pearson(predictions: Any, labels: Any) -> float:
    """Pearson correlation (`scipy.stats.pearsonr`; NaN if an input is constant).

    >>> round(pearson([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]), 6)
    0.981981
    """
    return _correlation(stats.pearsonr, predictions, labels)


def spearmanr(predictions: Any, labels: Any) -> float:
    """Spearman rank correlation, average ranks for ties (`scipy.stats.spearmanr`).

    >>> spearmanr([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    -1.0
    """
    return _correlation(stats.spearmanr, predictions, labels)


def _label_arrays(predictions: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class indices ``[N]`` (scores ``[N, C]`` are argmaxed), or, when the
    labels are an ``[N, C]`` indicator matrix (multi-label), both matrices."""
    gold = np.asarray(labels)
    if gold.ndim == 2 and gold.shape[1] > 1:
        pred = np.asarray(predictions)
        if pred.shape != gold.shape:
            raise ValueError(f"multi-label predictions {pred.shape} and labels {gold.shape} differ in shape")
        if gold.size == 0:
            raise ValueError("labels are empty")
        return pred.astype(np.int64), gold.astype(np.int64)
    return _paired(predictions, labels, classes=True)


def macro_f1(predictions: Any, labels: Any) -> float:
    """F1 averaged over classes, each class counting once (scikit-learn's
    ``f1_score(average="macro")`` over the classes in labels or predictions;
    multi-label: over the labels of the indicator matrix).

    >>> macro_f1([0, 1, 1, 2], [0, 1, 2, 2])
    0.7777777777777777
    """
    pred, gold = _label_arrays(predictions, labels)
    return float(skm.f1_score(gold, pred, average="macro", zero_division=0))


def micro_f1(predictions: Any, labels: Any) -> float:
    """F1 of all decisions pooled (``f1_score(average="micro")``): accuracy
    for single-label classes, the pooled label F1 for multi-label.

    >>> micro_f1([[1, 0], [1, 1]], [[1, 0], [0, 1]])
    0.8
    """
    pred, gold = _label_arrays(predictions, labels)
    return float(skm.f1_score(gold, pred, average="micro", zero_division=0))


def subset_accuracy(predictions: Any, labels: Any) -> float:
    """Multi-label: the share of examples whose whole label set is right.

    >>> subset_accuracy([[1, 0], [1, 1]], [[1, 0], [0, 1]])
    0.5
    """
    pred, gold = _label_arrays(predictions, labels)
    return float(skm.accuracy_score(gold, pred))


def mse(predictions: Any, labels: Any) -> float:
    """Mean squared error of scores (``mean_squared_error``).

    >>> mse([1.0, 2.0], [1.0, 4.0])
    2.0
    """
    pred, gold = _paired(predictions, labels, classes=False)
    return float(skm.mean_squared_error(gold, pred))


def per_class_metrics(predictions: Any, labels: Any, label_names: Sequence[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class (multi-label: of
    every label), in `label_names` order, from
    ``precision_recall_fscore_support``; a class never predicted has
    precision 0.

    >>> per_class_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])[0]
    {'label': 'a', 'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'support': 2}
    """
    pred, gold = _label_arrays(predictions, labels)
    indices = None if gold.ndim == 2 else list(range(len(label_names)))
    p, r, f, s = skm.precision_recall_fscore_support(gold, pred, labels=indices, zero_division=0)
    return [{"label": name, "precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
            for name, a, b, c, d in zip(label_names, p, r, f, s)]


def best_thresholds(probabilities: Any, labels: Any,
                    grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))) -> np.ndarray:
    """Multi-label: for each label, the probability threshold of `grid` with
    the best F1 of that label on these (dev) examples; 0.5 for a label with
    no positive example there. Ties go to the threshold nearest 0.5.

    >>> best_thresholds([[0.3, 0.9], [0.2, 0.4]], [[1, 1], [0, 0]]).tolist()
    [0.3, 0.5]
    """
    probs, gold = np.asarray(probabilities, np.float64), np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or probs.shape != gold.shape:
        raise ValueError(f"probabilities {probs.shape} and labels {gold.shape} must both be [N, labels]")
    order = sorted(grid, key=lambda t: (abs(t - 0.5), t))
    out = np.full(probs.shape[1], 0.5)
    for j in range(probs.shape[1]):
        if gold[:, j].sum() == 0:
            continue
        scores = [skm.f1_score(gold[:, j], probs[:, j] >= t, zero_division=0) for t in order]
        out[j] = order[int(np.argmax(scores))]
    return out


MetricFunction = Callable[[Any, Any], float]

#: Official metric name -> function(predictions, labels) -> float.
METRIC_FUNCTIONS: dict[str, MetricFunction] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearmanr": spearmanr,
    "macro_f1": macro_f1,
    "micro_f1": micro_f1,
    "subset_accuracy": subset_accuracy,
    "mse": mse,
}

_SQUAD_NAMES = frozenset(
    ["exact", "best_exact", "best_f1"]
    + [f"{p}_{m}" for p in ("HasAns", "NoAns") for m in ("exact", "f1", "total")]
)


def _metric_names(metrics: str | Sequence[str] | Any) -> list[str]:
    """Metric names from a list of names, one name, a task name, or a ``TaskSpec``."""
    if isinstance(metrics, str):
        if metrics in METRIC_FUNCTIONS:
            return [metrics]
        return list(get_task(metrics).metrics)
    if hasattr(metrics, "metrics") and not isinstance(metrics, Mapping):
        return list(metrics.metrics)
    names = list(metrics)
    if not names:
        raise ValueError("no metric names given")
    return names


def compute_metrics(
    metrics: str | Sequence[str] | Any, predictions: Any, labels: Any
) -> dict[str, float]:
    """Compute the named official metrics.

    ``metrics`` is a list of metric names (usually ``get_task(t).metrics``), a single
    metric name, a task name, or a ``TaskSpec``. Classification predictions are class
    indices ``[N]`` or scores ``[N, C]`` (argmax); regression predictions are floats.

    >>> {k: round(v, 6) for k, v in compute_metrics(["pearson", "spearmanr"], [0.5, 2.0, 3.5], [1.0, 2.0, 3.0]).items()}
    {'pearson': 1.0, 'spearmanr': 1.0}
    """
    names = _metric_names(metrics)
    out: dict[str, float] = {}
    for name in names:
        fn = METRIC_FUNCTIONS.get(name)
        if fn is None:
            hint = (
                " (SQuAD metrics come from squad_evaluate on decoded text)"
                if name in _SQUAD_NAMES
                else ""
            )
            raise ValueError(
                f"unknown metric {name!r}{hint}; known: {sorted(METRIC_FUNCTIONS)}"
            )
        out[name] = fn(predictions, labels)
    return out


# ---------------------------------------------------------------------------
# Token classification: entity-level scores (seqeval)
# ---------------------------------------------------------------------------

TAGGING_METRICS = ("f1", "precision", "recall", "strict_f1", "token_accuracy")
"""The overall metrics of a tagging task; `tagging_metrics` adds ``f1_TYPE`` per entity type."""


def tagging_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level scores of BIO tag sequences, one list of tags per sentence.

    ``precision``, ``recall``, ``f1``: exact entity matches (type, first and
    last word), counted as conlleval counts them (seqeval's default mode: an
    ``I-X`` after ``O`` starts an entity); ``strict_f1``: seqeval's strict
    IOB2 mode (an ill-formed predicted entity counts as none);
    ``precision_TYPE``, ``recall_TYPE``, ``f1_TYPE`` per gold or predicted
    entity type; ``token_accuracy``: the share of words whose tag is right.
    Fractions in [0, 1], as the GLUE metrics.

    >>> tagging_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["f1"]
    0.0
    """
    gold = [list(s) for s in gold]
    predicted = [list(s) for s in predicted]
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    if not gold:
        raise ValueError("no sentences to score")
    p, r, f, _ = seqeval_metrics.precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)
    out = {"f1": float(f), "precision": float(p), "recall": float(r),
           "strict_f1": float(seqeval_metrics.f1_score(gold, predicted, mode="strict", scheme=IOB2,
                                                       zero_division=0)),
           "token_accuracy": float(seqeval_metrics.accuracy_score(gold, predicted))}
    report = seqeval_metrics.classification_report(gold, predicted, output_dict=True, zero_division=0)
    for kind in sorted(k for k in report if not k.endswith(" avg")):
        for name in ("precision", "recall", "f1"):
            out[f"{name}_{kind}"] = float(report[kind]["f1-score" if name == "f1" else name])
    return out


# ---------------------------------------------------------------------------
# SQuAD 2.0: the official evaluate-v2.0.py
# ---------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace.

    >>> normalize_answer("  The  Eiffel-Tower! ")
    'eiffeltower'
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def get_tokens(s: str) -> list[str]:
    """Normalized whitespace tokens (``[]`` for an empty string).

    >>> get_tokens("The cat, the hat")
    ['cat', 'hat']
    """
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    """1 if the normalized answers are equal, else 0.

    >>> compute_exact("the Cat", "cat.")
    1
    """
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """Token-overlap F1 of normalized answers; 1 if both empty, 0 if only one is.

    >>> compute_f1("big red dog", "red dog barks")
    0.6666666666666666
    """
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


@dataclass(frozen=True)
class SquadGold:
    """One question's gold answers (empty tuple: unanswerable).

    >>> SquadGold("q1", ("Paris", "paris")).has_answer
    True
    """

    qid: str
    answers: tuple[str, ...]

    @property
    def has_answer(self) -> bool:
        return bool(self.answers)


def _gold_from_json(dataset: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[SquadGold]:
    data = dataset["data"] if isinstance(dataset, Mapping) else dataset
    golds = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                golds.append(SquadGold(qa["id"], tuple(a["text"] for a in qa["answers"])))
    return golds


def _gold_from_examples(examples: Iterable[Any]) -> list[SquadGold]:
    golds = []
    for ex in examples:
        texts = () if ex.is_impossible else tuple(a.text for a in ex.answers)
        golds.append(SquadGold(str(ex.uid), texts))
    return golds


def _raw_scores(
    golds: Sequence[SquadGold], preds: Mapping[str, str]
) -> tuple[dict[str, int], dict[str, float]]:
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, float] = {}
    for gold in golds:
        gold_answers = [a for a in gold.answers if normalize_answer(a)]
        if not gold_answers:
            gold_answers = [""]  # unanswerable: the only correct answer is ""
        a_pred = preds[gold.qid]
        exact_scores[gold.qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[gold.qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def _apply_no_ans_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, float]:
    new_scores: dict[str, float] = {}
    for qid, s in scores.items():
        if na_probs[qid] > na_prob_thresh:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def _make_eval_dict(
    exact_scores: Mapping[str, float],
    f1_scores: Mapping[str, float],
    qid_list: Sequence[str] | None = None,
) -> collections.OrderedDict:
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    total = len(qid_list)
    return collections.OrderedDict(
        [
            ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
            ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
            ("total", total),
        ]
    )


def find_best_thresh(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """Best score (percent) over no-answer thresholds, and that threshold.

    Starts from "predict no answer everywhere" and walks the questions by rising
    ``na_probs``, answering one more each step (official ``find_best_thresh``).

    >>> find_best_thresh({"a": "x", "b": ""}, {"a": 1, "b": 1},
    ...                  {"a": 0.2, "b": 0.9}, {"a": True, "b": False})
    (100.0, 0.2)
    """
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), float(best_thresh)


def _evaluate(
    golds: Sequence[SquadGold],
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None,
    na_prob_thresh: float,
) -> collections.OrderedDict:
    if not golds:
        raise ValueError("no questions to evaluate")
    qids = [g.qid for g in golds]
    if len(set(qids)) != len(qids):
        raise ValueError("duplicate question ids in the gold data")
    missing = [q for q in qids if q not in preds]
    if missing:
        raise ValueError(f"missing predictions for {len(missing)} question(s), e.g. {missing[:3]}")
    for qid in qids:
        if not isinstance(preds[qid], str):
            raise ValueError(f"prediction for {qid!r} must be a string; got {type(preds[qid])}")
    has_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in preds}
    else:
        missing = [q for q in qids if q not in na_probs]
        if missing:
            raise ValueError(
                f"missing na_probs for {len(missing)} question(s), e.g. {missing[:3]}"
            )
        bad = [q for q in qids if not np.isfinite(float(na_probs[q]))]
        if bad:
            raise ValueError(f"na_probs contain NaN or infinite values, e.g. {bad[:3]}")
        # The threshold search walks every probability; keep only the evaluated ones.
        na_probs = {q: float(na_probs[q]) for q in qids}

    qid_to_has_ans = {g.qid: g.has_answer for g in golds}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = _raw_scores(golds, preds)
    exact_thresh = _apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = _apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = _make_eval_dict(exact_thresh, f1_thresh)
    for prefix, qid_list in (("HasAns", has_ans_qids), ("NoAns", no_ans_qids)):
        if qid_list:
            for k, v in _make_eval_dict(exact_thresh, f1_thresh, qid_list).items():
                out_eval[f"{prefix}_{k}"] = v
    if has_na_probs:
        best_exact, exact_t = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
        best_f1, f1_t = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
        out_eval["best_exact"] = best_exact
        out_eval["best_exact_thresh"] = exact_t
        out_eval["best_f1"] = best_f1
        out_eval["best_f1_thresh"] = f1_t
    return out_eval


def _is_json_data(dataset: Any) -> bool:
    """True for the official JSON dict or its ``data`` list of article dicts."""
    if isinstance(dataset, Mapping):
        return True
    if isinstance(dataset, Sequence) and dataset and isinstance(dataset[0], Mapping):
        return True
    return False


def squad_evaluate(
    dataset: Any,
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> collections.OrderedDict:
    """The official SQuAD 2.0 evaluation (``evaluate-v2.0.py``), values in percent.

    ``dataset`` is the official JSON dict, its ``data`` list, or a list of loaded
    ``Example`` objects (then as :func:`squad_evaluate_examples`). ``preds`` maps
    question id -> answer text ("" for no answer); every question needs one.
    ``na_probs`` (question id -> no-answer probability) adds ``best_exact``,
    ``best_exact_thresh``, ``best_f1`` and ``best_f1_thresh``.

    >>> data = [{"paragraphs": [{"qas": [{"id": "q", "answers": [{"text": "a dog"}]}]}]}]
    >>> squad_evaluate(data, {"q": "dog"})["exact"]
    100.0
    """
    if _is_json_data(dataset):
        return _evaluate(_gold_from_json(dataset), preds, na_probs, na_prob_thresh)
    return squad_evaluate_examples(dataset, preds, na_probs, na_prob_thresh)


def squad_evaluate_examples(
    examples: Iterable[Any],
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> collections.OrderedDict:
    """:func:`squad_evaluate` for loaded examples (``uid``, ``answers[i].text``,
    ``is_impossible``) or :class:`SquadGold` records.

    >>> squad_evaluate_examples([SquadGold("q", ())], {"q": ""})["NoAns_exact"]
    100.0
    """
    golds = [
        ex if isinstance(ex, SquadGold) else _gold_from_examples([ex])[0] for ex in examples
    ]
    return _evaluate(golds, preds, na_probs, na_prob_thresh)


def odds_threshold(na_prob_thresh: float) -> float:
    """A no-answer *probability* threshold (the SQuAD script's
    ``best_f1_thresh``) as a threshold on ``null_odds`` (its logit)."""
    p = float(na_prob_thresh)
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))
