"""The command-line wrappers' error boundary: the library's user-facing errors
become one line and exit 2; anything else is a bug and keeps its traceback."""

import pytest

from bertvision.errors import FinetuneError, StoreError, StrategyError
from pipelines._common import die


@pytest.mark.parametrize("error", [StoreError("store x: bad header"), FinetuneError("loss became nan at step 3"),
                                   StrategyError("no TPU here"), FileNotFoundError("missing.tsv")])
def test_user_facing_errors_are_one_line(error, capsys):
    with pytest.raises(SystemExit) as exit_:
        with die.on_errors():
            raise error
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_bugs_value_error_keeps_its_traceback():
    """Keras raises ValueError for shape bugs: the CLI boundary must not turn one into a one-liner."""
    with pytest.raises(ValueError, match="Input 0 of layer dense is incompatible"):
        with die.on_errors():
            raise ValueError("Input 0 of layer dense is incompatible with the layer")


def test_bugs_keep_their_traceback():
    with pytest.raises(RuntimeError, match="rows were not all extracted"):
        with die.on_errors():
            raise RuntimeError("rows were not all extracted")
    with pytest.raises(KeyError):
        with die.on_errors():
            raise KeyError("start_positions")
