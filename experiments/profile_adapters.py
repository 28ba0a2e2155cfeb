"""Profile adapter training speed on random stored-activation-shaped data.

Builds each adapter kind for a sequence input `[7, 128, 384]` and a vector
input `[7, 384]`, trains on seeded random float16 data with `model.fit` on an
in-memory `tf.data.Dataset` (from tensors, prefetched), and prints trainable
params and training examples/s, with `jit_compile` on and off, for each batch
size.

    python -m experiments.profile_adapters                       # everything
    python -m experiments.profile_adapters --inputs sequence --batch-sizes 32 \
        --variants adapter_pooler adapter_pooler:layer_pooling=concat

A variant is `kind[:field=value[,field=value]]` with `ModelConfig` fields.

`--task-kind span --max-seq-len 384` profiles SQuAD-shaped heads (per-token
start/end logits). `--dropout bertvision keras` measures each row twice: with
BERTVision's `Dropout` and with `keras.layers.Dropout` (the baseline), and
prints the speed ratio:

    python -m experiments.profile_adapters --inputs sequence --task-kind span --max-seq-len 384 \
        --batch-sizes 32 --jit true --dropout bertvision keras
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import keras
import numpy as np
import tensorflow as tf

from bertvision import io
from bertvision.errors import BertVisionError
from bertvision.models import KINDS, ModelConfig, build_model, trainable_params
from bertvision.models import zoo

INPUTS = {"sequence": 128, "vector": None}


def parse_variant(text: str) -> tuple[str, dict]:
    kind, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return kind, overrides


def make_data(config: ModelConfig, n: int, seed: int):
    """Seeded random float16 activations (layer scales differ, as in BERT)."""
    rng = np.random.default_rng(seed)
    shape = (n,) + config.activations_shape
    scales = np.linspace(0.5, 4.0, config.num_layers).reshape(
        (1, -1) + (1,) * (len(shape) - 2)
    )
    features = {
        "activations": (rng.standard_normal(shape, dtype=np.float32) * scales).astype(
            np.float16
        )
    }
    if config.is_sequence:
        lengths = rng.integers(8, config.max_seq_len + 1, size=n)
        features["padding_mask"] = (
            np.arange(config.max_seq_len)[None, :] < lengths[:, None]
        ).astype(np.int32)
    if config.task_kind == "span":
        ends = features["padding_mask"].sum(axis=1)
        start = (rng.random(n) * ends).astype(np.int32)
        return features, {"start_logits": start, "end_logits": np.minimum(start + 3, ends - 1).astype(np.int32)}
    labels = rng.integers(0, config.num_labels, size=n).astype(np.int32)
    return features, labels


@contextlib.contextmanager
def dropout_layer(which: str):
    """Build adapters with BERTVision's `Dropout` or, as a baseline,
    `keras.layers.Dropout` (whose mask is ~100x slower under XLA on CPU)."""
    ours = zoo.Dropout
    zoo.Dropout = ours if which == "bertvision" else keras.layers.Dropout
    try:
        yield
    finally:
        zoo.Dropout = ours


def profile(config: ModelConfig, batch_size: int, jit: bool, steps: int,
            warmup: int, data, dropout: str = "bertvision") -> dict:
    keras.utils.set_random_seed(0)
    with dropout_layer(dropout):
        model = build_model(config)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices(data)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    wall = time.perf_counter() - start
    loss = history.history["loss"][-1]
    return {
        "params": trainable_params(model),
        "examples_per_s": steps * batch_size / wall,
        "step_ms": 1000.0 * wall / steps,
        "first_fit_s": compile_s,
        "loss": float(loss),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(KINDS))
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--jit", nargs="+", default=["true", "false"], choices=["true", "false"])
    parser.add_argument("--task-kind", default="classification", choices=["classification", "span"])
    parser.add_argument("--max-seq-len", "--tokens", dest="max_seq_len", type=int, default=INPUTS["sequence"],
                        help="tokens of a sequence input (--tokens is an old alias)")
    parser.add_argument("--dropout", nargs="+", default=["bertvision"], choices=["bertvision", "keras"],
                        help="dropout layer(s) to build with; 'keras' is the baseline")
    parser.add_argument("--examples", type=int, default=1024, help="rows of random data")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="approximate timed seconds per measurement")
    parser.add_argument("--min-steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    rows = []
    if args.task_kind == "span" and "vector" in args.inputs:
        parser.error("--task-kind span needs --inputs sequence")
    header = (f"{'input':9} {'variant':42} {'batch':>5} {'jit':>5} {'dropout':>10} {'params':>8} {'ex/s':>9} "
              f"{'step ms':>8} {'1st fit s':>9} {'vs keras':>8}")
    print(header)
    print("-" * len(header))
    for input_name in args.inputs:
        for variant in args.variants:
            kind, overrides = parse_variant(variant)
            tokens = args.max_seq_len if input_name == "sequence" else None
            try:
                config = ModelConfig(kind=kind, task_kind=args.task_kind, num_labels=2,
                                     num_layers=7, hidden=384, max_seq_len=tokens, **overrides)
            except (BertVisionError, TypeError) as err:  # a bad value, an unknown field
                parser.error(f"variant {variant!r}: {err}")
            data = make_data(config, args.examples, args.seed)
            for batch_size in args.batch_sizes:
                for jit in args.jit:
                    jit_on = jit == "true"
                    speeds = {}
                    for dropout in sorted(args.dropout, key=lambda d: d != "keras"):  # the baseline first
                        # A quick probe sizes the timed run to about --seconds.
                        probe = profile(config, batch_size, jit_on, args.min_steps,
                                        args.warmup, data, dropout)
                        steps = max(args.min_steps, int(args.seconds * probe["examples_per_s"] / batch_size))
                        row = probe if steps <= args.min_steps else profile(
                            config, batch_size, jit_on, steps, args.warmup, data, dropout)
                        speeds[dropout] = row["examples_per_s"]
                        ratio = row["examples_per_s"] / speeds["keras"] if "keras" in speeds and dropout != "keras" else None
                        row.update(input=input_name, variant=variant, batch_size=batch_size, tokens=tokens,
                                   task_kind=args.task_kind, jit_compile=jit_on, dropout=dropout, steps=steps,
                                   speed_vs_keras_dropout=ratio)
                        rows.append(row)
                        print(f"{input_name:9} {variant:42} {batch_size:>5} {jit:>5} {dropout:>10} "
                              f"{row['params']:>8} {row['examples_per_s']:>9.0f} "
                              f"{row['step_ms']:>8.1f} {row['first_fit_s']:>9.1f} "
                              f"{'' if ratio is None else f'{ratio:.2f}x':>8}", flush=True)
                        keras.backend.clear_session()
                    if "keras" in speeds and "bertvision" in speeds:
                        print(f"{'':9} {'':42} BERTVision's Dropout: {speeds['bertvision'] / speeds['keras']:.1f}x "
                              f"the examples/s of keras.layers.Dropout", flush=True)
    if args.json:
        io.atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
