#!/usr/bin/env bash
# GPU check for a maintainer, under five minutes on a CUDA machine: CUDA speed table (fp32 / fp16 / bf16
# autocast, batches), outputs against CPU fp32, and the app's ZeroGPU (spaces.GPU) network call.
#   bash benchmarks/gpu_check.sh            # on a GPU machine (pip install -r requirements.txt first)
#   bash benchmarks/gpu_check.sh --dry-run  # CPU only: checks the script's logic without a GPU
# Extra arguments go to benchmarks/gpu_check.py (--batches 1,8,32 --people 8 --weights PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "command: bash benchmarks/gpu_check.sh $*"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
case " $* " in
  *" --dry-run "*) exec python benchmarks/gpu_check.py "$@" ;;  # a shared CPU may take longer
esac
# 290 s: the whole GPU check stays under five minutes even if a step hangs.
exec timeout 290 python benchmarks/gpu_check.py "$@"
