"""environment.yml and requirements.txt carry the same pins."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    return sorted(l.strip().lstrip("- ").strip() for l in lines if "==" in l and not l.strip().startswith("#"))


def test_environment_yml_matches_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins(l for l in (ROOT / "environment.yml").read_text().splitlines() if l.startswith("      - "))
    assert req and req == env
