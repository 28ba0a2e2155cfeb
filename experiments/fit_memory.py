"""Peak memory of `pipelines.fit`: the store streamed from its shards beside
the previous default (the parsed records cached in memory), in the same run.

    python -m experiments.fit_memory --store tfrecords/goemotions-seq          # any store with train + dev
    python -m experiments.fit_memory --limit 8000 --epochs 3                   # extracts an SST-2 sequence store
    python -m experiments.fit_memory --quick                                   # a smoke run (64 examples), not a result

Each row is one `pipelines.fit` process of the same adapter, seed and store
with one reader setting (`Store.training_reader`):

- ``cache``: ``BERTVISION_CACHE_MB=2048 BERTVISION_SHUFFLE_MB=1024``, the
  defaults before streaming: a split whose parsed records fit in 2 GiB is
  cached, beside a shuffle buffer of 10,000 records.
- ``stream``: ``BERTVISION_CACHE_MB=0``: every epoch reads a seeded
  permutation of the records at their byte offsets; what the default
  (512 MiB budget) does for any store larger than that.

Peak memory is Linux's VmHWM: of the fit (`bertvision.runs.PeakMemory`,
``results.json``'s ``peak_memory_mib``) and of the whole process (imports
included; ``wait4``'s ``ru_maxrss``). Without ``--store``, an SST-2
``sequence`` store (all layers, 64 tokens) of the first ``--limit`` train
examples and 256 dev examples is extracted into ``--work`` first (once;
kept for the next call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


from bertvision.report.table import grid
from bertvision.store.format import open_store

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"cache": {"BERTVISION_CACHE_MB": "2048", "BERTVISION_SHUFFLE_MB": "1024"},
            "stream": {"BERTVISION_CACHE_MB": "0"}}


def extract_store(out: Path, data_root: Path, limit: int, eval_limit: int) -> None:
    """The default store: SST-2 train (first `limit`) and dev (first `eval_limit`), sequence, all layers."""
    manifest = out / "manifest.json"
    done = json.loads(manifest.read_text())["splits"] if manifest.exists() else {}
    for split, n in (("train", limit), ("dev", eval_limit)):
        if split in done:
            continue
        subprocess.run([sys.executable, "-m", "pipelines.extract", "--task", "sst2", "--data-dir",
                        str(data_root / "glue" / "SST-2"), "--split", split, "--limit", str(n), "--token-mode",
                        "sequence", "--max-seq-len", "64", "--out", str(out), "--no-progress"],
                       cwd=REPO, check=True)


def run_fit(store: str, out: Path, setting: str, args) -> dict:
    """One fit in its own process under `setting`; its results plus the process's peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipelines.fit", "--store", store, "--adapter", args.adapter, "--out", str(out),
           "--epochs", str(args.epochs), "--seed", str(args.seed), "--batch-size", str(args.batch_size),
           "--no-verify", "--quiet"]
    env = {**os.environ, **SETTINGS[setting]}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    results = json.loads((out / "results.json").read_text())
    results["process_peak_mib"] = round(usage.ru_maxrss / 1024, 1)
    results["process_wall_s"] = round(time.perf_counter() - start, 1)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=None, help="a store with train and dev splits (default: extract SST-2)")
    p.add_argument("--work", default=str(REPO / "experiments_out" / "fit_memory"))
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--limit", type=int, default=8000, help="SST-2 train examples of the default store")
    p.add_argument("--eval-limit", type=int, default=256, help="SST-2 dev examples of the default store")
    p.add_argument("--adapter", default="adapter_pooler")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", default="cache,stream", help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--quick", action="store_true", help="64 train / 32 dev examples, 1 epoch: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.eval_limit, args.epochs = 64, 32, 1
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    work = Path(args.work)
    store_path = args.store
    if store_path is None:
        store_path = str(work / f"sst2-seq-{args.limit}")
        extract_store(Path(store_path), Path(args.data_root), args.limit, args.eval_limit)
    store = open_store(store_path)
    decoded = store.decoded_bytes("train") / 2**20
    rows = []
    for setting in settings:
        results = run_fit(store_path, work / f"run-{setting}", setting, args)
        rows.append((setting, results))
        print(f"{setting}: fit peak {results['peak_memory_mib']} MiB, process peak {results['process_peak_mib']} MiB, "
              f"{results['train_wall_time_s']:.1f} s", flush=True)
    metric = rows[0][1]["main_metric"]
    print(f"\n# fit memory  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} CPU cores  "
          f"seed {args.seed}")
    print(f"store {store_path}: {store.token_mode}, {store.num_records('train')} train records, "
          f"{store.split_bytes('train') / 2**20:.0f} MiB on disk, {decoded:.0f} MiB parsed; "
          f"{args.adapter}, {args.epochs} epochs, batch {args.batch_size}\n")
    print(grid(["reader", "env", "fit peak RSS (MiB)", "process peak RSS (MiB)", "train s", f"dev {metric}"],
               [[setting, " ".join(f"{k}={v}" for k, v in SETTINGS[setting].items()), results["peak_memory_mib"],
                 results["process_peak_mib"], f"{results['train_wall_time_s']:.1f}",
                 f"{results['dev_metrics'][metric]:.4f}"] for setting, results in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
