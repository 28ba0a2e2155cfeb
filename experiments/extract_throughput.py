"""Extraction benchmark: throughput vs the bare forward pass, store size, read speed.

    python -m experiments.extract_throughput --data-dir ../shared/data/glue/SST-2 --n 2000

Prints, for ``--token-mode cls`` and ``--token-mode sequence`` on the embedded MiniLM:

- extraction examples/s (featurize + forward + serialize + write, the
  complete ``Extractor.run``) next to the backbone's own jit-compiled forward
  pass on the same length-sorted batches (same shapes, same number of XLA
  compilations), and their ratio (target >= 0.85);
- the same forward pass on batches in row order (the naive loop, padding
  each batch to its longest row's bucket), and extraction's speed-up over it;
- store bytes vs raw activation bytes (target within 2%);
- read speed of the store through the tf.data reader next to the training
  speed of the adapter that consumes it (target >= 5x).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time


import keras
import numpy as np
import tensorflow as tf

from bertvision.models.backbone import load_backbone, load_tokenizer, resolve_backbone
from bertvision.data.readers import load_examples
from bertvision.errors import BertVisionError
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.data.features import Featurizer, bucket_length, length_sorted_batches
from bertvision.models import ModelConfig, build_model
from bertvision.report.table import grid
from bertvision.store.format import open_store
from bertvision.training.trainer import compile_for_task


def bare_forward_rate(backbone, features, batch_size, max_seq_len, sort=True):
    """Examples/s of a fresh jit-compiled ``backbone(inputs)`` over bucketed
    batches (compilation included, as in extraction): ``sort`` the
    length-sorted batches extraction runs, else batches in row order."""
    forward = tf.function(lambda b: backbone(b, training=False)["sequence_output"], jit_compile=True,
                          reduce_retracing=True)
    lengths = features.padding_mask.sum(1)
    n = len(lengths)
    if sort:
        batches = length_sorted_batches(lengths, np.arange(n), batch_size)
    else:
        batches = [np.arange(b0, min(b0 + batch_size, n)) for b0 in range(0, n, batch_size)]
    start = time.perf_counter()
    for rows in batches:
        t = bucket_length(int(lengths[rows].max()), max_seq_len)
        batch = {k: getattr(features, k)[rows, :t] for k in ("token_ids", "segment_ids", "padding_mask")}
        forward(batch).numpy()
    return n / (time.perf_counter() - start)


def one_epoch(store, split, batch_size):
    """One shuffled training epoch of `split` as `fit` reads it, uncached."""
    steps = math.ceil(store.num_records(split) / batch_size)
    return store.training_dataset(split, batch_size, seed=0, steps_per_epoch=steps, epochs=1, cache=False)


def read_rate(store, split, batch_size=64, repeats=2):
    ds = one_epoch(store, split, batch_size)
    n = 0
    for _ in ds:  # warm-up pass (file cache, tf.data autotune)
        pass
    start = time.perf_counter()
    for _ in range(repeats):
        for features, _ in ds:
            n += int(features["activations"].shape[0])
    return n / (time.perf_counter() - start)


def adapter_rate(store, split, kind="adapter_pooler", batch_size=64, epochs=2):
    config = ModelConfig.from_store(store, {"kind": kind})
    model = build_model(config)
    compile_for_task(model, config.task_kind, keras.optimizers.AdamW(1e-3), jit_compile=True)
    ds = one_epoch(store, split, batch_size)
    # cache in memory: we time the model's consumption alone, without the reader
    cached = ds.cache()
    model.fit(cached, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(cached, epochs=epochs, verbose=0)
    return epochs * store.num_records(split) / (time.perf_counter() - start)


def measure(args) -> list[tuple]:
    """One row per token mode (see the module docstring)."""
    ref = resolve_backbone(None)
    backbone, tokenizer = load_backbone(ref), load_tokenizer(ref)
    examples = load_examples("sst2", args.split, args.data_dir, limit=args.n).examples
    features = Featurizer(tokenizer, max_seq_len=args.max_seq_len).encode("sst2", examples)
    print(f"# extraction benchmark  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
          f"{os.cpu_count()} CPU cores  sst2/{args.split} first {len(examples)} examples, "
          f"max_seq_len {args.max_seq_len}, batch {args.batch_size}, embedded all-MiniLM-L6-v2")
    rows = []
    for token_mode in args.token_modes:
        bare = bare_forward_rate(backbone, features, args.batch_size, args.max_seq_len)
        naive = bare_forward_rate(backbone, features, args.batch_size, args.max_seq_len, sort=False)
        out = tempfile.mkdtemp(prefix=f"bench-{token_mode}-")
        try:
            config = ExtractConfig(task="sst2", split=args.split, out=out, data_dir=args.data_dir, limit=args.n,
                                   token_mode=token_mode, max_seq_len=args.max_seq_len, batch_size=args.batch_size,
                                   progress=False)
            start = time.perf_counter()
            Extractor(config, backbone=backbone, tokenizer=tokenizer).run()
            extract = len(examples) / (time.perf_counter() - start)
            store = open_store(out)
            stored, raw = store.split_bytes(args.split), store.decoded_bytes(args.split)
            read = read_rate(store, args.split)
            train = adapter_rate(store, args.split)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append((token_mode, extract, bare, extract / bare, naive, extract / naive, stored, raw, stored / raw,
                     read, train, read / train))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/glue/SST-2")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=2000, help="examples (the first N of the split)")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--token-mode", "--tokens", dest="token_modes", nargs="+", default=["cls", "sequence"],
                   help="token modes to extract (--tokens is an old alias)")
    args = p.parse_args(argv)
    try:
        rows = measure(args)
    except BertVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    header = ("tokens", "extract ex/s", "bare fwd ex/s (same sorted batches)", "ratio (>=0.85)",
              "bare fwd ex/s (row order)", "extract / row-order fwd", "store bytes", "raw act. bytes",
              "size ratio (<=1.02)", "read ex/s", "adapter_pooler train ex/s", "read/train (>=5)")
    formats = ("", ".1f", ".1f", ".2f", ".1f", ".2f", ",", ",", ".4f", ".0f", ".0f", ".1f")
    print(grid(header, [[format(value, f) for value, f in zip(r, formats)] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
