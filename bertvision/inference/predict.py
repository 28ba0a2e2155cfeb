"""Running a trained adapter over a store split, and writing submission files.

- `predict_store(model, store, split)`: run a Keras adapter over a split in
  store order, returning `Predictions` (`bertvision.runs`).
- `load_adapter_run(run_dir)`: a finished adapter (fit) run: its results and
  its model; `check_store_matches` refuses a store whose activations the
  adapter was not trained on.
- `predict_run(run_dir, store, split)`: the two together.
- `write_glue_submission`, `write_squad_predictions`: GLUE's
  ``index<TAB>prediction`` file; SQuAD's ``{qid: text}`` JSON plus the
  ``{qid: no-answer probability}`` file.

Example:
    >>> preds = predict_run(RUN, STORE, "dev")   # a run folder, a store (32 SST-2 dev examples)
    >>> sorted(preds.evaluate()), preds.probabilities.shape
    (['accuracy'], (32, 2))
    >>> write_prediction_file(preds, "dev.jsonl")
    32
"""

from __future__ import annotations

import json
import os
import sys
import zipfile

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import bertvision.models.layers  # noqa: F401  (registers the adapters' layers for loading model.keras)
from bertvision import io
from bertvision.errors import RunError
from bertvision.runs import Predictions, RunFolder, RunResults
from bertvision.store.format import SIGNATURE_KEYS, Store, open_store
from bertvision.data.tasks import TASKS, get_task

__all__ = ["check_store_matches", "glue_submission_files", "load_adapter_run", "make_infer_fn", "na_prob_path",
           "pad_to_for", "predict_run", "predict_store", "write_glue_submission",
           "warn_if_store_replaced", "write_glue_submission_folder", "write_prediction_file",
           "write_squad_predictions"]


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
    names = model_input_names(model)

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(inputs):
        return model(inputs, training=False)

    def infer(features):  # meta (uids, offsets) stays outside the compiled step
        return step({k: features[k] for k in names})

    return infer


def predict_store(model, store: Store, split: str, batch_size: int = 256, infer=None,
                  examples: list[dict] | None = None, thresholds=None) -> Predictions:
    """Run `model` over `split` of `store` (an opened `Store`) in store order.

    `infer` is an optional step from `make_infer_fn` (reused across epochs);
    `examples` the split's examples file rows (span stores; read if None);
    `thresholds` a multi-label run's (one per label, chosen on dev; None:
    0.5 each).

    >>> results, model = load_adapter_run(RUN)
    >>> preds = predict_store(model, open_store(STORE), "dev")
    >>> preds.probabilities.shape
    (32, 2)
    """
    infer = infer or make_infer_fn(model)
    span = store.task_kind == "span"
    tagged = store.task_kind == "token_classification"
    ds = store.dataset(split, batch_size, with_meta=True, pad_to=pad_to_for(model))
    uids, outputs, labels, offsets, windows = [], [], [], [], []
    for features, batch_labels in ds:
        out = infer(features)
        uids.append(features["uid"].numpy())
        if tagged:
            outputs.append(np.asarray(out))
            offsets.append(features["word_ids"].numpy())
        elif span:
            outputs.append({k: out[k].numpy() for k in ("start_logits", "end_logits")})
            offsets.append(features["offsets"].numpy())
            windows.append(features["window_index"].numpy())
        else:
            outputs.append(np.asarray(out))
            labels.append(batch_labels.numpy())
    if not uids:
        raise RunError(f"{store.path}: split {split!r} has no records")
    record_uids = [u.decode() for u in np.concatenate(uids)]
    if not (span or tagged):
        return Predictions.from_outputs(store.task_spec, split, record_uids, outputs, labels=np.concatenate(labels),
                                        thresholds=thresholds)
    rows = examples if examples is not None else store.examples(split)
    if tagged:
        gold = {str(r["uid"]): (r["words"], r.get("tags") or []) for r in rows}
        try:
            return Predictions.from_outputs(store.task_spec, split, record_uids, outputs, offsets=offsets, gold=gold)
        except RunError as err:
            raise RunError(f"{store.path}: {err}") from err
    gold = {str(r["uid"]): (r["context"], [] if r.get("is_impossible") else list(r.get("answers") or []))
            for r in rows}
    try:
        return Predictions.from_outputs(store.task_spec, split, record_uids, outputs, window_index=windows,
                                        offsets=offsets, gold=gold)
    except RunError as err:
        raise RunError(f"{store.path}: {err} (not in its examples file)") from err


# ------------------------------------------------------------------- run folders


def warn_if_store_replaced(results: RunResults, store: Store, where: str) -> bool:
    """Warn on stderr when `store` is at the path `results` trained on but is
    another extraction than the one it trained on (another manifest sha256).
    The run stays valid (its signature was checked): predictions are of the
    store there now. Returns whether it warned."""
    old, new = results.store_manifest_sha256, store.manifest_sha256
    if not (old and new and old != new and results.store):
        return False
    if os.path.abspath(str(store.path)) != os.path.abspath(str(results.store)):
        return False
    print(f"warning: {where}: its store {results.store} was replaced since it trained (manifest sha256 "
          f"{old[:12]} then, {new[:12]} now); the run is still valid, but its dev metrics are of the old store",
          file=sys.stderr)
    return True


def check_store_matches(signature: dict, store: Store, run_dir: str = "the run", model=None) -> None:
    """Refuse a store whose activations the run's adapter was not trained on.

    Compares task, task kind, stored layers, token mode, hidden size, example
    shape and the backbone (config and weights sha256). A sequence model whose
    token axis is free accepts any ``max_seq_len``.
    """
    have = store.signature()
    free_tokens = (model is not None and have["token_mode"] == "sequence" == signature.get("token_mode")
                   and model_token_dim(model) is None)
    problems = []
    for key in SIGNATURE_KEYS + ("pair_mode", "backbone", "windows"):  # pair_mode: absent = cross; windows: none
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
                       + ". Predict from a store extracted with the same task, backbone, --layers, --token-mode "
                         "and --max-seq-len")


def load_adapter_run(run_dir: str | os.PathLike) -> tuple[RunResults, keras.Model]:
    """``(results, model)`` of a finished adapter (fit) run."""
    run = RunFolder(run_dir)
    results = run.results()
    if results.run_type != "fit":
        raise RunError(f"{run_dir}: run_type {results.run_type!r}, not an adapter fit run")
    if not run.model_file.is_file():
        raise RunError(f"{run_dir}: no {run.model_file.name}; not a finished fit run")
    try:  # Keras says "File not found" of a file that is there but damaged: check the zip first
        with zipfile.ZipFile(run.model_file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise RunError(f"{run.model_file}: damaged or truncated, not a readable .keras file ({err}); fit the run "
                       "again") from None
    if bad is not None:
        raise RunError(f"{run.model_file}: damaged (its member {bad} fails its CRC check); fit the run again")
    try:
        model = keras.saving.load_model(str(run.model_file), compile=False)
    except Exception as err:  # Keras raises many types for a damaged file
        raise RunError(f"{run.model_file}: cannot load the model ({err})") from err
    if not results.store_signature:
        raise RunError(f"{run.results_file} has no store_signature; cannot check the store")
    return results, model


def predict_run(run_dir: str | os.PathLike, store: str | Store, split: str, batch_size: int = 256,
                verify: bool = True) -> Predictions:
    """Predict `split` of `store` (a path or an opened `Store`) with the
    adapter in `run_dir`, after checking the store matches the run
    (multi-label: at the run's thresholds, chosen on dev).

    >>> preds = predict_run("runs/squad-cnn", "tfrecords/squad", "dev")  # doctest: +SKIP
    >>> preds.decode().predictions["56ddde6b9a695914005b9628"]  # doctest: +SKIP
    'France'
    """
    results, model = load_adapter_run(run_dir)
    store = open_store(store, verify=verify) if isinstance(store, (str, os.PathLike)) else store
    store = store.head(results.spec.label_column)  # the label column the run's head was trained on
    check_store_matches(results.store_signature, store, str(run_dir), model)
    warn_if_store_replaced(results, store, str(run_dir))
    preds = predict_store(model, store, split, batch_size=batch_size, thresholds=results.thresholds)
    preds.source = str(run_dir)
    return preds


# ------------------------------------------------------------------ submissions


def write_glue_submission(preds: Predictions, path: str | os.PathLike) -> int:
    """One task's file in GLUE's submission format: ``index<TAB>prediction``
    with a header line, one line per example in store order (``index`` =
    the example's uid, GLUE's test index). Classes as GLUE's server wants
    them: ``0``/``1`` for CoLA, SST-2, MRPC, QQP and WNLI, label strings for
    MNLI (and AX), QNLI and RTE; STS-B scores. Returns the count.

    >>> write_glue_submission(predict_run(run, store, "test"), "SST-2.tsv")  # doctest: +SKIP
    1821
    """
    task = get_task(preds.task)
    if task.kind == "span":
        raise RunError(f"{task.name} is a span task: write_squad_predictions writes its predictions")
    if task.kind == "classification":
        points = preds.point_predictions()
        values = [task.label_names[int(i)] for i in points] if task.submission_labels == "name" \
            else [str(int(i)) for i in points]
    else:
        values = [f"{float(s):.3f}" for s in preds.point_predictions()]
    lines = ["index\tprediction"] + [f"{u}\t{v}" for u, v in zip(preds.uids.tolist(), values)]
    io.atomic_write_text(path, "\n".join(lines) + "\n")
    return len(values)


def write_prediction_file(preds: Predictions, path: str | os.PathLike) -> int:
    """Predictions with label names (`Predictions.records`): one JSON object
    a line for a ``.jsonl`` path; for ``.csv``/``.tsv`` a table of ``id``,
    the prediction (``label``; multi-label ``labels`` joined by ``,``;
    ``score``), its ``probability`` and ``gold`` where known. Returns the
    count.

    >>> write_prediction_file(predict_run("runs/banking77", "tfrecords/banking77", "test"), "test.jsonl")  # doctest: +SKIP
    3080
    >>> write_prediction_file(predict_run(RUN, STORE, "dev"), "dev.csv")
    32
    >>> open("dev.csv").readline().rstrip().split(",")
    ['id', 'label', 'probability', 'gold']
    """
    records = preds.records()
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix == ".jsonl":
        io.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return len(records)
    if suffix not in (".csv", ".tsv"):
        raise RunError(f"--out {path}: write your own task's predictions as .jsonl, .csv or .tsv")
    rows = []
    for r in records:
        if "score" in r:
            row = {"id": r["id"], "score": r["score"]}
        elif "labels" in r:
            row = {"id": r["id"], "labels": ",".join(r["labels"]),
                   "probabilities": json.dumps(r["probabilities"], ensure_ascii=False)}
        else:
            row = {"id": r["id"], "label": r["label"], "probability": r["probabilities"][r["label"]]}
        if "gold" in r:
            row["gold"] = ",".join(r["gold"]) if isinstance(r["gold"], list) else r["gold"]
        rows.append(row)
    table = pd.DataFrame(rows)
    io.atomic_write_text(path, table.to_csv(index=False, sep="\t" if suffix == ".tsv" else ","))
    return len(records)


def glue_submission_files() -> list[str]:
    """Every file a complete GLUE submission holds (``CoLA.tsv`` ... ``AX.tsv``)."""
    return sorted(f for task in TASKS.values() for f in task.submission_files.values())


def write_glue_submission_folder(runs: list[str], stores: list[str | None], out: str | os.PathLike,
                                 partial: bool = False) -> dict[str, int]:
    """A GLUE submission folder from adapter runs: every unlabelled split
    GLUE scores (`TaskSpec.submission_files`) that a run's store holds is
    predicted and written under GLUE's file name. Everything is checked
    first (runs, stores, no file given twice, completeness unless
    `partial`), then the folder is written atomically. Returns ``{file:
    predictions}``.

    >>> write_glue_submission_folder(["runs/sst2", "runs/mrpc"], [None, None], "glue-submission", partial=True)  # doctest: +SKIP
    {'MRPC.tsv': 1725, 'SST-2.tsv': 1821}
    """
    planned: dict[str, tuple] = {}
    for run_dir, store_path in zip(runs, stores):
        results, _ = load_adapter_run(run_dir)
        task = get_task(results.task)
        if not task.submission_files:
            raise RunError(f"{run_dir}: {task.name} is not a GLUE task")
        store = open_store(store_path or results.store, verify=True)
        check_store_matches(results.store_signature, store, str(run_dir))
        splits = [s for s in task.submission_files if s in store.splits]
        if not splits:
            raise RunError(f"{store.path} holds none of {task.name}'s unlabelled splits "
                           f"{list(task.submission_files)}; extract them (e.g. --split test)")
        for split in splits:
            name = task.submission_files[split]
            if name in planned:
                raise RunError(f"{name} would come from both {planned[name][0]} and {run_dir}; give one run per task")
            planned[name] = (run_dir, store, split)
    missing = [f for f in glue_submission_files() if f not in planned]
    if missing and not partial:
        raise RunError(f"an incomplete GLUE submission: nothing gives {', '.join(missing)}; add their runs and "
                       "stores, or pass --partial")
    written = {}
    with io.atomic_folder(out) as tmp:
        for name, (run_dir, store, split) in sorted(planned.items()):
            written[name] = write_glue_submission(predict_run(run_dir, store, split), tmp / name)
    return written


def na_prob_path(path: str | os.PathLike) -> str:
    """``preds.json`` -> ``preds.na_prob.json`` (beside the predictions file)."""
    text = str(path)
    return (text[:-5] if text.endswith(".json") else text) + ".na_prob.json"


def write_squad_predictions(preds: Predictions, path: str | os.PathLike,
                            threshold: float = 0.0) -> tuple[str, str]:
    """The official SQuAD 2.0 prediction JSON ``{qid: text}`` ("" = no answer)
    at null-odds `threshold`, and ``{qid: no-answer probability}`` beside it
    (`na_prob_path`). Returns both paths.

    >>> write_squad_predictions(preds, "predictions.json")  # doctest: +SKIP
    ('predictions.json', 'predictions.na_prob.json')
    """
    decoded = preds.decode(threshold=threshold)
    na_path = na_prob_path(path)
    io.atomic_write_text(path, json.dumps(decoded.predictions, ensure_ascii=False, indent=1) + "\n")
    io.atomic_write_text(na_path, json.dumps(decoded.na_probs, indent=1) + "\n")
    return str(path), na_path
