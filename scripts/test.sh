#!/usr/bin/env bash
# Run the test suite (creates .venv on first use). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_venv.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow TRANSFORMERS_VERBOSITY=error
exec "$root/.venv/bin/python" -m pytest "$@"
