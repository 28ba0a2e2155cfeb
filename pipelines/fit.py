"""python -m pipelines.fit: train an adapter on a store, write a run folder.

Examples::

    python -m pipelines.fit --store tfrecords/sst2 --adapter adapter_pooler --out runs/sst2-pooler \\
        --epochs 10 --batch-size 64 --lr 1e-3 --adapter-dim 64 --patience 3
    python -m pipelines.fit --config runs/sst2-pooler/config.json --out runs/sst2-pooler-again
    python -m pipelines.fit --store tfrecords/sst2 --adapter cnn --out runs/x --strategy mirrored
    # a store of your own data keeping several label columns: a head for column "topic"
    python -m pipelines.fit --store tfrecords/tickets --label-column topic --adapter adapter_pooler --out runs/topic

Run again with the same arguments to resume a killed fit from its last epoch.
``BERTVISION_CPU_DEVICES=N`` splits the CPU into N logical devices (to try
``--strategy mirrored`` without GPUs). Outputs: RUN_DIR/config.json,
model.keras, results.json, predictions/<split>.npz, logs/ (TensorBoard).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.config import SCHEDULES, STRATEGIES  # noqa: E402  (after setup_env)
from bertvision.errors import ConfigError  # noqa: E402
from bertvision.models import (FIT_KINDS, LAYER_POOLINGS, STORE_DERIVED, TOKEN_POOLINGS, WINDOW_POOLINGS,  # noqa: E402
                               ModelConfig)

CPU_DEVICES_ENV = "BERTVISION_CPU_DEVICES"
_CHOICES = {"layer_pooling": LAYER_POOLINGS, "token_pooling": TOKEN_POOLINGS, "window_pooling": WINDOW_POOLINGS}
_NOT_FLAGS = STORE_DERIVED + ("kind", "name")  # ModelConfig fields that are not adapter flags


def _adapter_fields():
    """(name, type, default, choices) of the user-settable ModelConfig fields."""
    out = []
    for f in dataclasses.fields(ModelConfig):
        if f.name in _NOT_FLAGS:
            continue
        default = f.default
        kind = type(default) if default is not None else str
        out.append((f.name, kind, default, _CHOICES.get(f.name)))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # every default is None: a flag given overrides --config, the rest come from FitConfig's defaults
    p.add_argument("--config", help="a run's config.json to re-run (flags given override it)")
    p.add_argument("--store", help="store folder (from pipelines.extract)")
    p.add_argument("--adapter", "--model", dest="adapter", choices=FIT_KINDS,
                   help="adapter kind; cosine: the zero-shot cosine of a --pair-mode separate store, no training "
                        "(two classes: threshold chosen on the training split)")
    p.add_argument("--out", help="run folder to write")
    p.add_argument("--label-column", help="your own data's store: the label column to train a head for (default: "
                                         "the first --label-column given to pipelines.extract)")
    p.add_argument("--train-split", help="split to train on (default train)")
    p.add_argument("--eval-split", action="append", dest="eval_splits",
                   help="split(s) to evaluate each epoch; repeat the flag (default: the task's eval splits in the store)")
    p.add_argument("--epochs", type=int, help="default 10")
    p.add_argument("--batch-size", type=int, help="global batch size (default 64)")
    p.add_argument("--eval-batch-size", type=int, help="default 256")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup", type=float, help="warmup as a fraction of all steps (default 0.1)")
    p.add_argument("--schedule", choices=SCHEDULES, help="decay after warmup (default linear)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--train-fraction", type=float,
                   help="seeded fraction of the training examples (span: whole questions); default 1")
    p.add_argument("--strategy", choices=STRATEGIES, help="tf.distribute strategy")
    p.add_argument("--tpu", help="TPU name for --strategy tpu (empty: the local one)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better dev main metric")
    p.add_argument("--group-by-length", type=int, metavar="N",
                   help="a sequence store: batches of texts of similar length, cut from every N batches' worth of "
                        "shuffled texts (less padding, faster steps; 0: off, the default)")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA-compile the train and predict steps (default on)")
    p.add_argument("--steps-per-execution", type=int, help="train steps per compiled call (default 1)")
    p.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                   help="do not read every shard before training (checksums, record counts, record sizes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    group = p.add_argument_group("adapter hyperparameters (bertvision.models.ModelConfig)")
    for name, kind, default, choices in _adapter_fields():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, dest=f"m_{name}", action=argparse.BooleanOptionalAction, default=None,
                               help=f"default {default}")
        else:
            group.add_argument(flag, dest=f"m_{name}", type=kind, choices=choices, help=f"default {default}")
    return p


def config_from_args(args: argparse.Namespace, argv: list[str] | None = None):
    """A `bertvision.training.fit.FitConfig` from --config (if any) and the flags given."""
    from bertvision.training.fit import FitConfig  # heavy (TensorFlow): after argparse, so that --help answers at once

    base = {}
    if args.config:
        base = FitConfig.load(args.config).to_dict()
        for key in ("command", "verbose", "search"):
            base.pop(key, None)
    values = {k: v for k, v in vars(args).items() if v is not None}
    adapter = dict(base.get("adapter") or {})
    if "adapter" in values:
        if adapter.get("kind") not in (None, values["adapter"]):
            adapter = {}  # another kind: the saved adapter settings do not apply
        adapter["kind"] = values["adapter"]
    for key, value in values.items():
        if key.startswith("m_"):
            adapter[key[2:]] = value
    data = dict(base)
    for key in ("store", "out", "train_split", "eval_splits", "epochs", "batch_size", "eval_batch_size", "lr",
                "weight_decay", "warmup", "schedule", "seed", "train_fraction", "strategy", "tpu", "patience",
                "jit_compile", "steps_per_execution", "verify", "label_column", "group_by_length"):
        if key in values:
            data[key] = values[key]
    missing = [flag for flag, key in (("--store", "store"), ("--out", "out")) if not data.get(key)]
    if not adapter.get("kind"):
        missing.append("--adapter")
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required (or --config RUN_DIR/config.json)")
    data["adapter"] = adapter
    data["verbose"] = 0 if args.quiet else 1
    data["command"] = ["python", "-m", "pipelines.fit", *(sys.argv[1:] if argv is None else argv)]
    return FitConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    devices = os.environ.get(CPU_DEVICES_ENV)
    with die.on_errors():
        from bertvision.distribute import split_cpu_devices  # heavy (TensorFlow): after argparse, so that --help answers at once
        from bertvision.training.fit import fit

        if devices:  # before TensorFlow initialises its devices
            try:
                split_cpu_devices(int(devices))
            except ValueError:
                raise ConfigError(f"{CPU_DEVICES_ENV}={devices!r} is not a number of devices") from None
        config = config_from_args(args, argv)
        results = fit(config)
    dev = ", ".join(f"{k}={v:.4f}" for k, v in results.dev_metrics.items()
                    if isinstance(v, float) and not k.endswith("total"))
    note = results.selection_note()
    if results.best_epoch is None:  # the cosine: nothing trained
        hp = results.hyperparameters
        chosen = f", threshold {hp['threshold']:.4f} chosen on {hp['threshold_chosen_on']}" if hp.get("threshold") \
            is not None else ""
        print(f"{results.method} on {results.task}: zero-shot, no training{chosen}, {dev} -> {config.out}")
        return 0
    print(f"{results.method} on {results.task}: best epoch {results.best_epoch:g}, {dev}"
          f"{f' ({note})' if note else ''}; {results.train_examples_per_s:.0f} train examples/s -> {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
