"""CoNLL-2003 NER: frozen-backbone adapters against fine-tuning and LoRA.

    python -m experiments.conll_ner --work experiments_out/conll_ner                 # the full benchmark (hours on CPU)
    python -m experiments.conll_ner --work /tmp/ner --quick                    # a smoke run (tens of sentences)

Train on ``eng.train``, pick the epoch on ``eng.testa`` (dev), report entity
F1 on ``eng.testb`` (test), strict exact-match entities as conlleval counts
them (`bertvision.metrics.tagging_metrics`), for

- the frozen backbone's adapters (``--kinds``, ``--seeds``; ``adapter_pooler_block``
  is adapter_pooler with one transformer block over the tokens; one
  ``sequence`` store of every layer, extracted once): `pipelines.fit`, then
  `pipelines.predict --store ... --split test`;
- MiniLM fine-tuned with the project's recipe (`pipelines.finetune
  --store STORE`: the store's task and examples, lr 5e-5);
- LoRA (`pipelines.finetune --lora-rank 8`, lr 4e-3, the reproduction's).

Every stage runs as its own command (the commands a user types), so that
each row's peak memory is that process's own (``ru_maxrss`` of the child;
for a run finished before, and for every row of ``--report-only``, which
runs nothing and tabulates the finished, scored runs: the training's
``peak_memory_mib`` in its results.json);
the table gives test F1 (mean ± sample std over seeds where there are
several), dev F1, trainable parameters, their share of the backbone's,
training wall time and peak memory, the machine and the date, and the
issue's goal line (the best frozen adapter within 1.5 F1 of fine-tuning at
under 1% of the parameters). Everything is resumable: finished runs are read
back, not run again. ``--quick``: the first 16 train / 8 dev / 8 test
sentences (copied into ``WORK/data``), 32 tokens, one epoch, one seed, one
adapter kind (``scalar_mix``), no XLA compilation: it checks the pipeline,
it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bertvision.report.table import grid, seed_spread

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "conll2003"
KINDS = ("linear_probe", "scalar_mix", "adapter_pooler", "cnn", "adapter_pooler_block")
# a row's `pipelines.fit` flags, where they are more than ``--adapter KIND``: adapter_pooler with one
# transformer block over the tokens (the adapter's default width), this project's counterpart of the
# BERT paper's feature-based NER, which fed the frozen layers to a two-layer BiLSTM
FIT_FLAGS = {"adapter_pooler_block": ["--adapter", "adapter_pooler", "--transformer-blocks", "1"]}
FINETUNE_LR, LORA_RANK, LORA_LR = 5e-5, 8, 4e-3


def run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run one command (output to `log`); ``(wall seconds, peak RSS MiB)``. A
    failing command stops the benchmark, naming its log."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"})
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)} (see {log})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024.0  # Linux: KiB


def last_json(log: Path) -> dict:
    """The metrics `pipelines.predict` printed (its last JSON line)."""
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"{log}: no metrics line")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(REPO / "experiments_out" / "conll_ner"))
    p.add_argument("--data", default=str(DATA), help="folder of eng.train, eng.testa, eng.testb")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=float, default=10, help="adapter epochs (best dev epoch kept)")
    p.add_argument("--finetune-epochs", type=float, default=3)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--no-finetune", action="store_true", help="adapters only")
    p.add_argument("--quick", action="store_true", help="a smoke run on tens of sentences (measures nothing)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table of the finished runs (and their test predictions) in --work")
    args = p.parse_args(argv)
    work = Path(args.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    kinds = args.kinds.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs, ft_epochs, max_seq_len, data = args.epochs, args.finetune_epochs, args.max_seq_len, Path(args.data)
    if args.quick:
        kinds, seeds, epochs, ft_epochs, max_seq_len = ["scalar_mix"], [0], 1, 1, 32
        data = quick_data(data, work / "data")
    no_jit = ["--no-jit"] if args.quick else []  # XLA compilation costs more than a smoke run's few steps
    py = [sys.executable, "-m"]
    task = ["--kind", "token_classification", "--format", "conll", "--token-column", "0", "--tag-column", "3",
            "--split", f"train={data / 'eng.train'}", "--split", f"dev={data / 'eng.testa'}",
            "--split", f"test={data / 'eng.testb'}", "--task", "conll2003"]
    store = work / "store"
    rows: list[dict] = []
    if not args.report_only and not (store / "manifest.json").is_file():
        run(py + ["pipelines.extract", *task, "--out", str(store), "--token-mode", "sequence",
                  "--max-seq-len", str(max_seq_len), "--no-progress", *no_jit], work / "logs" / "extract.log")
    for kind in kinds:
        for seed in seeds:
            out = work / "runs" / f"{kind}-seed{seed}"
            predicted = work / "logs" / f"{kind}-seed{seed}.predict.log"
            rss = None
            if not args.report_only:
                if not (out / "results.json").is_file():
                    _, rss = run(py + ["pipelines.fit", "--store", str(store), *FIT_FLAGS.get(kind, ["--adapter", kind]),
                                       "--out", str(out), "--seed", str(seed), "--epochs", f"{epochs:g}", "--quiet",
                                       *(["--no-jit-compile"] if args.quick else [])],
                                 work / "logs" / f"{kind}-seed{seed}.fit.log")
                run(py + ["pipelines.predict", "--run", str(out), "--split", "test", "--out",
                          str(out / "test.conll")], predicted)
            elif not predicted.is_file():
                continue  # --report-only: not run (or not scored) yet
            rows.append(row(kind, seed, out, last_json(predicted), rss))
    if not args.no_finetune:
        for name, extra in (("fine-tuned MiniLM", ["--lr", f"{FINETUNE_LR:g}"]),
                            (f"LoRA r={LORA_RANK}", ["--lr", f"{LORA_LR:g}", "--lora-rank", str(LORA_RANK)])):
            slug = "lora" if "LoRA" in name else "finetune"
            out = work / "runs" / slug
            predicted = work / "logs" / f"{slug}.predict.log"
            rss = None
            if not args.report_only:
                if not (out / "results.json").is_file():
                    _, rss = run(py + ["pipelines.finetune", "--store", str(store), "--out", str(out),
                                       "--epochs", f"{ft_epochs:g}", "--max-seq-len", str(max_seq_len),
                                       "--no-progress", "--seed", "0", *extra, *no_jit],
                                 work / "logs" / f"{slug}.log")
                run(py + ["pipelines.predict", "--run", str(out), "--input", str(data / "eng.testb"), "--out",
                          str(out / "test.conll")], predicted)
            elif not predicted.is_file():
                continue
            rows.append(row(name, 0, out, last_json(predicted), rss))
    table = render(rows, args)
    (work / "results.md").write_text(table)
    print(table)
    return 0


def quick_data(data: Path, out: Path) -> Path:
    """The first 16 / 8 / 8 sentences of eng.train / testa / testb, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name, n in (("eng.train", 16), ("eng.testa", 8), ("eng.testb", 8)):
        blocks = (data / name).read_text().split("\n\n")[:n]
        (out / name).write_text("\n\n".join(blocks) + "\n\n")
    return out


def row(method: str, seed: int, out: Path, test: dict, rss: float | None) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {"method": method, "seed": seed, "test_f1": 100 * test["f1"], "dev_f1": 100 * results["dev_metrics"]["f1"],
            "params": results.get("trainable_params"), "share": results.get("param_share"),
            "train_s": results.get("train_wall_time_s"),
            "rss": rss if rss is not None else results.get("peak_memory_mib")}


def render(rows: list[dict], args) -> str:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)

    table = []
    for method, group in by.items():
        first = group[0]
        rss = [r["rss"] for r in group if r["rss"] is not None]
        table.append([method, len(group), seed_spread([r["test_f1"] for r in group], 2),
                      seed_spread([r["dev_f1"] for r in group], 2), first["params"] or "-",
                      "-" if first["share"] is None else f"{100 * first['share']:.2f}%",
                      seed_spread([r["train_s"] for r in group], 2), f"{max(rss):.0f}" if rss else "-"])
    lines = [f"# CoNLL-2003 NER, eng.testb entity F1 (dev eng.testa)  {time.strftime('%Y-%m-%d %H:%M')}  "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
             + ("  (--quick: a smoke run, not a result)" if args.quick else ""), "",
             grid(["method", "seeds", "test F1", "dev F1", "trainable params", "of backbone", "train s", "peak MiB"],
                  table)]
    tuned = [r["test_f1"] for r in rows if r["method"] == "fine-tuned MiniLM"]
    frozen = {m: statistics.mean(r["test_f1"] for r in g) for m, g in by.items() if m in KINDS}
    if tuned and frozen:
        best = max(frozen, key=frozen.get)
        share = by[best][0]["share"]
        gap = tuned[0] - frozen[best]
        lines += ["", f"Goal (issue 29): the best frozen adapter within 1.5 F1 of fine-tuning at under 1% of the "
                      f"parameters: {best} {frozen[best]:.2f} vs {tuned[0]:.2f} (gap {gap:.2f} F1, "
                      f"{'-' if share is None else f'{100 * share:.2f}%'} of the parameters): "
                      f"{'met' if gap <= 1.5 and share is not None and share < 0.01 else 'not met'}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
