"""python -m pipelines.export: served runs as TensorFlow SavedModels.

Examples::

    python -m pipelines.export --run runs/sst2-pooler --run runs/mrpc-cnn --out exported/bertvision
    python -m pipelines.export --run runs/sst2-pooler --out exported/ids-only --no-text

The SavedModels (Keras export archives) hold every backbone once and every
run's head. ``OUT``: ``serving_default`` (= ``serve``): ``token_ids``,
``segment_ids``, ``padding_mask`` in, ``<task>_probabilities`` /
``<task>_score`` / ``<task>_start_logits`` + ``<task>_end_logits`` out, core
TensorFlow ops only (stock TensorFlow, ``saved_model_cli`` and TensorFlow
Serving load it). ``OUT/text`` (leave it out with ``--no-text``): the same
plus ``serve_text`` (``text``) and ``serve_text_pair`` (``text``,
``text_pair``): raw strings in, tokenized in the graph exactly as the runs'
featurizer does, which need TensorFlow Text's ops at load time (``import
tensorflow_text``). SQuAD runs are in ``serve`` only (windows and offsets
are made outside the graph). ``OUT/bertvision_export.json`` lists
signatures, outputs, runs and backbones.

``--format onnx`` writes the same ``serve`` graph (ids in, every task's
outputs out) as ``OUT/model.onnx`` through tf2onnx (the ``onnx`` extra), for
onnxruntime; ``--quantize int8`` adds ``OUT/model.int8.onnx``, onnxruntime's
dynamic int8 quantization (its accuracy and speed: docs/benchmarks.md)::

    python -m pipelines.export --run runs/sst2-pooler --run runs/mrpc-cnn --out exported/onnx \
        --format onnx --quantize int8
"""

from __future__ import annotations

import argparse
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.extras import import_extra  # noqa: E402  (after setup_env)
from bertvision.inference.config import QUANTIZE  # noqa: E402

FORMATS = ("savedmodel", "onnx")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", dest="runs", required=True, metavar="[NAME=]RUN_DIR",
                   help="a run folder to export (adapter fit run or fine-tuning run); repeat for more")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.add_argument("--format", choices=FORMATS, default="savedmodel",
                   help="savedmodel (default; TensorFlow Serving) or onnx (OUT/model.onnx, the token-ids graph)")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="--format onnx: also write OUT/model.int8.onnx (onnxruntime dynamic quantization)")
    p.add_argument("--no-text", dest="text", action="store_false",
                   help="no OUT/text SavedModel (the raw-text signatures, which need TensorFlow Text)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quantize and args.format != "onnx":
        parser.error("--quantize applies to --format onnx")
    with die.on_errors():
        export = import_extra("bertvision.inference.export", "text", "pipelines.export (TensorFlow Text ops)")
        if args.format == "onnx":
            info = export.export_onnx(args.runs, args.out, quantize=args.quantize)
            print(f"({', '.join(info['inputs'])}) -> {', '.join(info['outputs'])}")
            print(f"ONNX -> {', '.join(f'{args.out}/{f}' for f in info['files'].values())}")
            return 0
        info = export.export_runs(args.runs, args.out, text=args.text)
    for name, sig in info["signatures"].items():
        where = "" if sig["saved_model"] == "." else f" [in {args.out}/{sig['saved_model']}, needs tensorflow_text]"
        print(f"{name}({', '.join(sig['inputs'])}) -> {', '.join(sig['outputs'])}{where}")
    for group, why in info["text_signatures_skipped"].items():
        print(f"no text signature for {group}: {why}")
    print(f"SavedModel -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
