"""Beam extraction vs the single-process extractor, same data, same run.

    python -m experiments.extract_beam --data-dir ../shared/data/glue/SST-2 --n 2000

Runs ``python -m pipelines.extract`` twice on the same examples and settings:
once in one process, once as a Beam pipeline on the DirectRunner in
multi-process mode (``--direct_num_workers W --direct_running_mode
multi_processing``), each a fresh process timed end to end (start-up, model
loading, planning, extraction, manifest). Prints both throughputs, their
ratio, the machine's load average before and after (the figures are only
comparable within one run on a shared machine), and whether the two stores
hold the same bytes (they should: one shard writer, deterministic records).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bertvision.report.table import grid

REPO = Path(__file__).resolve().parent.parent


def _extract(args: argparse.Namespace, out: Path, beam: bool) -> float:
    cmd = [sys.executable, "-m", "pipelines.extract", "--task", args.task, "--data-dir", args.data_dir,
           "--split", args.split, "--limit", str(args.n), "--token-mode", args.token_mode,
           "--max-seq-len", str(args.max_seq_len), "--batch-size", str(args.batch_size),
           "--shard-size-mb", str(args.shard_size_mb), "--no-progress", "--out", str(out)]
    if beam:
        cmd += ["--runner", "DirectRunner", "--direct_num_workers", str(args.workers),
                "--direct_running_mode", "multi_processing"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"extraction failed ({'beam' if beam else 'single'}):\n{proc.stderr[-3000:]}")
    return seconds


def _shards(out: Path, split: str) -> list:
    info = json.loads((out / "manifest.json").read_text())["splits"][split]
    return [(s["file"], s["sha256"]) for s in info["shards"]], info["num_records"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=2000, help="first N examples")
    p.add_argument("--token-mode", default="cls")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size-mb", type=float, default=1.0, help="small shards: work to spread over workers")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-beam-"))
    try:
        load_before = os.getloadavg()
        single_s = _extract(args, work / "single", beam=False)
        beam_s = _extract(args, work / "beam", beam=True)
        load_after = os.getloadavg()
        (single_shards, n), (beam_shards, n_beam) = _shards(work / "single", args.split), \
            _shards(work / "beam", args.split)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}; "
          f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"data: {args.task}/{args.split}, first {args.n} examples, --token-mode {args.token_mode}, "
          f"--max-seq-len {args.max_seq_len}, --batch-size {args.batch_size}, {len(single_shards)} shard(s) of "
          f"~{args.shard_size_mb} MB; wall time of the whole command (start-up, model, plan, extraction, manifest)")
    print()
    print(grid(["extractor", "records", "wall s", "records/s"],
               [["single process", n, f"{single_s:.1f}", f"{n / single_s:.1f}"],
                [f"Beam DirectRunner, {args.workers} worker processes", n_beam, f"{beam_s:.1f}",
                 f"{n_beam / beam_s:.1f}"]]))
    print()
    print(f"Beam / single-process throughput: {single_s / beam_s:.2f}x")
    print(f"same shard bytes (sha256 of every shard): {'yes' if beam_shards == single_shards else 'NO'}")
    return 0 if beam_shards == single_shards else 1


if __name__ == "__main__":
    sys.exit(main())
