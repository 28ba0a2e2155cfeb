"""The fine-tuning recipe's first epochs on small and unbalanced tasks (issue 33, item 4).

    python -m experiments.recipe_small_data --work experiments_out/recipe_small_data     # resumable
    python -m experiments.recipe_small_data --tasks sst2 --lrs 1e-4 --poolings cls,mean --seeds 0
    python -m experiments.recipe_small_data --limit 16 --eval-limit 8 --seeds 0          # a smoke run

On a small, unbalanced task the project's recipe (lr 1e-4, warmup 10%, batch
32, 2 epochs, a head on BERT's pooler over [CLS]) was seen to predict one
class for every dev example after its first epoch. This measures when that
happens and what changes it, on small tasks cut from the shared data with a
fixed draw (``--data-seed``), so that only the training seed varies:

- ``sst2``: 1,000 SST-2 training sentences of which 20% positive (the
  minority class; ``--train-size``, ``--positive-share``), dev: SST-2's
  whole dev set (872, balanced), 64 tokens;
- ``mrpc``: 1,000 MRPC training pairs at MRPC's own balance (about 2/3
  paraphrases), dev: MRPC's dev set (408), 128 tokens.

Every (task, lr, pooling, seed) is one `pipelines.finetune` run, in this
process (`Finetuner`), checkpointed every half epoch. At each checkpoint the
table gives dev MCC (mean ± std over seeds), the task's main metric, and how
many seeds predicted a single class for every dev example. ``--poolings``
compares the head on BERT's pooler (``cls``, the recipe's) with the head on
the mean over tokens (``mean``, `BertTask`'s ``pooling``), the pooling the
default backbone (all-MiniLM-L6-v2, a sentence-transformers model) was
trained with.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from bertvision import io
from bertvision.metrics import matthews_corrcoef
from bertvision.report.table import grid, seed_spread
from bertvision.runs import Predictions, RunFolder
from bertvision.training.finetune import FinetuneConfig, Finetuner

REPO = Path(__file__).resolve().parents[1]
# data folder, label column of train.tsv, max_seq_len, the minority share to draw (None: the file's own balance)
PLANS = {"sst2": {"data": "glue/SST-2", "label_column": -1, "max_seq_len": 64, "positive_share": 0.2},
         "mrpc": {"data": "glue/MRPC", "label_column": 0, "max_seq_len": 128, "positive_share": None}}
RECIPE_LR = 1e-4  # experiments.reproduce's fine-tuning lr (the recipe sweep's choice on SST-2 and MRPC)


def small_task(source: Path, out: Path, label_column: int, size: int, positive_share: float | None,
               seed: int) -> Path:
    """A seeded `size`-row draw of `source`/train.tsv (with `positive_share`
    of label-1 rows where given, else uniform) beside the unchanged dev.tsv,
    in `out` (written once; the same draw on every call)."""
    if (out / "train.tsv").is_file():
        return out
    header, *rows = (source / "train.tsv").read_text(encoding="utf-8-sig").splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    if positive_share is None:
        chosen = rng.choice(len(rows), size=size, replace=False)
    else:
        labels = np.array([row.rstrip("\n").split("\t")[label_column] for row in rows])
        positives, negatives = np.flatnonzero(labels == "1"), np.flatnonzero(labels == "0")
        n_pos = round(size * positive_share)
        chosen = np.concatenate([rng.choice(positives, n_pos, replace=False),
                                 rng.choice(negatives, size - n_pos, replace=False)])
    io.atomic_write_text(out / "dev.tsv", (source / "dev.tsv").read_text(encoding="utf-8"))
    io.atomic_write_text(out / "train.tsv", header + "".join(rows[i] for i in sorted(chosen)))
    return out


def checkpoint_scores(run: Path, split: str = "dev") -> list[dict]:
    """Every checkpoint's ``{"epoch", "mcc", "main", "one_class"}`` on `split`."""
    results = RunFolder(run).results()
    scores = []
    for h in results.history:
        p = Predictions.load(RunFolder(run).checkpoint(h.epoch) / "predictions" / f"{split}.npz")
        predicted = np.argmax(p.probabilities, axis=-1)
        scores.append({"epoch": h.epoch, "mcc": matthews_corrcoef(predicted, p.labels),
                       "main": h.dev[results.main_metric], "one_class": len(np.unique(predicted)) == 1})
    return scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(REPO / "experiments_out" / "recipe_small_data"))
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--tasks", default="sst2,mrpc")
    p.add_argument("--lrs", default="1e-4,2e-5")
    p.add_argument("--poolings", default="cls,mean")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--checkpoint-every", type=float, default=0.5)
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--data-seed", type=int, default=0, help="the small tasks' draw (fixed across training seeds)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N rows of the draw (a smoke run)")
    p.add_argument("--eval-limit", type=int, default=None, help="score the first N dev examples only")
    args = p.parse_args(argv)
    work = Path(args.work)
    lrs, poolings = [float(x) for x in args.lrs.split(",")], args.poolings.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, marks = [], []
    for task in args.tasks.split(","):
        plan = PLANS[task]
        data = small_task(Path(args.data_root) / plan["data"], work / "data" / task, plan["label_column"],
                          args.train_size, plan["positive_share"], args.data_seed)
        for lr in lrs:
            for pooling in poolings:
                per_seed = []
                for seed in seeds:
                    out = work / task / f"lr{lr:g}-{pooling}-seed{seed}"
                    if not RunFolder(out).finished:
                        start = time.perf_counter()
                        Finetuner(FinetuneConfig(
                            task=task, out=str(out), data_dir=str(data), epochs=args.epochs, lr=lr, batch_size=32,
                            max_seq_len=plan["max_seq_len"], pooling=pooling, seed=seed,
                            checkpoint_every=args.checkpoint_every, limit=args.limit, eval_limit=args.eval_limit,
                            jit_compile=False, progress=False,
                            command=["python", "-m", "experiments.recipe_small_data"])).run()
                        print(f"{task} lr {lr:g} {pooling} seed {seed}: {time.perf_counter() - start:.0f} s",
                              flush=True)
                    per_seed.append(checkpoint_scores(out))
                metric = RunFolder(work / task / f"lr{lr:g}-{pooling}-seed{seeds[0]}").results().main_metric
                cells = []
                marks = max(marks, [a["epoch"] for a in per_seed[0]], key=len)
                for i in range(len(per_seed[0])):
                    at = [s[i] for s in per_seed]
                    one = sum(a["one_class"] for a in at)
                    cells.append(f"{seed_spread([a['mcc'] for a in at], 3)} / "
                                 f"{seed_spread([a['main'] for a in at], 1, scale=100)}"
                                 + (f" ({one}/{len(at)} one class)" if one else ""))
                label = f"{lr:g}{' (recipe)' if lr == RECIPE_LR and pooling == 'cls' else ''}"
                rows.append([f"{task} ({metric})", label, pooling, *cells])
    epochs = [f"epoch {e:g}" for e in marks]
    print(f"# the recipe on small tasks  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPU cores  "
          f"seeds {args.seeds}: dev MCC / main metric (x100), mean ± std over seeds\n")
    table = grid(["task", "lr", "head reads", *epochs], rows)
    print(table)
    io.atomic_write_text(work / "results.md", table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
