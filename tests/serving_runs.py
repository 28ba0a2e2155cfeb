"""Small real runs for the serving, HTTP, export and load tests.

Session fixtures (a module-level cache makes each run once per session even
when several test modules import the fixture, as in `tests.stores`):

- ``sst2_mean_store``: SST-2 train + dev, first 32 each, ``mean`` tokens, 64 max.
- ``mrpc_store``: MRPC train + dev, first 32 each, ``cls``, the last 4 layers.
- ``served_runs``: ``{name: run folder}`` of adapters trained 1 epoch on the
  stores of `tests.stores` and these (``cls``: linear_probe on
  ``sst2_cls_store``; ``mean``: scalar_mix; ``seq``: adapter_pooler on
  ``sst2_seq_store``; ``mrpc``: cnn on ``mrpc_store``; ``squad_v2``:
  linear_probe on ``squad_store``, several windows per question) and ``ft``,
  a fine-tuning run of the embedded MiniLM on 16 SST-2 examples (one step).

A module using ``served_runs`` imports the store fixtures it depends on too::

    from tests.serving_runs import mrpc_store, served_runs, sst2_mean_store  # noqa: F401
    from tests.stores import squad_store, sst2_cls_store, sst2_seq_store  # noqa: F401
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stores import build_store

_RUNS: dict[str, Path] = {}
SERVED = ("cls", "mean", "seq", "mrpc", "squad_v2", "ft")


def _root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "stores"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def sst2_mean_store(tmp_path_factory, shared_data) -> str:
    return build_store(_root(tmp_path_factory), "sst2_mean", "sst2", shared_data / "glue" / "SST-2",
                       ["train", "dev"], limit=32, token_mode="mean", max_seq_len=64, jit_compile=False)


@pytest.fixture(scope="session")
def mrpc_store(tmp_path_factory, shared_data) -> str:
    return build_store(_root(tmp_path_factory), "mrpc_last4", "mrpc", shared_data / "glue" / "MRPC",
                       ["train", "dev"], limit=32, token_mode="cls", max_seq_len=64, layers="last4",
                       jit_compile=False)


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory, shared_data, sst2_cls_store, sst2_seq_store, squad_store, sst2_mean_store,
                mrpc_store) -> dict[str, Path]:
    if _RUNS:
        return dict(_RUNS)
    from bertvision.training.finetune import FinetuneConfig, Finetuner
    from bertvision.training.fit import FitConfig, fit

    root = tmp_path_factory.getbasetemp() / "served_runs"
    plan = {"cls": (sst2_cls_store, "linear_probe"), "mean": (sst2_mean_store, "scalar_mix"),
            "seq": (sst2_seq_store, "adapter_pooler"), "mrpc": (mrpc_store, "cnn"),
            "squad_v2": (squad_store, "linear_probe")}
    runs = {}
    for name, (store, kind) in plan.items():
        runs[name] = root / name
        fit(FitConfig(store=store, out=str(runs[name]), adapter={"kind": kind}, epochs=1, batch_size=16, lr=3e-3,
                      verbose=0, jit_compile=False))
    runs["ft"] = root / "ft"
    Finetuner(FinetuneConfig(task="sst2", out=str(runs["ft"]), data_dir=str(shared_data / "glue" / "SST-2"),
                             limit=16, max_seq_len=32, batch_size=16, epochs=1, jit_compile=False,
                             progress=False)).run()
    _RUNS.update(runs)
    return dict(runs)


def run_specs(runs: dict[str, Path], names=SERVED) -> list[str]:
    """``--run NAME=PATH`` values for `names`."""
    return [f"{name}={runs[name]}" for name in names]
