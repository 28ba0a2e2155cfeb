"""python -m pipelines.predict: predict a store split with a trained adapter run.

Examples::

    python -m pipelines.predict --run runs/sst2-pooler --store tfrecords/sst2 --split test --out SST-2.tsv
    python -m pipelines.predict --run runs/squad-cnn --store tfrecords/squad --split dev --out preds.json

GLUE tasks: ``FILE`` in GLUE's submission format (``index<TAB>prediction``,
label names, scores for STS-B), in store order. SQuAD: ``FILE`` is the
official prediction JSON (``{qid: text}``, "" for no answer) and
``FILE.na_prob.json`` (``preds.json`` -> ``preds.na_prob.json``) the
no-answer probabilities. Either way the raw outputs (probabilities / scores /
per-window logits, the ensemble ``.npz`` format) go to ``--npz`` (default:
``FILE`` with ``.npz`` in place of its suffix). With labels, the official
metrics are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.errors import ConfigError  # noqa: E402  (after setup_env)
from bertvision.predict import (load_adapter_run, odds_threshold, predict_run, write_glue_submission,  # noqa: E402
                                write_squad_predictions)
from bertvision.tasks import get_task  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by pipelines.fit")
    p.add_argument("--store", help="store to predict (default: the one the run was trained on)")
    p.add_argument("--split", required=True, help="split of the store, e.g. dev or test")
    p.add_argument("--out", required=True, help="submission / prediction file to write")
    p.add_argument("--npz", help="raw outputs file (default: --out with suffix .npz); 'none' to skip")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threshold", default="best",
                   help="SQuAD no-answer rule: 'best' (the run's dev best_f1_thresh, the default), "
                        "a float threshold on null_score - best_span_score (0 = BERT's rule; 'inf' = always answer)")
    return p


def squad_threshold(text: str, results) -> float:
    """The null-odds threshold ``--threshold`` asks for."""
    if text == "best":
        thresh = results.dev_metrics.get("best_f1_thresh")
        return 0.0 if thresh is None else odds_threshold(thresh)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--threshold must be 'best' or a number, got {text!r}") from None
    if math.isnan(value):
        raise ConfigError("--threshold is NaN")
    return value


def default_npz(out: str) -> str:
    root, ext = os.path.splitext(out)
    return (root if ext else out) + ".npz"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with die.on_errors():
        results, _ = load_adapter_run(args.run)
        store = args.store or results.store
        if not store:
            raise ConfigError(f"{args.run}/results.json names no store; give --store")
        preds = predict_run(args.run, store, args.split, batch_size=args.batch_size)
        task = get_task(preds.task)
        if task.kind == "span":
            threshold = squad_threshold(args.threshold, results)
            path, na_path = write_squad_predictions(preds, args.out, threshold=threshold)
            written = f"{len(preds.uids)} questions -> {path}, {na_path}"
        else:
            count = write_glue_submission(preds, args.out)
            written = f"{count} predictions -> {args.out}"
        npz = args.npz or default_npz(args.out)
        if npz.lower() != "none":
            preds.save(npz)
            written += f" (raw outputs: {npz})"
        metrics = None
        if preds.has_labels:  # not for an unlabelled split (GLUE test)
            metrics = preds.evaluate(threshold) if task.kind == "span" else preds.evaluate()
    print(written)
    if metrics is not None:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
