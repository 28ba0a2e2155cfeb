#!/usr/bin/env bash
# The main job on the embedded default BERT (all-MiniLM-L6-v2): extract every
# layer's activations for SST-2 into a store, then train BERTVision's
# adapter_pooler on it. Creates .venv on first use. Re-running resumes:
# finished shards and epochs are kept.
#
#   bash scripts/main.sh --data-dir ../shared/data/glue/SST-2   # local GLUE folder
#   bash scripts/main.sh                                         # $BERTVISION_DATA_DIR, else tensorflow-datasets
#
# Environment: STORE (default tfrecords/sst2-minilm-seq), RUN (default
# runs/sst2-adapter_pooler), TRAIN_SAMPLE (seeded training subset, default
# 8000; "all" for the full 67,349), EPOCHS (default 10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${BERTVISION_DATA_DIR:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir="$2"; shift 2 ;;
    --data-dir=*) data_dir="${1#*=}"; shift ;;
    *) echo "usage: bash scripts/main.sh [--data-dir DIR]" >&2; exit 2 ;;
  esac
done
if [ -n "$data_dir" ]; then
  source=(--data-dir "$(cd "$data_dir" && pwd)")
else
  source=(--tfds)
fi
bash "$root/scripts/setup_venv.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow TRANSFORMERS_VERBOSITY=error
py="$root/.venv/bin/python"
store="${STORE:-tfrecords/sst2-minilm-seq}"
run="${RUN:-runs/sst2-adapter_pooler}"
sample=(--sample "${TRAIN_SAMPLE:-8000}" --seed 0)
[ "${TRAIN_SAMPLE:-}" = "all" ] && sample=()
"$py" -m pipelines.extract --task sst2 "${source[@]}" --split train "${sample[@]}" \
  --token-mode sequence --max-seq-len 64 --out "$store"
"$py" -m pipelines.extract --task sst2 "${source[@]}" --split dev \
  --token-mode sequence --max-seq-len 64 --out "$store"
"$py" -m pipelines.fit --store "$store" --adapter adapter_pooler --out "$run" --epochs "${EPOCHS:-10}"
"$py" - "$run" <<'PY'
import sys
from bertvision.runs import RunFolder
r = RunFolder(sys.argv[1]).results()
print(f"\n{r.task} {r.method}: dev {r.dev_metrics} | {r.trainable_params:,} trainable parameters "
      f"({r.param_share_pct:.2f}% of BERT) | {r.train_wall_time_s:.0f} s training -> {sys.argv[1]}")
PY
