"""Shared bits of the command-line wrappers: environment and error exits."""

from __future__ import annotations

import contextlib
import os
import sys

from bertvision.errors import BertVisionError


def setup_env() -> None:
    """Quiet TensorFlow's C++ logs and pick the TensorFlow Keras backend
    (before TensorFlow or Keras is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class _Die:
    """Turn user-facing errors into one clear line and exit 2."""

    @contextlib.contextmanager
    def on_errors(self):
        """The library's errors (`bertvision.errors.BertVisionError`) and
        file-system errors (`OSError`: a missing file, no permission, a full
        disk) are printed as ``error: ...``; anything else is a bug and keeps
        its traceback."""
        try:
            yield
        except (BertVisionError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)


die = _Die()
