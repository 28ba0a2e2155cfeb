"""The arithmetic of docs/scale.md, measured: SQuAD 2.0 train through BERT-base and BERT-large.

    python -m experiments.scale_squad --data-dir ../shared/data/squad2 --sample 400

1. Featurizes the SQuAD 2.0 training file in ``--data-dir`` as extraction
   does (384 tokens, doc stride 128, questions cut at 64 tokens) with the
   embedded MiniLM's tokenizer, which is BERT's uncased WordPiece vocabulary
   (the one bert-base-uncased and bert-large-uncased use): questions,
   windows, real tokens. For each backbone it plans the shards exactly as
   `Extractor` would for an all-layer float16 ``sequence`` store (128 MB
   shards) and batches each shard as extraction does (length-sorted batches
   of 32, each padded to `bucket_length`), which gives the tokens the
   backbone really computes on. Every total is then scaled to ``--questions``
   (130,319: the published SQuAD 2.0 train), as the file may hold a part of
   it (the shared data's holds 10 of its 442 articles).
2. Measures the per-window cost on this machine: the embedded MiniLM's
   jit-compiled `AllLayersEncoder` (all 7 layers, float16, ``sequence``) over
   a seeded sample of windows in the same batches, after one warm-up pass
   (XLA compiles each batch shape once per worker); from it, the FLOP/s this
   CPU achieves (forward FLOPs per token: ``L (24 d^2 + 4 T d)``, T the
   padded length).
3. Measures the store reader on a ``sequence`` store of the sample (MB/s of
   activations decoded and padded into batches of 32).

Prints the tables docs/scale.md quotes: store sizes per layer subset and dtype,
extraction time from the FLOP counts (this CPU measured; GPUs at a stated
share of their peak, an assumption), and the reader throughput training needs.
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


import numpy as np

from bertvision.models.backbone import AllLayersEncoder, load_backbone, load_tokenizer, resolve_backbone
from bertvision.data.readers import load_examples, seeded_subset
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.data.features import Featurizer, bucket_length, length_sorted_batches
from bertvision.report.table import grid
from bertvision.store.format import open_store, plan_shards

MAX_SEQ_LEN, DOC_STRIDE, MAX_QUERY_LEN, BATCH = 384, 128, 64, 32
# (name, transformer layers L, hidden d): FFN width 4d in all three
MODELS = {"MiniLM-L6 (measured)": (6, 384), "BERT-base": (12, 768), "BERT-large": (24, 1024)}
# achieved forward FLOP/s assumed for GPUs (a share of the dense fp16/bf16 tensor-core peak): assumptions
GPUS = {"A100 (40% of 312 TFLOP/s)": 0.40 * 312e12, "T4 (30% of 65 TFLOP/s)": 0.30 * 65e12}


def batch_shapes(lengths: np.ndarray, record_bytes: np.ndarray, shard_mb: float = 128.0) -> list[tuple[int, int]]:
    """(rows, padded length) of every forward batch extraction runs: shards
    planned by record size, each shard's rows in length-sorted batches."""
    shapes = []
    for start, end in plan_shards(record_bytes, shard_mb):
        for rows in length_sorted_batches(lengths, np.arange(start, end), BATCH):
            shapes.append((len(rows), bucket_length(int(lengths[rows].max()), MAX_SEQ_LEN)))
    return shapes


def flops(shapes, layers: int, hidden: int) -> float:
    """Forward FLOPs of the transformer layers over batches of (rows, length)."""
    return float(sum(b * t * layers * (24 * hidden * hidden + 4 * t * hidden) for b, t in shapes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/squad2")
    p.add_argument("--sample", type=int, default=400, help="questions whose windows are timed (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--questions", type=int, default=130_319,
                   help="questions to scale the totals to (default: all of SQuAD 2.0 train)")
    args = p.parse_args(argv)

    ref = resolve_backbone(None)
    tokenizer, backbone = load_tokenizer(ref), load_backbone(ref)
    featurizer = Featurizer(tokenizer, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE, max_query_len=MAX_QUERY_LEN)
    t0 = time.perf_counter()
    examples = load_examples("squad_v2", "train", args.data_dir).examples
    feats = featurizer.encode("squad_v2", examples)
    lengths = feats.padding_mask.sum(1).astype(np.int64)
    featurize_s = time.perf_counter() - t0
    scale = args.questions / len(examples)
    windows, tokens = len(lengths) * scale, float(lengths.sum()) * scale
    print(f"# SQuAD 2.0 train at scale  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} CPU(s)"
          f"  load average {os.getloadavg()[0]:.1f}")
    print(f"measured file: {len(examples):,} questions, {len(lengths):,} windows "
          f"({len(lengths) / len(examples):.3f} per question), {lengths.mean():.1f} real tokens per window "
          f"(max {lengths.max()}), featurized in {featurize_s:.0f} s; totals below are scaled x{scale:.2f} to "
          f"{args.questions:,} questions: {windows:,.0f} windows, {tokens:,.0f} real tokens")

    # -- the per-window cost, measured on MiniLM
    sample = seeded_subset(examples, min(args.sample, len(examples)), args.seed)
    sf = featurizer.encode("squad_v2", sample)
    s_len = sf.padding_mask.sum(1)
    s_shapes_rows = length_sorted_batches(s_len, np.arange(len(s_len)), BATCH)
    encoder = AllLayersEncoder(backbone, None, "sequence", "float16", jit_compile=True)
    inputs = sf.inputs()

    def run_all():
        for rows in s_shapes_rows:
            t = bucket_length(int(s_len[rows].max()), MAX_SEQ_LEN)
            encoder({k: v[rows, :t] for k, v in inputs.items()}).numpy()

    run_all()  # warm-up: one XLA compilation per batch shape
    t0 = time.perf_counter()
    run_all()
    forward_s = time.perf_counter() - t0
    s_shapes = [(len(rows), bucket_length(int(s_len[rows].max()), MAX_SEQ_LEN)) for rows in s_shapes_rows]
    cpu_flops = flops(s_shapes, 6, 384) / forward_s
    print(f"MiniLM forward on {len(s_len)} sample windows ({len(sample)} questions): {len(s_len) / forward_s:.1f} "
          f"windows/s, {cpu_flops / 1e9:.1f} GFLOP/s achieved on this CPU")

    # -- the reader on a sequence store of the sample
    out = tempfile.mkdtemp(prefix="bench-scale-")
    try:
        data = os.path.join(out, "data")
        os.makedirs(data)
        train = os.path.abspath(os.path.join(args.data_dir, "train-v2.0.json"))
        os.symlink(train, os.path.join(data, "train-v2.0.json"))
        config = ExtractConfig(task="squad_v2", split="train", out=os.path.join(out, "store"), data_dir=data,
                               sample=args.sample, seed=args.seed, token_mode="sequence", max_seq_len=MAX_SEQ_LEN,
                               doc_stride=DOC_STRIDE, max_query_len=MAX_QUERY_LEN, progress=False)
        t0 = time.perf_counter()
        Extractor(config, backbone=backbone, tokenizer=tokenizer).run()
        extract_s = time.perf_counter() - t0
        store = open_store(config.out)
        ds = store.training_dataset("train", BATCH, seed=0, steps_per_epoch=math.ceil(store.num_records("train") / BATCH),
                                    epochs=1, cache=False)
        for _ in ds:
            pass  # warm-up (page cache, autotune)
        t0 = time.perf_counter()
        n = sum(int(f["activations"].shape[0]) for f, _ in ds)
        read_s = time.perf_counter() - t0
        read_mb_s = store.decoded_bytes("train") / read_s / 1e6
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"whole extraction of the sample (Extractor.run: featurize, compile, forward, write): "
          f"{len(s_len) / extract_s:.1f} windows/s; store reader: {n / read_s:.0f} windows/s = {read_mb_s:.0f} MB/s "
          "of activations")

    # -- store sizes
    print("\n## store size, sequence mode (real tokens only), GB = 1e9 bytes")
    rows = []
    for name, (layers, hidden) in list(MODELS.items())[1:]:
        for label, kept in (("all (embeddings + %d)" % layers, layers + 1), ("last 4", 4), ("last 1", 1)):
            size = tokens * kept * hidden
            rows.append([name, label, f"{2 * size / 1e9:,.0f}", f"{4 * size / 1e9:,.0f}",
                         f"{2 * size / windows / 1e6:.2f} MB"])
        rows.append([name, "cls mode, all layers", f"{2 * windows * (layers + 1) * hidden / 1e9:.2f}",
                     f"{4 * windows * (layers + 1) * hidden / 1e9:.2f}", f"{2 * (layers + 1) * hidden / 1e3:.0f} KB"])
    print(grid(["backbone", "layers kept", "float16 / bfloat16", "float32", "per window (float16)"], rows))

    # -- extraction time
    print("\n## extraction compute, all-layer float16 sequence stores (128 MB shards, length-sorted batches of 32)")
    rows = []
    for name, (layers, hidden) in MODELS.items():
        per_window = lengths * (layers + 1) * hidden * 2
        shapes = batch_shapes(lengths, per_window)
        total = flops(shapes, layers, hidden) * scale
        padded = sum(b * t for b, t in shapes) * scale
        gpu_hours = [total / rate / 3600 for rate in GPUS.values()]
        a100 = windows / (total / list(GPUS.values())[0])  # windows/s one A100 computes
        rows.append([name, f"{padded:,.0f}", f"{total / 1e12:,.0f}", f"{total / cpu_flops / 3600:,.1f}",
                     *(f"{h:.2f}" for h in gpu_hours), f"{a100:,.0f}", f"{a100 * per_window.mean() / 1e6:,.0f}"])
    print(grid(["backbone", "padded tokens", "forward TFLOP", "this CPU, hours (measured rate)",
                *(f"{g}: GPU-hours" for g in GPUS), "windows/s per A100", "write MB/s per A100"], rows))

    # -- reader throughput
    print("\n## reader throughput training needs (batch 32), float16 sequence stores")
    rows = []
    for name, (layers, hidden) in list(MODELS.items())[1:]:
        for label, kept in (("all", layers + 1), ("last 4", 4)):
            step = BATCH * tokens / windows * kept * hidden * 2
            rows.append([name, label, f"{step / 1e6:.0f}", f"{10 * step / 1e9:.1f}", f"{50 * step / 1e9:.1f}",
                         f"{read_mb_s * 1e6 / step:.1f}"])
    print(grid(["backbone", "layers kept", "MB per step", "GB/s at 10 steps/s", "GB/s at 50 steps/s",
                "this CPU's reader, steps/s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
