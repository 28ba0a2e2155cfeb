"""pipelines.fit under tf.distribute: mirrored over two logical CPU devices,
multi-worker with two local worker processes, and a clear refusal of --strategy
tpu without a TPU."""

import json
import socket
import subprocess
import sys

from pipelines.fit import main as fit_main
from tests.stores import REPO_ROOT, run_cli, run_main, sst2_cls_store  # noqa: F401

FIT = ["--adapter", "adapter_pooler", "--epochs", "2", "--batch-size", "16", "--quiet", "--no-jit-compile"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _shape(results):
    return {k: type(v).__name__ for k, v in results.items() if v is not None}, set(results["dev_metrics"])


def test_mirrored_on_two_cpu_devices(sst2_cls_store, tmp_path):  # noqa: F811
    result = run_cli("pipelines.fit", "--store", sst2_cls_store, "--out", tmp_path / "mirrored",
                     "--strategy", "mirrored", *FIT, env={"BERTVISION_CPU_DEVICES": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    mirrored = json.loads((tmp_path / "mirrored" / "results.json").read_text())
    assert mirrored["environment"]["replicas"] == 2 and mirrored["environment"]["strategy"] == "mirrored"
    code, _, err = run_main(fit_main, "--store", sst2_cls_store, "--out", tmp_path / "default", *FIT)
    assert code == 0, err[-3000:]
    default = json.loads((tmp_path / "default" / "results.json").read_text())
    assert default["environment"]["replicas"] == 1
    assert _shape(mirrored) == _shape(default)
    assert len(mirrored["history"]) == 2 and (tmp_path / "mirrored" / "model.keras").is_file()


def test_multi_worker_two_local_processes(sst2_cls_store, tmp_path):  # noqa: F811
    import os

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "mw"
    procs = []
    for index in range(2):
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": str(REPO_ROOT),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.fit", "--store", sst2_cls_store, "--out", str(out),
             "--strategy", "multi_worker", *FIT], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    results = json.loads((out / "results.json").read_text())  # written by the chief (worker 0)
    assert results["environment"]["strategy"] == "multi_worker" and results["environment"]["replicas"] == 2
    assert set(results["dev_metrics"]) == {"accuracy"} and len(results["history"]) == 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["config.json", "logs", "model.keras", "predictions", "results.json"]


def test_tpu_without_a_tpu_fails_clearly(sst2_cls_store, tmp_path):  # noqa: F811
    result = run_cli("pipelines.fit", "--store", sst2_cls_store, "--out", tmp_path / "tpu", "--strategy", "tpu",
                     "--tpu", "no-such-tpu", *FIT)
    assert result.returncode == 2
    assert "--strategy tpu: no TPU could be reached" in result.stderr
    assert not (tmp_path / "tpu").exists()
