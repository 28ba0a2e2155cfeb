"""python -m pipelines.submit: a GLUE submission folder from trained adapter runs.

Examples::

    python -m pipelines.submit --run runs/cola --run runs/sst2 ... --out glue-submission
    python -m pipelines.submit --run runs/sst2 --store tfrecords/sst2-test --out sst2-only --partial

Every unlabelled split GLUE scores that a run's store holds (``test``; MNLI:
``test_matched``, ``test_mismatched`` and the diagnostic ``ax``) is predicted
and written under the file name GLUE's server expects (``CoLA.tsv``,
``SST-2.tsv``, ``MNLI-m.tsv``, ``MNLI-mm.tsv``, ``AX.tsv``, ...), with classes as
it expects them (``0``/``1`` for CoLA, SST-2, MRPC, QQP, WNLI; label strings for
MNLI, AX, QNLI, RTE; scores for STS-B). Without --partial, a set of runs that
does not cover all 11 files is refused before anything is written. Zip the
folder's files to upload them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines._common import die, setup_env

setup_env()

from bertvision.errors import ConfigError  # noqa: E402  (after setup_env)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, dest="runs", help="an adapter run folder (repeat)")
    p.add_argument("--store", action="append", dest="stores",
                   help="the store to predict (once per --run, in order; default: each run's own store)")
    p.add_argument("--out", required=True, help="submission folder to write (must not exist)")
    p.add_argument("--partial", action="store_true", help="write the files the runs give, even if GLUE needs more")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with die.on_errors():
        stores = args.stores or [None] * len(args.runs)
        if len(stores) != len(args.runs):
            raise ConfigError(f"--store: give one per --run ({len(args.runs)}), in order; got {len(stores)}")
        if Path(args.out).exists():
            raise ConfigError(f"--out {args.out} exists; give a new folder for the submission")
        from bertvision.inference.predict import write_glue_submission_folder  # heavy (TensorFlow): after argparse, so that --help answers at once

        written = write_glue_submission_folder(args.runs, stores, args.out, partial=args.partial)
    for name, count in written.items():
        print(f"{name}: {count} predictions")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
