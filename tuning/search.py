"""python -m tuning.search: KerasTuner search over the adapter zoo on a store.

Examples::

    python -m tuning.search --store tfrecords/sst2 --out searches/sst2 --max-trials 10 --epochs 4
    python -m tuning.search --store tfrecords/sst2 --out searches/sst2-bo --tuner bayesian \\
        --kinds adapter_pooler --adapter-dims 32,64,128 --layer-subsets all,last3,every_other
    python -m tuning.search --store tfrecords/sst2 --out searches/hb --tuner hyperband --epochs 9 \\
        --train-fraction 0.25

The objective is the task's official main dev metric (accuracy for SST-2,
Matthews correlation for CoLA, Pearson for STS-B, F1 for MRPC and SQuAD),
maximised. Run the same command again to resume a stopped search (only
--max-trials may change, e.g. to extend it). Outputs: SEARCH_DIR/trials.csv,
SEARCH_DIR/search.json, SEARCH_DIR/best/ (a normal pipelines.fit run folder),
SEARCH_DIR/tuner/ (KerasTuner's state).

Distributed search (KerasTuner's chief and workers): run the same command in
each process, SEARCH_DIR on a folder they all share, with
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT naming the chief's address and
KERASTUNER_TUNER_ID=chief for the chief, tuner0, tuner1, ... for the workers::

    KERASTUNER_TUNER_ID=chief  KERASTUNER_ORACLE_IP=10.0.0.2 KERASTUNER_ORACLE_PORT=8000 python -m tuning.search ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.2 KERASTUNER_ORACLE_PORT=8000 python -m tuning.search ...

The chief hands out trials and writes search.json, trials.csv and best/; the
workers train. Start a killed worker again with the same id: it reruns its
trial.
"""

from __future__ import annotations

import argparse
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.config import STRATEGIES  # noqa: E402  (after setup_env)
from bertvision.search.config import TUNERS, SearchConfig, SearchSpace  # noqa: E402


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _strs(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _range(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from err
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (or one value), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    d, s = SearchConfig(store="", out=""), SearchSpace()
    p = argparse.ArgumentParser(prog="python -m tuning.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="store folder (from pipelines.extract)")
    p.add_argument("--label-column", help="your own data's store: the label column whose head is searched "
                                          "(default: the first)")
    p.add_argument("--out", required=True, metavar="SEARCH_DIR", help="search folder to write (or resume)")
    p.add_argument("--tuner", default=d.tuner, help=f"{', '.join(TUNERS)} (default {d.tuner})")
    p.add_argument("--max-trials", type=int, default=d.max_trials, help=f"default {d.max_trials}")
    p.add_argument("--executions-per-trial", type=int, default=d.executions_per_trial,
                   help="trainings per trial, averaged (default 1)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"epochs per trial and of the best retrain (hyperband: the most); default {d.epochs}")
    p.add_argument("--seed", type=int, default=d.seed, help="default 0")
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES, help="tf.distribute strategy")
    p.add_argument("--train-fraction", type=float, default=d.train_fraction,
                   help="seeded fraction of the training data the trials train on (default 1)")
    p.add_argument("--retrain-fraction", type=float, default=d.retrain_fraction,
                   help="fraction of the training data of the best retrain (default 1)")
    p.add_argument("--no-retrain", dest="retrain", action="store_false",
                   help="do not retrain the best configuration into SEARCH_DIR/best")
    p.add_argument("--train-split", default=d.train_split, help="default train")
    p.add_argument("--eval-split", default=None, help="split the objective is scored on "
                                                      "(default: the task's first eval split in the store)")
    p.add_argument("--hyperband-factor", type=int, default=d.hyperband_factor, help="default 3")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help="default 256")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=d.jit_compile,
                   help="XLA-compile train and predict steps (default on)")
    p.add_argument("--quiet", action="store_true", help="no per-trial summaries")
    g = p.add_argument_group("search space")
    g.add_argument("--kinds", type=_strs, default=s.kinds, help=f"default {','.join(s.kinds)}")
    g.add_argument("--layer-subsets", type=_strs, default=s.layer_subsets,
                   help=f"all, lastK, every_other; default {','.join(s.layer_subsets)}")
    g.add_argument("--layer-poolings", type=_strs, default=s.layer_poolings,
                   help=f"adapter_pooler layer pooling; default {','.join(s.layer_poolings)}")
    g.add_argument("--adapter-dims", type=_ints, default=s.adapter_dims,
                   help=f"default {','.join(map(str, s.adapter_dims))}")
    g.add_argument("--transformer-blocks", type=_ints, default=s.transformer_blocks,
                   help="adapter_pooler transformer blocks over the tokens (sequence stores; 4 heads, so "
                        "every adapter dim must be a multiple of 4), e.g. 0,1; default 0")
    g.add_argument("--window-poolings", type=_strs, default=s.window_poolings,
                   help="a store of long documents (extract --doc-stride): how a document's windows are pooled "
                        f"(every kind); default {','.join(s.window_poolings)}")
    g.add_argument("--dropout", type=_range, default=s.dropout, metavar="MIN,MAX",
                   help=f"default {s.dropout[0]},{s.dropout[1]}")
    g.add_argument("--lr", type=_range, default=s.lr, metavar="MIN,MAX",
                   help=f"log-uniform; default {s.lr[0]},{s.lr[1]}")
    g.add_argument("--batch-sizes", type=_ints, default=s.batch_sizes,
                   help=f"default {','.join(map(str, s.batch_sizes))}")
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    space = SearchSpace(kinds=args.kinds, layer_subsets=args.layer_subsets, layer_poolings=args.layer_poolings,
                        adapter_dims=args.adapter_dims, transformer_blocks=args.transformer_blocks,
                        window_poolings=args.window_poolings, dropout=args.dropout, lr=args.lr,
                        batch_sizes=args.batch_sizes)
    return SearchConfig(store=args.store, out=args.out, tuner=args.tuner, max_trials=args.max_trials,
                        executions_per_trial=args.executions_per_trial, epochs=args.epochs, seed=args.seed,
                        strategy=args.strategy, train_fraction=args.train_fraction, train_split=args.train_split,
                        eval_split=args.eval_split, label_column=args.label_column, space=space, retrain=args.retrain,
                        retrain_fraction=args.retrain_fraction, hyperband_factor=args.hyperband_factor,
                        eval_batch_size=args.eval_batch_size, jit_compile=args.jit_compile,
                        verbose=0 if args.quiet else 1,
                        command=["python", "-m", "tuning.search", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with die.on_errors():  # SearchError / FitError / StoreError: one line, exit 2
        from bertvision.search.tuner import search  # heavy (TensorFlow): after argparse, so that --help answers at once

        config = config_from_args(args)
        record = search(config)
    if record["run_type"] == "search_worker":
        print(f"worker {record['tuner_id']}: trained trial(s) {', '.join(record['trials_run']) or 'none'} for the "
              f"chief at {record['oracle']}; the chief writes {config.out}/trials.csv")
        return 0
    best = record["best_hyperparameters"]
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items())
    metric = record["main_metric"]
    line = (f"{record['trials']} trial(s); best trial {record['best_trial_id']}: {shown}; "
            f"search {metric}={record['best_search_metric']:.4f}")
    if record.get("best_run"):
        line += f"; retrained {metric}={record['best_metric']:.4f} -> {config.out}/best"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
