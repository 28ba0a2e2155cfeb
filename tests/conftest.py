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
SHARED_DATA_ENV = "BERTVISION_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared, read-only real data folder (holding `glue/` and `squad2/`).

    `$BERTVISION_SHARED_DATA`, else `<repo>/../shared/data`. CI always has it,
    so a missing folder fails the test instead of skipping it.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(
            f"Shared data folder {path} not found: set ${SHARED_DATA_ENV} to the "
            f"folder holding glue/SST-2, glue/MRPC and squad2/ (default: "
            f"<repo>/../shared/data).",
            pytrace=False,
        )
    return path


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
