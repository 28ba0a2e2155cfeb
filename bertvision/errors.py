"""The project's errors: one base class, one subclass per part of the flow.

Every error a user can cause and fix (a bad flag, a missing file, a store that
does not match a run, ...) is a `BertVisionError`. The command-line wrappers
print such errors as one line and exit 2; any other exception is a bug and
keeps its traceback (`pipelines._common.die`).

The subclasses also derive from `ValueError` (they are errors in the values a
caller passed), except `StrategyError` (a runtime set-up problem).

Example:
    >>> try:
    ...     raise StoreError("tfrecords/x: no manifest.json")
    ... except BertVisionError as err:
    ...     print(f"error: {err}")
    error: tfrecords/x: no manifest.json
"""

from __future__ import annotations

__all__ = ["BackboneError", "BertVisionError", "ConfigError", "DataError", "EnsembleError", "FitError", "FinetuneError",
           "ReportError", "RunError", "SearchError", "ServeError", "StoreError", "StrategyError"]


class BertVisionError(Exception):
    """Base of every user-facing error of BertVision."""


class ConfigError(BertVisionError, ValueError):
    """A setting (flag, config field, config file) that is missing or invalid."""


class DataError(BertVisionError, ValueError):
    """Task data that cannot be read: missing file, unknown split, bad header, malformed JSON."""


class BackboneError(BertVisionError, ValueError):
    """A backbone name or folder that cannot be loaded."""


class StoreError(BertVisionError, ValueError):
    """A store that is missing, corrupt, locked, or not what the caller expects."""


class RunError(BertVisionError, ValueError):
    """A run folder that is missing, unfinished, in use, or does not fit what it is used with."""


class FitError(RunError):
    """An adapter fit that cannot run as configured."""


class FinetuneError(RunError):
    """A fine-tuning run that cannot go on (e.g. its loss became NaN)."""


class EnsembleError(RunError):
    """Runs that cannot be combined (different tasks, examples or windows)."""


class SearchError(BertVisionError, ValueError):
    """A search that cannot run as configured (bad space, store mismatch, ...)."""


class ReportError(BertVisionError, ValueError):
    """A run folder or results file that cannot be reported on."""


class ServeError(BertVisionError, ValueError):
    """Runs that cannot be served or exported together, or an invalid request."""


class StrategyError(BertVisionError, RuntimeError):
    """A distribution strategy that cannot be set up here (no TPU, bad TF_CONFIG, ...)."""
