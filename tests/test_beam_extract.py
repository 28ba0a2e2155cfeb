"""Extraction as an Apache Beam pipeline (`bertvision.store.beam`), run by
the real DirectRunner with two workers: its SST-2 and SQuAD stores are the
single-process extractor's, byte for byte and record for record; a pipeline
killed part-way (the command and its two worker processes, multi-process
mode) and run again finishes that same store; the SQuAD pipeline (windows
that straddle shards) runs in this process with two worker threads
(multi-threading mode: the same DoFns, no TensorFlow start-up per worker);
bad Beam options are refused before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertvision.store import format as st
from bertvision.store.extract import JOBS_SUFFIX, ExtractConfig, Extractor
from pipelines.extract import main as extract_main
from tests.stores import REPO_ROOT, _model, cli_env, run_main

BEAM = ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
THREADS = ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_threading"]


def _settings(data_dir, split, **kw) -> list[str]:
    args = ["--data-dir", str(data_dir), "--split", split, "--no-jit", "--no-progress"]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _reference(out: Path, task: str, data_dir, split: str, **kw) -> dict:
    """The single-process extractor's store (same settings as the CLI's)."""
    backbone, tokenizer = _model()
    config = ExtractConfig(task=task, split=split, out=str(out), data_dir=str(data_dir), jit_compile=False,
                           progress=False, **kw)
    return Extractor(config, backbone=backbone, tokenizer=tokenizer).run()


def _beam(task: str, out: Path, settings: list[str]) -> subprocess.Popen:
    env = cli_env()
    # its own session: the DirectRunner's worker processes can be killed with it, as one group
    return subprocess.Popen([sys.executable, "-m", "pipelines.extract", "--task", task, "--out", str(out),
                             *settings, *BEAM], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-4000:]
    return stdout


def _records(path: Path, split: str) -> list[dict]:
    """Every record of `split`, decoded by the store reader, in store order."""
    store = st.open_store(str(path), verify=True)
    out = []
    for features, labels in store.dataset(split, 7, with_meta=True, pad_to="max"):
        labels = labels if isinstance(labels, dict) else {"label": labels}
        batch = {**{k: v.numpy() for k, v in features.items()}, **{k: v.numpy() for k, v in labels.items()}}
        out += [{k: v[i] for k, v in batch.items()} for i in range(len(batch["uid"]))]
    return out


def assert_same_store(beam: Path, reference: Path, split: str) -> None:
    got, want = (json.loads((p / "manifest.json").read_text()) for p in (beam, reference))
    assert {k: v for k, v in got.items() if k != "splits"} == {k: v for k, v in want.items() if k != "splits"}
    g, w = got["splits"][split], want["splits"][split]
    for key in ("num_examples", "num_records", "bytes", "activation_bytes", "examples_sha256", "shards"):
        assert g[key] == w[key], key  # shards: file names, record counts, bytes and sha256, in order
    for shard in w["shards"]:  # deterministic serialization: the very same bytes
        assert (beam / shard["file"]).read_bytes() == (reference / shard["file"]).read_bytes(), shard["file"]
    assert (beam / g["examples_file"]).read_bytes() == (reference / w["examples_file"]).read_bytes()
    a, b = _records(beam, split), _records(reference, split)
    assert len(a) == len(b) == w["num_records"]
    for x, y in zip(a, b):  # record order and every decoded array
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    leftovers = [p.name for p in beam.iterdir() if ".tmp-" in p.name or p.name.endswith(JOBS_SUFFIX)]
    assert not leftovers, leftovers


def test_beam_sst2_killed_then_rerun_equals_single_process(shared_data, tmp_path):
    data_dir = shared_data / "glue" / "SST-2"
    kw = dict(limit=120, token_mode="sequence", max_seq_len=64, shard_size_mb=0.25)
    _reference(tmp_path / "reference", "sst2", data_dir, "dev", **kw)
    settings = _settings(data_dir, "dev", **kw)
    out = tmp_path / "beam"

    proc = _beam("sst2", out, settings)  # killed, with its worker processes, once two shards are written
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and len(list(out.glob("*.done"))) < 2:
        time.sleep(0.05)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive, f"the pipeline ended before it was killed: {proc.stderr.read()[-3000:]}"
    done = len(list(out.glob("*.done")))
    planned = len(json.loads((out / "dev.plan.json").read_text())["shards"])
    assert 2 <= done < planned and not (out / "manifest.json").exists()

    stdout = _finish(_beam("sst2", out, settings))
    kept = int(stdout.split(" kept from an earlier run")[0].rsplit(", ", 1)[1])
    assert kept >= done and f"{planned - kept} shard(s) written" in stdout, stdout
    assert_same_store(out, tmp_path / "reference", "dev")


def test_beam_squad_equals_single_process(shared_data, tmp_path):
    data_dir = shared_data / "squad2"
    # windows of 128 tokens, stride 64: several per question, and shards of one or two windows,
    # so some questions' windows straddle two shards
    kw = dict(limit=12, token_mode="sequence", max_seq_len=128, doc_stride=64, layers="last2", shard_size_mb=0.3)
    manifest = _reference(tmp_path / "reference", "squad_v2", data_dir, "dev-v2.0.Rhine", **kw)
    info = manifest["splits"]["dev-v2.0.Rhine"]
    assert info["num_records"] > info["num_examples"] and len(info["shards"]) > info["num_examples"] // 2
    code, stdout, err = run_main(extract_main, "--task", "squad_v2", "--out", tmp_path / "beam",
                                 *_settings(data_dir, "dev-v2.0.Rhine", **kw), *THREADS)
    assert code == 0, err[-4000:]
    assert f"{len(info['shards'])} shard(s) written" in stdout
    assert_same_store(tmp_path / "beam", tmp_path / "reference", "dev-v2.0.Rhine")


@pytest.mark.parametrize("extra, message", [
    (["--runner", "DirectRunner", "--direct_num_workerz", "2"], "unknown Beam pipeline option(s) --direct_num_workerz"),
    (["--runner", "NoSuchRunner"], "--runner NoSuchRunner: Unexpected pipeline runner"),
])
def test_bad_beam_options_are_refused_before_anything_runs(shared_data, tmp_path, extra, message):
    out = tmp_path / "store"
    code, _, err = run_main(extract_main, "--task", "sst2", "--data-dir", shared_data / "glue" / "SST-2",
                            "--split", "dev", "--out", out, *extra)
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {message}"), err
    assert not out.exists()


def test_beam_options_need_a_runner(shared_data, tmp_path):
    code, _, err = run_main(extract_main, "--task", "sst2", "--data-dir", shared_data / "glue" / "SST-2",
                            "--out", tmp_path / "s", "--direct_num_workers", "2")
    assert code == 2 and "Beam pipeline options need --runner" in err
