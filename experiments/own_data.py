"""Issue 28's numbers: frozen-backbone adapters on a user's own data beside
the peer baseline, in one run: Banking77 test (77 intents, single label) and
GoEmotions dev (28 emotions, multi-label).

    python -m experiments.own_data --work experiments_out/own_data                  # the numbers (hours on a CPU)
    python -m experiments.own_data --datasets banking77 --seeds 0,1,2 --adapters adapter_pooler
    python -m experiments.own_data --quick --work /tmp/own-quick              # a smoke run (tens of examples), not a result
    python -m experiments.own_data --no-finetune                               # adapters and the peer baseline only
    python -m experiments.own_data --datasets banking77 --adapters adapter_pooler --adapter-dim 256 --lr 3e-3 --no-finetune

Every dataset is extracted once (`pipelines.extract` with the issue's flags:
Banking77 ``--dev-fraction 0.1 --seed 0`` drawn from train, GoEmotions read
from a task file, TSV without a header; MiniLM, all layers, ``sequence``
tokens, 128 tokens), then each row is measured on it:

- ``adapter`` rows: `pipelines.fit` of each ``--adapters`` kind for every
  seed of ``--seeds`` (the best epoch chosen on dev; multi-label thresholds
  chosen on dev), scored on the evaluation split (Banking77: test, the raw
  outputs `pipelines.predict --split test` writes; GoEmotions: dev, as fit
  scores it);
- ``peer baseline``: what a sentence-transformers + scikit-learn user does,
  scikit-learn's LogisticRegression (C=10, lbfgs) on the frozen model's
  mean-pooled (padding masked), L2-normalised last layer, read from the same
  store; one-vs-rest on GoEmotions, with one threshold per label chosen on
  dev by the rule the adapters' runs use (`runs.choose_dev_thresholds`; at
  probability 0.5 instead, rare labels are never predicted and the baseline
  is understated). Scored with the same metric functions as the adapters.

- ``MiniLM fine-tuned`` and ``LoRA``: `pipelines.finetune --store` on the
  store's own examples and splits, the project's recipe (lr 1e-4, batch 32,
  2 epochs; LoRA rank 8 at lr 4e-3; the head on the backbone's declared
  sentence pooling, ``--finetune-pooling``), scored at the last epoch (no selection
  on the evaluation split; GoEmotions: a sigmoid head under binary
  cross-entropy, one threshold per label chosen on dev, as the adapters').

Each row prints the main metric and macro F1 (mean ± standard deviation over
seeds; where the evaluation split is test, the main metric on dev beside it,
the split every choice was made on), trainable parameters, train time (s) and peak resident memory
(VmHWM of the training, MiB). Below the table, the whole frozen flow (the
README's commands: extract, ``pipelines.fit`` of ``adapter_pooler``, or of
the first of ``--adapters`` without it, at the first seed,
``pipelines.predict`` of the evaluation split) against one fine-tuning run,
each the wall time of the whole command in this work folder
(``commands.json``; a command that resumed an interrupted one is not timed). Finished runs are read back, so a killed
benchmark continues where it stopped; an adapter run's folder names the
recipe flags that differ from the defaults (``scalar_mix-lr0.003-seed0``),
so ``--lr``, ``--epochs``, ``--batch-size``, ``--adapter-dim`` and
``--group-by-length`` sweeps on one work folder keep their runs apart.

``--quick`` checks every path once, on 48 examples a split: 32 tokens,
``linear_probe`` for 1 epoch at seed 0, and one tuned row per dataset, half
an epoch: MiniLM fine-tuned on the first dataset, LoRA on the second (and
so on, alternating); nothing is XLA-compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from bertvision.io import atomic_write_json
from bertvision.models import BERT_POOLINGS, ModelConfig
from bertvision.report.table import grid, seed_spread
from bertvision.runs import PeakMemory, Predictions, RunFolder, choose_dev_thresholds
from bertvision.store.format import open_store
from bertvision.training.fit import FitConfig

REPO = Path(__file__).resolve().parents[1]
PEER_C = 10.0
# pipelines.fit's recipe (FitConfig's defaults), the adapters' defaults here; adapter_dim: adapter_pooler's width
ADAPTER_DEFAULTS = {"adapter_dim": ModelConfig.adapter_dim,
                    **{f.name: f.default for f in dataclasses.fields(FitConfig)
                       if f.name in ("lr", "epochs", "batch_size", "group_by_length")}}


def dataset_plans(data_root: Path) -> dict:
    """Per dataset: the extraction's arguments (besides --out) and the split the rows are scored on."""
    go = data_root / "goemotions"
    return {
        "banking77": {"eval": "test",
                      "extract": ["--data-dir", str(data_root / "banking77"), "--split", "train=train.csv",
                                  "--split", "test=test.csv", "--dev-fraction", "0.1", "--seed", "0",
                                  "--text-column", "text", "--label-column", "category"]},
        "goemotions": {"eval": "dev",
                       "task_file": {"name": "goemotions", "data_dir": str(go),
                                     "splits": {"train": "train.tsv", "dev": "dev.tsv"}, "header": False,
                                     "text_column": "0", "label_columns": ["1"], "id_column": "2",
                                     "kind": "multi_label", "label_names": str(go / "labels.txt")}},
    }


def _python(*args: str) -> float:
    """Run ``python -m ARGS``; returns its wall seconds (the whole command, start-up included)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"python -m {' '.join(args)} failed with exit code {proc.returncode}")
    return time.perf_counter() - start


class CommandTimes:
    """The wall seconds of a dataset's commands (``commands.json`` in its work
    folder: the extraction, every fit, predict and fine-tuning run, by name),
    kept so a resumed benchmark still reports the commands it timed before.
    A command that resumed an interrupted one (its output folder was already
    there), or that an earlier version of this script ran, has no time."""

    def __init__(self, folder: Path):
        self.path = folder / "commands.json"
        self.seconds = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, step: str, output: Path, *args: str) -> None:
        """``python -m ARGS``, which writes `output`; its time is kept under
        `step` only when `output` did not exist before (a whole run)."""
        whole = not output.exists()
        seconds = _python(*args)
        if whole:
            self.seconds[step] = round(seconds, 1)
        else:
            self.seconds.pop(step, None)
        atomic_write_json(self.path, self.seconds)

    def get(self, step: str) -> float | None:
        return self.seconds.get(step)


def extract(name: str, plan: dict, store: Path, args, times: CommandTimes) -> None:
    """The dataset's store, once (a finished store is kept for the next call)."""
    if (store / "manifest.json").exists():
        return
    extra = list(plan.get("extract", []))
    if "task_file" in plan:
        task_file = store.parent / f"{name}.task.json"
        task_file.parent.mkdir(parents=True, exist_ok=True)
        task_file.write_text(json.dumps(plan["task_file"], indent=2))
        extra = ["--task-file", str(task_file)]
    sizing = ["--sample", str(args.sample)] if args.sample else []
    times.run("extract", store, "pipelines.extract", *extra, "--token-mode", "sequence", "--max-seq-len",
              str(args.max_seq_len), "--out", str(store), "--no-progress", *sizing,
              *(["--no-jit"] if args.quick else []))


def adapter_recipe(args, kind: str) -> str:
    """The part of `kind`'s run folder name that the recipe flags differing
    from the defaults make (``-dim256-lr0.003``; empty for the defaults;
    ``--adapter-dim`` only for adapter_pooler, the kind it widens), so a
    finished run is read back only for the recipe it was trained with."""
    flags = (("dim", "adapter_dim"), ("lr", "lr"), ("ep", "epochs"), ("bs", "batch_size"),
             ("grouped", "group_by_length"))
    changed = [(name, getattr(args, attr)) for name, attr in flags
               if getattr(args, attr) != ADAPTER_DEFAULTS[attr] and (attr != "adapter_dim" or kind == "adapter_pooler")]
    return "".join(f"-{name}{value:g}" for name, value in changed)


def adapter_row(store: Path, kind: str, seed: int, eval_split: str, out: Path, args, times: CommandTimes) -> dict:
    """One `pipelines.fit` (resumed or read back when already finished), its
    score on `eval_split` (`pipelines.predict`, whose predictions file is
    scored) and its main metric on dev, where its epoch was chosen."""
    folder = RunFolder(out)
    if not folder.finished:
        width = ["--adapter-dim", str(args.adapter_dim)] if kind == "adapter_pooler" else []
        times.run(f"fit {out.name}", out,
                  "pipelines.fit", "--store", str(store), "--adapter", kind, "--out", str(out), "--seed", str(seed),
                  "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr), *width,
                  "--group-by-length", str(args.group_by_length),
                  "--quiet", *(["--no-jit-compile"] if args.quick else []))
    results = folder.results()
    if eval_split in results.eval_splits:
        metrics = dict(results.dev_metrics)
    else:
        written = out / f"{eval_split}.predictions.jsonl"
        raw = written.with_suffix(".npz")  # its raw outputs, written last
        if not raw.exists():
            written.unlink(missing_ok=True)  # an interrupted predict's file: this one is timed whole
            times.run(f"predict {out.name}", written, "pipelines.predict", "--run", str(out), "--store", str(store),
                      "--split", eval_split, "--out", str(written))
        metrics = Predictions.load(raw).evaluate()
    return {"metrics": metrics, "dev": results.main_value,
            "params": results.trainable_params, "train_s": results.train_wall_time_s,
            "peak_mib": results.peak_memory_mib}


def finetune_row(store: Path, eval_split: str, out: Path, lora: bool, args, times: CommandTimes) -> dict:
    """MiniLM fine-tuned on the store's own examples (`pipelines.finetune
    --store`), the project's recipe (lr 1e-4, batch 32, 2 epochs; LoRA rank 8
    at lr 4e-3), scored on `eval_split` at its last epoch."""
    folder = RunFolder(out)
    if not folder.finished:
        recipe = ["--lora-rank", "8", "--lr", "4e-3"] if lora else ["--lr", "1e-4"]
        times.run(f"finetune {out.name}", out,
                  "pipelines.finetune", "--store", str(store), "--out", str(out),
                  "--epochs", str(args.finetune_epochs), "--pooling", args.finetune_pooling, "--batch-size", "32",
                  "--max-seq-len", str(args.max_seq_len), "--eval-split", "dev",
                  *(["--eval-split", eval_split] if eval_split != "dev" else []), *recipe, "--no-progress",
                  *(["--no-jit"] if args.quick else []))
    results = folder.results()
    prefix = f"{eval_split}_" if eval_split != "dev" else ""
    metrics = {k[len(prefix):]: v for k, v in results.dev_metrics.items() if k.startswith(prefix)} if prefix \
        else {k: v for k, v in results.dev_metrics.items() if not k.startswith(("dev_", "test_"))}
    return {"metrics": metrics, "dev": results.main_value, "params": results.trainable_params,
            "train_s": results.train_wall_time_s, "peak_mib": results.peak_memory_mib,
            "pooling": results.hyperparameters["pooling"]}


def mean_pooled_last_layer(store, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features [N, hidden], labels, uids)``: the last stored layer's
    mean over real tokens, L2-normalised (the sentence-transformers recipe)."""
    feats, labels = [], []
    for batch, y in store.dataset(split, 256):
        acts = batch["activations"].numpy()[:, -1].astype(np.float32)  # [B, tokens, hidden]
        mask = batch["padding_mask"].numpy().astype(np.float32)[..., None]
        pooled = (acts * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
        feats.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels), np.asarray([u.decode() for u in store.uids(split)])


def peer_row(store_path: Path, eval_split: str) -> dict:
    """Logistic regression (one-vs-rest for multi-label) on mean-pooled
    last-layer features, scored on `eval_split` and on dev."""
    store = open_store(str(store_path))
    spec = store.task_spec
    with PeakMemory() as peak:
        x_train, y_train, _ = mean_pooled_last_layer(store, "train")
        start = time.perf_counter()
        base = LogisticRegression(C=PEER_C, max_iter=2000)
        model = OneVsRestClassifier(base) if spec.kind == "multi_label" else base
        model.fit(x_train, y_train)
        seconds = time.perf_counter() - start

    def predictions(split: str) -> Predictions:
        x, y, uids = mean_pooled_last_layer(store, split)
        if spec.kind == "multi_label":
            probabilities = model.predict_proba(x)
        else:  # columns in class order, with a zero column for a class train lacks
            probabilities = np.zeros([len(x), spec.num_labels], np.float32)
            probabilities[:, model.classes_] = model.predict_proba(x)
        return Predictions(spec, split, uids, probabilities=probabilities, labels=y)

    scored = {split: predictions(split) for split in dict.fromkeys(["dev", eval_split])}
    if spec.kind == "multi_label":  # one threshold per label chosen on dev, as for the adapters
        choose_dev_thresholds(scored, "dev")
    # a label the training sample lacks gets a constant predictor (no weights) from one-vs-rest
    params = sum(int(np.size(e.coef_) + np.size(e.intercept_))
                 for e in (model.estimators_ if spec.kind == "multi_label" else [model]) if hasattr(e, "coef_"))
    return {"metrics": scored[eval_split].evaluate(), "dev": scored["dev"].evaluate()[spec.main_metric],
            "params": params, "train_s": seconds, "peak_mib": peak.rss_mib}


def table(name: str, spec, eval_split: str, rows: list[tuple[str, list[dict]]]) -> list[str]:
    """One dataset's rows; where the evaluation split is not dev, the main
    metric on dev (where the adapters chose their epoch) stands beside it."""
    main = spec.main_metric
    dev = [f"dev {main}"] if eval_split != "dev" else []
    return [f"## {name} ({eval_split}; main metric {main})", "",
            grid(["method", "seeds", main, *dev, "macro F1", "trainable params", "train s", "peak RSS MiB"],
                 [[method, len(runs), seed_spread([r["metrics"][main] for r in runs]),
                   *([seed_spread([r["dev"] for r in runs])] if dev else []),
                   seed_spread([r["metrics"]["macro_f1"] for r in runs]), f"{runs[0]['params']:,}",
                   seed_spread([r["train_s"] for r in runs], 1), f"{max(r['peak_mib'] or 0 for r in runs):.0f}"]
                  for method, runs in rows])]


def flow_line(times: CommandTimes, adapter_run: str, eval_split: str, finetune_run: str) -> str:
    """The whole frozen flow (the README's commands: extract, fit, predict the
    evaluation split) against one fine-tuning run, in wall seconds of the
    whole commands, start-up included, timed in this work folder."""
    steps = [("extract", "extract"), ("fit", f"fit {adapter_run}")]
    if eval_split != "dev":  # dev is scored by the fit itself
        steps.append((f"predict {eval_split}", f"predict {adapter_run}"))
    seconds = [times.get(key) for _, key in steps]
    tuned = times.get(f"finetune {finetune_run}")
    if tuned is None or None in seconds:
        untimed = [label for (label, _), value in zip(steps, seconds) if value is None]
        untimed += [finetune_run] if tuned is None else []
        return (f"The flow against fine-tuning: not timed here ({', '.join(untimed)}: resumed, or finished before "
                "this work folder timed its commands).")
    flow = sum(seconds)
    parts = " + ".join(f"{label} {value:.1f}" for (label, _), value in zip(steps, seconds))
    return (f"The flow against fine-tuning (whole commands, wall s): {parts} = **{flow:.1f} s** ({adapter_run}); "
            f"one fine-tuning run ({finetune_run}): {tuned:.1f} s; the flow takes **{flow / tuned:.2f}** of it.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(REPO / "experiments_out" / "own_data"))
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--datasets", default="banking77,goemotions")
    p.add_argument("--adapters", default="linear_probe,scalar_mix,adapter_pooler")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=ADAPTER_DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=ADAPTER_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=ADAPTER_DEFAULTS["lr"])
    p.add_argument("--group-by-length", type=int, default=ADAPTER_DEFAULTS["group_by_length"], metavar="N",
                   help="the adapters train on batches of similar length (pipelines.fit --group-by-length; 0: off)")
    p.add_argument("--adapter-dim", type=int, default=ADAPTER_DEFAULTS["adapter_dim"],
                   help="adapter_pooler's projection width (pipelines.fit --adapter-dim; default %(default)s)")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--finetune-epochs", type=float, default=2.0, help="fine-tuning and LoRA epochs (default 2)")
    p.add_argument("--finetune-pooling", choices=("auto", *BERT_POOLINGS), default="auto",
                   help="what the fine-tuning and LoRA heads read (pipelines.finetune --pooling; default auto: the "
                        "backbone's declared sentence pooling, MiniLM's mean)")
    p.add_argument("--no-finetune", action="store_true", help="leave out the fine-tuning and LoRA rows")
    p.add_argument("--sample", type=int, default=None, help="a seeded N examples of every split (a smoke run)")
    p.add_argument("--quick", action="store_true",
                   help="--sample 48, 32 tokens, 1 epoch, seed 0, linear_probe, one tuned row per dataset (0.5 "
                        "epochs; fine-tuning on the first, LoRA on the second, alternating): a smoke run, not a result")
    args = p.parse_args(argv)
    if args.quick:
        args.sample, args.max_seq_len, args.epochs, args.seeds, args.adapters = 48, 32, 1, "0", "linear_probe"
        args.finetune_epochs = 0.5
    plans = dataset_plans(Path(args.data_root))
    names = args.datasets.split(",")
    unknown = [n for n in names if n not in plans]
    if unknown:
        p.error(f"--datasets: unknown {unknown}; choose from {', '.join(plans)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work).resolve()  # the commands run in the repository
    out = [f"# own data  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} CPU cores  "
           f"MiniLM sequence store, {args.max_seq_len} tokens; adapters {args.epochs} epochs, lr {args.lr:g}, "
           f"batch {args.batch_size}" + (f"; --sample {args.sample} (smoke run)" if args.sample else ""), ""]
    kinds = args.adapters.split(",")
    for index, name in enumerate(names):
        plan = plans[name]
        store = work / name / "store"
        times = CommandTimes(work / name)
        extract(name, plan, store, args, times)
        spec = open_store(str(store)).task_spec
        rows = []
        for kind in kinds:
            runs = [adapter_row(store, kind, seed, plan["eval"],
                                work / name / f"{kind}{adapter_recipe(args, kind)}-seed{seed}", args, times)
                    for seed in seeds]
            rows.append((f"{kind} (frozen)", runs))
        peer = f"peer baseline: logistic regression C={PEER_C:g}"
        if spec.kind == "multi_label":
            peer += " one-vs-rest, thresholds chosen on dev"
        rows.append((peer, [peer_row(store, plan["eval"])]))
        if not args.no_finetune:
            # --quick: fine-tuning and LoRA run the same steps; one of them per dataset covers both
            tuned_runs = []
            for lora in ([index % 2 == 1] if args.quick else (False, True)):
                run = f"{'lora' if lora else 'finetune'}-pooling-{args.finetune_pooling}"
                tuned_runs.append(run)
                row = finetune_row(store, plan["eval"], work / name / run, lora, args, times)
                rows.append((f"MiniLM {'LoRA r=8' if lora else 'fine-tuned'} ({args.finetune_epochs:g} epochs, "
                             f"head on the {'mean' if row['pooling'] == 'mean' else 'pooler'})", [row]))
        out += table(name, spec, plan["eval"], rows) + [""]
        if not args.no_finetune and tuned_runs[0].startswith("finetune"):
            flow_kind = "adapter_pooler" if "adapter_pooler" in kinds else kinds[0]
            out += [flow_line(times, f"{flow_kind}{adapter_recipe(args, flow_kind)}-seed{seeds[0]}", plan["eval"],
                              tuned_runs[0]), ""]
    text = "\n".join(out)
    print(text)
    (work / "results.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
