"""Choosing a `tf.distribute` strategy by name.

>>> from bertvision.models.config import ModelConfig
>>> from bertvision.models.zoo import build_model
>>> from bertvision.store.format import open_store
>>> strategy = get_strategy("mirrored")   # every local GPU, else the CPU's devices
>>> with strategy.scope():
...     model = build_model(ModelConfig.from_store(open_store(STORE), {"kind": "linear_probe"}))
>>> model.count_params()
770
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from bertvision.config import STRATEGIES
from bertvision.errors import StrategyError

__all__ = ["STRATEGIES", "get_strategy", "is_chief", "split_cpu_devices"]


def get_strategy(name: str = "default", tpu: str | None = None):
    """Return the strategy called `name`.

    - ``default``: TensorFlow's default strategy (one device).
    - ``mirrored``: `MirroredStrategy` over all local GPUs, or all local
      logical CPU devices when there is no GPU.
    - ``multi_worker``: `MultiWorkerMirroredStrategy` from ``TF_CONFIG``.
    - ``tpu``: `TPUStrategy` through a `TPUClusterResolver` (``tpu`` names
      the TPU; empty means the local/colab one).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise StrategyError("--strategy multi_worker needs the TF_CONFIG environment variable (cluster spec + task)")
        try:
            config = json.loads(raw)
            config["cluster"]["worker"], config["task"]["index"]
        except (ValueError, KeyError, TypeError) as err:
            raise StrategyError(f"TF_CONFIG is not a valid cluster spec: {err}") from err
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except Exception as err:  # TF raises ValueError/NotFoundError/... here
            raise StrategyError(
                f"--strategy tpu: no TPU could be reached (tpu={tpu or '<local>'!r}): {err}"
            ) from err
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def split_cpu_devices(n: int) -> None:
    """Split the host CPU into `n` logical devices (for testing mirrored on CPU).

    Must run before TensorFlow initialises its devices.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )


def is_chief(strategy) -> bool:
    """Whether this process writes the outputs: always, except on the
    non-chief workers of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    spec = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec


def num_workers(strategy) -> int:
    """Workers in the strategy's cluster (1 without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def prepare_multi_worker(model, strategy) -> None:
    """Make Keras 3 ``fit`` train a compiled `model` under a multi-worker
    strategy (a no-op otherwise).

    Keras 3.15's ``fit`` builds a model it thinks unbuilt by averaging a
    first batch across workers with ``strategy.reduce``, which
    `MultiWorkerMirroredStrategy` cannot do for a ``(features dict,
    labels)`` batch, and it averages each step's scalar logs with
    ``reduce(axis=0)``, which needs a batch axis. There is no public switch
    for either, so (in this one place) the optimizer is built here, the
    model's cached strategy is cleared so ``fit`` takes the enclosing scope's,
    and the step's logs get a batch axis. `tests/test_distribute.py` trains
    two real workers and fails if a Keras upgrade changes this.
    """
    if num_workers(strategy) <= 1:
        return
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    model._distribute_strategy = None
    keras_train_step = model.train_step

    def train_step(data):
        return {k: tf.reshape(v, [1]) for k, v in keras_train_step(data).items()}

    model.train_step = train_step
