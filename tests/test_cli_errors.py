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


def _main(module):
    import importlib

    return importlib.import_module(module).main


@pytest.mark.parametrize("module, args, message", [
    ("tuning.search", ["--store", "S", "--out", "FILE"], "--out FILE is a file"),
    ("tuning.search", ["--store", "S", "--out", "NEW", "--epochs", "0"], "--epochs must be a positive integer, got 0"),
    ("tuning.search", ["--store", "S", "--out", "NEW", "--eval-batch-size", "-1"],
     "--eval-batch-size must be a positive integer, got -1"),
    ("tuning.search", ["--store", "S", "--out", "NEW", "--train-fraction", "0"], "--train-fraction must be in (0, 1]"),
    ("pipelines.ensemble", ["--runs", "A", "B", "--out", "NEW", "--split", "dev", "--combine", "mean"],
     "run folder A does not exist"),
    ("pipelines.ensemble", ["--runs", "A", "--out", "NEW"], "an ensemble needs at least two runs; got 1"),
    ("pipelines.report", ["DIR", "--out", "NEW", "--scale", "0"], "--scale must be > 0, got 0.0"),
    ("pipelines.report", ["DIR", "--out", "NEW", "--formats", "gif"], "--formats gif: choose one or more of"),
    ("pipelines.report", ["DIR", "--out", "FILE"], "FILE: cannot create the report folder"),
    ("pipelines.submit", ["--run", "A", "--out", "FILE"], "--out FILE exists"),
    ("pipelines.predict", ["--run", "A", "--split", "dev", "--out", "NEW", "--batch-size", "0"],
     "--batch-size must be a positive integer, got 0"),
    ("pipelines.predict", ["--run", "A", "--text", "good", "--batch-size", "-4"],
     "--batch-size must be a positive integer, got -4"),
    ("pipelines.predict", ["--run", "A", "--input", "FILE", "--out", "NEW", "--max-skipped", "2"],
     "--max-skipped must be in [0, 1], got 2.0"),
    ("pipelines.serve", ["--run", "A", "--max-batch-size", "0"], "--max-batch-size must be a positive integer, got 0"),
    ("pipelines.serve", ["--run", "A", "--port", "70000"], "--port must be in 0..65535, got 70000"),
    ("pipelines.serve", ["--run", "A", "--max-wait-ms", "-1"], "--max-wait-ms must be"),
    ("pipelines.serve", ["--run", "A", "--shutdown-timeout-s", "0"], "--shutdown-timeout-s must be"),
    ("pipelines.export", ["--run", "A", "--out", "FILE"], "--out FILE exists and is not an empty folder"),
    # issue 32 item 2: a refused command leaves no folder (NEW) behind
    ("pipelines.export", ["--run", "A", "--out", "NEW"], "run folder A does not exist"),
    ("pipelines.submit", ["--run", "A", "--out", "NEW"], "run folder A does not exist"),
    ("pipelines.fit", ["--store", "S", "--adapter", "cnn", "--out", "NEW"], "S: no manifest.json"),
    ("pipelines.report", ["A", "--out", "NEW"], "A"),
])
def test_every_command_names_a_bad_flag_in_one_line(tmp_path, module, args, message):
    from tests.stores import run_main

    (tmp_path / "FILE").write_text("mine")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "DIR" / "results.json").write_text(
        '{"task": "sst2", "method": "m", "run_type": "fit", "main_metric": "accuracy", "dev_metrics": {"accuracy": 1}}')
    full = [str(tmp_path / a) if a in ("S", "FILE", "NEW", "A", "B", "DIR") else a for a in args]
    code, _, err = run_main(_main(module), *full)
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.replace("FILE", str(tmp_path / "FILE")).replace(
        "A does", f"{tmp_path / 'A'} does") in last, last
    assert (tmp_path / "FILE").read_text() == "mine" and not (tmp_path / "NEW").exists()
