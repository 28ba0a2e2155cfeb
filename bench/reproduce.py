"""Reproduce BERTVision's claims on real data: one command, one table.

    python -m bench.reproduce --docs docs                # full run, ~75 min on the 2-core VM
    python -m bench.reproduce --quick --work /tmp/rq     # reduced version on SST-2 + SQuAD (the test suite runs it)

On the embedded MiniLM and the real data in ``../shared/data``:

- SST-2: the 8,000-example seeded subset of train (``--sample 8000 --seed 0``)
  for training, the full dev set (872) for evaluation, 64 tokens;
- MRPC: full train (3,668), full dev (408), 128 tokens;
- SQuAD 2.0: train on ``dev-v2.0.Normans_CCT.json`` (626 questions), evaluate
  on ``dev-v2.0.Rhine.json`` (498), 384 tokens, stride 128.

For every task, in this order (each stage is a library call: the same code as
``pipelines.finetune``, ``pipelines.extract``, ``pipelines.fit`` and
``pipelines.ensemble``):

1. BERT fine-tuned for 2 epochs, checkpointed and scored at 0.1, 0.3, 1 and 2
   epochs (one run: the rows are checkpoints of one warmup + linear-decay
   schedule over 2 epochs, as the original study's fractional checkpoints);
2. ``sequence`` stores (float16, all 7 layers) of train and dev from the frozen
   backbone and from the 1-epoch checkpoint;
3. ``linear_probe``, ``scalar_mix``, ``adapter_pooler`` and ``cnn`` on both
   stores (best dev epoch restored; early stopping after 3 epochs without
   improvement);
4. the ensemble of BERT at 1 epoch with the best adapter (by dev main metric),
   mean and max of probabilities;
5. the best adapter kind on the frozen store trained on 10%, 25%, 50% of the
   training records (seeded; 100% is the run of step 3). Only the adapter
   sees the fraction, the backbone is never trained.

Everything lands in ``--work`` (default ``bench_out/reproduce``): one folder per
run, ``stages.json`` (wall seconds of every finished stage), ``results.json``
(every row) and ``results.md`` (the tables), plus ``report/`` from
``pipelines.report``. Re-running the command skips finished stages, and a
killed stage resumes where its library call left off (fine-tuning from its
last checkpoint, extraction from its finished shards, fitting from its last
epoch). ``--docs DIR`` also writes ``DIR/results.md`` and the charts into
``DIR/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import keras  # noqa: E402  (after the environment above)
import tensorflow as tf  # noqa: E402

from bertvision import io  # noqa: E402
from bertvision.ensemble import EnsembleConfig, run_ensemble  # noqa: E402
from bertvision.config import ConfigBase  # noqa: E402
from bertvision.errors import BertVisionError, ConfigError  # noqa: E402
from bertvision.extract import ExtractConfig, Extractor  # noqa: E402
from bertvision.finetune import FinetuneConfig, Finetuner, checkpoint_path  # noqa: E402
from bertvision.fit import FitConfig, fit  # noqa: E402
from bertvision.models import KINDS  # noqa: E402
from bertvision.report import build_report  # noqa: E402
from bertvision.runs import RunFolder, RunResults  # noqa: E402
from bertvision.store import MANIFEST, open_store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BACKBONES = ("frozen", "ft1")  # the embedded MiniLM as is, and its 1-epoch fine-tuned checkpoint
BACKBONE_NAMES = {"frozen": "frozen MiniLM", "ft1": "MiniLM fine-tuned 1 epoch"}


@dataclass
class TaskPlan:
    """What one task of the reproduction trains and evaluates on."""

    task: str
    data: str  # folder under the data root
    max_seq_len: int
    train_sample: int | None = None  # seeded subset of train (same draw for fine-tuning and extraction)
    train_limit: int | None = None  # first N training examples
    eval_limit: int | None = None  # first N dev examples
    doc_stride: int = 128
    adapter_epochs: int = 10
    adapter_batch_size: int = 64
    finetune_batch_size: int = 32


FULL_PLANS = {
    "sst2": TaskPlan("sst2", "glue/SST-2", max_seq_len=64, train_sample=8000),
    "mrpc": TaskPlan("mrpc", "glue/MRPC", max_seq_len=128),
    "squad_v2": TaskPlan("squad_v2", "squad2", max_seq_len=384, adapter_batch_size=32),
}
QUICK_PLANS = {
    "sst2": TaskPlan("sst2", "glue/SST-2", max_seq_len=32, train_sample=64, eval_limit=32, adapter_epochs=2,
                     finetune_batch_size=8),
    "mrpc": TaskPlan("mrpc", "glue/MRPC", max_seq_len=64, train_limit=48, eval_limit=24, adapter_epochs=2,
                     finetune_batch_size=8),
    "squad_v2": TaskPlan("squad_v2", "squad2", max_seq_len=128, doc_stride=64, train_limit=12, eval_limit=8,
                         adapter_epochs=2, adapter_batch_size=8, finetune_batch_size=2),
}

QUICK_DEFAULT_TASKS = ("sst2", "squad_v2")


@dataclass
class ReproduceConfig(ConfigBase):
    """Settings of a reproduction (saved as ``WORK/config.json``)."""

    work: str
    data_root: str
    tasks: list = field(default_factory=lambda: list(FULL_PLANS))
    quick: bool = False
    seed: int = 0
    model: str | None = None
    finetune_epochs: float = 2.0
    finetune_checkpoints: list = field(default_factory=lambda: [0.1, 0.3, 1.0, 2.0])
    finetune_lr: float = 5e-5
    kinds: list = field(default_factory=lambda: list(KINDS))
    fractions: list = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    patience: int = 3
    jit_compile: bool = True  # XLA for extraction and adapter fits
    # Fine-tuning runs un-jitted: its length-grouped batches come in many token
    # lengths, and on CPU compiling each (~15 s) costs more than XLA saves.
    finetune_jit_compile: bool = False
    progress: bool = True
    plans: dict = field(default_factory=dict)

    def validate(self):
        table = QUICK_PLANS if self.quick else FULL_PLANS
        unknown = [t for t in self.tasks if t not in table]
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown}; choose from {', '.join(table)}")
        if 1.0 not in self.finetune_checkpoints or max(self.finetune_checkpoints) > self.finetune_epochs:
            raise ConfigError(f"finetune_checkpoints {self.finetune_checkpoints} must include 1.0 (the backbone "
                             f"the adapters are also trained on) and stay within {self.finetune_epochs} epochs")
        if not self.plans:
            self.plans = {t: dataclasses.asdict(table[t]) for t in self.tasks}

    def plan(self, task: str) -> TaskPlan:
        return TaskPlan(**self.plans[task])


# ----------------------------------------------------------------- stages


class Stages:
    """The stages finished so far (``WORK/stages.json``): wall seconds and
    outputs of each, written atomically after every stage."""

    def __init__(self, work: Path):
        self.path = work / "stages.json"
        self.done: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.ran: list[str] = []

    def run(self, name: str, is_complete, fn, info=None) -> dict:
        """Run `fn()` unless stage `name` finished before and `is_complete()`
        still holds; record its wall time. Returns the stage's record."""
        if name in self.done and is_complete():
            print(f"[skip] {name} (done in {self.done[name]['wall_s']:.0f} s)", flush=True)
            return self.done[name]
        print(f"[run ] {name}", flush=True)
        t = time.perf_counter()
        fn()
        wall = time.perf_counter() - t
        record = {"wall_s": round(wall, 2), "finished": _now(), **(info() if info else {})}
        self.done[name] = record
        self.ran.append(name)
        io.atomic_write_json(self.path, self.done)
        print(f"[done] {name}: {wall:.1f} s", flush=True)
        _release()
        return record


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _release() -> None:
    """Free the previous stage's graphs and models before the next."""
    keras.backend.clear_session()
    gc.collect()


def _results(folder: Path) -> RunResults:
    return RunFolder(folder).results()


def _finished(folder: Path) -> bool:
    return RunFolder(folder).finished


def _store_split_done(store: Path, split: str) -> bool:
    return (store / MANIFEST).is_file() and split in open_store(str(store)).splits


def _store_bytes(store: Path) -> int:
    opened = open_store(str(store))
    return sum(opened.split_bytes(s) for s in opened.splits)


# ------------------------------------------------------------------- task


class TaskRun:
    """The stages of one task, and the table rows they give."""

    def __init__(self, config: ReproduceConfig, task: str, stages: Stages):
        self.c, self.stages = config, stages
        self.plan = config.plan(task)
        self.task = task
        self.root = Path(config.work) / task
        self.data_dir = str(Path(config.data_root) / self.plan.data)
        if not Path(self.data_dir).is_dir():
            raise FileNotFoundError(f"{self.data_dir}: no such data folder (give --data-root)")
        self.bert = self.root / "bert"

    # ---- stage 1: BERT
    def finetune(self) -> None:
        p, c = self.plan, self.c
        extra = [x for x in c.finetune_checkpoints if x != int(x)]
        config = FinetuneConfig(
            task=self.task, out=str(self.bert), data_dir=self.data_dir, backbone=c.model, epochs=c.finetune_epochs,
            lr=c.finetune_lr, batch_size=p.finetune_batch_size, max_seq_len=p.max_seq_len, doc_stride=p.doc_stride,
            seed=c.seed, limit=p.train_limit, eval_limit=p.eval_limit, sample=p.train_sample,
            checkpoint_at=extra or None, jit_compile=c.finetune_jit_compile, progress=c.progress,
            command=["python", "-m", "bench.reproduce", f"(stage {self.task}/bert)"])
        self.stages.run(f"{self.task}/bert", lambda: _finished(self.bert), lambda: Finetuner(config).run())

    def checkpoint(self, epoch: float) -> Path:
        return checkpoint_path(self.bert, epoch)

    # ---- stage 2: stores
    def store(self, backbone: str) -> Path:
        return self.root / f"store-{backbone}"

    def extract(self, backbone: str) -> None:
        p, c = self.plan, self.c
        model = c.model if backbone == "frozen" else str(self.checkpoint(1.0))
        store = self.store(backbone)
        for split in ("train", "dev"):
            config = ExtractConfig(
                task=self.task, split=split, out=str(store), data_dir=self.data_dir, backbone=model,
                token_mode="sequence",
                max_seq_len=p.max_seq_len, doc_stride=p.doc_stride,
                limit=p.train_limit if split == "train" else p.eval_limit,
                sample=p.train_sample if split == "train" else None, seed=c.seed,
                jit_compile=c.jit_compile, progress=c.progress,
                command=["python", "-m", "bench.reproduce", f"(stage {self.task}/{store.name}/{split})"])
            self.stages.run(f"{self.task}/{store.name}/{split}", lambda s=split: _store_split_done(store, s),
                            lambda cfg=config: Extractor(cfg).run())

    # ---- stage 3: adapters
    def adapter_dir(self, kind: str, backbone: str, fraction: float = 1.0) -> Path:
        suffix = "" if fraction == 1.0 else f"-frac{fraction:g}"
        return self.root / f"{kind}-{backbone}{suffix}"

    def fit(self, kind: str, backbone: str, fraction: float = 1.0) -> None:
        out = self.adapter_dir(kind, backbone, fraction)
        config = FitConfig(store=str(self.store(backbone)), out=str(out), adapter={"kind": kind},
                           epochs=self.plan.adapter_epochs, batch_size=self.plan.adapter_batch_size,
                           seed=self.c.seed, train_fraction=fraction, patience=self.c.patience,
                           jit_compile=self.c.jit_compile, verbose=1 if self.c.progress else 0,
                           command=["python", "-m", "bench.reproduce", f"(stage {self.task}/{out.name})"])
        self.stages.run(f"{self.task}/{out.name}", lambda: _finished(out), lambda: fit(config))

    def best_adapter(self, backbones=BACKBONES) -> Path:
        """The adapter run with the best dev main metric (ties: fewer parameters)."""
        runs = [self.adapter_dir(k, b) for b in backbones for k in self.c.kinds]

        def key(run: Path):
            r = _results(run)
            return (r.main_value, -r.trainable_params)

        return max(runs, key=key)

    # ---- stage 4: ensembles
    def ensemble(self, mode: str) -> Path:
        out = self.root / f"ensemble-{mode}"
        best = self.best_adapter()
        members = [str(self.checkpoint(1.0)), str(best)]
        if _finished(out) and RunFolder(out).read_config()["runs"] != members:
            shutil.rmtree(out)  # the best adapter changed (its runs were redone): combine again
        config = EnsembleConfig(runs=members, out=str(out), split="dev", combine=mode)
        self.stages.run(f"{self.task}/{out.name}", lambda: _finished(out), lambda: run_ensemble(config))
        return out

    def run(self) -> None:
        self.finetune()
        for backbone in BACKBONES:
            self.extract(backbone)
            for kind in self.c.kinds:
                self.fit(kind, backbone)
        for mode in ("mean", "max"):
            self.ensemble(mode)
        best_frozen = _results(self.best_adapter(("frozen",))).method
        for fraction in self.c.fractions:
            if fraction < 1.0:
                self.fit(best_frozen, "frozen", fraction)

    # ---- rows
    def expected_runs(self) -> list[Path]:
        """Every run folder a finished task holds (fractions: of the best frozen kind, once known)."""
        runs = [self.bert] + [self.adapter_dir(k, b) for b in BACKBONES for k in self.c.kinds]
        runs += [self.root / f"ensemble-{m}" for m in ("mean", "max")]
        kind = self._best_frozen_kind()
        runs += [self.adapter_dir(kind or "BEST", "frozen", f) for f in self.c.fractions if f < 1.0]
        return runs

    def missing(self) -> list[str]:
        """Run folders not finished yet (names relative to the task folder)."""
        return [r.name for r in self.expected_runs() if not _finished(r)]

    def _best_frozen_kind(self) -> str | None:
        runs = [self.adapter_dir(k, "frozen") for k in self.c.kinds]
        if not all(_finished(r) for r in runs):
            return None
        return _results(self.best_adapter(("frozen",))).method

    def rows(self) -> list[dict]:
        """The table rows of every finished run of this task (all of them once the task is complete)."""
        if not _finished(self.bert):
            return []
        done = self.stages.done
        bert = _results(self.bert)
        history = {h.epoch: h for h in bert.history}
        backbone_params = bert.backbone_params
        rows = []

        def row(method, backbone, metrics, params, finetune_s, extract_s, fit_s, store_bytes, data, run):
            return {"task": self.task, "method": method, "backbone": backbone, "train_data": data,
                    "dev_metrics": metrics, "main_metric": bert.main_metric, "trainable_params": params,
                    "param_share": params / backbone_params, "finetune_s": finetune_s, "extract_s": extract_s,
                    "fit_s": fit_s, "store_bytes": store_bytes, "run": str(run)}

        finished = _finished
        train_desc = f"{bert.train_examples} ex"
        for epoch in self.c.finetune_checkpoints:
            h = history.get(epoch)
            if h is None:  # fell on the same step as a later checkpoint (only with a few dozen examples)
                continue
            rows.append(row(f"BERT fine-tuned {epoch:g} ep", "-", h.dev, bert.trainable_params,
                            h.train_time_s, None, None, None, train_desc, self.checkpoint(epoch)))
        ft1_s = history[1.0].train_time_s
        extract_s, store_bytes = {}, {}
        for b in BACKBONES:
            names = [f"{self.task}/{self.store(b).name}/{s}" for s in ("train", "dev")]
            if all(n in done for n in names):
                extract_s[b] = sum(done[n]["wall_s"] for n in names)
                store_bytes[b] = _store_bytes(self.store(b))
        for backbone in BACKBONES:
            for kind in self.c.kinds:
                run = self.adapter_dir(kind, backbone)
                if finished(run):
                    r = _results(run)
                    rows.append(row(kind, BACKBONE_NAMES[backbone], r.dev_metrics, r.trainable_params,
                                    ft1_s if backbone == "ft1" else 0.0, extract_s.get(backbone),
                                    r.train_wall_time_s, store_bytes.get(backbone), train_desc, run))
        for mode in ("mean", "max"):
            out = self.root / f"ensemble-{mode}"
            if finished(out):
                r = _results(out)
                best = Path(r.members[1]["run"])
                rb = _results(best)
                best_backbone = best.name.rsplit("-", 1)[1]
                rows.append(row(f"ensemble ({mode}): BERT 1 ep + {rb.method}", BACKBONE_NAMES[best_backbone],
                                r.dev_metrics, bert.trainable_params + rb.trainable_params, ft1_s,
                                extract_s.get(best_backbone), rb.train_wall_time_s,
                                store_bytes.get(best_backbone), train_desc, out))
        kind = self._best_frozen_kind()
        for fraction in self.c.fractions if kind else []:
            run = self.adapter_dir(kind, "frozen", fraction)
            if finished(run):
                r = _results(run)
                rows.append(row(f"{kind} on {fraction:.0%} of train", BACKBONE_NAMES["frozen"], r.dev_metrics,
                                r.trainable_params, 0.0, extract_s.get("frozen"), r.train_wall_time_s,
                                store_bytes.get("frozen"), f"{r.train_examples} records", run))
        return rows


# ------------------------------------------------------------------ output


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem, 1) if mem else None, "gpus": gpus or "none",
            "python": platform.python_version(), "tensorflow": tf.__version__}


METRIC_COLUMNS = {"squad_v2": ("f1", "exact", "HasAns_f1", "NoAns_f1")}
TASK_TITLES = {"sst2": "SST-2", "mrpc": "MRPC", "squad_v2": "SQuAD 2.0"}


def _metric(task: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if task == "squad_v2" else f"{value:.4f}"  # SQuAD's official script reports 0-100


def _share(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 1e-3 else f"{100 * x:.4f}%"


def _seconds(x) -> str:
    return "" if x is None else f"{x:,.0f}"


def markdown(rows: list[dict], meta: dict) -> str:
    m = meta["machine"]
    lines = [
        "# Reproduction: fine-tuned BERT vs BERTVision adapters",
        "",
        f"Measured by `python -m bench.reproduce{' --quick' if meta['quick'] else ''}` on {meta['date']}: "
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, GPU: {m['gpus']}; "
        f"TensorFlow {m['tensorflow']}, Python {m['python']}. Backbone: {meta['backbone']} "
        f"({meta['backbone_params']:,} parameters). Stage wall time in all: {meta['total_stage_s'] / 60:.1f} min.",
        "",
        "Columns: official dev metrics; trainable parameters and their share of the backbone's; "
        "`fine-tune s` = BERT training time up to that checkpoint (dev evaluation excluded), "
        "`extract s` = writing the train + dev store, `fit s` = adapter training (dev evaluation excluded); "
        "`store MiB` = train + dev store. Adapter rows report their best dev epoch; BERT rows are fixed "
        "checkpoints of one 2-epoch run. The ensemble uses the best adapter by dev main metric.",
    ]
    if meta.get("missing"):
        lines += ["", "**Incomplete reproduction.** Runs not finished yet (run the same command again to "
                  "resume): " + "; ".join(f"{TASK_TITLES.get(t, t)}: {', '.join(m)}"
                                          for t, m in meta["missing"].items()) + "."]
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        names = METRIC_COLUMNS.get(task) or tuple(task_rows[0]["dev_metrics"])
        names = tuple(n for n in names if n in task_rows[0]["dev_metrics"])
        lines += ["", f"## {TASK_TITLES.get(task, task)}", "",
                  "| method | backbone | train data | " + " | ".join(names)
                  + " | trainable params | share | fine-tune s | extract s | fit s | store MiB |",
                  "|---|---|---|" + "---|" * len(names) + "---|---|---|---|---|---|"]
        for r in task_rows:
            metrics = " | ".join(_metric(task, r["dev_metrics"].get(n)) for n in names)
            store = "" if r["store_bytes"] is None else f"{r['store_bytes'] / 2**20:,.0f}"
            lines.append(f"| {r['method']} | {r['backbone']} | {r['train_data']} | {metrics} | "
                         f"{r['trainable_params']:,} | {_share(r['param_share'])} | {_seconds(r['finetune_s'])} | "
                         f"{_seconds(r['extract_s'])} | {_seconds(r['fit_s'])} | {store} |")
    if meta.get("charts"):
        lines += ["", "## Charts (`pipelines.report`)", ""]
        lines += [f"- [{Path(c).stem}]({c})" for c in meta["charts"]]
    return "\n".join(lines) + "\n"


def write_outputs(config: ReproduceConfig, rows: list[dict], stages: Stages, docs: Path | None,
                  missing: dict | None = None) -> dict:
    work = Path(config.work)
    first = _results(work / rows[0]["task"] / "bert")
    meta = {"date": _dt.date.today().isoformat(), "machine": machine(), "quick": config.quick,
            "backbone": first.backbone.get("name"), "backbone_params": first.backbone_params,
            "total_stage_s": round(sum(s["wall_s"] for s in stages.done.values()), 1),
            "stages_run_now": stages.ran, "missing": missing or {}}
    runs = [Path(r["run"]) for r in rows if _finished(Path(r["run"]))]
    bert = [work / t / "bert" for t in dict.fromkeys(r["task"] for r in rows)]
    runs = list(dict.fromkeys(bert + runs))
    build_report([str(r) for r in runs], work / "report", formats=("html", "png", "svg"))
    charts = sorted(p.name for p in (work / "report").glob("*.png"))
    io.atomic_write_json(work / "results.json", {"meta": meta, "rows": rows, "config": config.to_dict()})
    io.atomic_write_text(work / "results.md", markdown(rows, {**meta, "charts": [f"report/{c}" for c in charts]}))
    if docs is not None:
        target = docs / "results"
        target.mkdir(parents=True, exist_ok=True)
        for c in charts:
            shutil.copyfile(work / "report" / c, target / c)
            svg = (work / "report" / c).with_suffix(".svg")
            if svg.is_file():
                shutil.copyfile(svg, target / svg.name)
        io.atomic_write_text(docs / "results.md", markdown(rows, {**meta, "charts": [f"results/{c}" for c in charts]}))
    return meta


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(REPO / "bench_out" / "reproduce"), help="output folder (resumable)")
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"),
                   help="folder holding glue/SST-2, glue/MRPC and squad2 (default ../shared/data)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated subset of sst2,mrpc,squad_v2 (default all; with --quick: sst2,squad_v2)")
    p.add_argument("--model", default=None, help="backbone (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="reduced version: a few dozen examples per task, short sequences, 2 adapter epochs, no XLA")
    p.add_argument("--docs", default=None, metavar="DIR", help="also write DIR/results.md and DIR/results/*.png|svg")
    p.add_argument("--no-progress", action="store_true", help="no progress bars inside the stages")
    p.add_argument("--report-only", action="store_true",
                   help="run no stage: write the tables and charts of the runs finished so far")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work)
    # --quick: one classification and one span task unless --tasks says otherwise (MRPC's
    # pairs run through the same classification stages as SST-2)
    tasks = args.tasks.split(",") if args.tasks else list(QUICK_DEFAULT_TASKS if args.quick else FULL_PLANS)
    try:
        config = ReproduceConfig(work=str(work), data_root=str(Path(args.data_root).resolve()), tasks=tasks, quick=args.quick,
                                 seed=args.seed, model=args.model, jit_compile=not args.quick,
                                 progress=not args.no_progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = work / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new = config.to_dict()
        diff = sorted(k for k in new if k not in ("progress", "work") and old.get(k) != new[k])
        if diff:
            print(f"error: {work} holds a reproduction with other settings ({', '.join(diff)}); "
                  f"use the same flags to resume, or another --work", file=sys.stderr)
            return 2
    work.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(path, config.to_dict())
    stages = Stages(work)
    t0 = time.perf_counter()
    rows, missing = [], {}
    try:
        for task in config.tasks:
            run = TaskRun(config, task, stages)
            if not args.report_only:
                run.run()
            rows += run.rows()
            left = run.missing()
            if left:
                missing[task] = left
    except (BertVisionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {work} holds no finished run yet", file=sys.stderr)
        return 2
    meta = write_outputs(config, rows, stages, Path(args.docs) if args.docs else None, missing)
    print(markdown(rows, meta))
    print(f"this invocation: {len(stages.ran)} stage(s) run, {time.perf_counter() - t0:.0f} s; "
          f"all stages: {meta['total_stage_s'] / 60:.1f} min; outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
