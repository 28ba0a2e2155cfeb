"""Fixtures for the whole suite, the docstring examples of bertvision/ too
(``--doctest-modules``): `shared_data`, the real data folder, which the
examples see as ``DATA``, beside ``tmp``, an empty folder of their own."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent
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


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace, tmp_path):
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace["DATA"] = request.getfixturevalue("shared_data")
        doctest_namespace["tmp"] = tmp_path
