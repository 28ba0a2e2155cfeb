"""The Python API for a notebook or script: the flow in five calls.

Each call is the object the matching command uses (no second code path):
`extract` is ``pipelines.extract`` (`ExtractConfig` + `Extractor`), `fit` is
``pipelines.fit`` (`FitConfig` + `bertvision.training.fit.fit`),
`Run.predict` is ``pipelines.predict --text`` (`Predictor`), `Run.evaluate`
is ``pipelines.predict --split`` (`predict_split`: an adapter run or a
fine-tuning run), `report` is
``pipelines.report`` (`build_report`). Everything they write is the same
folder the commands write, so the two mix freely.

A real run on a few SST-2 sentences (``DATA`` is the shared data folder,
``tmp`` an empty folder; a few seconds on a CPU once TensorFlow is loaded):

>>> import bertvision as bv
>>> store = bv.extract("sst2", tmp / "store", data_dir=DATA / "glue" / "SST-2", splits=["train", "dev"],
...                    limit=32, token_mode="cls", progress=False, jit_compile=False)  # no XLA for 64 texts
>>> store.task, store.layers, store.num_records("dev")
('sst2', [0, 1, 2, 3, 4, 5, 6], 32)
>>> run = bv.fit(store, adapter="linear_probe", out=tmp / "run", epochs=1, verbose=0)
>>> run.results.method, run.results.trainable_params
('linear_probe', 770)
>>> [r["label"] in ("negative", "positive") for r in run.predict(["a gripping, funny film", "dull"])]
[True, True]
>>> sorted(run.evaluate("dev"))
['accuracy']
>>> bv.write_report([run], tmp / "report", formats=["svg"]).runs
1

(``bertvision.report`` is the report package, so the top-level name of
`report` is ``write_report``; ``from bertvision.api import report`` works.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from bertvision.errors import ConfigError
from bertvision.inference.serving import Predictor, predict_split
from bertvision.report import Report, build_report
from bertvision.runs import RunFolder, RunResults
from bertvision.store.extract import ExtractConfig, Extractor
from bertvision.store.format import Store, open_store
from bertvision.data.files import DataSource, read_source
from bertvision.data.tasks import get_task
from bertvision.training.fit import RESUME_IGNORED, FitConfig
from bertvision.training.fit import fit as fit_config

__all__ = ["Run", "extract", "fit", "open_run", "open_store", "report", "write_report"]


def extract(task: str | DataSource, out: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
            splits: Sequence[str] | None = None, **options: Any) -> Store:
    """Run the backbone over `splits` of `task` (default: train and the
    task's eval splits; your own data: every split it reads) and store every
    layer's activations in `out`; returns the opened `Store`. `task` is a
    benchmark's name or your own data's files and columns
    (`bertvision.data.files.DataSource`, as ``pipelines.extract
    --text-column ...`` reads them; its files are read and checked first). `options` are `ExtractConfig`'s fields
    (``backbone``, ``layers``, ``token_mode``, ``pair_mode``, ``dtype``,
    ``limit``, ``sample``, ``seed``, ``max_seq_len``, ``progress``, ...), as
    the flags of ``python -m pipelines.extract``. Every split's settings are
    checked before any is extracted; an interrupted call, made again,
    resumes."""
    loaded: dict = {}
    if isinstance(task, DataSource):
        data = read_source(task)
        loaded, fields = data.splits, data.extract_fields()
        splits = list(splits or data.splits)
    else:
        fields = {"task": task}
        splits = list(splits or ["train", *get_task(task).eval_splits])
    options.setdefault("command", ["python", "-c", "bertvision.extract(...)"])
    configs = [ExtractConfig(**fields, split=split, out=str(out),
                             data_dir=None if data_dir is None else str(data_dir), **options) for split in splits]
    for config in configs:
        Extractor(config, loaded=loaded.get(config.split)).run()
    return open_store(str(out))


@dataclass
class Run:
    """A finished run folder (``config.json``, ``model.keras``,
    ``results.json``, ...), as `fit` leaves it or `open_run` reads it."""

    path: Path

    @property
    def results(self) -> RunResults:
        """Its ``results.json`` (`RunResults`: dev metrics, parameters, history, ...)."""
        return RunFolder(self.path).results()

    def predict(self, texts: Iterable[str | tuple[str, str] | dict]) -> list[dict]:
        """One result per input, as ``pipelines.predict --text`` prints it:
        a text, a ``(text, text_pair)`` tuple for a pair task, or a dict of
        the task's fields (``question``/``context`` for SQuAD). The backbone
        the run was trained on runs once over the batch."""
        items = [_input(t) for t in texts]
        predictor = Predictor.from_runs([str(self.path)])
        (name,) = predictor.names
        return predictor.predict({name: items})[name]

    def evaluate(self, split: str = "dev", store: str | os.PathLike | Store | None = None) -> dict[str, float]:
        """The task's official metrics on `split` of `store` (default: the
        store the run was trained on), as ``pipelines.predict --split``
        computes them (an adapter run from the store's activations, a
        fine-tuning run from the examples the store kept)."""
        source = store if store is not None else self.results.store
        if not source:
            raise ConfigError(f"{self.path}: its results name no store; give store=")
        if isinstance(source, os.PathLike):
            source = str(source)
        return predict_split(self.path, source, split).evaluate()


def open_run(path: str | os.PathLike) -> Run:
    """A finished run folder as a `Run`; a folder that is not one is refused."""
    run = Run(Path(path))
    run.results  # noqa: B018  (reads results.json: a missing or unfinished run raises RunError here)
    return run


def fit(store: str | os.PathLike | Store, adapter: str | dict = "adapter_pooler", *, out: str | os.PathLike,
        **options: Any) -> Run:
    """Train an adapter (`adapter`: a kind, or a dict of `ModelConfig`
    fields with ``kind``) on `store` into the run folder `out`; returns the
    `Run`. `options` are `FitConfig`'s fields (``epochs``, ``batch_size``,
    ``lr``, ``seed``, ``train_fraction``, ``verbose``, ...), as the flags of
    ``python -m pipelines.fit``. A finished run of the same settings in
    `out` is kept (not trained again); an interrupted one resumes; a
    finished run of other settings is refused."""
    path = store.path if isinstance(store, Store) else str(store)
    adapter = {"kind": adapter} if isinstance(adapter, str) else dict(adapter)
    options.setdefault("command", ["python", "-c", "bertvision.fit(...)"])
    config = FitConfig(store=str(path), out=str(out), adapter=adapter, **options)
    folder = RunFolder(out)
    if folder.finished and not config.differences(folder.read_config(), RESUME_IGNORED):
        return Run(Path(out))  # trained before with these settings: kept
    fit_config(config)
    return Run(Path(out))


def report(runs: Iterable[Run | str | os.PathLike], out: str | os.PathLike, **options: Any) -> Report:
    """Charts (HTML, PNG, SVG), ``summary.md``/``.csv`` and ``report.json``
    for `runs` (`Run` objects, run folders, or folders holding many) in
    `out`; `options` as `build_report` (``formats``, ``scale``)."""
    paths = [str(r.path) if isinstance(r, Run) else str(r) for r in runs]
    return build_report(paths, str(out), **options)


write_report = report  # the top-level name: bertvision.report is the report package


def _input(item: str | tuple | dict) -> dict:
    if isinstance(item, str):
        return {"text": item}
    if isinstance(item, tuple) and len(item) == 2:
        return {"text": item[0], "text_pair": item[1]}
    if isinstance(item, dict):
        return item
    raise ConfigError(f"an input is a text, a (text, text_pair) tuple or a dict of fields, got {item!r}")
