"""python -m pipelines.ensemble: combine a BERT run and adapter runs on the same examples.

Examples::

    python -m pipelines.ensemble --runs runs/sst2-bert runs/sst2-adapter --split dev --out runs/sst2-ens
    python -m pipelines.ensemble --runs runs/a runs/b --combine max --store tfrecords/sst2 --out runs/ens-max

Each run contributes RUN_DIR/predictions/<split>.npz (fine-tuning runs and
their checkpoint folders write it); an adapter (fit) run without one is
predicted from its store (--store overrides the store its results.json
names: one for all runs, or one per run). Writes OUT/results.json
(run_type "ensemble") and OUT/predictions/<split>.npz.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.inference.config import COMBINE_MODES  # noqa: E402  (after setup_env)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (two or more)")
    p.add_argument("--split", default="dev")
    p.add_argument("--out", required=True, help="ensemble run folder")
    p.add_argument("--combine", default="mean", choices=COMBINE_MODES,
                   help="mean (default) or max of probabilities / per-window logits")
    p.add_argument("--store", action="append", dest="stores",
                   help="store of the adapter runs (once for all, or once per run in --runs order)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with die.on_errors():
        from bertvision.inference.ensemble import EnsembleConfig, run_ensemble  # heavy (TensorFlow): after argparse, so that --help answers at once

        results = run_ensemble(EnsembleConfig(runs=args.runs, out=args.out, split=args.split,
                                              combine=args.combine, stores=args.stores))
    main_metric = results.main_metric
    for m in results.members:
        print(f"{m['method']:<40s} {main_metric} {m['dev_metrics'].get(main_metric, float('nan')):.4f}  ({m['run']})")
    print(f"{results.method:<40s} {main_metric} {results.main_value:.4f}  -> {args.out}")
    print(json.dumps(results.dev_metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
