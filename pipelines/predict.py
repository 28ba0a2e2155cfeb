"""python -m pipelines.predict: predict with trained runs, from a store split or from raw text.

Examples::

    python -m pipelines.predict --run runs/sst2-pooler --store tfrecords/sst2 --split test --out SST-2.tsv
    python -m pipelines.predict --run runs/squad-cnn --store tfrecords/squad --split dev --out preds.json
    python -m pipelines.predict --run runs/sst2-pooler --text "a gorgeous, witty film"
    python -m pipelines.predict --run runs/mrpc-cnn --text "He left." --text-pair "He went away."
    python -m pipelines.predict --run runs/squad-cnn --question "Where?" --context "In Paris."
    python -m pipelines.predict --run runs/sst2-pooler --input ../shared/data/glue/SST-2/test.tsv --out SST-2.tsv
    python -m pipelines.predict --run runs/sst2-pooler --input reviews.jsonl --out reviews.predictions.jsonl
    python -m pipelines.predict --run runs/conll-pooler --input ../shared/data/conll2003/eng.testb --out preds.conll
    python -m pipelines.predict --run runs/conll-pooler --text "Ada Lovelace met Babbage in London."

From a store (``--store``/``--split``; the store defaults to the one the run
was trained on): your own task (``pipelines.extract --text-column ...``)
writes ``FILE`` as JSON lines (``.jsonl``: ``id``, ``label`` and every
label's probability, ``gold`` where known; multi-label: ``labels`` over their
thresholds) or a ``.csv``/``.tsv`` table. GLUE tasks write ``FILE`` in GLUE's submission format
(``index<TAB>prediction``: ``0``/``1`` for CoLA, SST-2, MRPC, QQP and WNLI,
label strings for MNLI, QNLI, RTE and AX, scores for STS-B), in store order
(``python -m pipelines.submit`` writes a whole submission folder).
SQuAD writes ``FILE`` as the official prediction JSON (``{qid: text}``, ""
for no answer) and ``FILE.na_prob.json`` (``preds.json`` ->
``preds.na_prob.json``) the no-answer probabilities. Either way the raw
outputs (probabilities / scores / per-window logits, the ensemble ``.npz``
format) go to ``--npz`` (default: ``FILE`` with ``.npz`` in place of its
suffix). With labels, the official metrics are printed. Token
classification writes ``FILE`` in the CoNLL format conlleval reads (``word
gold predicted`` a line, a blank line after each sentence; ``word
predicted`` without gold tags) and prints entity-level precision, recall and
F1 (overall and per type) and token accuracy.

From raw text (no store: the run's backbone runs here, tokenizing as its
store did; ``bertvision.inference.serving``): ``--text`` (and ``--text-pair``, or
``--question``/``--context`` for SQuAD; token classification: the entities
with type, text, character offsets and score, and each word's tag) prints one JSON result per task (give
``--run`` several times to ask several runs at once; adapters of one backbone
share its forward pass). ``--input FILE`` reads a file of the task's own
format (a GLUE TSV such as ``dev.tsv``/``test.tsv``, a SQuAD JSON; your own
task: a CSV/TSV/JSONL/Parquet file with its columns, ids kept; token
classification: a CoNLL column file or ``{"tokens", "tags"}`` JSONL, tagged or not), a
``.jsonl`` of inputs (strings, or objects with the task's fields and an
``id``) or a text file of one input per line (pair members tab-separated);
``--out`` then gets the submission/prediction file as above, or, for an
``--out`` ending in ``.jsonl``, one JSON result per line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision import io  # noqa: E402  (after setup_env)
from bertvision.config import check_fraction, check_positive_int  # noqa: E402
from bertvision.errors import ConfigError  # noqa: E402

RAW_FLAGS = ("text", "text_pair", "question", "context")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="[NAME=]RUN_DIR",
                   help="run folder (pipelines.fit; for raw text also pipelines.finetune); repeat for --text")
    p.add_argument("--store", help="store to predict (default: the one the run was trained on)")
    p.add_argument("--split", help="split of the store, e.g. dev or test")
    p.add_argument("--out", help="submission / prediction file to write (.jsonl: one JSON result per input)")
    raw = p.add_argument_group("raw text (no store)")
    raw.add_argument("--input", help="file of inputs: the task's GLUE TSV / SQuAD JSON, .jsonl, or one per line")
    raw.add_argument("--text", help="one text (first text of a pair)")
    raw.add_argument("--text-pair", help="the pair's second text (MRPC, QNLI, ...)")
    raw.add_argument("--question", help="SQuAD: the question")
    raw.add_argument("--context", help="SQuAD: the paragraph")
    raw.add_argument("--jit", action="store_true", help="XLA-compile the forward pass")
    p.add_argument("--npz", help="raw outputs file (default: --out with suffix .npz); 'none' to skip")
    p.add_argument("--batch-size", type=int, default=256,
                   help="records (store) or examples (raw text; long documents: also at most this many windows) "
                        "per batch")
    p.add_argument("--max-skipped", type=float, default=0.0, metavar="SHARE",
                   help="--input in the task's own format: stop when more than this share of its records cannot be "
                        "read (default 0: a submission file must hold every record; skipped records are reported "
                        "either way)")
    p.add_argument("--threshold", default="best",
                   help="SQuAD no-answer rule: 'best' (the run's dev best_f1_thresh, the default), "
                        "a float threshold on null_score - best_span_score (0 = BERT's rule; 'inf' = always answer)")
    return p


def squad_threshold(text: str, results) -> float:
    """The null-odds threshold ``--threshold`` asks for."""
    if text == "best":
        return results.best_null_odds
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


def write_outputs(preds, args, results) -> tuple[str, dict | None]:
    """Write the submission / prediction file and the raw outputs of
    `preds`; ``(what was written, official metrics or None)``."""
    from bertvision.data.conll import conll_text
    from bertvision.inference.predict import (write_glue_submission, write_prediction_file,  # heavy (TensorFlow):
                                              write_squad_predictions)  # after argparse: --help answers at once

    task = preds.spec
    threshold = 0.0
    if task.kind == "token_classification":  # the CoNLL output conlleval reads
        words, predicted, _ = preds.sentence_tags()
        gold = preds.gold_tags() if preds.has_labels else None
        io.atomic_write_text(args.out, conll_text(words, predicted, gold))
        written = (f"{len(words)} sentences -> {args.out} (CoNLL: word" + (" gold" if gold else "")
                   + " predicted, a blank line after each sentence)")
    elif not task.is_preset:  # your own task: predictions with label names, JSONL or CSV
        count = write_prediction_file(preds, args.out)
        written = f"{count} predictions -> {args.out}"
    elif task.kind == "span":
        threshold = squad_threshold(args.threshold, results)
        path, na_path = write_squad_predictions(preds, args.out, threshold=threshold)
        written = (f"{len(preds.uids)} questions -> {path}, {na_path} (no answer where null_score - best_span_score "
                   f"> {threshold:g}: --threshold {args.threshold}; the metrics below are this file's)")
    else:
        count = write_glue_submission(preds, args.out)
        written = f"{count} predictions -> {args.out}"
    npz = args.npz or default_npz(args.out)
    if npz.lower() != "none":
        preds.save(npz)
        written += f" (raw outputs: {npz})"
    metrics = None
    if preds.has_labels:  # not for an unlabelled split (GLUE test)
        # your own task's metrics are those of the file written (its "label" against its "gold")
        metrics = preds.evaluate(threshold) if task.kind == "span" else preds.evaluate()
    return written, metrics


def predict_store(args) -> tuple[str, dict | None]:
    from bertvision.inference.serving import predict_split  # heavy (TensorFlow): after argparse, so that --help answers at once
    from bertvision.runs import RunFolder

    if len(args.run) != 1:
        raise ConfigError("predicting a store takes one --run")
    if not args.split or not args.out:
        raise ConfigError("--split and --out are required with a store (or give --text / --input for raw text)")
    run = args.run[0]
    results = RunFolder(run).results()
    store = args.store or results.store
    if not store:
        raise ConfigError(f"{run}/results.json names no store; give --store")
    preds = predict_split(run, store, args.split, batch_size=args.batch_size)
    return write_outputs(preds, args, results)


def predict_text(args) -> str:
    """``--text`` & co.: one JSON object, every run's result."""
    from bertvision.inference.serving import Predictor  # heavy (TensorFlow): after argparse, so that --help answers at once

    item = {k: getattr(args, k) for k in RAW_FLAGS if getattr(args, k) is not None}
    predictor = Predictor.from_runs(args.run, jit_compile=args.jit)
    jobs = predictor.encode_all([(name, predictor.examples(name, [item], where=f"inputs.{name}"))
                                 for name in predictor.names])
    results = dict(zip(predictor.names, predictor.run(jobs)))
    for job in jobs:
        if job.cut_texts:
            print(job.model.cut_note(job.cut_texts, 1), file=sys.stderr, flush=True)
    return json.dumps({name: res[0] for name, res in results.items()}, ensure_ascii=False)


def predict_file(args) -> tuple[str, dict | None]:
    from bertvision.inference.inputs import read_inputs  # heavy (TensorFlow): after argparse, so that --help answers at once
    from bertvision.inference.serving import Predictor  # heavy (TensorFlow): after argparse, so that --help answers at once

    if len(args.run) != 1:
        raise ConfigError("--input takes one --run")
    if not args.out:
        raise ConfigError("--input needs --out")
    predictor = Predictor.from_runs(args.run, jit_compile=args.jit)
    (name,) = predictor.names
    model = predictor.model(name)
    inputs, split = read_inputs(args.input, model.task, max_skipped=args.max_skipped)
    examples = inputs if not inputs or not isinstance(inputs[0], dict) else \
        predictor.examples(name, inputs, where=str(args.input))
    if args.out.endswith(".jsonl") and model.task.is_preset:  # your own task's go through write_outputs
        lines, cut = [], 0
        for job in predictor.encode_batches(name, examples, args.batch_size):
            lines += [json.dumps(r, ensure_ascii=False) for r in predictor.run([job])[0]]
            cut += job.cut_texts
        if cut:
            print(model.cut_note(cut, len(examples)), file=sys.stderr, flush=True)
        io.atomic_write_text(args.out, "\n".join(lines) + "\n")
        return f"{len(lines)} predictions -> {args.out}", None
    preds = predictor.predict_examples(name, examples, split=split, batch_size=args.batch_size)
    return write_outputs(preds, args, model.results)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raw = [k for k in RAW_FLAGS if getattr(args, k) is not None]
    with die.on_errors():
        check_positive_int("batch_size", args.batch_size)
        check_fraction("max_skipped", args.max_skipped, low_open=False)
        if args.input and raw:
            raise ConfigError("give --input or --text (and its pair), not both")
        if (args.input or raw) and (args.store or args.split):
            raise ConfigError("--store/--split predict a store; --input/--text predict raw text: not both")
        if raw:
            print(predict_text(args))
            return 0
        written, metrics = predict_file(args) if args.input else predict_store(args)
    print(written)
    if metrics is not None:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
