"""Fixtures for the whole suite, the docstring examples of bertvision/ too
(``--doctest-modules``): `shared_data`, the real data folder, which the
examples see as ``DATA``, beside ``tmp``, an empty folder of their own, which
is also their working folder (a relative path such as ``runs/a`` lands
there, never in the checkout). An example that names ``STORE`` or ``RUN``
gets a small real SST-2 store (``cls``, 32 train and 32 dev examples, the
embedded backbone) and a one-epoch ``linear_probe`` run trained on it, built
once per session (a few seconds) and only when an example needs them; the
examples only read them. A module of bertvision/ whose optional extra is
not installed (`bertvision.extras.MODULE_EXTRAS`) is reported skipped, with
the extra to install, instead of failing to import."""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from bertvision.extras import missing_extra  # noqa: E402  (light: imports no extra, no TensorFlow)

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


class MissingExtra(pytest.File):
    """A module of bertvision/ that needs an extra that is not installed:
    collected as one skip saying which extra to install."""

    def __init__(self, *, reason: str, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def collect(self):
        pytest.skip(self.reason)


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    collected = yield
    package = REPO_ROOT / "bertvision"
    if file_path.suffix == ".py" and package in file_path.parents:
        reason = missing_extra(".".join(file_path.relative_to(REPO_ROOT).with_suffix("").parts))
        if reason:
            return [MissingExtra.from_parent(parent, path=file_path, reason=reason)]
    return collected


@pytest.fixture(scope="session")
def doctest_sst2(tmp_path_factory, shared_data) -> tuple[str, str]:
    """``(STORE, RUN)`` of the docstring examples: a real SST-2 store of 32
    train and 32 dev examples and a one-epoch linear probe run on it."""
    import bertvision as bv

    root = tmp_path_factory.mktemp("doctest_sst2")
    store = bv.extract("sst2", root / "store", data_dir=shared_data / "glue" / "SST-2", splits=["train", "dev"],
                       limit=32, token_mode="cls", progress=False, jit_compile=False)
    run = bv.fit(store, adapter="linear_probe", out=root / "run", epochs=1, seed=0, verbose=0)
    return str(store.path), str(run.path)


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace["DATA"] = request.getfixturevalue("shared_data")
        doctest_namespace["tmp"] = tmp_path
        monkeypatch.chdir(tmp_path)
        source = "".join(example.source for example in request.node.dtest.examples)
        if re.search(r"\b(STORE|RUN)\b", source):
            doctest_namespace["STORE"], doctest_namespace["RUN"] = request.getfixturevalue("doctest_sst2")
