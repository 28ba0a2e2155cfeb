"""What verifying a store costs: `open_store(verify=True)` on a 1 GB store,
beside one pass of the training reader over the same store and a bare sha256
of its files, measured in the same run.

    python -m experiments.verify_store                 # writes a 1 GB store into a temp folder
    python -m experiments.verify_store --gib 0.25 --keep /tmp/store

The store is written with the real writer (`StoreSpec`, `ShardWriter`,
`finalize_split`): a ``sequence`` store of random float16 activations shaped as
MiniLM's (7 layers x 384), 48 tokens per record, 128 MB shards. Verification
reads every shard once (sha256, record count, first record's size); the reader
pass decodes every record as a fit's first epoch does. The page cache is warm
for all three (each is timed after a warm-up read), so the figures compare
CPU work, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time


import numpy as np

from bertvision import io
from bertvision.report.table import grid
from bertvision.store.format import ShardWriter, StoreSpec, finalize_split, open_store, plan_shards, serialize_record, \
    shard_name

LAYERS, HIDDEN, TOKENS = 7, 384, 48


def write_store(folder: str, gib: float) -> int:
    """A synthetic sequence store of about `gib` GiB; returns its bytes."""
    per_record = LAYERS * TOKENS * HIDDEN * 2
    n = int(gib * (1 << 30) / per_record)
    spec = StoreSpec(task="sst2", task_kind="classification", label_names=["negative", "positive"],
                     backbone={"name": "synthetic"}, tokenizer="none", layers=list(range(LAYERS)),
                     num_model_layers=LAYERS - 1, hidden=HIDDEN, token_mode="sequence", max_seq_len=64,
                     dtype="float16", featurizer={"max_seq_len": 64})
    bounds = plan_shards(np.full(n, per_record), 128.0)
    io.makedirs(folder)
    io.atomic_write_json(io.join(folder, "train.plan.json"),
                         {"split": "train", "num_examples": n, "num_records": n, "shards": [list(b) for b in bounds],
                          "header": spec.header(), "skipped": [], "provenance": {}})
    io.atomic_write_text(io.join(folder, "train.examples.jsonl"),
                         "".join(f'{{"uid": "{i}", "label": {i % 2}}}\n' for i in range(n)))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((LAYERS, TOKENS, HIDDEN)).astype(np.float16)
    for index, (start, end) in enumerate(bounds):
        writer = ShardWriter(io.join(folder, shard_name("train", index, len(bounds))))
        for i in range(start, end):
            record = serialize_record(block, length=TOKENS, uid=str(i), example_index=i, label=i % 2)
            writer.write(record, block.nbytes)
        writer.commit()
    manifest = finalize_split(folder, "train", spec.header(), {})
    return int(manifest["splits"]["train"]["bytes"])


def timed(fn) -> float:
    fn()  # warm-up: page cache, tracing
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=1.0, help="store size in GiB (default 1)")
    p.add_argument("--keep", default=None, help="write the store here and keep it (default: a temp folder)")
    args = p.parse_args(argv)
    if not args.gib > 0:
        print("error: --gib must be > 0", file=sys.stderr)
        return 2
    folder = args.keep or tempfile.mkdtemp(prefix="bench-verify-")
    try:
        t0 = time.perf_counter()
        size = write_store(folder, args.gib)
        write_s = time.perf_counter() - t0
        store = open_store(folder)
        shards = store.shard_paths("train")

        def sha_only():
            for path in shards:
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(8 << 20), b""):
                        digest.update(chunk)

        def read_once():
            n = store.num_records("train")
            for _ in store.training_dataset("train", 64, seed=0, steps_per_epoch=-(-n // 64), epochs=1, cache=False):
                pass

        verify_s = timed(lambda: open_store(folder, verify=True))
        sha_s = timed(sha_only)
        read_s = timed(read_once)
        gib = size / (1 << 30)
        print(f"# store verification  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
              f"{os.cpu_count()} CPU cores  store {gib:.2f} GiB in {len(shards)} shards "
              f"({store.num_records('train')} records; written in {write_s:.0f} s)")
        print(grid(["what", "seconds", "GiB/s", "vs one reader pass"],
                   [[name, f"{seconds:.2f}", f"{gib / seconds:.2f}", f"{seconds / read_s:.2f}x"]
                    for name, seconds in (("open_store(verify=True)", verify_s), ("bare sha256 of the shards", sha_s),
                                          ("baseline: one training-reader pass", read_s))]))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
