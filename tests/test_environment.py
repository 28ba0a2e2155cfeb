"""environment.yml and requirements.txt carry the same pins, and every pin
lies inside pyproject.toml's range for that package."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    return sorted(l.strip().lstrip("- ").strip() for l in lines if "==" in l and not l.strip().startswith("#"))


def test_environment_yml_matches_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins(l for l in (ROOT / "environment.yml").read_text().splitlines() if l.startswith("      - "))
    assert req and req == env


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def test_pyproject_ranges_hold_the_pins_and_every_dependency_is_pinned():
    """requirements.txt is the constraints file scripts/setup_venv.sh installs
    the project with: each of its pins must satisfy pyproject.toml's range,
    and each dependency pyproject.toml names (core and every extra) must be
    pinned there, so that the suite runs on one known set of versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {_name(p.split("==")[0]): p.split("==")[1] for p in _pins((ROOT / "requirements.txt").read_text().splitlines())}
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for rs in project["optional-dependencies"].values() for r in rs
                 if not r.startswith(project["name"] + "[")]
    assert declared
    for req in declared:
        assert _name(req.name) in pins, f"{req.name} is in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[_name(req.name)]), \
            f"requirements.txt pins {req.name}=={pins[_name(req.name)]}, outside pyproject.toml's {req.specifier}"
    unused = set(pins) - {_name(r.name) for r in declared}
    assert not unused, f"pinned in requirements.txt but not a dependency in pyproject.toml: {sorted(unused)}"


def test_the_dev_extra_installs_every_other_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (self_ref,) = [r for r in extras["dev"] if r.startswith("bertvision[")]
    assert set(Requirement(self_ref).extras) == set(extras) - {"dev"}


# the lines the pinned TensorFlow wheel prints while it probes for a GPU, which README's Development
# section names and explains (absl prints the first two before TF_CPP_MIN_LOG_LEVEL is read)
GPU_PROBE = ("WARNING: All log messages before absl::InitializeLog() is called",
             "Could not find cuda drivers on your machine, GPU will not be used",
             "failed call to cuInit",
             # TensorFlow's notice on CPUs where oneDNN's custom operations apply (e.g. with AVX-512)
             "oneDNN custom operations are on")


def test_a_command_prints_only_the_documented_gpu_probe_lines(shared_data, tmp_path):
    """Issue 14 item 10: on a machine without a GPU a real command (one that
    runs the backbone) prints nothing on stderr but the GPU-probe lines README
    explains; TensorFlow's other info and warning lines stay hidden by the
    commands' own TF_CPP_MIN_LOG_LEVEL=2, also when the user's environment
    does not set it."""
    import os
    import subprocess
    import sys

    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return  # a GPU machine prints none of the probe lines; nothing to pin
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "pipelines.extract", "--task", "sst2", "--data-dir",
                           str(shared_data / "glue" / "SST-2"), "--split", "dev", "--out", str(tmp_path / "store"),
                           "--limit", "4", "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    noise = [line for line in proc.stderr.splitlines() if line.strip()]
    assert noise and all(any(p in line for p in GPU_PROBE) for line in noise), noise
    readme = (ROOT / "README.md").read_text()
    assert all(p.split(" is called")[0].split(" on your")[0] in readme for p in GPU_PROBE)
    # issue 32 item 6: exactly what README says prints: each line of the probe twice (two TensorFlow
    # libraries), the cuInit line once; 5 lines, 7 with the oneDNN notice
    counts = [sum(p in line for line in noise) for p in GPU_PROBE]
    assert counts[:3] == [2, 2, 1] and counts[3] in (0, 2), (counts, noise)
    assert len(noise) == (7 if counts[3] else 5)
    text = " ".join(readme.split())
    assert "prints exactly 5 lines on stderr as TensorFlow loads, 7 on CPUs where oneDNN's" in text
