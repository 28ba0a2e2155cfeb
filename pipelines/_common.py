"""Shared bits of the command-line wrappers: environment and error exits."""

from __future__ import annotations

import contextlib
import os
import sys


def setup_env() -> None:
    """Quiet TensorFlow's C++ logs and pick the TensorFlow Keras backend."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class _Die:
    """Turn the library's user-facing errors into one clear line and exit 2."""

    @contextlib.contextmanager
    def on_errors(self):
        # The library's user-facing errors are ValueErrors (StoreError, FitError,
        # ...) plus StrategyError; any other exception is a bug and keeps its traceback.
        from bertvision.distribute import StrategyError

        try:
            yield
        except (ValueError, FileNotFoundError, PermissionError, StrategyError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)


die = _Die()
