"""The package as a user installs it (issue 30): `import bertvision` and
every command's ``--help`` work without the optional extras and without
importing TensorFlow, ``--help`` answers in under 2 s, and a feature whose
extra is missing says which extra to install, in one line."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("pipelines.extract", "pipelines.fit", "pipelines.predict", "pipelines.finetune", "pipelines.serve",
            "pipelines.export", "pipelines.ensemble", "pipelines.report", "pipelines.submit", "tuning.search")
# the optional extras' modules (bertvision.extras.EXTRAS), blocked in the child processes below
OPTIONAL = ("apache_beam", "fastapi", "uvicorn", "tensorflow_text", "tensorflow_datasets", "onnx", "tf2onnx",
            "onnxruntime")


def _python(code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter in which every optional extra's
    modules fail to import, as if not installed."""
    block = f"import sys\nfor _m in {OPTIONAL!r}:\n    sys.modules[_m] = None  # not installed\n"
    return subprocess.run([sys.executable, "-c", block + textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_the_extras_list_names_the_blocked_modules():
    from bertvision.extras import EXTRAS

    assert set(OPTIONAL) <= {m for mods in EXTRAS.values() for m in mods}


def test_import_and_every_help_without_extras_or_tensorflow():
    code = """
        import runpy, time
        import bertvision, bertvision.config, bertvision.io, bertvision.data.tasks, bertvision.data.readers
        import bertvision.models, bertvision.search.config, bertvision.inference.config
        for command in sys.argv[1:]:
            sys.argv = [command, "--help"]
            start = time.perf_counter()
            try:
                runpy.run_module(command, run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                assert stop.code == 0, (command, stop.code)
            print(command, f"{time.perf_counter() - start:.2f}")
        heavy = sorted(m for m in ("tensorflow", "keras", "keras_hub", "keras_tuner", "transformers") if m in sys.modules)
        print("heavy:", heavy)
    """
    proc = _python(code, *COMMANDS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("heavy: []"), proc.stdout[-2000:]
    for command in COMMANDS:
        assert f"usage: python -m {command}" in proc.stdout


@pytest.mark.parametrize("command", ["pipelines.extract", "pipelines.serve"])
def test_help_answers_in_under_two_seconds(command):
    """The whole process, interpreter start included (TensorFlow's import
    alone took ~7 s before the commands parsed their arguments first)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    took = time.perf_counter() - start
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
    assert took < 2.0, f"{command} --help took {took:.1f} s"


@pytest.mark.parametrize("argv, extra", [
    (["pipelines.serve", "--run", "runs/none"], "serve"),
    (["pipelines.export", "--run", "runs/none", "--out", "OUT"], "text"),
    (["pipelines.extract", "--task", "sst2", "--tfds", "--split", "dev", "--limit", "2", "--out", "OUT"], "tfds"),
    (["pipelines.extract", "--task", "sst2", "--data-dir", "DATA", "--split", "dev", "--out", "OUT",
      "--runner", "DirectRunner"], "beam"),
])
def test_a_missing_extra_is_named_in_one_line(argv, extra, tmp_path, shared_data):
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("DATA", str(shared_data / "glue" / "SST-2"))
            for a in argv]
    code = """
        import runpy
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    """
    proc = _python(code, *argv)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and f"pip install 'bertvision[{extra}]'" in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_bertvision_command_dispatches_to_the_pipelines(capsys):
    from pipelines import cli

    assert cli.main([]) == 2 and cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in cli.SUBCOMMANDS)
    assert cli.main(["no-such"]) == 2
    assert "unknown subcommand 'no-such'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["search", "--help"])
    assert stop.value.code == 0 and "usage: python -m tuning.search" in capsys.readouterr().out


def test_a_module_whose_extra_is_missing_is_skipped_by_the_doctests(tmp_path):
    """`--doctest-modules` over bertvision/ imports every module: one that
    needs a missing extra (`bertvision.extras.MODULE_EXTRAS`) is reported
    skipped with the extra to install (root conftest.py), not an error."""
    from bertvision.extras import MODULE_EXTRAS

    paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in MODULE_EXTRAS]
    code = """
        import pytest
        sys.exit(pytest.main(["-n", "0", "-rs", "-p", "no:randomly", "--basetemp", sys.argv[1], *sys.argv[2:]]))
    """
    proc = _python(code, str(tmp_path / "basetemp"), "bertvision/extras.py", *paths)   # extras.py's run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(paths)} skipped" in proc.stdout and "error" not in proc.stdout.lower(), proc.stdout[-3000:]
    for extra, _ in MODULE_EXTRAS.values():
        assert f"pip install 'bertvision[{extra}]'" in proc.stdout, proc.stdout[-3000:]
