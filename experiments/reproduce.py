"""Reproduce BERTVision's claims on real data: one command, one table.

    python -m experiments.reproduce --docs docs                  # the full run (resumable)
    python -m experiments.reproduce --docs docs --seeds 0,1,2    # + the headline rows with two more seeds
    python -m experiments.reproduce --docs docs --layer-seeds 1,2  # + the layer weights' seed spread only
    python -m experiments.reproduce --quick --work /tmp/rq       # reduced version on SST-2 + SQuAD (the test suite)

On the embedded MiniLM and the real data in ``../shared/data`` (each task's
data, lengths and recipe are its `TaskPlan`): SST-2's 8,000-example seeded
subset and full dev set; MRPC's full train and dev; SQuAD 2.0's 10 official
train articles (``train-v2.0.json``), evaluated on the Rhine article.

For every task, in this order, each stage a library call (the same code as
``pipelines.finetune``, ``pipelines.extract``, ``pipelines.fit``,
``pipelines.ensemble``):

1. BERT fine-tuned for 2 epochs, checkpointed and scored at 0.1, 0.3, 1 and 2
   epochs (the rows are checkpoints of one warmup + linear-decay schedule over
   2 epochs, as the original study's fractional checkpoints);
2. ``sequence`` stores of train and dev from the frozen backbone and from the
   fine-tuning checkpoints the adapters read (1 epoch; SQuAD also 0.3, the
   study's two settings); MRPC's frozen store encodes each sentence on its
   own (``--pair-mode separate``, ``mean`` tokens: the embedded MiniLM is a
   sentence-embedding model) and its adapters there use ``adapter_dim`` 256;
   beside them the zero-shot cosine of that store's last layer (``--adapter
   cosine``: no training, its threshold chosen on train; first seed only),
   the baseline every pair adapter must beat;
3. the adapter kinds on every store (best dev epoch restored; early stopping);
4. the ensemble of BERT at each checkpoint with the best adapter on that
   checkpoint's activations (mean and max);
5. SQuAD only: answerability, a layer mix on the [CLS] activations of the
   1-epoch checkpoint classifying answerable vs not, beside BERT's own null
   decision;
6. the best two adapter kinds on the frozen store (SQuAD: on the 1-epoch
   checkpoint's, where its adapters answer at all) trained on 10%, 25%, 50% of
   the training data (seeded; the frozen backbone never saw any of it, but
   SQuAD's 1-epoch checkpoint was fine-tuned on all of it, so its fraction
   rows measure the adapter's data needs, not the whole method's);
7. LoRA (rank 8, keras-hub's ``enable_lora``, lr 4e-3) on the same backbone,
   2 epochs (SQuAD: 1).

SQuAD's stores keep the last 4 of the 7 layers as int8 (``--layers last4
--dtype int8``), which keeps its part of the run within 75 minutes on the
2-core machine; each choice alone was measured free of accuracy cost on
the 1-epoch checkpoint (docs/results.md).

``--layer-seeds 1,2`` adds seeds that train only the layer-mixing adapter
kinds (``scalar_mix``, ``adapter_pooler``) on the first seed's stores (the
frozen backbone's and the 1-epoch checkpoint's; SQuAD: the checkpoint's),
fine-tuning nothing: the learned layer weights' seed spread (centre of
gravity and per-layer mean +- std in ``results.md``, ``report/layer_spread``)
at the cost of a few adapter fits.

With ``--seeds 0,1,2`` the first seed runs everything and every further seed
runs the headline rows (BERT, LoRA, the best adapter kind on each GLUE
backbone, with that seed's own checkpoint, and the ensemble; on SQuAD the
best frozen adapter, since fine-tuning SQuAD again per seed costs more than
the budget); the tables then give mean +- standard deviation over the seeds.
Tasks run one after another, each with all its seeds.

Everything lands in ``--work`` (default ``experiments_out/reproduce``): one folder per
run, ``stages.json`` (wall seconds and peak memory of every finished stage),
``reproduction.json`` (every row; not named ``results.json``, so that a
report's walk over run folders never takes it) and ``results.md`` (the
tables), plus ``report/``
from ``pipelines.report``. Re-running the command skips finished stages, and a
killed stage resumes where its library call left off. ``--docs DIR`` also
writes ``DIR/reproduction.md`` and the charts into ``DIR/results/``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as _dt
import gc
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


import keras
import tensorflow as tf

from bertvision import io
from bertvision.training.answerability import (AnswerabilityConfig, answerability_metrics, fit_answerability,
                                      gold_answerable, span_decisions)
from bertvision.config import ConfigBase
from bertvision.inference.ensemble import EnsembleConfig, run_ensemble
from bertvision.errors import BertVisionError, ConfigError
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.training.finetune import FinetuneConfig, Finetuner
from bertvision.training.fit import FitConfig, fit
from bertvision.models import KINDS
from bertvision.report import build_report, load_runs
from bertvision.report.build import save_chart
from bertvision.report.charts import layer_spread
from bertvision.report.table import grid, layer_mix_frame, layer_mix_markdown
from bertvision.runs import PeakMemory, Predictions, RunFolder, RunResults, checkpoint_path
from bertvision.store.format import MANIFEST, open_store

# the adapter kinds with a learned layer mix (adapter_pooler's default layer pooling is scalar_mix): what a
# --layer-seeds seed trains
MIX_KINDS = ("scalar_mix", "adapter_pooler")

REPO = Path(__file__).resolve().parents[1]
REPRODUCTION = "reproduction.json"  # the reproduction's rows (a run folder's file is results.json)


@dataclass
class TaskPlan:
    """What one task of the reproduction trains and evaluates on, and how."""

    task: str
    data: str  # folder under the data root
    max_seq_len: int
    train_split: str = "train"
    eval_split: str = "dev"
    train_sample: int | None = None  # seeded subset of train (same draw for fine-tuning and extraction)
    train_limit: int | None = None  # first N training examples
    eval_limit: int | None = None  # first N dev examples
    doc_stride: int = 128
    finetune_lr: float = 5e-5
    finetune_batch_size: int = 32
    lora_rank: int = 8
    # `experiments.finetune_sweep --lora-rank 8` on SST-2 (2026-12-01, seed 0, 2 epochs): 5e-4 81.5, 1e-3 83.6,
    # 2e-3 84.9, 4e-3 85.9
    lora_lr: float = 4e-3
    lora_epochs: float = 2.0
    checkpoint_backbones: list = field(default_factory=lambda: [1.0])  # fine-tuning epochs the adapters read
    store_layers: str = "all"
    store_dtype: str = "float16"
    adapter_epochs: int = 10
    adapter_batch_size: int = 64
    answerability: bool = False
    # pair tasks: how the frozen backbone's store encodes a pair ("cross": one sequence, as BERT is
    # fine-tuned; "separate": each text on its own, stored as masked means, as a sentence-embedding model
    # such as the embedded MiniLM was trained) and ModelConfig fields for the adapters on that store.
    # The fine-tuned checkpoints were trained cross-encoded, so their stores always are.
    frozen_pair_mode: str = "cross"
    frozen_adapter: dict = field(default_factory=dict)
    # the store the fraction rows (the best kinds on 10/25/50% of train) read: "frozen" or a checkpoint
    # ("ft1"); SQuAD's frozen adapters all answer "no answer", so its fractions read the 1-epoch checkpoint
    fraction_backbone: str = "frozen"
    # the adapter kinds trained on a backbone ("frozen", "ft1", "ft0.3"), where not all of the reproduction's
    # kinds (the full plans train every kind on every backbone; the quick plans cover each kind on one of
    # their backbones)
    backbone_kinds: dict = field(default_factory=dict)
    # how many of the seeds that fine-tune BERT also train LoRA (None: all of them; the quick plans: the GLUE
    # tasks' first seed only, SQuAD's none: LoRA's code is the same for every seed and task head)
    lora_seeds: int | None = None


FULL_PLANS = {
    # SST-2 and MRPC fine-tune at lr 1e-4: in `experiments.finetune_sweep` (2026-12-01, seed 0) it led 5e-5 after
    # 1 and 2 epochs on both tasks (SST-2 accuracy +1.5 / +1.0 points, MRPC F1 +1.1 / +0.6)
    "sst2": TaskPlan("sst2", "glue/SST-2", max_seq_len=64, train_sample=8000, finetune_lr=1e-4),
    # MRPC's frozen store encodes each sentence on its own, with adapter_dim 256: in `experiments.pairs`
    # (2026-11-30, 3 seeds) that was worth 1.3-4.3 F1 to every kind over cross-encoded pairs, and
    # adapter_pooler at width 256 reached 86.0 +- 0.3 F1 (width 64: 83.8 +- 1.8)
    "mrpc": TaskPlan("mrpc", "glue/MRPC", max_seq_len=128, finetune_lr=1e-4, frozen_pair_mode="separate",
                     frozen_adapter={"adapter_dim": 256}),
    # SQuAD: the 10 official train articles (7.4% unanswerable) plus the Normans/CCT article (53%) so that
    # answerability can be learned; lr 2e-4 (5e-5 left BERT's HasAns F1 at 16.8 after one epoch); 256 tokens
    # (384 learned answerability worse here); adapters 3 epochs (about 70 s an epoch on the 2-core machine).
    # To fit the 75-minute budget (all 7 layers in float16, LoRA 2 epochs: 96.8 min, 2026-12-01) the stores
    # keep the last 4 layers as int8 (1.6 instead of 5.5 GiB per store; each measured alone on the 1-epoch
    # checkpoint, 3 seeds: F1 42.0 +- 1.1 for both last4 and all layers, int8 42.1 +- 0.8 vs float16
    # 42.0 +- 1.1, docs/results.md) and LoRA trains 1 epoch (2 epochs: 1,353 s for +1.1 F1, 2026-12-01)
    "squad_v2": TaskPlan("squad_v2", "squad2", max_seq_len=256, train_split="train+dev-v2.0.Normans_CCT",
                         finetune_lr=2e-4, adapter_batch_size=32, adapter_epochs=3,
                         checkpoint_backbones=[0.3, 1.0], answerability=True,
                         store_layers="last4", store_dtype="int8", lora_epochs=1.0, fraction_backbone="ft1"),
}
# The test suite's smoke run: each code path once, on a few dozen examples. Every kind trains on the backbone
# the fraction rows read (SST-2: frozen, SQuAD: the 1-epoch checkpoint) and adapter_pooler alone on the
# others (the same fit on another store); LoRA trains on the GLUE tasks' first seed only; QUICK_SETTINGS: BERT
# is scored at 0.3, 1 and 2 epochs, and the best kind alone trains on 50% of the data.
QUICK_PLANS = {
    "sst2": TaskPlan("sst2", "glue/SST-2", max_seq_len=32, train_sample=64, eval_limit=32, adapter_epochs=2,
                     finetune_batch_size=16, backbone_kinds={"ft1": ["adapter_pooler"]}, lora_seeds=1),
    "mrpc": TaskPlan("mrpc", "glue/MRPC", max_seq_len=64, train_limit=48, eval_limit=24, adapter_epochs=2,
                     finetune_batch_size=8, frozen_pair_mode="separate", frozen_adapter={"adapter_dim": 32},
                     backbone_kinds={"ft1": ["adapter_pooler"]}, lora_seeds=1),
    "squad_v2": TaskPlan("squad_v2", "squad2", max_seq_len=128, doc_stride=64, train_limit=12, eval_limit=8,
                         train_split="train+dev-v2.0.Normans_CCT", finetune_lr=2e-4,
                         adapter_epochs=2, adapter_batch_size=8, finetune_batch_size=2,
                         checkpoint_backbones=[0.3, 1.0], answerability=True,
                         store_layers="last4", store_dtype="int8", lora_epochs=1.0, fraction_backbone="ft1",
                         backbone_kinds={"frozen": ["adapter_pooler"], "ft0.3": ["adapter_pooler"]}, lora_seeds=0),
}
QUICK_SETTINGS = {"finetune_checkpoints": [0.3, 1.0, 2.0], "fractions": [0.5, 1.0], "fraction_kinds": 1}
QUICK_DEFAULT_TASKS = ("sst2", "squad_v2")


@dataclass
class ReproduceConfig(ConfigBase):
    """Settings of a reproduction (saved as ``WORK/config.json``)."""

    work: str
    data_root: str
    tasks: list = field(default_factory=lambda: list(FULL_PLANS))
    quick: bool = False
    seeds: list = field(default_factory=lambda: [0])
    # further seeds that train only the layer-mixing adapter kinds (MIX_KINDS) on the first seed's stores (the
    # frozen backbone's and the 1-epoch checkpoint's), fine-tuning nothing: the learned layer weights' seed spread
    layer_seeds: list = field(default_factory=list)
    backbone: str | None = None
    finetune_epochs: float = 2.0
    finetune_checkpoints: list = field(default_factory=lambda: [0.1, 0.3, 1.0, 2.0])
    kinds: list = field(default_factory=lambda: list(KINDS))
    fractions: list = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    fraction_kinds: int = 2  # the best this many kinds (on the plan's fraction_backbone) train on the fractions
    patience: int = 3
    jit_compile: bool = True  # XLA for extraction and adapter fits
    # Fine-tuning runs un-jitted: its length-grouped batches come in many token
    # lengths, and on CPU compiling each (~15 s) costs more than XLA saves.
    finetune_jit_compile: bool = False
    # The study's head on BERT's pooler over [CLS]: every BERT row in docs/results.md was measured with it
    # (pipelines.finetune's default, auto, puts the embedded MiniLM's head on its mean)
    finetune_pooling: str = "cls"
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
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds must list distinct seeds, got {self.seeds}")
        if len(set(self.layer_seeds)) != len(self.layer_seeds) or set(self.layer_seeds) & set(self.seeds):
            raise ConfigError(f"--layer-seeds must list distinct seeds not in --seeds, got {self.layer_seeds}")
        if not self.plans:
            self.plans = {t: dataclasses.asdict(table[t]) for t in self.tasks}

    def plan(self, task: str) -> TaskPlan:
        return TaskPlan(**self.plans[task])


# ----------------------------------------------------------------- stages


class Stages:
    """The stages finished so far (``WORK/stages.json``): wall seconds and
    peak memory of each, written atomically after every stage."""

    def __init__(self, work: Path):
        self.path = work / "stages.json"
        self.done: dict = io.read_json(self.path) if self.path.is_file() else {}
        self.ran: list[str] = []

    def run(self, name: str, is_complete, fn) -> dict:
        """Run `fn()` unless stage `name` finished before and `is_complete()`
        still holds; record its wall time and peak memory."""
        if name in self.done and is_complete():
            print(f"[skip] {name} (done in {self.done[name]['wall_s']:.0f} s)", flush=True)
            return self.done[name]
        print(f"[run ] {name}", flush=True)
        t, load0 = time.perf_counter(), os.getloadavg()[0]
        with PeakMemory() as peak:
            fn()
        wall = time.perf_counter() - t
        # the machine's 1-minute load average as the stage began and ended: wall times from a busy
        # machine are not comparable with a quiet one's
        self.done[name] = {"wall_s": round(wall, 2), "peak_mib": peak.rss_mib, "peak_device_mib": peak.device_mib,
                           "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)], "finished": _now()}
        self.ran.append(name)
        io.atomic_write_json(self.path, self.done)
        print(f"[done] {name}: {wall:.1f} s, peak {peak.rss_mib} MiB", flush=True)
        keras.backend.clear_session()  # free the stage's graphs and models before the next (and gc.collect())
        return self.done[name]

    def mean_load(self) -> float | None:
        """The machine's load over the stages, weighted by their wall time."""
        timed = [(s["wall_s"], sum(s["load_avg"]) / 2) for s in self.done.values() if s.get("load_avg")]
        total = sum(w for w, _ in timed)
        return round(sum(w * load for w, load in timed) / total, 2) if total else None

    def task_seconds(self, task: str) -> float:
        return sum(s["wall_s"] for name, s in self.done.items() if name.split("/")[0] == task)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


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


class TaskStages:
    """The stages of one task for one seed (its fine-tuning, stores, adapter
    fits and ensembles, each a `Stages` stage and a run folder), and the
    table rows they give."""

    def __init__(self, config: ReproduceConfig, task: str, stages: Stages, seed: int):
        self.c, self.stages, self.seed = config, stages, seed
        self.plan = config.plan(task)
        self.task = task
        self.first = seed == config.seeds[0]  # the first seed runs every row; the others the headline rows
        # a --layer-seeds seed: only the layer-mixing kinds, on the first seed's stores
        self.layers_only = seed in config.layer_seeds
        self.base = Path(config.work) / task
        self.root = self.base if self.first else self.base / f"seed{seed}"
        self.data_dir = str(Path(config.data_root) / self.plan.data)
        if not Path(self.data_dir).is_dir():
            raise ConfigError(f"{self.data_dir}: no such data folder (give --data-root)")
        # SQuAD's further seeds re-train only the frozen-backbone adapter: fine-tuning SQuAD again per
        # seed costs more than the seed budget (issue 17: at most 90 extra minutes for all seeds)
        self.finetunes = (self.first or task != "squad_v2") and not self.layers_only
        self.bert, self.lora = self.root / "bert", self.root / "lora"
        self.bert_results_dir = self.bert if self.finetunes else self.base / "bert"
        lora_seeds = len(config.seeds) if self.plan.lora_seeds is None else self.plan.lora_seeds
        self.trains_lora = self.finetunes and config.seeds.index(seed) < lora_seeds
        self.backbones = ["frozen"] + [f"ft{e:g}" for e in self.plan.checkpoint_backbones]

    def backbone_name(self, backbone: str) -> str:
        """``frozen`` / ``ft1`` / ``ft0.3`` as a table's words (with the frozen store's pair mode, if not cross)."""
        if backbone != "frozen":
            return f"MiniLM fine-tuned {backbone[2:]} ep"
        if self.plan.frozen_pair_mode == "separate":
            return "frozen MiniLM, sentences encoded separately"
        return "frozen MiniLM"

    def stage(self, name: str) -> str:
        return f"{self.task}/{name}" if self.first else f"{self.task}/seed{self.seed}/{name}"

    # ---- stages 1-2: BERT and LoRA
    def finetune(self, out: Path, lora: bool) -> None:
        p, c = self.plan, self.c
        extra = [x for x in c.finetune_checkpoints if x != int(x)] if not lora else None
        config = FinetuneConfig(
            task=self.task, out=str(out), data_dir=self.data_dir, backbone=c.backbone,
            epochs=p.lora_epochs if lora else c.finetune_epochs,
            lr=p.lora_lr if lora else p.finetune_lr, lora_rank=p.lora_rank if lora else None,
            batch_size=p.finetune_batch_size, max_seq_len=p.max_seq_len, doc_stride=p.doc_stride, seed=self.seed,
            train_split=p.train_split, eval_splits=[p.eval_split], limit=p.train_limit, eval_limit=p.eval_limit,
            sample=p.train_sample, checkpoint_at=extra or None, jit_compile=c.finetune_jit_compile,
            pooling=c.finetune_pooling, progress=c.progress,
            command=["python", "-m", "experiments.reproduce", f"(stage {self.stage(out.name)})"])
        self.stages.run(self.stage(out.name), lambda: _finished(out), lambda: Finetuner(config).run())

    def checkpoint(self, epoch: float) -> Path:
        return checkpoint_path(self.bert, epoch)

    # ---- stage 3: stores
    def store(self, backbone: str) -> Path:
        # the frozen backbone's store does not depend on the seed: every seed reads the first's (a
        # --layer-seeds seed also reads the first seed's checkpoints' stores)
        return (self.base if backbone == "frozen" or self.layers_only else self.root) / f"store-{backbone}"

    def mix_fits(self) -> list[tuple[str, str]]:
        """``(kind, backbone)`` of every fit of a --layer-seeds seed: the mixing kinds on the frozen backbone's
        and the 1-epoch checkpoint's stores (SQuAD's frozen adapters answer nothing, so its mix is read on the
        checkpoint only)."""
        backbones = ["ft1"] if self.task == "squad_v2" else ["frozen", "ft1"]
        return [(k, b) for b in backbones for k in self.kinds(b) if k in MIX_KINDS]

    def store_encoding(self, backbone: str) -> tuple[str, str]:
        """(token mode, pair mode) of `backbone`'s store: the fine-tuned checkpoints were trained on
        cross-encoded pairs, so their stores are; a separately encoded pair is stored as masked means."""
        pair_mode = self.plan.frozen_pair_mode if backbone == "frozen" else "cross"
        return ("mean" if pair_mode == "separate" else "sequence"), pair_mode

    def extract(self, backbone: str) -> None:
        p, c = self.plan, self.c
        model = c.backbone if backbone == "frozen" else str(self.checkpoint(float(backbone[2:])))
        store = self.store(backbone)
        token_mode, pair_mode = self.store_encoding(backbone)
        for split in (p.train_split, p.eval_split):
            config = ExtractConfig(
                task=self.task, split=split, out=str(store), data_dir=self.data_dir, backbone=model,
                token_mode=token_mode, pair_mode=pair_mode,
                layers=p.store_layers, dtype=p.store_dtype, max_seq_len=p.max_seq_len,
                doc_stride=p.doc_stride, limit=p.train_limit if split == p.train_split else p.eval_limit,
                sample=p.train_sample if split == p.train_split else None, seed=c.seeds[0],
                jit_compile=c.jit_compile, progress=c.progress,
                command=["python", "-m", "experiments.reproduce", f"(stage {self.stage(store.name)}/{split})"])
            name = f"{self.task}/{store.name}/{split}" if backbone == "frozen" else f"{self.stage(store.name)}/{split}"
            self.stages.run(name, lambda s=split: _store_split_done(store, s),
                            lambda cfg=config: Extractor(cfg).run())

    # ---- stage 4: adapters
    def kinds(self, backbone: str) -> list[str]:
        """The adapter kinds trained on `backbone` (the plan's `backbone_kinds`, else every kind)."""
        return [k for k in self.c.kinds if k in self.plan.backbone_kinds.get(backbone, self.c.kinds)]

    def adapter_dir(self, kind: str, backbone: str, fraction: float = 1.0) -> Path:
        suffix = "" if fraction == 1.0 else f"-frac{fraction:g}"
        return self.root / f"{kind}-{backbone}{suffix}"

    def fit(self, kind: str, backbone: str, fraction: float = 1.0) -> None:
        p = self.plan
        adapter = {"kind": kind, **(p.frozen_adapter if backbone == "frozen" else {})}
        self._fit_stage(self.adapter_dir(kind, backbone, fraction), backbone, adapter, epochs=p.adapter_epochs,
                        batch_size=p.adapter_batch_size, train_fraction=fraction, patience=self.c.patience,
                        jit_compile=self.c.jit_compile, verbose=1 if self.c.progress else 0)

    def cosine(self) -> None:
        """The zero-shot cosine of a separately encoded pair task's frozen store (``pipelines.fit --adapter
        cosine``: no training, its threshold chosen on train), the baseline every pair adapter must beat. It
        has no seed: the first seed's folder only."""
        self._fit_stage(self.root / "cosine-frozen", "frozen", {"kind": "cosine"})

    def _fit_stage(self, out: Path, backbone: str, adapter: dict, **settings) -> None:
        """One `pipelines.fit` stage on `backbone`'s store: the plan's splits, this seed, `settings`."""
        config = FitConfig(store=str(self.store(backbone)), out=str(out), adapter=adapter,
                           train_split=self.plan.train_split, eval_splits=[self.plan.eval_split], seed=self.seed,
                           command=["python", "-m", "experiments.reproduce", f"(stage {self.stage(out.name)})"],
                           **settings)
        self.stages.run(self.stage(out.name), lambda: _finished(out), lambda: fit(config))

    @property
    def has_cosine(self) -> bool:
        return self.first and self.plan.frozen_pair_mode == "separate"

    def ranked_kinds(self, backbone: str, root: Path | None = None) -> list[str]:
        """The adapter kinds on `backbone`, best dev main metric first (ties: fewer parameters)."""
        root = root or self.root
        runs = [(k, root / f"{k}-{backbone}") for k in self.c.kinds]
        done = [(k, _results(r)) for k, r in runs if _finished(r)]
        return [k for k, r in sorted(done, key=lambda kr: (-kr[1].main_value, kr[1].trainable_params))]

    def best_kind(self, backbone: str) -> str | None:
        """The best kind on `backbone` as the first seed found it (every seed trains that one)."""
        ranked = self.ranked_kinds(backbone, self.base)
        return ranked[0] if ranked else None

    def fraction_kinds(self) -> list[str]:
        """The kinds the fraction rows train: the best ``fraction_kinds`` on the plan's fraction backbone."""
        return self.ranked_kinds(self.plan.fraction_backbone)[:self.c.fraction_kinds]

    # ---- stage 5: ensembles
    def ensemble_dir(self, backbone: str, mode: str) -> Path:
        return self.root / f"ensemble-{backbone}-{mode}"

    def ensemble(self, backbone: str, mode: str) -> None:
        out = self.ensemble_dir(backbone, mode)
        members = [str(self.checkpoint(float(backbone[2:]))), str(self.adapter_dir(self.best_kind(backbone),
                                                                                  backbone))]
        if _finished(out) and RunFolder(out).read_config()["runs"] != members:
            shutil.rmtree(out)  # the best adapter changed (its runs were redone): combine again
        config = EnsembleConfig(runs=members, out=str(out), split=self.plan.eval_split, combine=mode)
        self.stages.run(self.stage(out.name), lambda: _finished(out), lambda: run_ensemble(config))

    # ---- stage 7: answerability
    def answerability(self) -> None:
        out = self.root / "answerability-ft1"
        config = AnswerabilityConfig(store=str(self.store("ft1")), out=str(out), train_split=self.plan.train_split,
                                     eval_split=self.plan.eval_split, seed=self.seed,
                                     jit_compile=self.c.jit_compile, verbose=1 if self.c.progress else 0)
        self.stages.run(self.stage(out.name), lambda: _finished(out), lambda: fit_answerability(config))

    def run(self) -> None:
        if self.layers_only:
            for kind, backbone in self.mix_fits():
                self.fit(kind, backbone)
            return
        if self.finetunes:
            self.finetune(self.bert, lora=False)
        if self.first:
            # the study's setting first (adapters on the 1-epoch checkpoint, then 0.3), the frozen backbone
            # after: a run stopped early has the headline rows
            for backbone in [f"ft{e:g}" for e in sorted(self.plan.checkpoint_backbones, reverse=True)] + ["frozen"]:
                self.extract(backbone)
                for kind in self.kinds(backbone):
                    self.fit(kind, backbone)
                if backbone != "frozen":
                    for mode in ("mean", "max"):
                        self.ensemble(backbone, mode)
                if backbone == "ft1" and self.plan.answerability:
                    self.answerability()
            if self.has_cosine:
                self.cosine()
            for kind in self.fraction_kinds():
                for fraction in self.c.fractions:
                    if fraction < 1.0:
                        self.fit(kind, self.plan.fraction_backbone, fraction)
        if not self.first:  # further seeds: the headline rows
            self.fit(self.best_kind("frozen"), "frozen")
            if self.task != "squad_v2":
                self.extract("ft1")
                self.fit(self.best_kind("ft1"), "ft1")
                self.ensemble("ft1", "mean")
        if self.trains_lora:
            self.finetune(self.lora, lora=True)

    # ---- rows
    def expected_runs(self) -> list[Path]:
        """Every run folder a finished task holds (for this seed)."""
        runs = ([self.bert] if self.finetunes else []) + ([self.lora] if self.trains_lora else [])
        if self.layers_only:
            return [self.adapter_dir(k, b) for k, b in self.mix_fits()]
        if self.first:
            runs += [self.adapter_dir(k, b) for b in self.backbones for k in self.kinds(b)]
            runs += [self.ensemble_dir(b, m) for b in self.backbones[1:] for m in ("mean", "max")]
            fb = self.plan.fraction_backbone
            for kind in (self.fraction_kinds() or ["BEST"])[:self.c.fraction_kinds]:
                runs += [self.adapter_dir(kind, fb, f) for f in self.c.fractions if f < 1.0]
            if self.plan.answerability:
                runs.append(self.root / "answerability-ft1")
            if self.has_cosine:
                runs.append(self.root / "cosine-frozen")
        else:
            runs.append(self.adapter_dir(self.best_kind("frozen") or "BEST", "frozen"))
            if self.task != "squad_v2":
                runs += [self.adapter_dir(self.best_kind("ft1") or "BEST", "ft1"), self.ensemble_dir("ft1", "mean")]
        return runs

    def missing(self) -> list[str]:
        return [str(r.relative_to(self.base)) for r in self.expected_runs() if not _finished(r)]

    def rows(self) -> list[dict]:
        """The table rows of every finished run of this task and seed."""
        if not _finished(self.bert_results_dir):
            return []
        bert = _results(self.bert_results_dir)
        backbone_params = bert.backbone_params
        rows = []

        def row(method, backbone, r: RunResults | None, metrics, params, finetune_s, fit_s, peak, data, run,
                headline=None):
            return {"task": self.task, "seed": self.seed, "method": method, "backbone": backbone,
                    "train_data": data, "dev_metrics": metrics, "main_metric": bert.main_metric,
                    "trainable_params": params, "param_share": params / backbone_params if params else None,
                    "finetune_s": finetune_s, "fit_s": fit_s, "peak_mib": peak, "run": str(run),
                    "headline": headline,
                    "train_fraction": (r.train_fraction if r is not None else None) or 1.0,
                    "chosen_on_reported_split": bool(r is not None and r.selection
                                                     and r.selection.get("chosen_on_reported_split"))}

        train_desc = f"{bert.train_examples} ex"
        bert_points = {h.epoch: h for h in bert.history}
        for epoch in self.c.finetune_checkpoints if self.finetunes else []:
            h = bert_points.get(epoch)
            if h is None:  # fell on the same step as a later checkpoint (only with a few dozen examples)
                continue
            rows.append(row(f"BERT fine-tuned {epoch:g} ep", "-", bert, h.dev, bert.trainable_params,
                            h.train_time_s, None, bert.peak_memory_mib, train_desc, self.checkpoint(epoch),
                            headline=f"BERT {epoch:g} ep" if epoch in (1.0, 2.0) else None))
        if self.finetunes and _finished(self.lora):
            lora = _results(self.lora)
            for h in lora.history:
                if float(h.epoch).is_integer():
                    rows.append(row(f"LoRA r={self.plan.lora_rank} {h.epoch:g} ep", "-", lora, h.dev,
                                    lora.trainable_params, h.train_time_s, None, lora.peak_memory_mib, train_desc,
                                    self.lora, headline=f"LoRA {h.epoch:g} ep"))
        finetune_s = {b: (bert_points[float(b[2:])].train_time_s if b != "frozen" and float(b[2:]) in bert_points
                          else 0.0) for b in self.backbones}
        for backbone in self.backbones:
            best = self.best_kind(backbone)
            for kind in self.c.kinds:
                run = self.adapter_dir(kind, backbone)
                if _finished(run):
                    r = _results(run)
                    rows.append(row(kind, self.backbone_name(backbone), r, r.dev_metrics, r.trainable_params,
                                    finetune_s[backbone], r.train_wall_time_s, r.peak_memory_mib, train_desc, run,
                                    headline=f"best adapter ({best}), {self.backbone_name(backbone)}"
                                    if kind == best and not (self.layers_only and backbone != "frozen") else None))
        cosine = self.root / "cosine-frozen"
        if self.has_cosine and _finished(cosine):
            r = _results(cosine)
            rows.append(row("zero-shot cosine of last-layer means (threshold chosen on train)",
                            self.backbone_name("frozen"), r, r.dev_metrics, 0, 0.0, r.train_wall_time_s,
                            r.peak_memory_mib, train_desc, cosine))
        for backbone in self.backbones[1:]:
            for mode in ("mean", "max"):
                out = self.ensemble_dir(backbone, mode)
                if _finished(out):
                    r = _results(out)
                    adapter = _results(Path(r.members[1]["run"]))
                    rows.append(row(f"ensemble ({mode}): BERT {backbone[2:]} ep + {adapter.method}",
                                    self.backbone_name(backbone), r, r.dev_metrics,
                                    bert.trainable_params + adapter.trainable_params, finetune_s[backbone],
                                    adapter.train_wall_time_s, None, train_desc, out,
                                    headline=f"ensemble ({mode}), BERT {backbone[2:]} ep + best adapter"
                                    if backbone == "ft1" and mode == "mean" else None))
        fb = self.plan.fraction_backbone
        for kind in self.fraction_kinds() if self.first else []:
            for fraction in self.c.fractions:
                run = self.adapter_dir(kind, fb, fraction)
                if _finished(run):
                    r = _results(run)
                    rows.append(row(f"{kind} on {fraction:.0%} of train", self.backbone_name(fb), r,
                                    r.dev_metrics,
                                    r.trainable_params, finetune_s[fb], r.train_wall_time_s, r.peak_memory_mib,
                                    f"{r.train_examples} {'questions' if self.task == 'squad_v2' else 'ex'}", run))
        answer = self.root / "answerability-ft1"
        if self.plan.answerability and _finished(answer) and self.checkpoint(1.0).is_dir():
            r = _results(answer)
            bert1 = Predictions.load(self.checkpoint(1.0) / "predictions" / f"{self.plan.eval_split}.npz")
            rows.append(row("answerability: BERT 1 ep's own null decision", "-", None,
                            answerability_metrics(span_decisions(bert1), gold_answerable(bert1)),
                            bert.trainable_params, finetune_s["ft1"], None, None, train_desc, self.checkpoint(1.0)))
            rows.append(row(f"answerability: {r.method.split(':')[1]} on [CLS]", self.backbone_name("ft1"), r,
                            r.dev_metrics, r.trainable_params, finetune_s["ft1"], r.train_wall_time_s,
                            r.peak_memory_mib, train_desc, answer))
        return rows

    def stores(self) -> list[dict]:
        """Size, extraction time and peak memory of this seed's stores."""
        out = []
        for backbone in self.backbones:
            store = self.store(backbone)
            prefix = f"{self.task}/{store.name}" if backbone == "frozen" else self.stage(store.name)
            names = [f"{prefix}/{s}" for s in (self.plan.train_split, self.plan.eval_split)]
            if all(n in self.stages.done for n in names):
                opened = open_store(str(store))
                out.append({"task": self.task, "seed": self.seed, "backbone": self.backbone_name(backbone),
                            "records": sum(opened.num_records(s) for s in opened.splits),
                            "bytes": _store_bytes(store),
                            "extract_s": sum(self.stages.done[n]["wall_s"] for n in names),
                            "peak_mib": max(self.stages.done[n]["peak_mib"] or 0 for n in names),
                            "layers": len(opened.layers), "dtype": opened.dtype, "max_seq_len": opened.max_seq_len})
        return out


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


METRIC_COLUMNS = {"squad_v2": ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1")}
ANSWERABILITY_COLUMNS = ("answerable_accuracy", "answerable_f1", "answerable_precision", "answerable_recall")
TASK_TITLES = {"sst2": "SST-2", "mrpc": "MRPC", "squad_v2": "SQuAD 2.0"}


def _metric(task: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if task == "squad_v2" else f"{value:.4f}"  # SQuAD's official script reports 0-100


def _share(x) -> str:
    return "" if x is None else (f"{100 * x:.2f}%" if x >= 1e-3 else f"{100 * x:.4f}%")


def _num(x, fmt=",.0f") -> str:
    return "" if x is None else format(x, fmt)


def seed_summary(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of every headline row."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("headline"):
            groups.setdefault((r["task"], r["headline"]), []).append(r)
    out = []
    for (task, headline), group in groups.items():
        metric = group[0]["main_metric"]
        values = [g["dev_metrics"][metric] for g in group]
        out.append({"task": task, "row": headline, "metric": metric, "seeds": [g["seed"] for g in group],
                    "values": values, "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else None})
    return out


def markdown(rows: list[dict], stores: list[dict], summary: list[dict], meta: dict) -> str:
    m = meta["machine"]
    lines = [
        "# Reproduction: fine-tuned BERT, LoRA and BERTVision adapters",
        "",
        f"Measured by `python -m experiments.reproduce{' --quick' if meta['quick'] else ''}"
        f"{' --seeds ' + ','.join(map(str, meta['seeds'])) if len(meta['seeds']) > 1 else ''}"
        f"{' --layer-seeds ' + ','.join(map(str, meta['layer_seeds'])) if meta.get('layer_seeds') else ''}` "
        f"on {meta['date']}: "
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, GPU: {m['gpus']}; "
        f"TensorFlow {m['tensorflow']}, Python {m['python']}. Backbone: {meta['backbone']} "
        f"({meta['backbone_params']:,} parameters). Stage wall time in all: {meta['total_stage_s'] / 60:.1f} min "
        "(" + ", ".join(f"{TASK_TITLES.get(t, t)} {s / 60:.1f}" for t, s in meta["task_seconds"].items()) + "); "
        f"mean 1-minute load average over the stages {meta.get('mean_load')} on {m['cores']} cores.",
        "",
        "Columns: official dev metrics (SQuAD: `f1`/`exact` at the fixed no-answer threshold 0, `best_f1` with the "
        "threshold the official script chooses on the evaluation article itself); trainable parameters and their "
        "share of the backbone's; `fine-tune s` = BERT training time up to that checkpoint (the backbone an adapter "
        "reads; dev evaluation excluded); `fit s` = adapter training (dev evaluation excluded); `peak MiB` = the "
        "training process's peak resident memory. Adapter rows report their best dev epoch; (*) marks a row whose "
        "epoch was chosen on the split it reports (results.json `selection`: best of several looks at dev, "
        "optimistic; the last epoch's score is beside it there). BERT rows are fixed "
        "checkpoints of one 2-epoch run. An ensemble combines BERT at a checkpoint with the best adapter on that "
        "checkpoint's activations.",
    ]
    if meta.get("missing"):
        lines += ["", "**Incomplete reproduction.** Runs not finished yet (run the same command again to "
                  "resume): " + "; ".join(f"{TASK_TITLES.get(t, t)}: {', '.join(x)}"
                                          for t, x in meta["missing"].items()) + "."]
    first = meta["seeds"][0]
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task and r["seed"] == first]
        main = [r for r in task_rows if not r["method"].startswith("answerability")]
        names = METRIC_COLUMNS.get(task) or tuple(main[0]["dev_metrics"])
        names = tuple(n for n in names if n in main[0]["dev_metrics"])
        lines += ["", f"## {TASK_TITLES.get(task, task)} (seed {first})", "",
                  grid(["method", "backbone", "train data", *names, "trainable params", "share", "fine-tune s",
                        "fit s", "peak MiB"],
                       [[r["method"] + (" (*)" if r.get("chosen_on_reported_split") else ""), r["backbone"],
                         r["train_data"], *(_metric(task, r["dev_metrics"].get(n)) for n in names),
                         _num(r["trainable_params"]), _share(r["param_share"]), _num(r["finetune_s"]),
                         _num(r["fit_s"]), _num(r["peak_mib"])]
                        for r in main])]
        answer = [r for r in task_rows if r["method"].startswith("answerability")]
        if answer:
            lines += ["", "Answerability (answerable vs not, per question of the evaluation article; positive "
                      "class: answerable):", "",
                      grid(["decision", "backbone", *ANSWERABILITY_COLUMNS, "trainable params"],
                           [[r["method"], r["backbone"],
                             *(f"{r['dev_metrics'].get(n, float('nan')):.3f}" for n in ANSWERABILITY_COLUMNS),
                             _num(r["trainable_params"])] for r in answer])]
        task_stores = [s for s in stores if s["task"] == task and s["seed"] == first]
        if task_stores:
            lines += ["", "Stores (train + dev):", "",
                      grid(["backbone", "records", "layers", "dtype", "max_seq_len", "MiB", "extract s", "peak MiB"],
                           [[s["backbone"], f"{s['records']:,}", s["layers"], s["dtype"], s["max_seq_len"],
                             f"{s['bytes'] / 2**20:,.0f}", _num(s["extract_s"]), _num(s["peak_mib"])]
                            for s in task_stores])]
    all_seeds = ", ".join(map(str, meta["seeds"] + meta.get("layer_seeds", [])))
    if len(meta["seeds"]) + len(meta.get("layer_seeds", [])) > 1 and summary:
        lines += ["", f"## Headline rows over seeds {all_seeds}", "",
                  "Mean +- sample standard deviation of the dev main metric; a difference is only called real in "
                  "the README when it exceeds the spread."
                  + (" Seeds of --layer-seeds count in the frozen backbone's rows only (they fine-tune nothing)."
                     if meta.get("layer_seeds") else ""), "",
                  grid(["task", "row", "metric", "mean", "std", "seeds", "values"],
                       [[TASK_TITLES.get(s["task"], s["task"]), s["row"], s["metric"], _metric(s["task"], s["mean"]),
                         "" if s["std"] is None else _metric(s["task"], s["std"]), len(s["seeds"]),
                         ", ".join(_metric(s["task"], v) for v in s["values"])] for s in summary])]
    if meta.get("layer_mix"):
        lines += ["", f"## Learned layer weights over seeds {all_seeds}", "",
                  "Every seed's adapters with a layer mix, per task, mix and backbone: the centre of gravity "
                  "(weighted mean layer, Tenney et al.) and each layer's weight as mean +- seed std, and the layers "
                  "whose mean differs from uniform (1/L) by more than their seed std (chart: "
                  "report/layer_spread.png).", "", meta["layer_mix"]]
    if meta.get("charts"):
        lines += ["", "## Charts (`pipelines.report`, seed " + str(first) + ")", ""]
        lines += [f"- [{Path(c).stem}]({c})" for c in meta["charts"]]
    return "\n".join(lines) + "\n"


def write_outputs(config: ReproduceConfig, tasks: list[TaskStages], stages: Stages, docs: Path | None,
                  missing: dict) -> dict:
    work = Path(config.work)
    rows = [r for task in tasks for r in task.rows()]
    stores = [s for task in tasks for s in task.stores()]
    summary = seed_summary(rows)
    first = next(r for r in rows if r["method"].startswith("BERT"))
    bert = _results(Path(first["run"]).parent.parent)
    meta = {"date": _dt.date.today().isoformat(), "machine": machine(), "quick": config.quick, "seeds": config.seeds,
            "layer_seeds": config.layer_seeds,
            "backbone": bert.backbone.get("name"), "backbone_params": bert.backbone_params,
            "total_stage_s": round(sum(s["wall_s"] for s in stages.done.values()), 1), "mean_load": stages.mean_load(),
            "task_seconds": {t: stages.task_seconds(t) for t in config.tasks}, "stages_run_now": stages.ran,
            "missing": missing}
    report_runs = [Path(r["run"]) for r in rows if r["seed"] == config.seeds[0] and _finished(Path(r["run"]))
                   and not r["method"].startswith("answerability")]
    report_runs = list(dict.fromkeys([work / t / "bert" for t in config.tasks if _finished(work / t / "bert")]
                                     + report_runs))
    build_report([str(r) for r in report_runs], work / "report", formats=("html", "png", "svg"))
    # the layer weights over every seed (the report above reads the first seed's runs), of the runs on the whole
    # training split (a fraction row is another experiment, not another seed)
    mix_runs = load_runs(list(dict.fromkeys(str(r["run"]) for r in rows if _finished(Path(r["run"]))
                                            and r["train_fraction"] == 1.0
                                            and not r["method"].startswith("answerability"))))
    mixes = layer_mix_frame(mix_runs)
    meta["layer_mix"] = layer_mix_markdown(mixes) if len(mixes) else None
    spread = layer_spread(mix_runs)
    if spread.chart is not None:
        for fmt in ("png", "svg"):
            save_chart(spread.chart, work / "report" / f"layer_spread.{fmt}", fmt)
    charts = sorted(p.name for p in (work / "report").glob("*.png"))
    io.atomic_write_json(work / REPRODUCTION, {"meta": meta, "rows": rows, "stores": stores, "seeds": summary,
                                                 "config": config.to_dict()})
    io.atomic_write_text(work / "results.md", markdown(rows, stores, summary,
                                                       {**meta, "charts": [f"report/{c}" for c in charts]}))
    if docs is not None:
        target = docs / "results"
        target.mkdir(parents=True, exist_ok=True)
        for c in charts:
            shutil.copyfile(work / "report" / c, target / c)
            svg = (work / "report" / c).with_suffix(".svg")
            if svg.is_file():
                shutil.copyfile(svg, target / svg.name)
        # not DIR/results.md: docs/results.md is the dated journal of every measurement, which a run must not
        # overwrite
        io.atomic_write_text(docs / "reproduction.md", markdown(rows, stores, summary,
                                                           {**meta, "charts": [f"results/{c}" for c in charts]}))
    return {**meta, "rows": rows, "stores": stores, "summary": summary}


# -------------------------------------------------------------------- main


def _seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(REPO / "experiments_out" / "reproduce"), help="output folder (resumable)")
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"),
                   help="folder holding glue/SST-2, glue/MRPC and squad2 (default ../shared/data)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated subset of sst2,mrpc,squad_v2 (default all; with --quick: sst2,squad_v2)")
    p.add_argument("--backbone", "--model", dest="backbone", default=None,
                   help="backbone (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--seeds", type=_seeds, default=[0],
                   help="seeds, e.g. 0,1,2: the first runs every row, the others the headline rows (default 0)")
    p.add_argument("--layer-seeds", type=_seeds, default=[],
                   help="further seeds, e.g. 1,2, that train only the layer-mixing adapter kinds (scalar_mix, "
                        "adapter_pooler) on the first seed's stores, fine-tuning nothing: the seed spread of the "
                        "learned layer weights")
    p.add_argument("--quick", action="store_true",
                   help="reduced version: a few dozen examples per task, short sequences, 2 adapter epochs, "
                        "no XLA, every adapter kind on one backbone per task, BERT scored at 0.3/1/2 epochs, the "
                        "best kind on 50%% of the data, LoRA on the first seed of SST-2/MRPC only")
    p.add_argument("--docs", default=None, metavar="DIR", help="also write DIR/reproduction.md and DIR/results/*.png|svg")
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
        config = ReproduceConfig(work=str(work), data_root=str(Path(args.data_root).resolve()), tasks=tasks,
                                 quick=args.quick, seeds=args.seeds, layer_seeds=args.layer_seeds,
                                 backbone=args.backbone,
                                 **(copy.deepcopy(QUICK_SETTINGS) if args.quick else {}),
                                 jit_compile=not args.quick, progress=not args.no_progress)
        path = work / "config.json"
        if path.is_file():  # more seeds and other progress settings may change on a resume
            diff = config.differences(io.read_json(path), ignore=("progress", "work", "seeds", "layer_seeds",
                                                                           "kinds"))
            if diff:
                raise ConfigError(f"{work} holds a reproduction with other settings ({', '.join(diff)}); "
                                  "use the same flags to resume, or another --work")
        work.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(path, config.to_dict())
        stages = Stages(work)
        t0 = time.perf_counter()
        tasks, missing = [], {}
        # task by task, each with all its seeds: a reproduction stopped early holds the seed spread of every
        # task it finished (SQuAD, by far the longest, comes last)
        for task in config.tasks:
            for seed in config.seeds + config.layer_seeds:
                task_stages = TaskStages(config, task, stages, seed)
                if not args.report_only:
                    task_stages.run()
                tasks.append(task_stages)
                left = task_stages.missing()
                if left:
                    missing.setdefault(task, []).extend(left)
        if not any(_finished(t.bert) for t in tasks):
            raise ConfigError(f"{work} holds no finished run yet")
        meta = write_outputs(config, tasks, stages, Path(args.docs) if args.docs else None, missing)
    except (BertVisionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(meta["rows"], meta["stores"], meta["summary"], meta))
    print(f"this invocation: {len(stages.ran)} stage(s) run, {time.perf_counter() - t0:.0f} s; "
          f"all stages: {meta['total_stage_s'] / 60:.1f} min; outputs in {work}")
    return 0


if __name__ == "__main__":
    # the imports' objects (TensorFlow, Keras: ~0.5 M) live to the end: out of the collector's sight, the
    # full collection after each stage (keras.backend.clear_session) takes ~0.3 s less CPU (2026-12-07)
    gc.freeze()
    sys.exit(main())
