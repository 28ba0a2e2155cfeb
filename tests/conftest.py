"""Shared pytest fixtures: the real shared data, the small fixture files, and a
helper that writes task files into a temporary folder."""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402
from typing import Callable, Mapping  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


# How the suite spreads over the two xdist workers (`--dist loadgroup`, pytest.ini):
# a worker takes a whole group, which is one module, except that the modules
# sharing the session-scoped served runs (tests/serving_runs.py: a fine-tuning
# run and five adapter fits) form one group, and those sharing the SST-2
# fine-tuning run (tests/stores.py: sst2_finetune_run) another, so that those
# are built once.
# Groups go out in collection order, so the longest (minutes each on the
# 2-core machine) come first: one taken last would run alone at the end. The
# docstring examples of bertvision/ are one group ("doctests"), so that the
# small SST-2 store and run they share (root conftest.py) are built once.
SHARED_GROUPS = {**{name: "serving" for name in ("test_export.py", "test_predict_text.py", "test_serve_http.py",
                                                 "test_serve_load.py", "test_serving.py")},
                 **{name: "finetune" for name in ("test_finetune.py", "test_ensemble.py", "test_report.py")}}
LONG_GROUPS = ("test_reproduce.py", "serving", "test_bench_own_data.py", "test_onnx.py", "finetune", "test_pairs.py",
               "test_notebooks.py", "test_search.py", "test_extract.py", "test_beam_extract.py", "test_own_data_flow.py",
               "test_own_data_finetune.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(items):
    def group_of(item):
        if isinstance(item, pytest.DoctestItem):
            return "doctests"
        return SHARED_GROUPS.get(item.path.name, item.path.name)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))

    def rank(item):
        group = group_of(item)
        return (LONG_GROUPS.index(group) if group in LONG_GROUPS else len(LONG_GROUPS), group)

    items.sort(key=rank)  # stable: a module's tests keep their order and stay together


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory) -> Callable[[str], Path]:
    """Factory of folders for a module's shared (module-scoped) outputs,
    removed once the module is done if none of the session's tests failed
    meanwhile (a failure keeps them to look at). Fine-tuning checkpoints are
    ~90 MB each: a suite that kept every module's outputs until the end
    needed several GB of free disk, more than a CI machine had."""
    made: list[Path] = []
    failed = request.session.testsfailed

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == failed:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """`tests/fixtures`: small self-written files in each task's published
    format (`glue/<GLUE folder>/*.tsv`, `squad2/{train,dev}-v2.0.json`)."""
    return FIXTURES_DIR


@pytest.fixture
def write_task_files(tmp_path) -> Callable[..., Path]:
    """Factory writing files into a fresh folder under `tmp_path`.

    `write_task_files({"train.tsv": "sentence\\tlabel\\n...", ...}, name="SST-2")`
    returns the folder. `str` contents are written as UTF-8, `bytes` as is.
    """

    def write(files: Mapping[str, str | bytes], name: str = "task") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, content in files.items():
            path = folder / file_name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8", newline="")
        return folder

    return write
