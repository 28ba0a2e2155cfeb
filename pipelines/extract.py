"""python -m pipelines.extract: per-layer BERT activations into a store.

Examples::

    python -m pipelines.extract --task sst2 --data-dir ../shared/data/glue/SST-2 \\
        --split train --out tfrecords/sst2 --token-mode cls
    # the same store, written by an Apache Beam pipeline (any runner; the
    # runner's own options pass through, see docs/scale.md for Dataflow and Flink):
    python -m pipelines.extract --task sst2 --data-dir ../shared/data/glue/SST-2 \\
        --split train --out tfrecords/sst2 --token-mode cls \\
        --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing

A sentence-pair task can store each text encoded on its own (``--pair-mode
separate --token-mode mean``): adapters then compare the two sides.

Run the same command again to resume a killed or failed extraction: finished
shards are kept.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.config import EXTRACT_STRATEGIES, PAIR_MODES, STORE_DTYPES, TOKEN_MODES  # noqa: E402
from bertvision.data.tasks import TASKS, get_task  # noqa: E402
from bertvision.extras import import_extra  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.extract", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help=f"task name: {', '.join(TASKS)}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-dir", default=os.environ.get("BERTVISION_DATA_DIR"),
                     help="local folder in the task's standard format (default: $BERTVISION_DATA_DIR)")
    src.add_argument("--tfds", action="store_true", help="read the task from tensorflow-datasets (online)")
    p.add_argument("--split", action="append",
                   help="split(s) to extract; repeat the flag for several (default: train and the eval splits)")
    p.add_argument("--out", required=True, help="store folder (local path or gs://...)")
    p.add_argument("--backbone", "--model", dest="backbone", default=None,
                   help="HF folder, keras-hub preset, or a finetune checkpoint folder "
                        "(default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--layers", default="all", help="'all', 'lastK' or a list like 0,3,6 (0 = the embeddings)")
    p.add_argument("--token-mode", "--tokens", dest="token_mode", default="cls", choices=TOKEN_MODES,
                   help="cls (first token), mean (masked mean) or sequence (every token; span tasks need it)")
    p.add_argument("--pair-mode", default="cross", choices=PAIR_MODES,
                   help="sentence-pair tasks: cross (the pair as one sequence, [CLS] a [SEP] b [SEP]) or separate "
                        "(each text encoded on its own, as a sentence-embedding model was trained; both stored; "
                        "--token-mode mean or cls)")
    p.add_argument("--dtype", default="float16", choices=STORE_DTYPES,
                   help="how activations are stored; int8 keeps one float16 scale per vector and half float16's "
                        "bytes (its accuracy cost is measured in docs/results.md)")
    p.add_argument("--max-seq-len", type=int, default=None, help="default 128 (384 for squad_v2)")
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--max-query-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="first N examples only (trials)")
    p.add_argument("--sample", type=int, default=None, help="a seeded random subset of N examples (after --limit)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample")
    p.add_argument("--shard-size-mb", type=float, default=128.0)
    p.add_argument("--max-skipped", type=float, default=0.01, metavar="SHARE",
                   help="stop when more than this share of a split's records is malformed (default 0.01; 1: never)")
    p.add_argument("--strategy", default="default", choices=EXTRACT_STRATEGIES,
                   help="tf.distribute strategy for the forward pass on each machine (mirrored: all its GPUs)")
    p.add_argument("--runner", default=None,
                   help="run as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, FlinkRunner, "
                        "SparkRunner, ...); the runner's own options (--project, --direct_num_workers, ...) "
                        "pass through to Beam. Without --runner: this process alone")
    p.add_argument("--no-jit", action="store_true", help="do not XLA-compile the forward pass")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.runner:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need --runner)")
    if not args.data_dir and not args.tfds:
        parser.error("give --data-dir DIR (or set BERTVISION_DATA_DIR), or --tfds")
    with die.on_errors():
        from bertvision.store import extract  # heavy (TensorFlow): after argparse, so that --help answers at once

        task = get_task(args.task)
        splits = args.split or ["train", *task.eval_splits]
        configs = [extract.ExtractConfig(
            task=args.task, split=split, out=args.out, data_dir=args.data_dir, use_tfds=args.tfds,
            backbone=args.backbone, layers=args.layers, token_mode=args.token_mode, pair_mode=args.pair_mode,
            dtype=args.dtype, max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
            max_query_len=args.max_query_len,
            batch_size=args.batch_size, limit=args.limit, sample=args.sample, seed=args.seed,
            shard_size_mb=args.shard_size_mb, max_skipped=args.max_skipped, strategy=args.strategy,
            jit_compile=not args.no_jit, progress=not args.no_progress,
            command=["python", "-m", "pipelines.extract", *(sys.argv[1:] if argv is None else argv)],
        ) for split in splits]  # every split's settings are checked before any is extracted
        if args.runner:
            # Beam only when asked for: importing it costs seconds, and without the GCP extras it logs an
            # "apitools not found" warning that has nothing to do with extraction in this process
            beam_extract = import_extra("bertvision.store.beam", "beam", "--runner (an Apache Beam pipeline)")
            result = beam_extract.run_pipeline(configs, ["--runner", args.runner, *beam_args])
            manifest = result.manifest
            print(result.summary())
        else:
            manifest = None
            for config in configs:
                manifest = extract.Extractor(config).run()
        for split in splits:
            info = manifest["splits"][split]
            print(f"{split}: {info['num_records']} records from {info['num_examples']} examples, "
                  f"{info['bytes'] / 2**20:.1f} MiB in {len(info['shards'])} shard(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
