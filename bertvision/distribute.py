"""Choosing a `tf.distribute` strategy by name.

>>> strategy = get_strategy("mirrored")
>>> with strategy.scope():
...     model = build_model(config)
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class StrategyError(RuntimeError):
    """A strategy that cannot be set up here (no TPU, bad TF_CONFIG, ...)."""


def get_strategy(name: str = "default", tpu: str | None = None):
    """Return the strategy called `name`.

    - ``default``: TensorFlow's default strategy (one device).
    - ``mirrored``: `MirroredStrategy` over all local GPUs, or all local
      logical CPU devices when there is no GPU.
    - ``multi_worker``: `MultiWorkerMirroredStrategy` from ``TF_CONFIG``.
    - ``tpu``: `TPUStrategy` through a `TPUClusterResolver` (``tpu`` names
      the TPU; empty means the local/colab one).
    """
    import tensorflow as tf

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
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )
