"""Sweep BERT's fine-tuning recipe (learning rate x epochs) on SST-2 and MRPC.

    python -m experiments.finetune_sweep --work experiments_out/sweep            # resumable
    python -m experiments.finetune_sweep --tasks sst2 --lrs 5e-5,1e-4 --epochs 3
    python -m experiments.finetune_sweep --tasks sst2 --lora-rank 8 --lrs 5e-4,1e-3,2e-3 --epochs 2
    python -m experiments.finetune_sweep --tasks sst2 --limit 64 --eval-limit 32 --epochs 1   # a smoke run

Each (task, lr) is one `pipelines.finetune` run of ``--epochs`` epochs
(warmup 10%, linear decay, batch 32), scored at every epoch end; the table
gives dev metrics of every (lr, epoch) and marks the best, beside the fixed
recipe measured in the same sweep (`pipelines.finetune`'s default lr 5e-5,
read at epochs 1 and 2; the reproduction used it for SST-2 and MRPC until
this sweep moved them to 1e-4). The same data as `experiments.reproduce`: SST-2's
8,000-example seeded subset (64 tokens), MRPC's full train (128 tokens);
full dev sets. With ``--lora-rank R`` every run is LoRA of rank R instead
(`pipelines.finetune --lora-rank`); its fixed recipe is lr 5e-4, the
reproduction's LoRA lr until this sweep moved it to 4e-3.
Note that epoch k of an N-epoch run is not a k-epoch run: its learning rate
has not decayed to zero yet.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


from bertvision import io
from bertvision.training.finetune import FinetuneConfig, Finetuner
from bertvision.report.table import grid
from bertvision.runs import RunFolder

REPO = Path(__file__).resolve().parents[1]
PLANS = {"sst2": {"data": "glue/SST-2", "max_seq_len": 64, "sample": 8000},
         "mrpc": {"data": "glue/MRPC", "max_seq_len": 128, "sample": None}}
FIXED_LR = 5e-5
FIXED_LORA_LR = 5e-4  # experiments.reproduce's LoRA lr before this sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(REPO / "experiments_out" / "finetune_sweep"))
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--tasks", default="sst2,mrpc")
    p.add_argument("--lrs", default="2e-5,5e-5,1e-4")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora-rank", type=int, default=None, help="sweep LoRA of this rank instead of full fine-tuning")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N examples instead of the plan's data (a smoke run, not a result)")
    p.add_argument("--eval-limit", type=int, default=None, help="score the first N dev examples only")
    args = p.parse_args(argv)
    fixed_lr = FIXED_LORA_LR if args.lora_rank else FIXED_LR
    lrs = [float(x) for x in args.lrs.split(",")]
    tasks = args.tasks.split(",")
    work = Path(args.work)
    table = {}
    for task in tasks:
        plan = PLANS[task]
        for lr in lrs:
            out = work / task / (f"lora{args.lora_rank}-lr{lr:g}" if args.lora_rank else f"lr{lr:g}")
            config = FinetuneConfig(task=task, out=str(out), data_dir=str(Path(args.data_root) / plan["data"]),
                                    epochs=args.epochs, lr=lr, batch_size=32, max_seq_len=plan["max_seq_len"],
                                    sample=None if args.limit else plan["sample"], limit=args.limit,
                                    eval_limit=args.eval_limit, seed=args.seed, lora_rank=args.lora_rank,
                                    pooling="cls",  # the recipe sweep's head (docs/results.md)
                                    jit_compile=False, progress=False,
                                    command=["python", "-m", "experiments.finetune_sweep"])
            start = time.perf_counter()
            results = RunFolder(out).results() if RunFolder(out).finished else Finetuner(config).run()
            print(f"{task} lr {lr:g}: {[(h.epoch, round(h.dev[results.main_metric], 4)) for h in results.history]} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            table[(task, lr)] = results
    method = f"LoRA r={args.lora_rank}" if args.lora_rank else "fine-tuning"
    rows, summary = [], {}
    for task in tasks:
        metric = table[(task, lrs[0])].main_metric
        cells = {(lr, h.epoch): h.dev[metric] for lr in lrs for h in table[(task, lr)].history}
        best = max(cells, key=cells.get)
        fixed = {e: cells.get((fixed_lr, float(e))) for e in (1, 2)}
        summary[task] = {"metric": metric, "best": {"lr": best[0], "epoch": best[1], "value": cells[best]},
                         "fixed_recipe": fixed}
        for lr in lrs:
            r = table[(task, lr)]
            row = [f"**{cells[(lr, h.epoch)]:.4f}**" if (lr, h.epoch) == best else f"{cells[(lr, h.epoch)]:.4f}"
                   for h in r.history]
            rows.append([f"{task} ({metric})", f"{lr:g}{' (fixed recipe)' if lr == fixed_lr else ''}", *row,
                         f"{r.trainable_params:,}", f"{r.train_wall_time_s:.0f}", f"{r.train_examples_per_s:.1f}"])
    io.atomic_write_json(work / "summary.json", summary)
    print(f"# {method} sweep  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPU cores  seed {args.seed}\n")
    print(grid(["task", "lr", *(f"epoch {e:g}" for e in range(1, int(args.epochs) + 1)), "trainable", "train s",
                "examples/s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
