"""Optional features and the pip extra each needs.

`pip install bertvision` gives extraction, training, prediction and reports;
a feature outside that core names its extra when its packages are missing,
in one line (a `MissingExtraError`, which the commands print as
``error: ...`` and exit 2):

>>> EXTRAS["beam"]
('apache_beam',)
>>> import_extra("bertvision.no_such_module", "serve", "serving over HTTP")
Traceback (most recent call last):
ModuleNotFoundError: No module named 'bertvision.no_such_module'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bertvision.errors import BertVisionError

__all__ = ["EXTRAS", "MODULE_EXTRAS", "MissingExtraError", "import_extra", "missing_extra"]

# extra name (pyproject.toml [project.optional-dependencies]) -> the top-level modules it installs
EXTRAS = {
    "beam": ("apache_beam",),
    "serve": ("fastapi", "uvicorn", "pydantic", "starlette"),
    "text": ("tensorflow_text",),
    "tfds": ("tensorflow_datasets",),
    "onnx": ("onnx", "tf2onnx", "onnxruntime"),
}

# the bertvision modules that import an extra's packages at their top -> (extra, what they are)
MODULE_EXTRAS = {
    "bertvision.store.beam": ("beam", "extraction as an Apache Beam pipeline"),
    "bertvision.inference.server": ("serve", "serving over HTTP"),
    "bertvision.inference.export": ("text", "the SavedModel export (TensorFlow Text ops)"),
}


class MissingExtraError(BertVisionError):
    """An optional feature was asked for without its packages installed."""


def import_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, which needs the packages of `extra`; if one of them
    is missing, raise `MissingExtraError` saying what to install. Any other
    import failure propagates unchanged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in EXTRAS[extra]:
            raise
        raise MissingExtraError(f"{what} needs the {extra!r} extra ({missing} is not installed): "
                                f"pip install 'bertvision[{extra}]'") from None


def missing_extra(module: str) -> str | None:
    """None when `module` imports; when it is one of `MODULE_EXTRAS` and its
    extra is not installed, the one-line message of `import_extra` (the
    suite skips such a module's docstring examples with it).

    >>> missing_extra("bertvision.config") is None
    True
    """
    if module not in MODULE_EXTRAS:
        return None
    extra, what = MODULE_EXTRAS[module]
    try:
        import_extra(module, extra, what)
    except MissingExtraError as err:
        return str(err)
    return None
