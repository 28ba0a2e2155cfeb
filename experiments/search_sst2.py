"""Benchmark: a modest KerasTuner random search on SST-2 against the default
adapter_pooler trained with the same epochs.

Runs `bertvision.search.tuner.search` (default space: kind, layer subset, layer
pooling, adapter_dim, dropout, lr, batch size) on a store, retrains the best
configuration (SEARCH_DIR/best), trains ``adapter_pooler`` with its defaults
(OUT/default), and prints dev accuracy, trainable parameters and time.

    python -m experiments.search_sst2 --store /tmp/bv/sst2-cls --trials 10 --epochs 4

Run again with the same --out to reuse what is finished (a killed search resumes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


from bertvision.errors import BertVisionError
from bertvision.training.fit import FitConfig, fit
from bertvision.report.table import grid
from bertvision.runs import RunFolder, RunResults
from bertvision.search.tuner import SearchConfig, search


def _default_run(store: str, out: str, epochs: int, seed: int) -> tuple[RunResults, float]:
    run = RunFolder(out)
    if run.finished:
        results = run.results()
        return results, results.total_wall_time_s if results.total_wall_time_s is not None else float("nan")
    start = time.perf_counter()
    results = fit(FitConfig(store=store, out=out, adapter={"kind": "adapter_pooler"}, epochs=epochs, seed=seed,
                            verbose=0))
    return results, time.perf_counter() - start


def _describe(values: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.search_sst2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="an SST-2 store (e.g. /tmp/bv/sst2-cls)")
    p.add_argument("--out", help="bench folder (default /tmp/bv/search-bench-<store name>)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tuner", default="random")
    args = p.parse_args(argv)

    out = args.out or os.path.join("/tmp/bv", "search-bench-" + os.path.basename(os.path.normpath(args.store)))
    search_dir = os.path.join(out, "search")
    try:
        start = time.perf_counter()
        record = search(SearchConfig(store=args.store, out=search_dir, tuner=args.tuner, max_trials=args.trials,
                                     epochs=args.epochs, seed=args.seed, verbose=0))
        search_s = time.perf_counter() - start
        best = RunFolder(os.path.join(search_dir, "best")).results()
        default, default_s = _default_run(args.store, os.path.join(out, "default"), args.epochs, args.seed)
    except BertVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    metric = record["main_metric"]
    rows = [
        ("search best (retrained)", _describe(record["best_hyperparameters"]), best.dev_metrics[metric],
         best.trainable_params, best.total_wall_time_s),
        ("default adapter_pooler", "adapter_dim=64, dropout=0.1, layer_pooling=scalar_mix, layers=all, "
         "lr=0.001, batch_size=64", default.dev_metrics[metric], default.trainable_params, default_s),
    ]
    print(f"\nSST-2 store {args.store}: {record['train_examples']} training examples, dev split "
          f"{record['eval_split']}; {args.tuner} search, {record['trials']} trials x {args.epochs} epochs "
          f"(best trial {record['best_trial_id']}, search {metric} {record['best_search_metric']:.4f}); "
          f"search + retrain wall time {search_s:.0f} s\n")
    print(grid(["run", "configuration", f"dev {metric}", "trainable params", "train time (s)"],
               [[name, config, f"{value:.4f}", f"{params:,}", f"{seconds:.1f}"]
                for name, config, value, params, seconds in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
