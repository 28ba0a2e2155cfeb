"""Small real stores for the training/predict/distribute tests.

Session-scoped fixtures extracting real data from the shared data folder with
the embedded MiniLM (loaded once for all stores). Import the fixtures you use
into a test module (``from tests.stores import sst2_cls_store``); a module-level
cache makes every store extracted once per session even when several modules
import its fixture.

- ``sst2_cls_store``: SST-2 train + dev, first 64 examples each, ``cls`` tokens.
- ``sst2_seq_store``: SST-2 train + dev, first 48 each, ``sequence``, max 32 tokens.
- ``squad_store``: SQuAD 2.0, train = first 16 questions of
  ``dev-v2.0.Normans_CCT.json``, dev = first 16 of ``dev-v2.0.Rhine.json``,
  ``sequence``, max 128 tokens, doc stride 64 (several windows per question).
- ``mrpc_separate_store``: MRPC train + dev, first 48 each, ``mean`` tokens,
  ``--pair-mode separate`` (each sentence encoded on its own), max 64 tokens.
- ``sst2_cls_run``: a ``scalar_mix`` adapter run trained 2 epochs on
  ``sst2_cls_store`` (for prediction from it or from a damaged copy).
- ``sst2_finetune_run``: MiniLM fine-tuned by ``pipelines.finetune`` (in this
  process) 1 epoch on the first 48 SST-2 examples (`SST2_FINETUNE` flags;
  dev = the first 48 dev examples), checkpoints at 0.5 and 1 epoch. Shared,
  read-only, by the fine-tuning, ensemble and report tests (one xdist group,
  tests/conftest.py, so that it is trained once).
- ``goemotions_store``: your own multi-label data as a user extracts it:
  GoEmotions (TSV without a header) read through a task file
  (`goemotions_task_file`), a seeded 40 examples of train, dev and test,
  ``cls`` tokens, max 32 tokens.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_CACHE: dict[str, str] = {}
_MODEL: dict = {}


def _model():
    if not _MODEL:
        from bertvision.models.backbone import load_backbone, load_tokenizer, resolve_backbone

        ref = resolve_backbone(None)
        _MODEL.update(backbone=load_backbone(ref), tokenizer=load_tokenizer(ref))
    return _MODEL["backbone"], _MODEL["tokenizer"]


def build_store(root: Path, name: str, task: str, data_dir: Path, splits, **settings) -> str:
    """Extract `splits` of `task` into ``root/name`` once per session (no XLA
    compilation unless `settings` ask for it: these stores are the inputs of
    other tests, and compiling MiniLM for a few dozen examples doubled their
    cost; tests/test_extract.py tests the compiled extraction)."""
    if name in _CACHE:
        return _CACHE[name]
    from bertvision.store.extract import ExtractConfig, Extractor

    backbone, tokenizer = _model()
    out = root / name
    for split in splits:
        config = ExtractConfig(task=task, split=split, out=str(out), data_dir=str(data_dir), progress=False,
                               **{"jit_compile": False, **settings})
        Extractor(config, backbone=backbone, tokenizer=tokenizer).run()
    _CACHE[name] = str(out)
    return _CACHE[name]


def _root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "stores"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def sst2_cls_store(tmp_path_factory, shared_data) -> str:
    return build_store(_root(tmp_path_factory), "sst2_cls", "sst2", shared_data / "glue" / "SST-2",
                       ["train", "dev"], limit=64, token_mode="cls", max_seq_len=64)


@pytest.fixture(scope="session")
def sst2_seq_store(tmp_path_factory, shared_data) -> str:
    return build_store(_root(tmp_path_factory), "sst2_seq", "sst2", shared_data / "glue" / "SST-2",
                       ["train", "dev"], limit=48, token_mode="sequence", max_seq_len=32)


@pytest.fixture(scope="session")
def squad_store(tmp_path_factory, shared_data) -> str:
    data = _root(tmp_path_factory) / "squad_data"
    data.mkdir(exist_ok=True)
    for name, source in (("train-v2.0.json", "dev-v2.0.Normans_CCT.json"), ("dev-v2.0.json", "dev-v2.0.Rhine.json")):
        link = data / name
        if not link.exists():
            link.symlink_to(shared_data / "squad2" / source)
    return build_store(_root(tmp_path_factory), "squad", "squad_v2", data, ["train", "dev"], limit=16,
                       token_mode="sequence", max_seq_len=128, doc_stride=64)


@pytest.fixture(scope="session")
def mrpc_separate_store(tmp_path_factory, shared_data) -> str:
    return build_store(_root(tmp_path_factory), "mrpc_separate", "mrpc", shared_data / "glue" / "MRPC",
                       ["train", "dev"], limit=48, token_mode="mean", pair_mode="separate", max_seq_len=64)


@pytest.fixture(scope="session")
def sst2_cls_run(tmp_path_factory, sst2_cls_store) -> Path:
    from bertvision.training.fit import FitConfig, fit

    out = tmp_path_factory.mktemp("sst2_cls_run") / "run"
    fit(FitConfig(store=sst2_cls_store, out=str(out), adapter={"kind": "scalar_mix"}, epochs=2, batch_size=16,
                  verbose=0, jit_compile=False))
    return out


# the flags of `sst2_finetune_run` (with --data-dir and --out); a test that reruns it (killed and resumed)
# compares with that run
SST2_FINETUNE = ["--task", "sst2", "--limit", "48", "--max-seq-len", "32", "--batch-size", "16", "--epochs", "1",
                 "--checkpoint-every", "0.5", "--lr", "1e-4", "--no-jit", "--no-progress"]


@pytest.fixture(scope="session")
def sst2_finetune_run(tmp_path_factory, shared_data) -> Path:
    if "sst2_finetune" not in _CACHE:
        out = tmp_path_factory.mktemp("sst2_finetune") / "sst2"
        run_pipeline("pipelines.finetune", *SST2_FINETUNE, "--data-dir", shared_data / "glue" / "SST-2", "--out", out)
        _CACHE["sst2_finetune"] = str(out)
    return Path(_CACHE["sst2_finetune"])


def run_main(main, *args) -> tuple[int, str, str]:
    """Call a pipeline's ``main(argv)`` in this process: ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_pipeline(module: str, *args) -> str:
    """Run the command ``python -m <module> args...`` in this process (its
    ``main(argv)``; no second TensorFlow start-up) and return what it printed;
    a non-zero exit fails the test with its error output. For fixtures that
    build runs with the real commands; a test about the process itself (exit
    codes, kills, a server) uses `run_cli`."""
    code, out, err = run_main(importlib.import_module(module).main, *args)
    assert code == 0, f"python -m {module} {' '.join(map(str, args))} failed ({code}):\n{out[-2000:]}\n{err[-3000:]}"
    return out


def run_cli(module: str, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args...`` from the repository root."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)


def cli_env(extra: dict | None = None) -> dict:
    """The environment of a command the tests start: this one, the TensorFlow
    backend and quiet logs, `extra`, and the repository first on PYTHONPATH."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", **(extra or {})}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def goemotions_task_file(root: Path, data: Path) -> Path:
    """``root/goemotions.task.json``: GoEmotions as a user's task file (TSV
    without a header: text in column 0, comma-separated label ids in column
    1, the comment id in column 2; the 28 names in ``labels.txt``)."""
    go = data / "goemotions"
    task = root / "goemotions.task.json"
    task.write_text(json.dumps({"name": "goemotions", "data_dir": str(go), "splits": {"train": "train.tsv",
                                "dev": "dev.tsv", "test": "test.tsv"}, "header": False, "text_column": "0",
                                "label_columns": ["1"], "id_column": "2", "kind": "multi_label",
                                "label_names": str(go / "labels.txt")}))
    return task


@pytest.fixture(scope="session")
def goemotions_store(tmp_path_factory, shared_data) -> str:
    if "goemotions" not in _CACHE:
        from pipelines.extract import main as extract_main

        root = _root(tmp_path_factory)
        out = root / "goemotions"
        code, _, err = run_main(extract_main, "--task-file", goemotions_task_file(root, shared_data), "--out", out,
                                "--token-mode", "cls", "--sample", "40", "--max-seq-len", "32", "--no-progress",
                                "--no-jit")
        assert code == 0, err[-3000:]
        _CACHE["goemotions"] = str(out)
    return _CACHE["goemotions"]


def kill_when_saved(args, run: Path, step: int = 2, timeout: float = 300) -> int:
    """Start ``python -m pipelines.finetune args`` and kill -9 it as soon as
    the training state of global `step` is saved in ``run/state``; returns
    its exit code (``-SIGKILL`` when it was killed there)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.finetune", *map(str, args)], cwd=REPO_ROOT, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if (run / "state" / f"step-{step:09d}" / "state.json").is_file():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode
