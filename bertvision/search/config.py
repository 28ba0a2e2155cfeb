"""What a search may choose and how it runs (`SearchSpace`, `SearchConfig`):
light (no TensorFlow, no KerasTuner), so that ``python -m tuning.search
--help`` answers at once with these defaults. The search itself is
`bertvision.search.tuner`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bertvision.config import STRATEGIES, ConfigBase, check_choice, check_fraction, check_positive_int, select_layers
from bertvision.errors import ConfigError, SearchError
from bertvision.models.config import KINDS, LAYER_POOLINGS, WINDOW_POOLINGS

__all__ = ["RESUMABLE", "SPACE_NAMES", "TUNERS", "SearchConfig", "SearchSpace", "active_values", "layer_indices",
           "split_values"]

TUNERS = ("random", "bayesian", "hyperband")
# the hyperparameters of the space, in trials.csv column order
SPACE_NAMES = ("kind", "layers", "layer_pooling", "adapter_dim", "transformer_blocks", "window_pooling", "dropout", "lr",
               "batch_size")
# settings that may change when a search is resumed
RESUMABLE = ("out", "max_trials", "verbose", "command")


def layer_indices(subset: str, num_layers: int) -> list[int] | None:
    """Stored-layer positions a subset name selects (``None``: all of them).

    >>> layer_indices("last3", 7), layer_indices("every_other", 7), layer_indices("all", 7)
    ([4, 5, 6], [0, 2, 4, 6], None)
    """
    try:
        chosen = select_layers(subset, num_layers, what="layer subset")
    except ConfigError as err:
        raise SearchError(f"{err} (the store has {num_layers} layers)") from err
    return None if len(chosen) == num_layers else chosen


# ------------------------------------------------------------------ the space


def _as_list(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


@dataclass
class SearchSpace(ConfigBase):
    """What the tuner may choose. Lists are choices; ``dropout`` and ``lr``
    are ``[min, max]`` ranges (``lr`` sampled on a log scale; equal ends fix
    the value). ``window_poolings`` is searched on a store of long documents
    (windows, ``extract --doc-stride``) only, for every kind.

    >>> SearchSpace(kinds=["adapter_pooler"], adapter_dims=[32, 64]).check(num_layers=7)
    """

    kinds: list = field(default_factory=lambda: list(KINDS))
    layer_subsets: list = field(default_factory=lambda: ["all", "last4", "every_other"])
    layer_poolings: list = field(default_factory=lambda: list(LAYER_POOLINGS))
    adapter_dims: list = field(default_factory=lambda: [32, 64, 128, 256])
    transformer_blocks: list = field(default_factory=lambda: [0])
    window_poolings: list = field(default_factory=lambda: list(WINDOW_POOLINGS))
    dropout: list = field(default_factory=lambda: [0.0, 0.5])
    lr: list = field(default_factory=lambda: [1e-4, 3e-3])
    batch_sizes: list = field(default_factory=lambda: [32, 64, 128])

    error = SearchError

    def __post_init__(self):
        for name in ("kinds", "layer_subsets", "layer_poolings", "adapter_dims", "transformer_blocks", "window_poolings",
                     "dropout", "lr", "batch_sizes"):
            setattr(self, name, _as_list(getattr(self, name)))
        super().__post_init__()

    def validate(self) -> None:
        self.check(None)

    def check(self, num_layers: int | None) -> None:
        """Raise `SearchError` for an empty or impossible space; with
        `num_layers`, also for layer subsets the store cannot give."""

        def choices(name, values, allowed=None):
            if not values or len(set(map(str, values))) != len(values):
                raise SearchError(f"search space {name}: give distinct choices, got {values}")
            bad = [v for v in values if allowed is not None and v not in allowed]
            if bad:
                raise SearchError(f"search space {name}: unknown {bad}; choose from {', '.join(allowed)}")

        def ints(name, values, low=1, what="positive integers"):
            choices(name, values)
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < low]
            if bad:
                raise SearchError(f"search space {name}: must be {what}, got {bad}")

        def interval(name, values, low, high, low_open=False):
            ok = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if (not ok or values[0] > values[1] or values[0] < low or (low_open and values[0] <= low)
                    or values[1] >= high):
                raise SearchError(f"search space {name}: need [min, max] with {low} {'<' if low_open else '<='} "
                                  f"min <= max < {high}, got {values}")

        choices("kinds", self.kinds, KINDS)
        choices("layer_subsets", self.layer_subsets)
        for subset in self.layer_subsets:
            if subset not in ("all", "every_other") and not (subset.startswith("last") and subset[4:].isdigit()):
                raise SearchError(f"unknown layer subset {subset!r}: use all, lastK (e.g. last4) or every_other")
            if num_layers is not None:
                layer_indices(subset, num_layers)
        choices("layer_poolings", self.layer_poolings, LAYER_POOLINGS)
        choices("window_poolings", self.window_poolings, WINDOW_POOLINGS)
        ints("adapter_dims", self.adapter_dims)
        ints("transformer_blocks", self.transformer_blocks, low=0, what="integers >= 0")
        ints("batch_sizes", self.batch_sizes)
        interval("dropout", self.dropout, 0.0, 1.0)
        interval("lr", self.lr, 0.0, math.inf, low_open=True)

    def declare(self, hp, windows: bool = False) -> None:
        """Declare every hyperparameter on a KerasTuner `HyperParameters`
        (conditional ones inside their ``kind`` scopes; ``window_pooling``
        with `windows`, a store of long documents)."""
        hp.Choice("kind", self.kinds)
        readers = [k for k in self.kinds if k != "linear_probe"]
        if readers:
            with hp.conditional_scope("kind", readers):
                hp.Choice("layers", self.layer_subsets)
        if "adapter_pooler" in self.kinds:
            with hp.conditional_scope("kind", ["adapter_pooler"]):
                hp.Choice("layer_pooling", self.layer_poolings)
                hp.Choice("adapter_dim", self.adapter_dims)
                if self.transformer_blocks != [0]:  # declared only when searched: a space without it samples as before
                    hp.Choice("transformer_blocks", self.transformer_blocks)
        if windows:
            hp.Choice("window_pooling", self.window_poolings)
        _float(hp, "dropout", self.dropout, log=False)
        _float(hp, "lr", self.lr, log=True)
        hp.Choice("batch_size", self.batch_sizes)


def _float(hp, name, bounds, log):
    lo, hi = float(bounds[0]), float(bounds[1])
    if lo == hi:
        return hp.Fixed(name, lo)
    return hp.Float(name, lo, hi, sampling="log" if log else "linear")


def active_values(hp) -> dict[str, Any]:
    """The active hyperparameter values of a trial (space names first)."""
    names = [n for n in SPACE_NAMES if n in hp] + sorted(n for n in hp.values if n not in SPACE_NAMES)
    # names outside the space are the tuner's own (Hyperband's tuner/epochs, tuner/trial_id...)
    return {n: hp.values[n] for n in names if n in hp.values and (n not in hp or hp.is_active(n))}


def split_values(values: dict) -> tuple[dict, str, dict]:
    """``(adapter dict, layer subset name, training settings)`` from trial values.

    >>> split_values({"kind": "cnn", "layers": "last2", "dropout": 0.1, "lr": 1e-3, "batch_size": 64})
    ({'kind': 'cnn', 'dropout': 0.1}, 'last2', {'lr': 0.001, 'batch_size': 64})
    """
    adapter = {"kind": values["kind"]}
    for key in ("adapter_dim", "transformer_blocks", "layer_pooling", "window_pooling", "dropout"):
        if key in values:
            adapter[key] = values[key]
    train = {"lr": float(values["lr"]), "batch_size": int(values["batch_size"])}
    return adapter, values.get("layers", "all"), train


# ------------------------------------------------------------- configuration


@dataclass
class SearchConfig(ConfigBase):
    """Everything that determines a search (saved in ``search.json``).

    >>> c = SearchConfig(store="tfrecords/sst2", out="searches/a", tuner="bayesian", max_trials=20)
    >>> SearchConfig.from_dict(c.to_dict()) == c
    True
    """

    store: str
    out: str
    tuner: str = "random"
    max_trials: int = 10
    executions_per_trial: int = 1
    epochs: int = 4  # per trial (hyperband: the most a trial trains)
    seed: int = 0
    strategy: str = "default"
    train_fraction: float = 1.0  # seeded fraction of the training data the trials train on
    train_split: str = "train"
    eval_split: str | None = None  # None: the task's first eval split in the store
    label_column: str | None = None  # your own data's store: the label column whose head is searched
    space: SearchSpace = field(default_factory=SearchSpace)
    retrain: bool = True  # retrain the best configuration into SEARCH_DIR/best
    retrain_fraction: float = 1.0  # training data of the best retrain
    hyperband_factor: int = 3
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    warmup: float = 0.1
    jit_compile: bool = True
    verbose: int = 1
    command: list = field(default_factory=list)

    error = SearchError

    def __post_init__(self):
        if isinstance(self.space, dict):
            self.space = SearchSpace.from_dict(self.space)
        super().__post_init__()

    def validate(self) -> None:
        if self.tuner not in TUNERS:
            raise SearchError(f"unknown tuner {self.tuner!r}; choose one of {', '.join(TUNERS)}")
        for name in ("max_trials", "executions_per_trial", "epochs", "eval_batch_size", "hyperband_factor"):
            check_positive_int(name, getattr(self, name), SearchError)
        if self.tuner == "hyperband" and self.hyperband_factor < 2:
            raise SearchError(f"--hyperband-factor must be >= 2, got {self.hyperband_factor}")
        for name in ("train_fraction", "retrain_fraction"):
            check_fraction(name, getattr(self, name), error=SearchError)
        check_choice("strategy", self.strategy, STRATEGIES, SearchError)
        self.space.validate()
