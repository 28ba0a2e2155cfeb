"""Predicting a store split with an adapter, scoring it, and writing submissions.

The pieces `bertvision.training` (per-epoch dev evaluation), ``python -m
pipelines.predict`` and the ensemble command share:

- `predict_arrays(model, store, split)`: run a Keras adapter over a split in
  store order, returning `RunPredictions` (= `bertvision.ensemble.Predictions`,
  one class for every run kind: probabilities / scores / per-window span logits).
- `RunPredictions.evaluate()`: the task's official metrics
  (`bertvision.metrics`; SQuAD: n-best decoding + the official 2.0 script).
- `predict_run(run_dir, store, split)`: load ``RUN_DIR/model.keras``, refuse a
  store the run was not trained for, predict.
- `write_glue_submission`, `write_squad_predictions`: GLUE's
  ``index<TAB>prediction`` file; SQuAD's ``{qid: text}`` JSON plus the
  ``{qid: no-answer probability}`` file.

Example:
    >>> preds = predict_run("runs/sst2-adapter", "tfrecords/sst2", "dev")
    >>> preds.evaluate()
    {'accuracy': 0.84}
    >>> write_glue_submission(preds, "SST-2.tsv")
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from bertvision.ensemble import Predictions
from bertvision.store import atomic_write_text

__all__ = ["PAD_LOGIT", "RunError", "RunPredictions", "check_store_matches", "load_run", "predict_arrays",
           "predict_run", "store_signature", "write_glue_submission", "write_squad_predictions"]

# logit written where a window is shorter than the longest one (as bertvision.ensemble)
PAD_LOGIT = -1e4
# store manifest fields an adapter depends on; a store to predict must agree on all of them
SIGNATURE_KEYS = ("task", "task_kind", "layers", "tokens", "hidden", "max_seq_len", "example_shape")


class RunError(ValueError):
    """A run folder that is missing, unfinished, or does not fit the store given."""


# ----------------------------------------------------------------- predictions


# what a run predicted for a split: one class for fit, finetune and ensemble runs
RunPredictions = Predictions


def model_input_names(model) -> list[str]:
    """Names of a functional model's inputs (``activations``, ``padding_mask``)."""
    struct = model.input
    if isinstance(struct, dict):
        return list(struct)
    struct = struct if isinstance(struct, (list, tuple)) else [struct]
    return [t.name.split(":")[0] for t in struct]


def model_token_dim(model) -> int | None:
    """The fixed token length a sequence model was built for (``None``: any)."""
    struct = model.input
    acts = struct["activations"] if isinstance(struct, dict) else (
        struct[0] if isinstance(struct, (list, tuple)) else struct)
    shape = tuple(acts.shape)
    return shape[2] if len(shape) == 4 else None


def pad_to_for(model) -> str:
    """How a store should pad sequence batches for `model`: ``"bucket"``
    (power-of-two token buckets) when its token axis is free, else ``"max"``."""
    return "max" if model_token_dim(model) is not None else "bucket"


def make_infer_fn(model, jit_compile: bool = False):
    """A compiled inference step ``features -> outputs`` (training=False)."""
    import tensorflow as tf

    names = model_input_names(model)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(inputs):
        return model(inputs, training=False)

    def infer(features):  # meta (uids, offsets) stays outside the compiled step
        return step({k: features[k] for k in names})

    return infer


def _pad_rows(blocks: list[np.ndarray], width: int, value) -> np.ndarray:
    out = []
    for b in blocks:
        pad = [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2)
        out.append(np.pad(b, pad, constant_values=value) if b.shape[1] < width else b)
    return np.concatenate(out, axis=0)


def predict_arrays(model, store, split: str, batch_size: int = 256, infer=None,
                   examples: list[dict] | None = None) -> RunPredictions:
    """Run `model` over `split` of `store` (an opened `Store`) in store order.

    `infer` is an optional step from `make_infer_fn` (reused across epochs);
    `examples` the split's examples file rows (span stores; read if None).

    >>> preds = predict_arrays(model, open_store("tfrecords/sst2"), "dev")
    >>> preds.probabilities.shape  # (872, 2)
    """
    import tensorflow as tf

    infer = infer or make_infer_fn(model)
    kind = store.task_kind
    ds = store.dataset(split, batch_size, with_meta=True, pad_to=pad_to_for(model))
    uids, outs, labels, offsets, wuids, windex = [], [], [], [], [], []
    for features, batch_labels in ds:
        out = infer(features)
        uids.append(features["uid"].numpy())
        if kind == "span":
            outs.append((out["start_logits"].numpy(), out["end_logits"].numpy()))
            offsets.append(features["offsets"].numpy())
            windex.append(features["window_index"].numpy())
        else:
            outs.append(out.numpy() if isinstance(out, tf.Tensor) else np.asarray(out))
            labels.append(batch_labels.numpy())
    if not uids:
        raise ValueError(f"{store.path}: split {split!r} has no records")
    record_uids = np.asarray([u.decode() for u in np.concatenate(uids)], dtype=str)
    if kind == "classification":
        logits = np.concatenate(outs).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return RunPredictions(store.task, split, record_uids, probabilities=probs.astype(np.float32),
                              labels=np.concatenate(labels).astype(np.int64))
    if kind == "regression":
        scores = np.concatenate([o.reshape(len(o), -1)[:, 0] for o in outs]).astype(np.float32)
        return RunPredictions(store.task, split, record_uids, scores=scores,
                              labels=np.concatenate(labels).astype(np.float32))
    width = max(o[0].shape[1] for o in outs)
    start = _pad_rows([o[0] for o in outs], width, PAD_LOGIT).astype(np.float32)
    end = _pad_rows([o[1] for o in outs], width, PAD_LOGIT).astype(np.float32)
    offs = _pad_rows(offsets, width, -1).astype(np.int32)
    rows = examples if examples is not None else store.examples(split)
    by_uid = {str(r["uid"]): r for r in rows}
    question_uids = list(dict.fromkeys(record_uids.tolist()))  # in order of first window
    missing = [u for u in question_uids if u not in by_uid]
    if missing:
        raise ValueError(f"{store.path}: {len(missing)} question(s) of {split!r} are not in its examples file, "
                         f"e.g. {missing[:3]}")
    contexts = [by_uid[u]["context"] for u in question_uids]
    answers = [json.dumps([] if by_uid[u].get("is_impossible") else list(by_uid[u].get("answers") or []))
               for u in question_uids]
    return RunPredictions(store.task, split, np.asarray(question_uids, dtype=str),
                          window_uids=record_uids, window_index=np.concatenate(windex).astype(np.int32),
                          start_logits=start, end_logits=end, offsets=offs,
                          contexts=np.asarray(contexts, dtype=str), answers=np.asarray(answers, dtype=str))


def evaluate_splits(per_split: dict[str, dict[str, float]], task) -> dict[str, float]:
    """One dev-metrics dict from several eval splits: the first split's metrics
    under their own names (the one a model is selected on), and every split's
    under ``<label>_<metric>`` (MNLI: ``matched_accuracy``, ``mismatched_accuracy``)."""
    splits = list(per_split)
    if len(splits) == 1:
        return dict(per_split[splits[0]])
    out = dict(per_split[splits[0]])
    for split in splits:
        label = task.eval_split_labels.get(split, split)
        for name, value in per_split[split].items():
            out[f"{label}_{name}"] = value
    return out


# ------------------------------------------------------------------- run folders


def store_signature(store) -> dict:
    """What an adapter trained on `store` depends on (saved in results.json)."""
    sig = {k: store.manifest[k] for k in SIGNATURE_KEYS}
    model = store.manifest.get("model") or {}
    sig["backbone"] = {k: model.get(k) for k in ("name", "config_sha256", "weights_sha256")}
    return sig


def check_store_matches(signature: dict, store, run_dir: str = "the run", model=None) -> None:
    """Refuse a store whose activations the run's adapter was not trained on.

    Compares task, task kind, stored layers, token mode, hidden size, example
    shape and the backbone (config and weights sha256). A sequence model whose
    token axis is free accepts any ``max_seq_len``.
    """
    have = store_signature(store)
    free_tokens = (model is not None and have["tokens"] == "sequence" == signature.get("tokens")
                   and model_token_dim(model) is None)
    problems = []
    for key in SIGNATURE_KEYS + ("backbone",):
        a, b = signature.get(key), have.get(key)
        if free_tokens and key in ("max_seq_len", "example_shape"):
            if key == "example_shape" and a and b and [a[0], a[-1]] != [b[0], b[-1]]:
                problems.append(f"example_shape: run {a}, store {b}")
            continue
        if key == "backbone" and isinstance(a, dict) and isinstance(b, dict):
            if a.get("config_sha256") != b.get("config_sha256") or a.get("weights_sha256") != b.get("weights_sha256"):
                problems.append(f"backbone: run {a.get('name')} ({str(a.get('weights_sha256'))[:12]}), "
                                f"store {b.get('name')} ({str(b.get('weights_sha256'))[:12]})")
            continue
        if a != b:
            problems.append(f"{key}: run {json.dumps(a)}, store {json.dumps(b)}")
    if problems:
        raise RunError(f"store {store.path} does not match what {run_dir} was trained on: " + "; ".join(problems)
                       + ". Predict from a store extracted with the same task, model, --layers, --tokens "
                         "and --max-seq-len")


def load_run(run_dir: str) -> tuple[dict, dict]:
    """``(config, results)`` of a finished fit run folder."""
    from bertvision.store import exists, join, read_json

    run_dir = str(run_dir)
    if not exists(run_dir):
        raise RunError(f"run folder {run_dir} does not exist")
    missing = [n for n in ("config.json", "results.json", "model.keras") if not exists(join(run_dir, n))]
    if missing:
        raise RunError(f"{run_dir}: no {', '.join(missing)}; not a finished fit run "
                       "(run `python -m pipelines.fit` again with the same --out to resume it)")
    config, results = read_json(join(run_dir, "config.json")), read_json(join(run_dir, "results.json"))
    if results.get("run_type") != "fit":
        raise RunError(f"{run_dir}: run_type {results.get('run_type')!r}, not an adapter fit run")
    return config, results


def load_run_model(run_dir: str):
    """The run's adapter (``model.keras``, custom layers from `bertvision.models`)."""
    import keras

    import bertvision.models  # noqa: F401  (registers the custom layers)
    from bertvision.store import join

    path = join(str(run_dir), "model.keras")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise RunError(f"{path}: cannot load the model ({err})") from err


def predict_run(run_dir: str, store, split: str, batch_size: int = 256) -> RunPredictions:
    """Predict `split` of `store` (a path or an opened `Store`) with the
    adapter in `run_dir`, after checking the store matches the run.

    >>> preds = predict_run("runs/squad-cnn", "tfrecords/squad", "dev")
    >>> preds.decode().predictions["56ddde6b9a695914005b9628"]
    'France'
    """
    from bertvision.store import open_store

    _, results = load_run(run_dir)
    store = open_store(store) if isinstance(store, (str, os.PathLike)) else store
    model = load_run_model(run_dir)
    signature = results.get("store_signature")
    if not signature:
        raise RunError(f"{run_dir}/results.json has no store_signature; cannot check the store")
    check_store_matches(signature, store, str(run_dir), model)
    return predict_arrays(model, store, split, batch_size=batch_size)


# ------------------------------------------------------------------ submissions


def write_glue_submission(preds: RunPredictions, path: str | os.PathLike) -> int:
    """GLUE's submission format: ``index<TAB>prediction`` with a header line,
    label names for classification, scores for regression, one line per
    example in store order (``index`` = the example uid). Returns the count.

    >>> write_glue_submission(predict_run(run, store, "test"), "SST-2.tsv")
    1821
    """
    from bertvision.tasks import get_task

    task = get_task(preds.task)
    if task.kind == "span":
        raise ValueError(f"{task.name} is a span task: write_squad_predictions writes its predictions")
    if task.kind == "classification":
        names = task.label_names
        values = [names[int(i)] for i in preds.point_predictions()]
    else:
        values = [f"{float(s):.6f}" for s in preds.point_predictions()]
    lines = ["index\tprediction"] + [f"{u}\t{v}" for u, v in zip(preds.uids.tolist(), values)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(values)


def na_prob_path(path: str | os.PathLike) -> str:
    """``preds.json`` -> ``preds.na_prob.json`` (beside the predictions file)."""
    text = str(path)
    return (text[:-5] if text.endswith(".json") else text) + ".na_prob.json"


def odds_threshold(na_prob_thresh: float) -> float:
    """A no-answer *probability* threshold (the SQuAD script's
    ``best_f1_thresh``) as a threshold on ``null_odds`` (its logit)."""
    p = float(na_prob_thresh)
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def write_squad_predictions(preds: RunPredictions, path: str | os.PathLike,
                            threshold: float = 0.0) -> tuple[str, str]:
    """The official SQuAD 2.0 prediction JSON ``{qid: text}`` ("" = no answer)
    at null-odds `threshold`, and ``{qid: no-answer probability}`` beside it
    (`na_prob_path`). Returns both paths.

    >>> write_squad_predictions(preds, "predictions.json")
    ('predictions.json', 'predictions.na_prob.json')
    """
    decoded = preds.decode(threshold=threshold)
    na_path = na_prob_path(path)
    atomic_write_text(path, json.dumps(decoded.predictions, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(na_path, json.dumps(decoded.na_probs, indent=1) + "\n")
    return str(path), na_path
