"""pipelines.fit under tf.distribute: mirrored over two logical CPU devices,
multi-worker with two local worker processes, and a clear refusal of --strategy
tpu without a TPU."""

import json
import math
import socket
import subprocess
import sys

import numpy as np

from pipelines.fit import main as fit_main
from tests.stores import REPO_ROOT, cli_env, run_cli, run_main, sst2_cls_store  # noqa: F401

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


def _same_global_batches(store, seed: int, global_batch: int, workers: int, epochs: int):
    """The global batches a `workers`-worker MultiWorkerMirroredStrategy run
    trains on, as one single-process stream: worker i's input pipeline is the
    store reader with input context (workers, i), its per-replica batch
    `global_batch / workers` (exactly `bertvision.training.fit.build_adapter_trainer`'s
    ``dataset_fn``); step k's global batch is every worker's k-th batch."""
    import tensorflow as tf

    steps_per_epoch = math.ceil(store.num_records("train") / global_batch)
    parts = tuple(store.training_dataset("train", global_batch, seed=seed, steps_per_epoch=steps_per_epoch,
                                         epochs=epochs, input_context=tf.distribute.InputContext(workers, i, workers))
                  for i in range(workers))

    def concat(*batches):
        features = {k: tf.concat([b[0][k] for b in batches], axis=0) for k in batches[0][0]}
        return features, tf.concat([b[1] for b in batches], axis=0)

    return tf.data.Dataset.zip(parts).map(concat)


def test_multi_worker_two_local_processes_trains_like_one(sst2_cls_store, tmp_path):  # noqa: F811
    """Two real worker processes under MultiWorkerMirroredStrategy train what
    one process trains on the same global batches.

    The reference is this process, one replica, with the same model, seed,
    optimizer and schedule, fed exactly the global batches the two replicas
    got (`_same_global_batches`; the multi-worker reader shards records per
    worker, so a plain single-process fit would see other batches) and no
    dropout (each replica would draw its own masks). What may differ is only
    the order of float32 sums: the two replicas' gradients of 8-example means
    are all-reduced and halved, where one replica takes the mean of 16. So the
    tolerance: every learned weight within 1e-5 + 1e-4 relative, each epoch's
    dev accuracy equal (no dev prediction flips), each epoch's training loss
    within 1e-4."""

    import keras

    from bertvision.models import ModelConfig, build_model
    from bertvision.training.fit import FitConfig, build_adapter_trainer
    from bertvision.store.format import open_store

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "mw"
    procs = []
    for index in range(2):
        env = cli_env({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.fit", "--store", sst2_cls_store, "--out", str(out),
             "--strategy", "multi_worker", *FIT, "--dropout", "0"], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=900))
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
        ["config.json", "logs", "model.keras", "predictions", "results.json", "store.json"]

    config = FitConfig.load(out / "config.json")
    store = open_store(sst2_cls_store)
    keras.utils.set_random_seed(config.seed)  # as fit() does before building the model
    trainer = build_adapter_trainer(
        ModelConfig.from_store(store, config.adapter), store, train_split="train", eval_splits=["dev"],
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
        weight_decay=config.weight_decay, warmup=config.warmup, schedule=config.schedule, jit_compile=False)
    trainer.train_data = lambda first_step: _same_global_batches(store, config.seed, config.batch_size, 2, config.epochs)
    outcome = trainer.run()

    for mw, one in zip(results["history"], outcome.history):
        assert mw["dev"] == one.dev, (mw, one)
        assert abs(mw["loss"] - one.loss) <= 1e-4, (mw["loss"], one.loss)
    assert results["dev_metrics"] == outcome.best_metrics and results["best_epoch"] == outcome.best_epoch
    learned = keras.saving.load_model(out / "model.keras", compile=False).get_weights()
    reference = trainer.model.get_weights()
    keras.utils.set_random_seed(config.seed)
    initial = build_model(ModelConfig.from_store(store, config.adapter)).get_weights()
    assert len(learned) == len(reference) == len(initial)
    for got, want in zip(learned, reference):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    gap = max(float(np.abs(g - w).max()) for g, w in zip(learned, reference))
    moved = max(float(np.abs(w - i).max()) for w, i in zip(reference, initial))
    print(f"multi-worker vs one process: largest weight difference {gap:.2e}; training moved weights by up to "
          f"{moved:.2e}")
    assert moved > 1000 * gap  # the two runs agree far more closely than either is to where it started

    # the check can fail: one process reading the store its own way (other global batches) lands elsewhere
    keras.utils.set_random_seed(config.seed)
    plain = build_adapter_trainer(
        ModelConfig.from_store(store, config.adapter), store, train_split="train", eval_splits=["dev"],
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
        weight_decay=config.weight_decay, warmup=config.warmup, schedule=config.schedule, jit_compile=False)
    plain.run()
    assert max(float(np.abs(p - w).max()) for p, w in zip(plain.model.get_weights(), reference)) > 100 * 1e-5


def test_tpu_without_a_tpu_fails_clearly(sst2_cls_store, tmp_path):  # noqa: F811
    result = run_cli("pipelines.fit", "--store", sst2_cls_store, "--out", tmp_path / "tpu", "--strategy", "tpu",
                     "--tpu", "no-such-tpu", *FIT)
    assert result.returncode == 2
    assert "--strategy tpu: no TPU could be reached" in result.stderr
    assert not (tmp_path / "tpu").exists()
