"""Tests for bertvision.data.squad: n-best span decoding from per-window logits."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pytest

from bertvision.metrics import squad_evaluate_examples
from bertvision.data.squad import SquadDecoded, SquadWindows, apply_threshold, decode_squad

CONTEXT = "The Eiffel Tower is in Paris, France."
# Word pieces of the context with their character offsets; "Eiffel" is split in two.
PIECES = [(0, 3), (4, 7), (7, 10), (11, 16), (17, 19), (20, 22), (23, 28), (28, 29), (30, 36), (36, 37)]
#          The    Eif     ##fel    Tower     is        in        Paris     ,         France    .
N_QUESTION = 3  # [CLS] q q q [SEP] context... [SEP] pad...
L = 20


def window(pieces=PIECES, length=L):
    """Offsets [L, 2] for one window and the token position of every context piece."""
    offsets = np.full((length, 2), -1, dtype=np.int32)
    first = 1 + N_QUESTION + 1
    positions = []
    for i, (a, b) in enumerate(pieces):
        offsets[first + i] = (a, b)
        positions.append(first + i)
    return offsets, positions


def logits(n_windows=1, length=L):
    return np.zeros((n_windows, length)), np.zeros((n_windows, length))


def test_answer_spanning_word_pieces_is_exact_context_substring():
    offsets, pos = window()
    start, end = logits()
    start[0, pos[1]] = 5.0  # "Eif"
    end[0, pos[3]] = 5.0  # "Tower"
    d = decode_squad(SquadWindows(["q"], offsets[None], {"q": CONTEXT}), start, end)
    assert d.predictions == {"q": "Eiffel Tower"}
    assert d.best_text == {"q": "Eiffel Tower"}
    assert d.null_odds == {"q": -10.0}  # null 0 - span 10
    assert d.na_probs["q"] == pytest.approx(1 / (1 + math.exp(10.0)))
    assert "Eiffel Tower" in CONTEXT


def test_punctuation_token_not_included_unless_chosen():
    offsets, pos = window()
    start, end = logits()
    start[0, pos[6]] = 3.0
    end[0, pos[6]] = 3.0
    d = decode_squad(SquadWindows(["q"], offsets[None], {"q": CONTEXT}), start, end)
    assert d.predictions["q"] == "Paris"
    end[0, pos[8]] = 4.0
    d = decode_squad(SquadWindows(["q"], offsets[None], {"q": CONTEXT}), start, end)
    assert d.predictions["q"] == "Paris, France"


def test_second_window_has_better_span_and_null_is_min_over_windows():
    # window 0 sees pieces 0..5, window 1 sees pieces 4..9 (overlap: "is in")
    off0, pos0 = window(PIECES[:6])
    off1, pos1 = window(PIECES[4:])
    offsets = np.stack([off0, off1])
    start, end = logits(2)
    start[0, pos0[1]], end[0, pos0[3]] = 2.0, 3.0  # "Eiffel Tower": 5
    start[1, pos1[2]], end[1, pos1[4]] = 4.0, 4.0  # "Paris, France": 8
    start[0, 0], end[0, 0] = 1.0, 2.0  # null 3 in window 0
    start[1, 0], end[1, 0] = 5.0, 5.0  # null 10 in window 1
    d = decode_squad(SquadWindows(["q", "q"], offsets, {"q": CONTEXT}), start, end)
    assert d.predictions == {"q": "Paris, France"}
    assert d.null_odds == {"q": 3.0 - 8.0}  # min null (3), best span (8)


def test_equal_scores_across_windows_keep_the_first_window():
    off0, pos0 = window(PIECES[:6])
    off1, pos1 = window(PIECES[4:])
    start, end = logits(2)
    start[0, pos0[1]], end[0, pos0[1]] = 2.0, 2.0  # "Eif"
    start[1, pos1[2]], end[1, pos1[2]] = 2.0, 2.0  # "Paris"
    d = decode_squad(SquadWindows(["q", "q"], np.stack([off0, off1]), {"q": CONTEXT}), start, end)
    assert d.predictions["q"] == "Eif"


def test_impossible_question_null_wins():
    offsets, pos = window()
    start, end = logits()
    start[0, 0], end[0, 0] = 6.0, 6.0  # null 12
    start[0, pos[6]], end[0, pos[6]] = 4.0, 4.0  # best span "Paris": 8
    d = decode_squad(SquadWindows(["q"], offsets[None], {"q": CONTEXT}), start, end)
    assert d.predictions == {"q": ""}
    assert d.best_text == {"q": "Paris"}
    assert d.null_odds == {"q": 4.0}
    assert d.na_probs["q"] == pytest.approx(1 / (1 + math.exp(-4.0)))


def test_end_before_start_rejected():
    offsets, pos = window()
    start, end = logits()
    start[0, pos[5]], start[0, pos[2]] = 10.0, 1.0
    end[0, pos[3]], end[0, pos[6]] = 10.0, 2.0
    # (5,3) would score 20 but ends before it starts; (5,6)=12 beats (2,3)=11
    d = decode_squad(SquadWindows(["q"], offsets[None], {"q": CONTEXT}), start, end)
    assert d.predictions["q"] == "in Paris"
    assert d.null_odds["q"] == -12.0


def test_too_long_span_rejected_and_limit_is_inclusive():
    offsets, pos = window()
    start, end = logits()
    start[0, pos[0]] = 10.0
    end[0, pos[5]] = 10.0  # 6 tokens: "The Eiffel Tower is in"
    end[0, pos[2]] = 1.0  # 3 tokens: "The Eiffel"
    w = SquadWindows(["q"], offsets[None], {"q": CONTEXT})
    assert decode_squad(w, start, end, max_answer_len=3).predictions["q"] == "The Eiffel"
    assert decode_squad(w, start, end, max_answer_len=5).predictions["q"] == "The Eiffel"
    assert decode_squad(w, start, end, max_answer_len=6).predictions["q"] == "The Eiffel Tower is in"


def test_spans_on_question_special_and_padding_tokens_rejected():
    offsets, pos = window()
    start, end = logits()
    start[0, 2], end[0, 3] = 50.0, 50.0  # question tokens
    start[0, L - 1], end[0, L - 1] = 40.0, 40.0  # padding
    start[0, pos[-1] + 1], end[0, pos[-1] + 1] = 30.0, 30.0  # final [SEP]
    start[0, pos[8]], end[0, pos[8]] = 1.0, 1.0  # "France"
    d = decode_squad(SquadWindows(["q"], offsets[None], {"q": CONTEXT}), start, end)
    assert d.predictions["q"] == "France"


def test_no_valid_span_within_n_best_predicts_empty():
    offsets, pos = window()
    start, end = logits()
    start[0, 2], end[0, 2] = 9.0, 9.0  # top-1 start and end are question tokens
    start[0, pos[6]], end[0, pos[6]] = 1.0, 1.0
    w = SquadWindows(["q"], offsets[None], {"q": CONTEXT})
    d = decode_squad(w, start, end, n_best=1)
    assert d.predictions == {"q": ""} and d.best_text == {"q": ""}
    assert d.null_odds["q"] == math.inf and d.na_probs["q"] == 1.0
    assert decode_squad(w, start, end, n_best=2).predictions["q"] == "Paris"


def test_threshold_changes_the_decision_and_apply_threshold_matches():
    offsets, pos = window()
    start, end = logits()
    start[0, 0], end[0, 0] = 2.5, 2.0  # null 4.5
    start[0, pos[6]], end[0, pos[6]] = 1.5, 1.5  # span 3 -> diff 1.5
    w = SquadWindows(["q"], offsets[None], {"q": CONTEXT})
    assert decode_squad(w, start, end).predictions["q"] == ""
    at2 = decode_squad(w, start, end, threshold=2.0)
    assert at2.predictions["q"] == "Paris" and at2.threshold == 2.0
    assert decode_squad(w, start, end, threshold=1.5).predictions["q"] == "Paris"  # "diff > t"
    assert apply_threshold(decode_squad(w, start, end), 2.0) == at2
    with pytest.raises(ValueError, match="NaN"):
        apply_threshold(at2, float("nan"))


def test_several_questions_keep_first_appearance_order():
    off_a, pos_a = window()
    off_b, pos_b = window(PIECES[:4])
    offsets = np.stack([off_b, off_a, off_b])
    start, end = logits(3)
    start[1, pos_a[8]], end[1, pos_a[8]] = 2.0, 2.0
    start[0, pos_b[3]], end[0, pos_b[3]] = 2.0, 2.0
    ctx = {"a": CONTEXT, "b": CONTEXT}
    d = decode_squad(SquadWindows(["b", "a", "b"], offsets, ctx), start, end)
    assert list(d.predictions) == ["b", "a"]
    assert d.predictions == {"b": "Tower", "a": "France"}


def test_input_validation():
    offsets, _ = window()
    start, end = logits()
    w = SquadWindows(["q"], offsets[None], {"q": CONTEXT})
    with pytest.raises(ValueError, match="start_logits must have shape"):
        decode_squad(w, start[:, :5], end)
    bad = end.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="end_logits contain NaN"):
        decode_squad(w, start, bad)
    with pytest.raises(ValueError, match="n_best"):
        decode_squad(w, start, end, n_best=0)
    with pytest.raises(ValueError, match="one uid per window"):
        SquadWindows(["q", "r"], offsets[None], {"q": CONTEXT})
    with pytest.raises(ValueError, match="no context"):
        SquadWindows(["q"], offsets[None], {"other": CONTEXT})
    with pytest.raises(ValueError, match="past its context"):
        SquadWindows(["q"], offsets[None], {"q": CONTEXT[:10]})
    with pytest.raises(ValueError, match=r"\[N, L, 2\]"):
        SquadWindows(["q"], offsets, {"q": CONTEXT})


@dataclass
class _Features:
    example_index: np.ndarray
    offsets: np.ndarray


@dataclass
class _Answer:
    text: str
    start: int


@dataclass
class _Example:
    uid: str
    texts: tuple
    answers: tuple
    is_impossible: bool


def test_from_features_and_score_with_official_metric():
    examples = [
        _Example("q1", ("Where?", CONTEXT), (_Answer("Paris", 23),), False),
        _Example("q2", ("What colour?", CONTEXT), (), True),
    ]
    off, pos = window()
    feats = _Features(np.array([0, 1], dtype=np.int32), np.stack([off, off]))
    start, end = logits(2)
    start[0, pos[6]], end[0, pos[6]] = 3.0, 3.0  # q1: "Paris" wins (diff -6)
    start[1, pos[0]], end[1, pos[1]] = 1.0, 1.0  # q2: span 2, null 5 -> diff 3
    start[1, 0], end[1, 0] = 2.5, 2.5
    d = decode_squad(SquadWindows.from_features(feats, examples), start, end)
    assert d.predictions == {"q1": "Paris", "q2": ""}
    out = squad_evaluate_examples(examples, d.predictions, d.na_probs)
    assert out["exact"] == 100.0 and out["best_exact"] == 100.0


def test_random_windows_are_fast_and_substrings():
    rng = np.random.default_rng(0)
    n, length = 1000, 384
    words = ["w%d" % i for i in range(300)]
    contexts, offsets, uids = {}, np.full((n, length, 2), -1, dtype=np.int32), []
    for i in range(n):
        uid = f"q{i // 2}"  # two windows per question
        if uid not in contexts:
            contexts[uid] = " ".join(rng.choice(words, size=350))
        spans = [m.span() for m in re.finditer(r"\S+", contexts[uid])]
        lo = 0 if i % 2 == 0 else 20
        for t, (a, b) in enumerate(spans[lo : lo + length - 30]):
            offsets[i, 30 + t] = (a, b)
        uids.append(uid)
    start = rng.normal(size=(n, length)).astype(np.float32)
    end = rng.normal(size=(n, length)).astype(np.float32)
    w = SquadWindows(uids, offsets, contexts)
    t0 = time.perf_counter()
    d = decode_squad(w, start, end)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"decoding took {elapsed:.2f}s"
    assert len(d.predictions) == n // 2
    assert all(t in contexts[q] and t for q, t in d.best_text.items())
    assert isinstance(d, SquadDecoded)
    # brute force check of the best span score for a few windows
    for i in range(0, 10):
        inside = offsets[i, :, 0] >= 0
        k_s = np.argsort(-start[i], kind="stable")[:20]
        k_e = np.argsort(-end[i], kind="stable")[:20]
        best = max(
            float(start[i, s]) + float(end[i, e])
            for s in k_s
            for e in k_e
            if inside[s] and inside[e] and s <= e and e - s + 1 <= 30
        )
        q = uids[i]
        other = i + 1 if i % 2 == 0 else i - 1
        best_other = max(
            float(start[other, s]) + float(end[other, e])
            for s in np.argsort(-start[other], kind="stable")[:20]
            for e in np.argsort(-end[other], kind="stable")[:20]
            if offsets[other, s, 0] >= 0 and offsets[other, e, 0] >= 0 and s <= e and e - s + 1 <= 30
        )
        null = min(float(start[i, 0]) + float(end[i, 0]), float(start[other, 0]) + float(end[other, 0]))
        assert d.null_odds[q] == pytest.approx(null - max(best, best_other), abs=1e-5)
