"""python -m pipelines.extract: per-layer BERT activations into a store.

Examples::

    python -m pipelines.extract --task sst2 --data-dir ../shared/data/glue/SST-2 \\
        --split train --out tfrecords/sst2 --token-mode cls
    # the same store, written by an Apache Beam pipeline (any runner; the
    # runner's own options pass through, see docs/scale.md for Dataflow and Flink):
    python -m pipelines.extract --task sst2 --data-dir ../shared/data/glue/SST-2 \\
        --split train --out tfrecords/sst2 --token-mode cls \\
        --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing

Your own data (CSV, TSV, JSONL or Parquet; see README "Your own data")::

    python -m pipelines.extract --data-dir ../shared/data/banking77 --split train=train.csv \
        --split test=test.csv --dev-fraction 0.1 --seed 0 --text-column text --label-column category \
        --token-mode sequence --out tfrecords/banking77
    python -m pipelines.extract --task-file goemotions.task.json --out tfrecords/goemotions

Token classification (NER): CoNLL column files (sentences end at blank lines
and ``-DOCSTART-``) or ``{"tokens": [...], "tags": [...]}`` JSONL; tags in
IOB1, BIO or IOBES (``--tag-scheme``, default auto) become BIO::

    python -m pipelines.extract --kind token_classification --format conll --token-column 0 --tag-column 3 \
        --split train=../shared/data/conll2003/eng.train --split dev=../shared/data/conll2003/eng.testa \
        --split test=../shared/data/conll2003/eng.testb --task conll2003 --token-mode sequence \
        --out tfrecords/conll2003

The task (kind, columns, label names, main metric) goes into the store's
manifest; fit, predict, serve and the rest read it from there. Every
``--label-column`` is kept in the store: ``pipelines.fit --label-column B``
trains a head on column B of the same activations.

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

from bertvision.config import (DEFAULT_MAX_WINDOWS, EXTRACT_STRATEGIES, FILE_FORMATS, PAIR_MODES,  # noqa: E402
                               PER_TOKEN_KINDS, STORE_DTYPES, TAG_SCHEMES, TOKEN_MODES)
from bertvision.data.tasks import TASKS, USER_KINDS, get_task  # noqa: E402
from bertvision.extras import import_extra  # noqa: E402
from bertvision.errors import ConfigError  # noqa: E402

USER_FLAGS = ("text_column", "text_pair_column", "label_column", "id_column", "kind", "format", "encoding",
              "label_separator", "label_names", "dev_fraction", "no_header", "tag_scheme")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.extract", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", help=f"a benchmark task ({', '.join(TASKS)}), or the name of your own task "
                                  "(default: the --data-dir folder's name)")
    own = p.add_argument_group("your own data (instead of a benchmark --task; see README 'Your own data')")
    own.add_argument("--task-file", help="a JSON file of the fields below (text_column, label_columns, kind, "
                                         "splits, ...); flags given here override it")
    own.add_argument("--text-column", "--token-column", dest="text_column",
                     help="column of the text (a name, or a position 0, 1, ...); token classification "
                          "(--token-column): the words' column of a CoNLL file (0-based, negative from the end) or "
                          "the words' key of a JSONL file")
    own.add_argument("--text-pair-column", help="column of a sentence pair's second text")
    own.add_argument("--label-column", "--tag-column", dest="label_column", action="append",
                     help="column of the labels; repeat to keep several (pipelines.fit --label-column picks one); "
                          "token classification (--tag-column): the tags' column (CoNLL) or key (JSONL)")
    own.add_argument("--tag-scheme", choices=("auto",) + TAG_SCHEMES,
                     help="token classification: the files' tag scheme (default auto: the one they are valid in); "
                          "tags are converted to BIO, and the store's manifest records both")
    own.add_argument("--id-column", help="column of example ids (default: SPLIT-ROW)")
    own.add_argument("--kind", choices=USER_KINDS, help="what the labels are (default classification)")
    own.add_argument("--format", choices=FILE_FORMATS, help="file format (default: from the suffix)")
    own.add_argument("--no-header", action="store_true",
                     help="CSV/TSV files have no header row: name columns by position")
    own.add_argument("--encoding", help="the files' text encoding (default utf-8; e.g. latin-1)")
    own.add_argument("--label-separator", help="multi-label: separator of the labels in one field (default ',')")
    own.add_argument("--label-names", help="a file of label names, one a line: fixes their order and lets labels "
                                           "be given as ids 0, 1, ... into it")
    own.add_argument("--dev-fraction", type=float,
                     help="no dev file: hold out this share of train as dev (stratified by label, --seed)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-dir", default=os.environ.get("BERTVISION_DATA_DIR"),
                     help="local folder in the task's standard format (default: $BERTVISION_DATA_DIR)")
    src.add_argument("--tfds", action="store_true", help="read the task from tensorflow-datasets (online)")
    p.add_argument("--split", action="append", metavar="NAME[=PATH]",
                   help="split(s) to extract; repeat the flag for several (default: train and the eval splits). "
                        "Your own data: NAME=PATH, the path relative to --data-dir (default: the folder's "
                        "train.*, dev.*, test.* files)")
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
    p.add_argument("--doc-stride", type=int, default=None,
                   help="span and token classification: the step between a long context's windows (default 128). "
                        "Classification, multi-label, regression (one text): turns on long documents: a text longer "
                        "than --max-seq-len is stored as windows whose starts are this many tokens apart (at most "
                        "half a window), not truncated; pipelines.fit pools a document's windows (--window-pooling)")
    p.add_argument("--max-windows", type=int, default=None, metavar="N",
                   help="long documents (--doc-stride on a task of one text): keep a document's first N windows "
                        f"(default {DEFAULT_MAX_WINDOWS}, at least 1), so that one huge text cannot blow up "
                        "extraction, fit or serving memory; the documents cut are counted per split in the manifest, "
                        "and predict/serve cut a text the same way")
    p.add_argument("--max-query-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="first N examples only (trials)")
    p.add_argument("--sample", type=int, default=None, help="a seeded random subset of N examples (after --limit)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample and --dev-fraction")
    p.add_argument("--shard-size-mb", type=float, default=128.0)
    p.add_argument("--max-skipped", type=float, default=None, metavar="SHARE",
                   help="stop when more than this share of a split's records is malformed, e.g. a row with too "
                        "many fields (default 0.01; 1: never)")
    p.add_argument("--strategy", default="default", choices=EXTRACT_STRATEGIES,
                   help="tf.distribute strategy for the forward pass on each machine (mirrored: all its GPUs)")
    p.add_argument("--runner", default=None,
                   help="run as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, FlinkRunner, "
                        "SparkRunner, ...); the runner's own options (--project, --direct_num_workers, ...) "
                        "pass through to Beam. Without --runner: this process alone")
    p.add_argument("--no-jit", action="store_true", help="do not XLA-compile the forward pass")
    p.add_argument("--no-progress", action="store_true")
    return p


def user_source(args):
    """The `bertvision.data.files.DataSource` the flags (and --task-file) describe."""
    from bertvision.data import files  # pyarrow, scikit-learn: after argparse, so that --help answers at once

    flags = {"text_column": args.text_column, "text_pair_column": args.text_pair_column,
             "label_columns": args.label_column, "id_column": args.id_column, "kind": args.kind,
             "format": args.format, "encoding": args.encoding, "label_separator": args.label_separator,
             "label_names": args.label_names, "dev_fraction": args.dev_fraction, "name": args.task,
             "max_skipped": args.max_skipped, "header": False if args.no_header else None,
             "tag_scheme": args.tag_scheme}
    if args.split:
        flags["splits"] = files.parse_split_args(args.split)
    if args.data_dir:
        flags["data_dir"] = args.data_dir
    if args.dev_fraction is not None:
        flags["seed"] = args.seed
    if args.task_file:
        return files.DataSource.from_task_file(args.task_file, **flags)
    missing = [f"--{k.replace('_', '-')}" for k in ("text_column", "label_column") if getattr(args, k) is None]
    if missing:
        raise ConfigError(f"your own data needs {' and '.join(missing)} (or a --task-file)")
    if not args.data_dir and not args.split:
        raise ConfigError("give --data-dir DIR or --split NAME=PATH")
    flags.setdefault("splits", files.find_split_files(args.data_dir) if args.data_dir else None)
    flags["name"] = args.task or os.path.basename(os.path.normpath(args.data_dir or os.path.dirname(
        os.path.abspath(next(iter(flags["splits"].values()))))))
    return files.DataSource.from_dict({k: v for k, v in flags.items() if v is not None})


def is_user_task(args) -> bool:
    """Your own files (columns, a task file or NAME=PATH splits) rather than a benchmark --task."""
    return bool(args.task_file or any(getattr(args, k) not in (None, False) for k in USER_FLAGS)
                or any("=" in s for s in args.split or ()))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.runner:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need --runner)")
    user = is_user_task(args)
    if not user and not args.task:
        parser.error("give --task (a benchmark), or your own data's --text-column and --label-column "
                     "(or --task-file)")
    if not user and not args.data_dir and not args.tfds:
        parser.error("give --data-dir DIR (or set BERTVISION_DATA_DIR), or --tfds")
    if user and args.tfds:
        parser.error("--tfds reads a benchmark task; your own files come with --data-dir / --split NAME=PATH")
    with die.on_errors():
        from bertvision.store import extract  # heavy (TensorFlow): after argparse, so that --help answers at once

        loaded, heads, source = {}, None, None
        if user:  # every file is read and checked before anything is written
            from bertvision.data import files

            data = files.read_source(user_source(args))
            for result in data.splits.values():
                if result.skipped:
                    print(result.skipped_report(), file=sys.stderr, flush=True)
            loaded, fields, splits = data.splits, data.extract_fields(), list(data.splits)
        else:
            task = get_task(args.task)
            fields, splits = {"task": task.name}, args.split or ["train", *task.eval_splits]
        kind = get_task(fields["heads"][0] if fields.get("heads") else fields["task"]).kind
        # --doc-stride on a sentence-level task: documents as windows (span and token tasks always window)
        windows = args.doc_stride is not None and kind not in PER_TOKEN_KINDS
        if args.max_windows is not None and not windows:
            raise ConfigError(f"--max-windows {args.max_windows} caps a long document's windows; it needs "
                              "--doc-stride on a classification, multi-label or regression task of one text")
        configs = [extract.ExtractConfig(
            **fields, split=split, out=args.out, data_dir=args.data_dir,
            use_tfds=args.tfds,
            backbone=args.backbone, layers=args.layers, token_mode=args.token_mode, pair_mode=args.pair_mode,
            dtype=args.dtype, max_seq_len=args.max_seq_len,
            doc_stride=128 if args.doc_stride is None else args.doc_stride, windows=windows,
            max_windows=DEFAULT_MAX_WINDOWS if args.max_windows is None else args.max_windows,
            max_query_len=args.max_query_len,
            batch_size=args.batch_size, limit=args.limit, sample=args.sample, seed=args.seed,
            shard_size_mb=args.shard_size_mb, max_skipped=0.01 if args.max_skipped is None else args.max_skipped,
            strategy=args.strategy,
            jit_compile=not args.no_jit, progress=not args.no_progress,
            command=["python", "-m", "pipelines.extract", *(sys.argv[1:] if argv is None else argv)],
        ) for split in splits]  # every split's settings are checked before any is extracted
        if args.runner:
            # Beam only when asked for: importing it costs seconds, and without the GCP extras it logs an
            # "apitools not found" warning that has nothing to do with extraction in this process
            beam_extract = import_extra("bertvision.store.beam", "beam", "--runner (an Apache Beam pipeline)")
            result = beam_extract.run_pipeline(configs, ["--runner", args.runner, *beam_args], loaded=loaded)
            manifest = result.manifest
            print(result.summary())
        else:
            manifest, backbone, tokenizer = None, None, None
            for config in configs:  # one backbone for every split
                extractor = extract.Extractor(config, backbone=backbone, tokenizer=tokenizer,
                                              loaded=loaded.get(config.split))
                manifest = extractor.run()
                backbone, tokenizer = extractor.backbone, extractor.tokenizer
        for split in splits:
            info = manifest["splits"][split]
            what = f"documents (up to {info['max_windows']} windows each)" if "max_windows" in info else "examples"
            print(f"{split}: {info['num_records']} records from {info['num_examples']} {what}, "
                  f"{info['bytes'] / 2**20:.1f} MiB in {len(info['shards'])} shard(s) -> {args.out}")
            if "truncated_documents" in info:
                print(f"{split}: {info['truncated_documents']} document(s) longer than "
                      f"{manifest['featurizer']['max_windows']} windows kept their first "
                      f"{manifest['featurizer']['max_windows']} (--max-windows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
