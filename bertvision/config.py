"""One config base, the choice lists and the shared defaults.

Every ``*Config`` of BertVision (`ExtractConfig`, `FitConfig`,
`FinetuneConfig`, `SearchConfig`, `ModelConfig`, ...) is a dataclass deriving
from `ConfigBase`: validated when made, a JSON round trip through
`to_dict` / `from_dict` (unknown keys are refused, naming them), `load` /
`save` of a ``config.json``. Validation messages name the command-line flag
(``--batch-size``) as well as the field, so a CLI passes them on unchanged.

The choice lists below are the only definitions of these options; the
command-line wrappers and the configs both read them.

Example:
    >>> @dataclass
    ... class Demo(ConfigBase):
    ...     epochs: int = 1
    ...     def validate(self):
    ...         check_positive_int("epochs", self.epochs)
    >>> Demo.from_dict({"epochs": 3}).to_dict()
    {'epochs': 3}
    >>> Demo(epochs=0)
    Traceback (most recent call last):
    bertvision.errors.ConfigError: --epochs must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from bertvision import io
from bertvision.errors import BertVisionError, ConfigError

__all__ = ["DEFAULT_MAX_WINDOWS", "DTYPES", "EXTRACT_STRATEGIES", "FILE_FORMATS", "PAIR_MODES", "PER_TOKEN_KINDS", "SCHEDULES", "STORE_DTYPES", "TAG_SCHEMES",
           "STRATEGIES",
           "TASK_KINDS", "TOKEN_MODES",
           "ConfigBase", "check_choice", "check_fraction", "check_non_negative", "check_positive", "check_positive_int",
           "default_max_seq_len", "flag", "pair_texts", "select_layers"]

TASK_KINDS = ("classification", "multi_label", "regression", "span", "token_classification")  # what a task predicts (bertvision.data.tasks.TaskSpec.kind)
PER_TOKEN_KINDS = ("span", "token_classification")  # predicted per token: an example may take several windows
DEFAULT_MAX_WINDOWS = 32  # long documents (--doc-stride): a document keeps at most its first 32 windows
DTYPES = ("float16", "bfloat16", "float32")  # activations as an adapter reads them
# how a store keeps activations: one of DTYPES, or int8 with one float16 scale
# per vector (per token and layer), read back as float16 (`store.dequantize_int8`)
STORE_DTYPES = DTYPES + ("int8",)
TOKEN_MODES = ("cls", "mean", "sequence")  # first token, masked mean, every token
# How a pair task's two texts are encoded: together ([CLS] a [SEP] b [SEP], as
# BERT was fine-tuned) or each on its own (as a sentence-embedding model was trained)
PAIR_MODES = ("cross", "separate")
FILE_FORMATS = ("csv", "tsv", "jsonl", "parquet", "conll")  # a user's own data files (bertvision.data.files)
TAG_SCHEMES = ("IOB1", "BIO", "IOBES")  # token classification tag schemes read (bertvision.data.conll)


def pair_texts(pair_mode: str) -> int:
    """Texts encoded one by one per example: 2 for ``separate`` pairs, else 1 (the whole example at once)."""
    return 2 if pair_mode == "separate" else 1

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
EXTRACT_STRATEGIES = ("default", "mirrored")  # extraction's forward pass runs on one machine's devices
SCHEDULES = ("linear", "cosine", "constant")  # learning-rate decay after warmup


def default_max_seq_len(task_kind: str) -> int:
    """Tokens per model input when the user gives none: 384 for span tasks
    (BERT's SQuAD setting), 128 otherwise."""
    return 384 if task_kind == "span" else 128


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


# ------------------------------------------------------------------- checks


def check_positive_int(name: str, value: Any, error: type[BertVisionError] = ConfigError) -> None:
    _check_int(name, value, 1, "a positive integer", error)


def check_nonnegative_int(name: str, value: Any, error: type[BertVisionError] = ConfigError) -> None:
    _check_int(name, value, 0, "an integer >= 0", error)


def _check_int(name: str, value: Any, low: int, what: str, error) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise error(f"{flag(name)} must be {what}, got {value!r}")


def _number(name: str, value: Any, error) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{flag(name)} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name: str, value: Any, error: type[BertVisionError] = ConfigError) -> None:
    if _number(name, value, error) <= 0:
        raise error(f"{flag(name)} must be > 0, got {value!r}")


def check_non_negative(name: str, value: Any, error: type[BertVisionError] = ConfigError) -> None:
    if _number(name, value, error) < 0:
        raise error(f"{flag(name)} must be >= 0, got {value!r}")


def check_fraction(name: str, value: Any, *, low_open: bool = True, high_open: bool = False,
                   error: type[BertVisionError] = ConfigError) -> None:
    """`value` in (0, 1] by default (``low_open``/``high_open`` choose the ends)."""
    x = _number(name, value, error)
    low_ok = x > 0 if low_open else x >= 0
    high_ok = x < 1 if high_open else x <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise error(f"{flag(name)} must be in {interval}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence, error: type[BertVisionError] = ConfigError) -> None:
    if value not in choices:
        raise error(f"{flag(name)} must be one of {', '.join(map(str, choices))}, got {value!r}")


# --------------------------------------------------------------- the base


@dataclass
class ConfigBase:
    """Base of every ``*Config`` dataclass (see the module docstring).

    Subclasses override `validate` (raise `error` with a message naming the
    flag) and set `error` to their error class. Nested configs are converted
    from dicts in the subclass's `__post_init__` before `validate` runs.
    """

    error: ClassVar[type[BertVisionError]] = ConfigError

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `error` for an invalid or inconsistent configuration."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise cls.error(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise cls.error(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as err:  # a required field is missing
            raise cls.error(f"{cls.__name__}: {err}") from err

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a config file (e.g. ``RUN_DIR/config.json``)."""
        if not io.exists(path):
            raise cls.error(f"no config file {path}")
        return cls.from_dict(io.read_json(path, cls.error))

    def save(self, path: str | os.PathLike) -> None:
        io.atomic_write_json(path, self.to_dict())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def as_read(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved config (`to_dict` of this or an earlier version) as this
        version reads it: fields added since then hold their defaults, which
        is what the earlier version did. As saved if it no longer loads."""
        try:
            return cls.from_dict(saved).to_dict()
        except (BertVisionError, TypeError, ValueError):
            return saved

    def differences(self, other: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
        """Names of the fields whose values differ from the saved config
        `other` (read by `as_read`; fields in `ignore` do not count): what
        stops a resume."""
        mine, other = self.as_read(self.to_dict()), self.as_read(other)
        return sorted(k for k in set(mine) | set(other) if k not in ignore and mine.get(k) != other.get(k))


# ------------------------------------------------------------- layer subsets


def select_layers(spec: str | Sequence[int] | None, total: int, what: str = "--layers") -> list[int]:
    """Positions chosen from `total` layers (0 = the embeddings when these are
    a backbone's layers; the stored layers when a store's).

    ``all`` (or ``None``); ``lastK`` (the K deepest); ``every_other`` (every
    second layer counted back from the deepest, so the deepest is in); or
    indices, a list or a string like ``0,3,6`` (negative counts from the end).

    >>> select_layers("last4", 7), select_layers("every_other", 7), select_layers("0,-1", 7)
    ([3, 4, 5, 6], [0, 2, 4, 6], [0, 6])
    """
    if spec is None or spec == "all":
        return list(range(total))
    if spec == "every_other":
        return list(range((total - 1) % 2, total, 2))
    if isinstance(spec, str) and spec.startswith("last"):
        try:
            k = int(spec[4:])
        except ValueError:
            raise ConfigError(f"{what} {spec!r}: expected lastK, e.g. last4") from None
        if not 1 <= k <= total:
            raise ConfigError(f"{what} {spec!r}: K must be in 1..{total} (there are {total} layers)")
        return list(range(total - k, total))
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    try:
        layers = [int(x) for x in items]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {spec!r}: expected all, lastK, every_other or comma-separated "
                          "integers") from None
    layers = [x + total if x < 0 else x for x in layers]
    bad = [x for x in layers if not 0 <= x < total]
    if bad:
        raise ConfigError(f"{what} {spec!r}: layer(s) {bad} out of range 0..{total - 1}")
    if not layers or len(set(layers)) != len(layers) or layers != sorted(layers):
        raise ConfigError(f"{what} {spec!r}: layers must be increasing and distinct")
    return layers
