"""SQuAD 2.0: adapters on a fine-tuning checkpoint's activations against that
checkpoint itself (the original study's setting), resumable.

    python -m experiments.squad_checkpoint --checkpoint RUN/checkpoints/epoch-1.00 \\
        --data-dir ../shared/data/squad2 --work experiments_out/squad_checkpoint

`--checkpoint` is a `pipelines.finetune` checkpoint (a backbone folder with
its own dev predictions). The benchmark

1. extracts a ``sequence`` store of the checkpoint's every layer for
   `--train-split` and `--eval-split` (the checkpoint's max_seq_len,
   doc_stride and max_query_len, so windows are the ones BERT saw);
2. trains each adapter kind of `--kinds` on it (`bertvision.training.fit`);
3. ensembles the checkpoint with the best adapter (mean and max of logits);
4. trains the answerability classifier (`bertvision.training.answerability`) and
   reads BERT's own null decision off its predictions;

and prints one table: EM, F1, HasAns/NoAns F1 and best-threshold F1 (the
official script's; adapters: mean ± std over `--seeds`), trainable
parameters and wall time of every row, with
the checkpoint's own scores (the baseline) in the first row. BERT's row
comes from the checkpoint's ``checkpoint.json`` (evaluated when it was
written, on the same split); every other row is measured in this run.
Everything lands in `--work` (``squad_checkpoint.md`` / ``.json``); a rerun
keeps finished stores and runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]

import numpy as np

from experiments.reproduce import Stages
from bertvision import io
from bertvision.training.answerability import (AnswerabilityConfig, answerability_metrics, fit_answerability,
                                      gold_answerable, span_decisions)
from bertvision.inference.ensemble import EnsembleConfig, run_ensemble
from bertvision.errors import BertVisionError
from bertvision.config import STORE_DTYPES
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.training.fit import FitConfig, fit
from bertvision.models import KINDS
from bertvision.report.table import grid, mean_std
from bertvision.runs import Predictions, RunFolder, read_checkpoint_info
from bertvision.store.format import MANIFEST, open_store

METRICS = ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1")


def _row(method: str, params, metrics: list[dict], wall) -> dict:
    """A table row: the mean of each metric over `metrics` (one dict per seed) and its std."""
    values = {k: [m[k] for m in metrics] for k in METRICS}
    return {"method": method, "params": params, "wall_s": wall, "seeds": len(metrics),
            **{k: float(np.mean(v)) for k, v in values.items()},
            **{f"{k}_std": float(np.std(v, ddof=1)) if len(v) > 1 else None for k, v in values.items()}}


def _params(params) -> str:
    """A trainable-parameter cell: a count with separators, or the text given ("-")."""
    return f"{params:,}" if isinstance(params, int) else params


def checkpoint_metrics(info: dict, split: str) -> dict | None:
    """A checkpoint's own metrics on `split` from its ``checkpoint.json``
    (None if it was not evaluated there): ``metrics`` holds the first eval
    split's (checkpoints written before the one trainer: ``{split: metrics}``).

    >>> checkpoint_metrics({"metrics": {"f1": 37.6}, "config": {"eval_splits": ["dev"]}}, "dev")
    {'f1': 37.6}
    """
    metrics = info.get("metrics") or {}
    if isinstance(metrics.get(split), dict):
        return metrics[split]
    return metrics if metrics and info.get("config", {}).get("eval_splits", [])[:1] == [split] else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.squad_checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a pipelines.finetune checkpoint folder (SQuAD 2.0)")
    p.add_argument("--data-dir", required=True, help="folder holding the SQuAD 2.0 files")
    p.add_argument("--train-split", default="train+dev-v2.0.Normans_CCT")
    p.add_argument("--eval-split", default="dev", help="must be the split the checkpoint was evaluated on")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--epochs", type=int, default=3, help="adapter epochs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", default="0", help="comma-separated adapter seeds (rows: mean ± std over them)")
    p.add_argument("--layers", default="all", help="stored layers (all, last4, ...)")
    p.add_argument("--dtype", default="float16", choices=STORE_DTYPES, help="how the store keeps activations")
    p.add_argument("--work", default=str(REPO / "experiments_out" / "squad_checkpoint"))
    args = p.parse_args(argv)
    ckpt, work = Path(args.checkpoint), Path(args.work)
    try:
        info = read_checkpoint_info(ckpt)
        if info is None:
            raise BertVisionError(f"{ckpt}: not a fine-tuning checkpoint (no checkpoint.json)")
        cfg = info["config"]
        bert_dev = checkpoint_metrics(info, args.eval_split)
        if cfg["task"] != "squad_v2" or bert_dev is None:
            raise BertVisionError(f"{ckpt}: not a SQuAD 2.0 checkpoint evaluated on {args.eval_split!r}")
        work.mkdir(parents=True, exist_ok=True)
        # a rerun keeps finished stores and runs: only for the store settings they were made with
        settings, settings_file = {"checkpoint": str(ckpt.resolve()), "layers": args.layers, "dtype": args.dtype}, \
            work / "store_settings.json"
        if settings_file.is_file() and io.read_json(settings_file) != settings:
            raise BertVisionError(f"{work} holds a store made with {io.read_json(settings_file)}; this run asks for "
                                  f"{settings}: use another --work")
        io.atomic_write_json(settings_file, settings)
        stages = Stages(work)  # wall time and peak memory of every stage, in WORK/stages.json
        stage = stages.run

        store = work / "store"
        for split in (args.train_split, args.eval_split):
            config = ExtractConfig(task="squad_v2", split=split, out=str(store), data_dir=args.data_dir,
                                   backbone=str(ckpt), token_mode="sequence", layers=args.layers, dtype=args.dtype,
                                   max_seq_len=cfg["max_seq_len"], doc_stride=cfg["doc_stride"],
                                   max_query_len=cfg["max_query_len"], progress=False,
                                   command=["python", "-m", "experiments.squad_checkpoint", *(argv or sys.argv[1:])])
            stage(f"extract {split}", lambda s=split: (store / MANIFEST).is_file()
                  and s in open_store(str(store)).splits, lambda c=config: Extractor(c).run())
        kinds = [k for k in args.kinds.split(",") if k]
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]

        def run_dir(kind, seed):
            return work / (kind if seed == seeds[0] else f"{kind}-seed{seed}")

        for seed in seeds:
            for kind in kinds:
                out = run_dir(kind, seed)
                config = FitConfig(store=str(store), out=str(out), adapter={"kind": kind},
                                   train_split=args.train_split, eval_splits=[args.eval_split], epochs=args.epochs,
                                   batch_size=args.batch_size, seed=seed, verbose=0)
                stage(f"fit {out.name}", lambda o=out: RunFolder(o).finished, lambda c=config: fit(c))
        results = {k: [RunFolder(run_dir(k, s)).results() for s in seeds] for k in kinds}
        best = max(kinds, key=lambda k: (np.mean([r.main_value for r in results[k]]), -results[k][0].trainable_params))
        for mode in ("mean", "max"):
            out = work / f"ensemble-{mode}"
            config = EnsembleConfig(runs=[str(ckpt), str(run_dir(best, seeds[0]))], out=str(out), split=args.eval_split,
                                    combine=mode)
            stage(f"ensemble {mode}", lambda o=out: RunFolder(o).finished, lambda c=config: run_ensemble(c))
        answer = work / "answerability"
        config = AnswerabilityConfig(store=str(store), out=str(answer), train_split=args.train_split,
                                     eval_split=args.eval_split, seed=seeds[0], verbose=0)
        stage("answerability", lambda: RunFolder(answer).finished, lambda: fit_answerability(config))
    except BertVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    label = f"BERT fine-tuned {info['epoch']:g} ep (the checkpoint)"
    rows = [_row(label, "all", [bert_dev], None)]
    for kind in kinds:
        rs = results[kind]
        rows.append(_row(f"{kind} on its activations", rs[0].trainable_params, [r.dev_metrics for r in rs],
                         float(np.mean([stages.done[f"fit {run_dir(kind, s).name}"]["wall_s"] for s in seeds]))))
    for mode in ("mean", "max"):
        r = RunFolder(work / f"ensemble-{mode}").results()
        rows.append(_row(f"ensemble {mode}: checkpoint + {best} (seed {seeds[0]})", "-", [r.dev_metrics],
                         stages.done[f"ensemble {mode}"]["wall_s"]))
    bert_preds = Predictions.load(ckpt / "predictions" / f"{args.eval_split}.npz")
    ans = RunFolder(answer).results()
    answerability = [("BERT's own null decision", answerability_metrics(span_decisions(bert_preds),
                                                                        gold_answerable(bert_preds)), "-"),
                     (f"{ans.method.split(':')[1]} on [CLS] of every layer", ans.dev_metrics, ans.trainable_params)]
    store_info = open_store(str(store))
    store_bytes = sum(store_info.manifest["splits"][s]["bytes"] for s in store_info.splits)

    lines = [f"# SQuAD 2.0: adapters on {ckpt}  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
             f"train {args.train_split}, evaluate {args.eval_split}; adapters {args.epochs} epochs, batch "
             f"{args.batch_size}, seeds {seeds} (mean ± std over seeds; BERT: its one run); "
             f"store {args.layers} layers, {args.dtype}, {store_bytes / 2**30:.2f} GiB, "
             f"extraction {sum(v['wall_s'] for k, v in stages.done.items() if k.startswith('extract')):.0f} s", "",
             grid(["method", "EM", "F1", "HasAns F1", "NoAns F1", "best-threshold F1", "trainable params", "wall s"],
                  [[r["method"], *(mean_std(r[k], r[k + "_std"], 1) for k in METRICS), _params(r["params"]),
                    "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"] for r in rows]),
             "",
             grid(["answerability (positive: answerable)", "accuracy", "precision", "recall", "F1", "params"],
                  [[name, *(f"{m[k]:.3f}" for k in ("answerable_accuracy", "answerable_precision",
                                                     "answerable_recall", "answerable_f1")), _params(params)]
                   for name, m, params in answerability])]
    text = "\n".join(lines) + "\n"
    print(text)
    io.atomic_write_text(work / "squad_checkpoint.md", text)
    io.atomic_write_json(work / "squad_checkpoint.json", {
        "checkpoint": str(ckpt), "checkpoint_config": cfg, "rows": rows, "stages": stages.done,
        "answerability": [{"method": n, **m} for n, m, _ in answerability], "store_bytes": store_bytes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
