"""SQuAD 2.0 span decoding: per-window start/end logits -> answer text per question.

Follows the BERT reference ``run_squad.py`` (version 2 with null answers): in each
window take the ``n_best`` start and end tokens by logit, keep spans inside the
context with ``start <= end`` and at most ``max_answer_len`` tokens, score a span by
``start_logit + end_logit``; the null score is the CLS (position 0) score. Per
question the best span is the best over its windows, the null score the *minimum*
over its windows, and the question gets "" when ``null - best_span > threshold``.
Pure numpy, no TensorFlow; vectorised over windows.

Example:
    >>> import numpy as np
    >>> ctx = "Paris is in France"
    >>> offsets = np.array([[[-1, -1], [0, 5], [6, 8], [9, 11], [12, 18]]])
    >>> windows = SquadWindows(("q1",), offsets, {"q1": ctx})
    >>> start = np.array([[0.0, 5.0, 0.0, 0.0, 1.0]])
    >>> end = np.array([[0.0, 4.0, 0.0, 0.0, 1.0]])
    >>> decode_squad(windows, start, end).predictions
    {'q1': 'Paris'}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SquadDecoded", "SquadWindows", "apply_threshold", "decode_squad"]


@dataclass(frozen=True)
class SquadWindows:
    """What the decoder needs to know about each model input window.

    ``uids[i]``: question id of window ``i``; ``offsets [N, L, 2]``: character
    start/end of every token in its question's context, ``-1`` for tokens outside
    the context (question, special tokens, padding); ``contexts``: uid -> context.

    >>> w = SquadWindows(["q"], [[[-1, -1], [0, 2]]], {"q": "hi"})
    >>> w.offsets.shape
    (1, 2, 2)
    """

    uids: Sequence[str]
    offsets: np.ndarray
    contexts: Mapping[str, str]

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets)
        if offsets.ndim != 3 or offsets.shape[2] != 2:
            raise ValueError(f"offsets must have shape [N, L, 2]; got {offsets.shape}")
        if not np.issubdtype(offsets.dtype, np.integer):
            raise ValueError(f"offsets must be integers; got dtype {offsets.dtype}")
        uids = tuple(str(u) for u in self.uids)
        if len(uids) != offsets.shape[0]:
            raise ValueError(
                f"{len(uids)} uids for {offsets.shape[0]} windows; need one uid per window"
            )
        missing = sorted({u for u in uids if u not in self.contexts})
        if missing:
            raise ValueError(f"no context for {len(missing)} question(s), e.g. {missing[:3]}")
        ctx_len = np.array([len(self.contexts[u]) for u in uids], dtype=np.int64)
        too_far = offsets.max(axis=(1, 2), initial=-1) > ctx_len
        if np.any(too_far):
            w = int(np.flatnonzero(too_far)[0])
            raise ValueError(
                f"offsets of window {w} ({uids[w]!r}) go past its context "
                f"({len(self.contexts[uids[w]])} characters)"
            )
        object.__setattr__(self, "uids", uids)
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def from_features(cls, features: Any, examples: Sequence[Any]) -> "SquadWindows":
        """Build from ``Features`` (``example_index``, ``offsets``) and their examples
        (``uid``, ``texts == (question, context)``).
        """
        if getattr(features, "offsets", None) is None:
            raise ValueError("features have no offsets; they were not encoded for a span task")
        index = np.asarray(features.example_index)
        uids = [str(examples[int(i)].uid) for i in index]
        used = (examples[i] for i in set(index.tolist()))
        contexts = {str(ex.uid): ex.texts[1] for ex in used}
        return cls(uids, features.offsets, contexts)


@dataclass(frozen=True)
class SquadDecoded:
    """Decoding result per question id (in order of first window).

    ``predictions``: answer text ("" for no answer) at ``threshold``;
    ``null_odds``: ``null_score - best_span_score`` (``inf`` when no valid span);
    ``na_probs``: ``sigmoid(null_odds)``, for the official best-threshold search;
    ``best_text``: the best non-null answer, so :func:`apply_threshold` need not
    decode again; ``best_offsets``: its ``(start, end)`` character offsets in
    the context (``None`` when no valid span), ``context[start:end] == best_text``.
    """

    predictions: dict[str, str]
    null_odds: dict[str, float]
    na_probs: dict[str, float]
    best_text: dict[str, str]
    threshold: float = field(default=0.0)
    best_offsets: dict[str, tuple[int, int] | None] = field(default_factory=dict)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (``inf`` -> 1, ``-inf`` -> 0)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_logits(logits: Any, what: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{what} must have shape {list(shape)} (windows, tokens); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest logits per row, best first, ties by lower index."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def _best_span_per_window(
    start: np.ndarray, end: np.ndarray, in_context: np.ndarray, n_best: int, max_answer_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best valid span (start token, end token, score) of every window; -inf if none."""
    n, length = start.shape
    k = min(n_best, length)
    si = _top_k(start, k)  # [N, k]
    ei = _top_k(end, k)
    s_idx = si[:, :, None]
    e_idx = ei[:, None, :]
    valid = (
        np.take_along_axis(in_context, si, axis=1)[:, :, None]
        & np.take_along_axis(in_context, ei, axis=1)[:, None, :]
        & (e_idx >= s_idx)
        & (e_idx - s_idx + 1 <= max_answer_len)
    )
    scores = (
        np.take_along_axis(start, si, axis=1)[:, :, None]
        + np.take_along_axis(end, ei, axis=1)[:, None, :]
    )
    flat = np.where(valid, scores, -np.inf).reshape(n, k * k)
    best = np.argmax(flat, axis=1)  # first maximum: reference order (start rank, end rank)
    rows = np.arange(n)
    return si[rows, best // k], ei[rows, best % k], flat[rows, best]


def decode_squad(
    windows: SquadWindows,
    start_logits: Any,
    end_logits: Any,
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
    threshold: float = 0.0,
) -> SquadDecoded:
    """Decode per-window logits ``[N, L]`` into one answer per question.

    A question gets "" when ``null_score - best_span_score > threshold``, else the
    context text from the start character of the span's first token to the end
    character of its last token (an exact substring of the context).

    >>> import numpy as np
    >>> w = SquadWindows(["q"], [[[-1, -1], [0, 3], [4, 7]]], {"q": "big dog"})
    >>> d = decode_squad(w, [[9.0, 1.0, 0.0]], [[9.0, 0.0, 1.0]])
    >>> d.predictions, d.best_text, d.null_odds
    ({'q': ''}, {'q': 'big dog'}, {'q': 16.0})
    """
    if n_best < 1:
        raise ValueError(f"n_best must be >= 1; got {n_best}")
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len must be >= 1; got {max_answer_len}")
    offsets = windows.offsets
    shape = (offsets.shape[0], offsets.shape[1])
    start = _check_logits(start_logits, "start_logits", shape)
    end = _check_logits(end_logits, "end_logits", shape)
    if shape[0] == 0:
        raise ValueError("no windows to decode")

    in_context = (offsets[:, :, 0] >= 0) & (offsets[:, :, 1] >= 0)
    span_start, span_end, span_score = _best_span_per_window(
        start, end, in_context, n_best, max_answer_len
    )
    null_score = start[:, 0] + end[:, 0]

    order: dict[str, int] = {}
    group = np.array([order.setdefault(u, len(order)) for u in windows.uids], dtype=np.int64)
    n_q = len(order)
    q_null = np.full(n_q, np.inf)
    np.minimum.at(q_null, group, null_score)
    # Best window per question: highest span score, earliest window on ties.
    ranked = np.lexsort((-span_score, group))
    first = np.concatenate([[True], group[ranked][1:] != group[ranked][:-1]])
    best_window = ranked[first]  # one per question, in question order
    q_span = span_score[best_window]

    diff = q_null - q_span  # inf where no valid span exists in any window
    na = _sigmoid(diff)
    best_text: dict[str, str] = {}
    best_offsets: dict[str, tuple[int, int] | None] = {}
    null_odds: dict[str, float] = {}
    na_probs: dict[str, float] = {}
    for uid, q in order.items():
        w = int(best_window[q])
        if np.isfinite(q_span[q]):
            a = int(offsets[w, span_start[w], 0])
            b = int(offsets[w, span_end[w], 1])
            best_text[uid] = windows.contexts[uid][a:b]
            best_offsets[uid] = (a, b)
        else:
            best_text[uid] = ""
            best_offsets[uid] = None
        null_odds[uid] = float(diff[q])
        na_probs[uid] = float(na[q])
    decoded = SquadDecoded({}, null_odds, na_probs, best_text, threshold, best_offsets)
    return apply_threshold(decoded, threshold)


def apply_threshold(decoded: SquadDecoded, threshold: float) -> SquadDecoded:
    """Re-decide answer vs no answer at another ``threshold`` on ``null_odds``.

    >>> d = SquadDecoded({}, {"q": 1.5}, {"q": 0.82}, {"q": "dog"})
    >>> apply_threshold(d, 0.0).predictions, apply_threshold(d, 2.0).predictions
    ({'q': ''}, {'q': 'dog'})
    """
    threshold = float(threshold)
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    predictions = {
        uid: "" if odds > threshold else decoded.best_text[uid]
        for uid, odds in decoded.null_odds.items()
    }
    return replace(decoded, predictions=predictions, threshold=threshold)
