"""Sentence pairs the way the backbone was trained: adapters on separately
encoded pairs against the zero-shot cosine and cross-encoded stores, resumable.

    python -m experiments.pairs --task mrpc --data-dir ../shared/data/glue/MRPC --seeds 0,1,2 \\
        --finetune-seeds 0,1,2 --work experiments_out/pairs

The embedded MiniLM is a sentence-embedding model (a bi-encoder): it was
trained to encode each sentence on its own. The benchmark

1. extracts two ``mean`` stores of the frozen backbone's every layer, one
   ``--pair-mode separate`` (each text on its own) and one ``cross`` (the
   pair as one sequence, as BERT is fine-tuned);
2. prints the zero-shot baseline: the cosine of the two texts' last-layer
   vectors, its threshold chosen on train (`bertvision.inference.cosine`);
3. trains every adapter kind of `--kinds` on both stores for every seed of
   `--seeds` (`bertvision.training.fit`);
4. with `--finetune-seeds`, fine-tunes BERT itself (`bertvision.training.finetune`,
   `--finetune-epochs`, the reproduction's recipe) once per seed;

and prints one table, mean ± std over seeds: the task's metrics, trainable
parameters, wall time and peak memory (the process's resident set,
`experiments.reproduce.Stages`) per row. Everything lands in `--work` (``pairs.md``
/ ``pairs.json``, ``stages.json``); a rerun keeps finished stores and runs.
``--no-jit`` leaves out XLA compilation (a smoke run on a few examples,
where compiling costs more than it saves; not for timings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]

import numpy as np

from experiments.reproduce import Stages
from bertvision import io
from bertvision.errors import BertVisionError
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.training.finetune import FinetuneConfig, Finetuner
from bertvision.training.fit import FitConfig, fit
from bertvision.models import KINDS
from bertvision.inference.cosine import cosine_baseline
from bertvision.report.table import grid, seed_spread
from bertvision.runs import RunFolder
from bertvision.store.format import MANIFEST, open_store
from bertvision.data.tasks import get_task


def _variant(text: str) -> tuple[str, dict]:
    """``KIND:FIELD=VALUE,...`` -> ``(kind, {field: value})`` (values read as JSON where they parse)."""
    kind, _, fields = text.partition(":")
    settings = {}
    for item in filter(None, fields.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--variant {text!r}: expected KIND:FIELD=VALUE,...")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return kind, settings


def _label(kind: str, settings: dict, sep: str = "_") -> str:
    return sep.join([kind] + [f"{k}={v}" for k, v in sorted(settings.items())])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.pairs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="mrpc", help="a sentence-pair task (default mrpc)")
    p.add_argument("--data-dir", required=True, help="the task's data folder")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--variant", action="append", default=[], metavar="KIND:FIELD=VALUE,...",
                   help="also train this adapter setting on both stores, e.g. adapter_pooler:adapter_dim=128 "
                        "(repeat the flag for several)")
    p.add_argument("--seeds", default="0", help="comma-separated adapter seeds (rows: mean ± std over them)")
    p.add_argument("--epochs", type=int, default=10, help="adapter epochs (the reproduction's 10)")
    p.add_argument("--batch-size", type=int, default=64, help="adapter batch size")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="first N examples of each split (trials)")
    p.add_argument("--finetune-seeds", default="", help="also fine-tune BERT once per seed (e.g. 0,1,2)")
    p.add_argument("--finetune-epochs", type=float, default=2.0)
    p.add_argument("--finetune-batch-size", type=int, default=32)
    p.add_argument("--work", default=str(REPO / "experiments_out" / "pairs"))
    p.add_argument("--no-jit", action="store_true",
                   help="do not XLA-compile extraction, adapters and fine-tuning (smoke runs; not for timings)")
    args = p.parse_args(argv)
    work = Path(args.work)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    ft_seeds = [int(x) for x in args.finetune_seeds.split(",") if x.strip()]
    kinds = [(k, {}) for k in args.kinds.split(",") if k] + [_variant(v) for v in args.variant]
    command = ["python", "-m", "experiments.pairs", *(sys.argv[1:] if argv is None else argv)]
    try:
        task = get_task(args.task)
        work.mkdir(parents=True, exist_ok=True)
        stages = Stages(work)  # wall time and peak memory of every stage, in WORK/stages.json
        stage = stages.run

        stores = {mode: work / f"store-{mode}" for mode in ("separate", "cross")}
        for mode, store in stores.items():
            for split in ("train", "dev"):
                config = ExtractConfig(task=task.name, split=split, out=str(store), data_dir=args.data_dir,
                                       token_mode="mean", pair_mode=mode, max_seq_len=args.max_seq_len,
                                       limit=args.limit, progress=False, command=command,
                                       jit_compile=not args.no_jit)
                stage(f"extract {mode} {split}", lambda s=split, st=store: (st / MANIFEST).is_file()
                      and s in open_store(str(st)).splits, lambda c=config: Extractor(c).run())
        cosine = cosine_baseline(open_store(str(stores["separate"])), "train", "dev")

        def run_dir(mode, kind, seed):
            return work / f"{mode}-{_label(*kind)}-seed{seed}"

        def fits(mode):  # the cosine-aware head reads a separately encoded pair: not trained on the cross store
            return [k for k in kinds if mode == "separate" or not k[1].get("pair_cosine")]

        for seed in seeds:
            for mode, store in stores.items():
                for kind in fits(mode):
                    out = run_dir(mode, kind, seed)
                    config = FitConfig(store=str(store), out=str(out), adapter={"kind": kind[0], **kind[1]},
                                       epochs=args.epochs, batch_size=args.batch_size, seed=seed, verbose=0,
                                       jit_compile=not args.no_jit)
                    stage(f"fit {out.name}", lambda o=out: RunFolder(o).finished, lambda c=config: fit(c))
        for seed in ft_seeds:
            out = work / f"finetune-seed{seed}"
            config = FinetuneConfig(task=task.name, out=str(out), data_dir=args.data_dir,
                                    epochs=args.finetune_epochs, batch_size=args.finetune_batch_size,
                                    max_seq_len=args.max_seq_len, seed=seed, limit=args.limit,
                                    eval_limit=args.limit, progress=False, command=command,
                                    pooling="cls",  # the head MRPC's BERT rows were measured with
                                    jit_compile=not args.no_jit)
            stage(f"finetune seed {seed}", lambda o=out: RunFolder(o).finished,
                  lambda c=config: Finetuner(c).run())
    except BertVisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    metrics = list(task.metrics)

    def row(method, results, stage_names):
        done = [stages.done[n] for n in stage_names]
        peaks = [d["peak_mib"] for d in done if d.get("peak_mib") is not None]
        return {"method": method, "params": results[0].trainable_params, "seeds": len(results),
                "wall_s": float(np.mean([d["wall_s"] for d in done])), "peak_mib": max(peaks) if peaks else None,
                **{m: [r.dev_metrics[m] for r in results] for m in metrics}}

    rows = [{"method": f"zero-shot cosine of last-layer means (threshold {cosine.threshold:.3f} chosen on train)"
             if cosine.threshold is not None else "zero-shot cosine of last-layer means",
             "params": 0, "seeds": 1, "wall_s": None, "peak_mib": None, **{m: [cosine.metrics[m]] for m in metrics}}]
    if ft_seeds:
        rows.append(row(f"BERT fine-tuned {args.finetune_epochs:g} ep",
                        [RunFolder(work / f"finetune-seed{s}").results() for s in ft_seeds],
                        [f"finetune seed {s}" for s in ft_seeds]))
    for mode in stores:
        for kind in fits(mode):
            rows.append(row(f"{_label(*kind, ' ')} on the frozen backbone, pair {mode}",
                            [RunFolder(run_dir(mode, kind, s)).results() for s in seeds],
                            [f"fit {run_dir(mode, kind, s).name}" for s in seeds]))
    extract_s = {mode: sum(v["wall_s"] for k, v in stages.done.items() if k.startswith(f"extract {mode}"))
                 for mode in stores}
    store_mib = {mode: sum(open_store(str(s)).split_bytes(x) for x in ("train", "dev")) / 2**20
                 for mode, s in stores.items()}
    lines = [f"# {task.name}: pairs encoded separately vs together  {time.strftime('%Y-%m-%d %H:%M')}  "
             f"{platform.node()}  {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
             f"frozen embedded backbone, mean-pooled tokens of every layer; adapters {args.epochs} epochs, batch "
             f"{args.batch_size}, seeds {seeds}; fine-tuning seeds {ft_seeds or 'none'}; mean ± std over seeds "
             "(the cosine has no seed)",
             "stores: " + ", ".join(f"{m} {store_mib[m]:.0f} MiB extracted in {extract_s[m]:.0f} s" for m in stores),
             "", grid(["method", *metrics, "seeds", "trainable params", "wall s", "peak MiB"],
                      [[r["method"], *(seed_spread(r[m], 1, scale=100) for m in metrics), r["seeds"],
                        f"{r['params']:,}", "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}",
                        "-" if r["peak_mib"] is None else f"{r['peak_mib']:,.0f}"] for r in rows])]
    text = "\n".join(lines) + "\n"
    print(text)
    io.atomic_write_text(work / "pairs.md", text)
    io.atomic_write_json(work / "pairs.json", {"task": task.name, "cosine": cosine.to_dict(), "rows": rows,
                                               "stages": stages.done, "store_mib": store_mib})
    return 0


if __name__ == "__main__":
    sys.exit(main())
