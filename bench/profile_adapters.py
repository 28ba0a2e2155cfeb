"""Profile adapter training speed on random stored-activation-shaped data.

Builds each adapter kind for a sequence input `[7, 128, 384]` and a vector
input `[7, 384]`, trains on seeded random float16 data with `model.fit` on an
in-memory `tf.data.Dataset` (from tensors, prefetched), and prints trainable
params and training examples/s, with `jit_compile` on and off, for each batch
size.

    python bench/profile_adapters.py                       # everything
    python bench/profile_adapters.py --inputs sequence --batch-sizes 32 \
        --variants adapter_pooler adapter_pooler:layer_pooling=concat

A variant is `kind[:field=value[,field=value]]` with `ModelConfig` fields.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bertvision.models import KINDS, ModelConfig, build_model, trainable_params  # noqa: E402

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
        lengths = rng.integers(8, config.tokens + 1, size=n)
        features["padding_mask"] = (
            np.arange(config.tokens)[None, :] < lengths[:, None]
        ).astype(np.int32)
    labels = rng.integers(0, config.num_labels, size=n).astype(np.int32)
    return features, labels


def profile(config: ModelConfig, batch_size: int, jit: bool, steps: int,
            warmup: int, data) -> dict:
    keras.utils.set_random_seed(0)
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
    parser.add_argument("--examples", type=int, default=1024, help="rows of random data")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="approximate timed seconds per measurement")
    parser.add_argument("--min-steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    rows = []
    header = f"{'input':9} {'variant':42} {'batch':>5} {'jit':>5} {'params':>8} {'ex/s':>9} {'step ms':>8} {'1st fit s':>9}"
    print(header)
    print("-" * len(header))
    for input_name in args.inputs:
        for variant in args.variants:
            kind, overrides = parse_variant(variant)
            config = ModelConfig(kind=kind, task_kind="classification", num_labels=2,
                                 num_layers=7, hidden=384, tokens=INPUTS[input_name],
                                 **overrides)
            data = make_data(config, args.examples, args.seed)
            for batch_size in args.batch_sizes:
                for jit in args.jit:
                    jit_on = jit == "true"
                    # A quick probe sizes the timed run to about --seconds.
                    probe = profile(config, batch_size, jit_on, args.min_steps,
                                    args.warmup, data)
                    steps = max(args.min_steps, int(args.seconds * probe["examples_per_s"] / batch_size))
                    row = probe if steps <= args.min_steps else profile(
                        config, batch_size, jit_on, steps, args.warmup, data)
                    row.update(input=input_name, variant=variant, batch_size=batch_size,
                               jit_compile=jit_on, steps=steps)
                    rows.append(row)
                    print(f"{input_name:9} {variant:42} {batch_size:>5} {jit:>5} "
                          f"{row['params']:>8} {row['examples_per_s']:>9.0f} "
                          f"{row['step_ms']:>8.1f} {row['first_fit_s']:>9.1f}", flush=True)
                    keras.backend.clear_session()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
