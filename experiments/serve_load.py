"""Load benchmark of ``pipelines.serve``: N adapters on one frozen backbone
against N separately fine-tuned BERTs, closed-loop clients on loopback.

    python -m experiments.serve_load --work experiments_out/serve_load              # builds the runs once (~20 min), measures
    python -m experiments.serve_load --quick --served a=RUN --baseline b=RUN  # short bounded version (the test suite's)

One ``pipelines.serve`` process serves every run; each request carries one
input and names the N tasks it asks (``{"tasks": [...], "inputs": [...]}``):

- **served**: N adapters trained on activations of the same frozen MiniLM:
  the server runs the backbone once per micro-batch and every adapter on it;
- **baseline**: N fine-tuned BERTs (``pipelines.finetune`` runs), each run on
  every request: N backbone passes.

Both go through the same server, HTTP stack, tokenization and micro-batching
(``--max-batch-size``, ``--max-wait-ms``), so the ratio measures one shared
backbone against N. For every N (``--adapters 1,2,4``) and concurrency
(``--concurrency 1,8,32``: that many client threads, each sending its next
request when the previous one is answered) it prints requests/s and p50 /
p99 latency of both, measured in alternating slices (served, baseline,
served, ...) so that load from other work on the machine hits both alike, and
their ratio. Every request is answered for all N tasks (a request to N tasks
is N predictions).

The runs (built into ``--work`` unless ``--served``/``--baseline`` name
them): the four tasks take the same input, a sentence pair, so that one
backbone row feeds all four adapters:

- ``mrpc``: adapter_pooler on a ``sequence`` store of 800 seeded MRPC train
  pairs (128 tokens); ``qnli``: adapter_pooler on a QNLI-like task built from
  SQuAD 2.0's training file as GLUE built QNLI from SQuAD (question, a
  sentence of its paragraph; ``entailment`` when the sentence holds the
  answer), 1,000 train / 400 dev pairs; ``mrpc_cnn``: cnn on the MRPC store;
  ``qnli_mix``: scalar_mix on the QNLI store. Two tasks, two adapter kinds
  each: four different adapters, not four different tasks.
- the baseline: four MiniLM fine-tunings (MRPC and QNLI-like, seeds 0 and 1)
  on 48 training pairs, one epoch: enough to time a BERT, not a good model.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]

from experiments.reproduce import machine
from bertvision import io
from bertvision.data.readers import load_examples
from bertvision.report.table import grid, grid_row
from bertvision.runs import RunFolder
from bertvision.store.format import StoreError, open_store

ADAPTERS = ("mrpc", "qnli", "mrpc_cnn", "qnli_mix")
BASELINES = ("ft_mrpc", "ft_qnli", "ft_mrpc_s1", "ft_qnli_s1")


# ------------------------------------------------------------------- runs


def _pipeline(args: list[str], log: Path) -> None:
    print("$ python -m", " ".join(args), flush=True)
    with open(log, "a") as handle:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}\n" + "\n".join(log.read_text().splitlines()[-15:]))


def _sentences(context: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of a paragraph."""
    spans, start = [], 0
    for m in re.finditer(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", context):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(context)))
    return [(a, b) for a, b in spans if context[a:b].strip()]


def build_qnli_like(squad_dir: Path, out: Path, train: int = 1000, dev: int = 400, seed: int = 0) -> Path:
    """QNLI's construction on SQuAD 2.0's training file: for an answerable
    question, (question, the sentence of its paragraph holding the answer)
    is ``entailment`` and (question, another sentence of the paragraph)
    ``not_entailment``. The first questions make train, the last ones dev
    (later articles). Written as GLUE's QNLI TSVs in `out`."""
    if (out / "dev.tsv").is_file():
        return out
    examples = [e for e in load_examples("squad_v2", "train", squad_dir).examples if e.answers]
    rng = np.random.default_rng(seed)
    pairs = []
    for e in examples:
        question, context = e.texts
        spans = _sentences(context)
        if len(spans) < 2:
            continue
        start = e.answers[0].start
        hit = [i for i, (a, b) in enumerate(spans) if a <= start < b]
        if not hit:
            continue
        other = int(rng.choice([i for i in range(len(spans)) if i != hit[0]]))
        for i, label in ((hit[0], "entailment"), (other, "not_entailment")):
            sentence = re.sub(r"\s+", " ", context[spans[i][0]:spans[i][1]]).strip()
            pairs.append((re.sub(r"\s+", " ", question).strip(), sentence, label))
    if len(pairs) < train + dev:
        raise SystemExit(f"only {len(pairs)} QNLI-like pairs in {squad_dir}; need {train + dev}")
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", pairs[:train]), ("dev", pairs[-dev:])):
        lines = ["index\tquestion\tsentence\tlabel"] + [f"{i}\t{q}\t{s}\t{y}" for i, (q, s, y) in enumerate(rows)]
        io.atomic_write_text(out / f"{name}.tsv", "\n".join(lines) + "\n")
    return out


def build_runs(work: Path, data: Path) -> dict[str, Path]:
    """The four adapters and four fine-tuned BERTs (see the module
    docstring); finished runs are kept."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    qnli = build_qnli_like(data / "squad2", work / "data" / "QNLI")
    sources = {"mrpc": data / "glue" / "MRPC", "qnli": qnli}
    for task, folder in sources.items():
        store = work / "stores" / task
        for split, extra in (("train", ["--sample", "800", "--seed", "0"]), ("dev", [])):
            try:
                done = split in open_store(str(store)).splits
            except StoreError:
                done = False
            if not done:
                _pipeline(["pipelines.extract", "--task", task, "--data-dir", str(folder), "--split", split,
                           "--token-mode", "sequence", "--max-seq-len", "128", *extra, "--no-progress",
                           "--out", str(store)], logs / f"extract-{task}.log")
    runs = {}
    for name, task, kind in (("mrpc", "mrpc", "adapter_pooler"), ("qnli", "qnli", "adapter_pooler"),
                             ("mrpc_cnn", "mrpc", "cnn"), ("qnli_mix", "qnli", "scalar_mix")):
        runs[name] = work / "runs" / name
        if not RunFolder(runs[name]).finished:
            _pipeline(["pipelines.fit", "--store", str(work / "stores" / task), "--adapter", kind, "--epochs", "3",
                       "--batch-size", "32", "--quiet", "--out", str(runs[name])], logs / f"fit-{name}.log")
    for name, task, seed in (("ft_mrpc", "mrpc", 0), ("ft_qnli", "qnli", 0), ("ft_mrpc_s1", "mrpc", 1),
                             ("ft_qnli_s1", "qnli", 1)):
        runs[name] = work / "runs" / name
        if not RunFolder(runs[name]).finished:
            _pipeline(["pipelines.finetune", "--task", task, "--data-dir", str(sources[task]), "--sample", "48",
                       "--seed", str(seed), "--eval-limit", "64", "--max-seq-len", "128", "--batch-size", "16",
                       "--epochs", "1", "--no-jit", "--no-progress", "--out", str(runs[name])],
                      logs / f"finetune-{name}.log")
    return runs


# ----------------------------------------------------------------- server


class Server:
    """``python -m pipelines.serve`` on a free loopback port."""

    def __init__(self, runs: dict[str, Path], max_batch_size: int, max_wait_ms: float, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [a for name, path in runs.items() for a in ("--run", f"{name}={path}")]
        args += ["--port", str(self.port), "--max-batch-size", str(max_batch_size), "--max-wait-ms",
                 str(max_wait_ms), "--max-inputs", "64", "--log-level", "warning"]
        self.log = log
        with open(log, "w") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipelines.serve", *args], cwd=REPO,
                                         stdout=handle, stderr=subprocess.STDOUT,
                                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                              "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(REPO)})
        deadline = time.time() + 900
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"the server died:\n{log.read_text()[-3000:]}")
            try:
                if self.get("/healthz")[0] == 200:
                    break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    sys.exit("the server did not start in 15 min")
                time.sleep(0.5)

    def get(self, path: str):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def closed_loop(port: int, tasks: list[str], inputs: list[dict], concurrency: int, seconds: float,
                warmup: float) -> dict:
    """`concurrency` clients, each with its own keep-alive connection, each
    sending its next request when the previous one is answered; the
    requests answered within the `seconds` after `warmup` count (by the time
    they were answered: at 32 clients one request of N fine-tuned BERTs can
    take longer than a slice)."""
    begin = time.perf_counter() + warmup
    end = begin + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    reasons: list[str] = []  # what the failed requests got, for the report

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        i = k
        while time.perf_counter() < end:
            body = json.dumps({"tasks": tasks, "inputs": [inputs[i % len(inputs)]]})
            i += concurrency
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and len(json.loads(data)["results"]) == len(tasks)
                why = "" if ok else f"HTTP {response.status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                ok, why = False, f"{type(e).__name__}: {e}"
            t1 = time.perf_counter()
            if begin <= t1 <= end:  # answered inside the window (a slow request may have been sent before it)
                if ok:
                    latencies[k].append(t1 - t0)
                else:
                    errors[k] += 1
                    reasons.append(why)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array([x for xs in latencies for x in xs])
    return {"requests": int(lat.size), "seconds": seconds, "errors": int(sum(errors)), "latencies": lat,
            "error_reasons": reasons}


def summarize(parts: list[dict]) -> dict:
    lat = np.concatenate([p["latencies"] for p in parts]) if parts else np.zeros(0)
    seconds = sum(p["seconds"] for p in parts)
    return {"requests": int(lat.size), "rps": lat.size / seconds if seconds else 0.0,
            "p50_ms": float(np.percentile(lat, 50) * 1000) if lat.size else float("nan"),
            "p99_ms": float(np.percentile(lat, 99) * 1000) if lat.size else float("nan"),
            "errors": sum(p["errors"] for p in parts),
            "error_reasons": sorted({r for p in parts for r in p.get("error_reasons", [])})[:5]}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _named(specs: list[str] | None, default: tuple, runs: dict) -> dict[str, Path]:
    if specs is None:
        return {name: runs[name] for name in default}
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.serve_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="experiments_out/serve_load", help="runs, logs and results (resumable)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding glue/ and squad2/")
    p.add_argument("--served", action="append", metavar="NAME=RUN", help="adapter runs (default: build them)")
    p.add_argument("--baseline", action="append", metavar="NAME=RUN", help="fine-tuning runs (default: build them)")
    p.add_argument("--adapters", default=None, help="values of N (default 1,2,4; --quick 1,2)")
    p.add_argument("--concurrency", default=None, help="client counts (default 1,8,32; --quick 1,4)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per cell and side (default 30)")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each slice (default 2)")
    p.add_argument("--slices", type=int, default=None, help="alternating slices per cell and side (default 3)")
    p.add_argument("--max-batch-size", type=int, default=128, help="the server's micro-batch limit (rows)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="the server's micro-batch wait")
    p.add_argument("--quick", action="store_true", help="short bounded run (seconds), as the test suite runs it")
    args = p.parse_args(argv)
    quick = args.quick
    ns = _ints(args.adapters or ("1,2" if quick else "1,2,4"))
    levels = _ints(args.concurrency or ("1,4" if quick else "1,8,32"))
    duration = args.duration if args.duration is not None else (1.0 if quick else 30.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if quick else 2.0)
    slices = args.slices if args.slices is not None else (1 if quick else 3)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    built = build_runs(work, Path(args.data)) if args.served is None or args.baseline is None else {}
    served = _named(args.served, ADAPTERS, built)
    baseline = _named(args.baseline, BASELINES, built)
    if max(ns) > min(len(served), len(baseline)):
        sys.exit(f"N={max(ns)} needs as many served and baseline runs (have {len(served)} and {len(baseline)})")

    server = Server({**served, **baseline}, args.max_batch_size, args.max_wait_ms, work / "server.log")
    try:
        models = server.get("/v1/models")[1]
        tasks = {t["name"]: t for t in models["tasks"]}
        shapes = {tuple(tasks[n]["inputs"]) for n in list(served) + list(baseline)}
        if len(shapes) != 1:
            sys.exit(f"the runs take different inputs {sorted(shapes)}; a request asks all of them one input")
        (shape,) = shapes
        groups = {tasks[n]["backbone"] for n in served}
        print(f"served: {', '.join(served)} on {len(groups)} backbone(s) {sorted(groups)}; baseline: "
              f"{', '.join(baseline)} on {len({tasks[n]['backbone'] for n in baseline})} backbone(s)", flush=True)
        data = Path(args.data) / "glue"
        if shape == ("text", "text_pair"):
            examples = load_examples("mrpc", "dev", data / "MRPC").examples
            inputs = [{"text": a, "text_pair": b} for a, b in (e.texts for e in examples)]
        else:
            inputs = [{"text": e.texts[0]} for e in load_examples("sst2", "dev", data / "SST-2").examples]
        info = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load_before": os.getloadavg(),
                "settings": {"duration_s": duration, "warmup_s": warmup, "slices": slices,
                             "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
                             "inputs": "MRPC dev pairs" if len(shape) == 2 else "SST-2 dev sentences"},
                "served": {n: str(v) for n, v in served.items()}, "baseline": {n: str(v) for n, v in baseline.items()},
                "rows": []}
        for n in ns:
            sides = {"served": list(served)[:n], "baseline": list(baseline)[:n]}
            for c in levels:
                parts = {"served": [], "baseline": []}
                for s in range(slices):
                    for side in (("served", "baseline") if s % 2 == 0 else ("baseline", "served")):
                        parts[side].append(closed_loop(server.port, sides[side], inputs, c, duration / slices,
                                                       warmup))
                row = {"adapters": n, "concurrency": c, **{side: summarize(parts[side]) for side in parts}}
                row["ratio"] = row["served"]["rps"] / row["baseline"]["rps"] if row["baseline"]["rps"] else None
                info["rows"].append(row)
                print(grid_row(_cells(row)), flush=True)
        stats = server.get("/v1/stats")[1]
        info["server"] = {k: stats[k] for k in ("requests", "batches", "largest_batch_requests")}
    finally:
        code = server.stop()
    info["load_after"] = os.getloadavg()
    info["server_exit"] = code
    text = report(info)
    print(text)
    io.atomic_write_text(work / "serve_load.md", text)
    io.atomic_write_json(work / "serve_load.json", info)
    return 0 if code == 0 and all(r[s]["errors"] == 0 for r in info["rows"] for s in ("served", "baseline")) else 1


def _cells(row: dict) -> list[str]:
    s, b = row["served"], row["baseline"]
    return [row["adapters"], row["concurrency"], f"{s['rps']:.1f}", f"{s['p50_ms']:.0f}", f"{s['p99_ms']:.0f}",
            f"{b['rps']:.1f}", f"{b['p50_ms']:.0f}", f"{b['p99_ms']:.0f}",
            f"{row['ratio']:.2f}x" if row["ratio"] else "-"]


def report(info: dict) -> str:
    m = info["machine"]
    st = info["settings"]
    lines = [f"# pipelines.serve load  {info['date']}  {m['host']}  {m['cores']} cores  {m['cpu']}",
             f"load average before {', '.join(f'{x:.1f}' for x in info['load_before'])}, after "
             f"{', '.join(f'{x:.1f}' for x in info['load_after'])}; {st['inputs']}; {st['duration_s']:g} s per cell "
             f"and side in {st['slices']} alternating slice(s); micro-batches up to {st['max_batch_size']} rows, "
             f"{st['max_wait_ms']:g} ms wait",
             "", grid(["N", "clients", "served req/s", "p50 ms", "p99 ms", "baseline req/s", "p50 ms", "p99 ms",
                       "served / baseline"], map(_cells, info["rows"]))]
    target = [r for r in info["rows"] if r["adapters"] == 4 and r["concurrency"] == 32]
    if target and target[0]["ratio"]:
        met = "met" if target[0]["ratio"] >= 3 else "NOT met"
        lines += ["", f"target (4 adapters, 32 clients: served >= 3x the 4 fine-tuned BERTs): {met} "
                      f"({target[0]['ratio']:.2f}x)"]
    server = info.get("server", {})
    if server.get("batches"):
        lines += [f"server: {server['requests']} requests in {server['batches']} micro-batches "
                  f"(largest {server['largest_batch_requests']} requests); exit code {info['server_exit']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
