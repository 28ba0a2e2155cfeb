"""bertvision.config as a module: the config base every *Config builds on,
its validators and the one layer-subset syntax. Fast: no TensorFlow work."""

from dataclasses import dataclass, field

import pytest

from bertvision.config import (TASK_KINDS, ConfigBase, check_choice, check_fraction, check_positive,
                               check_positive_int, default_max_seq_len, flag, select_layers)
from bertvision.errors import ConfigError, FitError


@dataclass
class _Config(ConfigBase):
    out: str
    epochs: int = 3
    layers: list = field(default_factory=lambda: [0, 1])

    error = FitError

    def validate(self) -> None:
        check_positive_int("epochs", self.epochs, FitError)


def test_config_round_trip_and_refusals(tmp_path):
    c = _Config(out="runs/a", epochs=5)
    assert _Config.from_dict(c.to_dict()) == c
    c.save(tmp_path / "config.json")
    assert _Config.load(tmp_path / "config.json") == c
    with pytest.raises(FitError, match=r"unknown _Config field\(s\) \['surprise'\]"):
        _Config.from_dict({"out": "x", "surprise": 1})
    with pytest.raises(FitError, match="missing"):
        _Config.from_dict({})
    with pytest.raises(FitError, match="expected a JSON object"):
        _Config.from_dict([1])
    with pytest.raises(FitError, match="no config file"):
        _Config.load(tmp_path / "missing.json")
    with pytest.raises(FitError, match="--epochs must be a positive integer, got 0"):
        _Config(out="x", epochs=0)  # validated when made


def test_differences_ignore_and_read_older_configs_at_their_defaults():
    c = _Config(out="a", epochs=4)
    assert c.differences({"out": "b", "epochs": 4, "layers": [0, 1]}) == ["out"]
    assert c.differences({"out": "b", "epochs": 5, "layers": [0, 1]}, ignore=("out",)) == ["epochs"]
    assert c.differences({"out": "a", "epochs": 4}) == []  # `layers` added since: read at its default
    assert c.replace(epochs=9).epochs == 9 and c.epochs == 4


def test_validators_name_the_flag():
    with pytest.raises(ConfigError, match="--batch-size must be a positive integer, got -4"):
        check_positive_int("batch_size", -4)
    with pytest.raises(ConfigError, match="--lr must be > 0"):
        check_positive("lr", 0.0)
    with pytest.raises(ConfigError, match="finite number"):
        check_positive("lr", float("nan"))
    with pytest.raises(ConfigError, match="--warmup must be in"):
        check_fraction("warmup", 1.0, low_open=False, high_open=True)
    check_fraction("warmup", 0.0, low_open=False, high_open=True)
    with pytest.raises(ConfigError, match="--schedule must be one of linear, cosine"):
        check_choice("schedule", "step", ("linear", "cosine"))
    assert flag("eval_batch_size") == "--eval-batch-size"


def test_select_layers_is_the_one_subset_syntax():
    assert select_layers("all", 7) == select_layers(None, 7) == list(range(7))
    assert select_layers("last4", 7) == [3, 4, 5, 6]
    assert select_layers("every_other", 7) == [0, 2, 4, 6] and select_layers("every_other", 6) == [1, 3, 5]
    assert select_layers("0,-1", 7) == [0, 6] and select_layers([1, 2], 7) == [1, 2]
    for bad, message in (("last9", "K must be in 1..7"), ("lastx", "expected lastK"), ("0,9", "out of range"),
                         ("3,1", "increasing and distinct"), ("a,b", "comma-separated")):
        with pytest.raises(ConfigError, match=message):
            select_layers(bad, 7)


def test_shared_defaults():
    assert {"classification", "regression", "span"} <= set(TASK_KINDS) and len(set(TASK_KINDS)) == len(TASK_KINDS)
    assert default_max_seq_len("span") == 384 and default_max_seq_len("classification") == 128
