"""BERT fine-tuning vs adapters on frozen activations, SST-2.

On a seeded random subset of SST-2 train (8,000 examples by default, the
same draw for fine-tuning and extraction: ``--sample N --seed S``) and the
full dev set:

1. fine-tune MiniLM for 1 epoch, checkpointing and evaluating every 0.1
   epoch (dev accuracy + cumulative training time per checkpoint);
2. extract the frozen backbone and train ``adapter_pooler`` on it;
3. extract the 1-epoch checkpoint and train ``adapter_pooler`` on that;
4. ensemble BERT with each adapter (mean of probabilities, and max).

Everything goes through the command-line pipelines (one subprocess each),
into ``--work`` (re-running resumes / reuses finished steps). Prints one
table with the fine-tuned BERT baseline beside every row.

    python -m experiments.finetune_vs_adapters --data-dir ../shared/data/glue/SST-2 --work experiments_out/ft   # ~15 min+
    python -m experiments.finetune_vs_adapters --quick --work /tmp/ftq                                    # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]

from bertvision import io
from bertvision.runs import RunFolder, RunResults


def run(cmd: list[str], log: Path) -> float:
    """Run one pipeline, stderr/stdout to `log`; returns wall seconds."""
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    with open(log, "a") as handle:
        proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"})
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return time.perf_counter() - t


def results(folder: Path) -> RunResults:
    return RunFolder(folder).results()


def _seconds(value: float | None) -> float:
    return float("nan") if value is None else value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    p.add_argument("--work", default=str(REPO / "experiments_out" / "finetune_vs_adapters"))
    p.add_argument("--sample", type=int, default=8000, help="seeded training subset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", "--model", dest="backbone", default=None,
                   help="backbone (default: embedded MiniLM; --model is an old alias)")
    p.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs")
    p.add_argument("--checkpoint-every", type=float, default=0.1)
    p.add_argument("--max-seq-len", type=int, default=64, help="SST-2 sentences fit in 64 tokens")
    p.add_argument("--token-mode", "--tokens", dest="token_mode", default="sequence", choices=["cls", "mean", "sequence"],
                   help="store kind for the adapter (--tokens is an old alias)")
    p.add_argument("--adapter-epochs", type=int, default=10)
    p.add_argument("--dev-limit", type=int, default=None, help="first N dev examples (default: all 872)")
    p.add_argument("--no-jit", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 64 train / 64 dev examples, 32 tokens, checkpoints at 0.5, 2 adapter epochs")
    a = p.parse_args(argv)
    if a.quick:
        a.sample, a.dev_limit, a.max_seq_len, a.checkpoint_every, a.adapter_epochs = 64, 64, 32, 0.5, 2
        a.no_jit = True
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    data = ["--task", "sst2", "--data-dir", a.data_dir]
    backbone = ["--backbone", a.backbone] if a.backbone else []
    nojit = ["--no-jit"] if a.no_jit else []
    dev_limit = ["--limit", str(a.dev_limit)] if a.dev_limit else []
    walls = {}

    # 1. BERT fine-tuning, the baseline.
    bert = work / "bert"
    walls["bert"] = run(["pipelines.finetune", *data, *backbone, "--out", str(bert), "--sample", str(a.sample),
                         "--seed", str(a.seed), "--epochs", str(a.epochs), "--checkpoint-every", str(a.checkpoint_every),
                         "--max-seq-len", str(a.max_seq_len), "--no-progress", *nojit,
                         *(["--eval-limit", str(a.dev_limit)] if a.dev_limit else [])], log)
    final_ckpt = bert / results(bert).checkpoints["final"]

    # 2./3. Extract the frozen and the fine-tuned backbone; adapter_pooler on each.
    adapters = {}
    for name, source in (("frozen", backbone), ("finetuned", ["--backbone", str(final_ckpt)])):
        store = work / f"store-{name}"
        common = [*data, *source, "--out", str(store), "--token-mode", a.token_mode, "--max-seq-len", str(a.max_seq_len),
                  "--no-progress", *nojit]
        walls[f"extract-{name}"] = run(["pipelines.extract", *common, "--split", "train", "--sample", str(a.sample),
                                        "--seed", str(a.seed)], log)
        walls[f"extract-{name}"] += run(["pipelines.extract", *common, "--split", "dev", *dev_limit], log)
        out = work / f"adapter-{name}"
        walls[f"adapter-{name}"] = run(["pipelines.fit", "--store", str(store), "--adapter", "adapter_pooler",
                                        "--out", str(out), "--epochs", str(a.adapter_epochs), "--seed", str(a.seed),
                                        "--quiet"], log)
        adapters[name] = out

    # 4. Ensembles of BERT with each adapter.
    ensembles = {}
    for name, adapter in adapters.items():
        for mode in ("mean", "max"):
            out = work / f"ensemble-{mode}-{name}"
            walls[out.name] = run(["pipelines.ensemble", "--runs", str(bert), str(adapter), "--split", "dev",
                                   "--combine", mode, "--out", str(out)], log)
            ensembles[(mode, name)] = out

    # Report.
    rb = results(bert)
    base = rb.dev_metrics["accuracy"]
    dev_examples = len(RunFolder(bert).load_predictions("dev").uids)
    print(f"\nSST-2, {rb.train_examples} train examples (seeded sample, seed {a.seed}), "
          f"{dev_examples} dev examples; baseline = fine-tuned BERT after "
          f"{rb.history[-1].epoch:g} epoch: dev accuracy {base:.4f}\n")
    head = f"{'method':<46s} {'dev acc':>8s} {'BERT':>8s} {'delta':>8s} {'train s':>9s} {'trainable':>11s}"
    print(head)
    print("-" * len(head))
    for h in rb.history:
        acc = h.dev["accuracy"]
        print(f"{'bert_finetune @ epoch ' + format(h.epoch, '.2f'):<46s} {acc:8.4f} {base:8.4f} "
              f"{acc - base:+8.4f} {_seconds(h.train_time_s):9.1f} {rb.trainable_params:11,d}")
    for name, out in adapters.items():
        r = results(out)
        acc = r.dev_metrics["accuracy"]
        extract_s = walls[f"extract-{name}"]
        print(f"{'adapter_pooler on ' + name + ' backbone':<46s} {acc:8.4f} {base:8.4f} {acc - base:+8.4f} "
              f"{_seconds(r.train_wall_time_s):9.1f} {r.trainable_params or 0:11,d}"
              f"   (+ extraction {extract_s:.0f} s wall)")
    for (mode, name), out in ensembles.items():
        acc = results(out).dev_metrics["accuracy"]
        print(f"{f'ensemble({mode}: bert + adapter on {name})':<46s} {acc:8.4f} {base:8.4f} {acc - base:+8.4f} "
              f"{'':>9s} {'':>11s}")
    other_s = rb.total_wall_time_s - rb.train_wall_time_s  # loading, featurizing, evaluating, checkpointing
    print(f"\nBERT fine-tuning: {rb.train_examples_per_s} train examples/s, {rb.train_wall_time_s:.0f} s "
          f"training + {other_s:.0f} s loading and evaluating {len(rb.history)} checkpoints; "
          f"best checkpoint {rb.checkpoints['best']} ({rb.best_dev_metrics['accuracy']:.4f})")
    print("wall seconds per step (incl. start-up):", json.dumps({k: round(v, 1) for k, v in walls.items()}))
    summary = {"baseline_accuracy": base, "bert_history": [dataclasses.asdict(h) for h in rb.history],
               "adapters": {n: results(o).dev_metrics for n, o in adapters.items()},
               "ensembles": {f"{m}-{n}": results(o).dev_metrics for (m, n), o in ensembles.items()},
               "walls": walls}
    io.atomic_write_json(work / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
