"""python -m pipelines.finetune: fine-tune the whole BERT with a task head (the baseline).

Examples::

    python -m pipelines.finetune --task sst2 --data-dir ../shared/data/glue/SST-2 \\
        --out runs/sst2-bert --epochs 1 --checkpoint-every 0.1 --sample 8000
    python -m pipelines.finetune --task squad_v2 --data-dir ../shared/data/squad2 \\
        --train-split dev-v2.0.Normans_CCT --eval-split dev-v2.0.Rhine --out runs/squad-bert
    python -m pipelines.finetune --store tfrecords/banking77 --eval-split dev --eval-split test \\
        --out runs/banking77-bert --epochs 2 --lr 1e-4

Every checkpoint (RUN_DIR/checkpoints/epoch-0.10, ...) is a backbone folder:
``python -m pipelines.extract --backbone RUN_DIR/checkpoints/epoch-1.00 ...``.
Run the same command again to resume a killed run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.config import STRATEGIES  # noqa: E402  (after setup_env)
from bertvision.data.tasks import TASKS  # noqa: E402
from bertvision.models import BERT_POOLINGS  # noqa: E402


def _epochs_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 0.1,0.3; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", help=f"task name: {', '.join(TASKS)} (with --store: the store's)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--store", help="fine-tune on a store's task and examples (your own data: the texts, labels "
                                     "and splits `pipelines.extract` kept) instead of --task and --data-dir")
    src.add_argument("--data-dir", default=os.environ.get("BERTVISION_DATA_DIR"),
                     help="local folder in the task's standard format (default: $BERTVISION_DATA_DIR)")
    src.add_argument("--tfds", action="store_true", help="read the task from tensorflow-datasets (online)")
    p.add_argument("--out", required=True, help="run folder (RUN_DIR)")
    p.add_argument("--backbone", "--model", dest="backbone", default=None,
                   help="HF folder, keras-hub preset or checkpoint folder (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", action="append", dest="eval_splits",
                   help="split(s) evaluated at every checkpoint; repeat for several (default: the task's eval splits)")
    p.add_argument("--epochs", type=float, default=1.0, help="may be fractional, e.g. 0.5")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-seq-len", type=int, default=None, help="default 128 (384 for squad_v2)")
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--max-query-len", type=int, default=64)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup as a fraction of all steps (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.1, help="dropout before the head")
    p.add_argument("--pooling", choices=("auto", *BERT_POOLINGS), default="auto",
                   help="what a sentence-level head reads: cls (BERT's pooler over [CLS]), mean (the last layer's "
                        "mean over real tokens, what a sentence-transformers backbone such as the default "
                        "all-MiniLM-L6-v2 was trained for) or auto (the default: the pooling the backbone folder "
                        "declares, else cls); span and token heads ignore it")
    p.add_argument("--lora-rank", type=int, default=None, metavar="R",
                   help="LoRA instead of full fine-tuning: keras-hub's enable_lora(R) on the attention query and "
                        "value projections; the head and those updates train, everything else is frozen")
    p.add_argument("--clipnorm", type=float, default=1.0, help="global gradient norm clip (0: none)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and --sample/--train-fraction draws")
    p.add_argument("--train-fraction", type=float, default=1.0, help="seeded fraction of the training examples")
    p.add_argument("--limit", type=int, default=None, help="first N examples of every split (trials)")
    p.add_argument("--eval-limit", type=int, default=None, help="first N examples of the eval splits (default: --limit)")
    p.add_argument("--sample", type=int, default=None,
                   help="a seeded random N training examples (as pipelines.extract --sample N --seed S)")
    p.add_argument("--checkpoint-every", type=float, default=None,
                   help="also checkpoint and evaluate every this fraction of an epoch, e.g. 0.1")
    p.add_argument("--checkpoint-at", type=_epochs_list, default=None, metavar="E[,E...]",
                   help="also checkpoint and evaluate at these epochs, e.g. 0.1,0.3")
    p.add_argument("--max-skipped", type=float, default=0.01, metavar="SHARE",
                   help="stop when more than this share of a split's records is malformed (default 0.01; 1: never)")
    p.add_argument("--group-by-length", type=int, default=50, metavar="N",
                   help="batch rows of similar length: sort windows of N batches by length (0: plain shuffle)")
    p.add_argument("--strategy", default="default", choices=STRATEGIES)
    p.add_argument("--no-jit", action="store_true", help="do not XLA-compile the steps (compiling a shape costs ~20 s on CPU)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.store is None and not args.task:
        build_parser().error("give --task (or --store STORE)")
    if args.store is not None:
        args.data_dir = None
    elif not args.data_dir and not args.tfds:
        build_parser().error("give --data-dir DIR (or set BERTVISION_DATA_DIR), or --tfds")
    with die.on_errors():
        from bertvision.training.finetune import FinetuneConfig, Finetuner  # heavy (TensorFlow): after argparse, so that --help answers at once

        config = FinetuneConfig(
            task=args.task or "", out=args.out, data_dir=args.data_dir, store=args.store, use_tfds=args.tfds,
            backbone=args.backbone,
            train_split=args.train_split, eval_splits=args.eval_splits, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, max_seq_len=args.max_seq_len,
            doc_stride=args.doc_stride, max_query_len=args.max_query_len, warmup=args.warmup,
            weight_decay=args.weight_decay, dropout=args.dropout, pooling=args.pooling, lora_rank=args.lora_rank,
            clipnorm=args.clipnorm or None, seed=args.seed,
            train_fraction=args.train_fraction, limit=args.limit, eval_limit=args.eval_limit, sample=args.sample,
            checkpoint_every=args.checkpoint_every, checkpoint_at=args.checkpoint_at,
            group_by_length=args.group_by_length, max_skipped=args.max_skipped, strategy=args.strategy,
            jit_compile=not args.no_jit,
            progress=not args.no_progress,
            command=["python", "-m", "pipelines.finetune", *(argv if argv is not None else sys.argv[1:])],
        )
        results = Finetuner(config).run()
    print(json.dumps({
        "out": args.out, "dev_metrics": results.dev_metrics, "best_epoch": results.best_epoch,
        "best_dev_metrics": results.best_dev_metrics, "train_wall_time_s": results.train_wall_time_s,
        "train_examples_per_s": results.train_examples_per_s,
        "checkpoints": [h.epoch for h in results.history], "main_metric": results.main_metric,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
