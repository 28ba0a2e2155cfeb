"""ONNX export against TensorFlow, float and int8, in the same run.

    python -m experiments.onnx_export --train 512 --eval 256 --epochs 3        # the figures in docs/benchmarks.md
    python -m experiments.onnx_export --quick                                   # a smoke run, not a result

Extracts SST-2 and MRPC (``cls`` stores, the embedded MiniLM) from
``--data`` (first ``--train`` train and ``--eval`` dev examples), fits
``--adapter`` on each, and exports both runs as ONE ONNX model (the
backbone once, both heads) through `bertvision.inference.export.export_onnx`
with ``quantize="int8"``. On the same dev examples, tokenized once by the
runs' featurizer, it then runs: TensorFlow (`serve_function`: the graph
that was converted, as a `tf.function`), the float ONNX model and the int8
ONNX model in onnxruntime, and prints per task: dev accuracy, max |probability
difference| from TensorFlow, share of labels equal to TensorFlow's, and
throughput (examples/s, batches of ``--batch-size``, after one warm-up
batch; the ids padded to the batch's longest row as the server does).
Everything is written under ``--work`` (kept for the next call).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path


import numpy as np
import onnxruntime as ort
import tensorflow as tf

from bertvision.api import extract, fit
from bertvision.data.readers import load_examples
from bertvision.data.tasks import get_task
from bertvision.inference.export import ONNX_FILE, ONNX_INT8_FILE, export_onnx, serve_function
from bertvision.inference.serving import Predictor
from bertvision.report.table import grid
from bertvision.runs import RunFolder

TASKS = {"sst2": "glue/SST-2", "mrpc": "glue/MRPC"}


def batches(features, size: int):
    """``[(rows, {token_ids, segment_ids, padding_mask})]``, each batch cut to its longest row."""
    inputs = features.inputs()
    out = []
    for b0 in range(0, len(features), size):
        rows = slice(b0, b0 + size)
        width = int(inputs["padding_mask"][rows].sum(1).max())
        out.append({k: np.ascontiguousarray(v[rows, :width]).astype(np.int32) for k, v in inputs.items()})
    return out


def timed(run, feeds) -> tuple[np.ndarray, float]:
    run(feeds[0])  # warm-up (graph building, first allocation)
    start = time.perf_counter()
    outs = [run(f) for f in feeds]
    return np.concatenate(outs), time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--work", default="experiments_out/onnx")
    p.add_argument("--train", type=int, default=512)
    p.add_argument("--eval", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--adapter", default="adapter_pooler")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="32 train / 32 dev examples, 1 epoch: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.eval, args.epochs = 32, 32, 1
    work = Path(args.work) / f"{args.adapter}-{args.train}-{args.eval}-{args.epochs}"
    runs = {}
    for task, folder in TASKS.items():
        store = work / f"store-{task}"
        if not (store / "manifest.json").is_file():
            extract(task, store, data_dir=Path(args.data) / folder, splits=["train"], limit=args.train,
                    token_mode="cls", progress=False)
            extract(task, store, data_dir=Path(args.data) / folder, splits=["dev"], limit=args.eval,
                    token_mode="cls", progress=False)
        out = work / f"run-{task}"
        if not RunFolder(out).finished:
            fit(store, adapter=args.adapter, out=out, epochs=args.epochs, seed=0, verbose=0)
        runs[task] = f"{task}={out}"
    onnx_dir = work / "onnx"
    predictor = Predictor.from_runs(list(runs.values()))
    if not (onnx_dir / ONNX_INT8_FILE).is_file():
        start = time.perf_counter()
        export_onnx([], str(onnx_dir), quantize="int8", predictor=predictor)
        print(f"export (tf2onnx + quantization): {time.perf_counter() - start:.0f} s")
    serve = serve_function(predictor)
    options = ort.SessionOptions()
    sessions = {kind: ort.InferenceSession(str(onnx_dir / f), options, providers=["CPUExecutionProvider"])
                for kind, f in (("onnx float32", ONNX_FILE), ("onnx int8", ONNX_INT8_FILE))}
    rows = []
    for task in TASKS:
        spec = get_task(task)
        examples = load_examples(spec, "dev", Path(args.data) / TASKS[task], limit=args.eval).examples
        gold = np.array([spec.label_names.index(e.label) if isinstance(e.label, str) else int(e.label)
                         for e in examples])
        job = predictor.encode(task, examples)
        feeds = batches(job.features, args.batch_size)
        output = f"{task}_probabilities"

        def tf_run(feed):
            return serve(**{k: tf.constant(v) for k, v in feed.items()})[output].numpy()

        results = {"tensorflow": timed(tf_run, feeds)}
        for kind, session in sessions.items():
            results[kind] = timed(lambda feed, s=session: s.run([output], feed)[0], feeds)
        reference = results["tensorflow"][0]
        for kind, (probs, seconds) in results.items():
            rows.append({"task": task, "model": kind, "examples": len(examples),
                         "accuracy": float((probs.argmax(-1) == gold).mean()),
                         "max_abs_diff_vs_tf": float(np.abs(probs - reference).max()),
                         "labels_equal_tf": float((probs.argmax(-1) == reference.argmax(-1)).mean()),
                         "examples_per_s": len(examples) / seconds})
    sizes = {kind: (onnx_dir / f).stat().st_size / 2**20 for kind, f in (("float32", ONNX_FILE), ("int8", ONNX_INT8_FILE))}
    print(f"\n{datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; onnxruntime {ort.__version__}; adapter {args.adapter}, {args.train} train / "
          f"{args.eval} dev examples, {args.epochs} epochs, batch {args.batch_size}; "
          f"model.onnx {sizes['float32']:.1f} MiB, model.int8.onnx {sizes['int8']:.1f} MiB")
    print(grid(["task", "model", "accuracy", "max abs diff vs TF", "labels = TF", "examples/s"],
               [[r["task"], r["model"], f"{r['accuracy']:.4f}", f"{r['max_abs_diff_vs_tf']:.2e}",
                 f"{r['labels_equal_tf']:.4f}", f"{r['examples_per_s']:.1f}"] for r in rows]))
    (work / "results.json").write_text(json.dumps({"rows": rows, "sizes_mib": sizes, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
