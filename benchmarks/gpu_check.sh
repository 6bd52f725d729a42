#!/usr/bin/env bash
# One-call GPU check: medium train throughput and MFU, MoE layer vs dense, router precision under autocast,
# bf16 vs fp32 loss over 50 steps, EP=1 through torchrun. JSON results under OUT (summary.json first).
#
#   benchmarks/gpu_check.sh OUT              # on a GPU machine (≤ 8 minutes on one H200)
#   benchmarks/gpu_check.sh OUT --cpu-smoke  # tiny shapes on CPU, under a minute: the script end to end
#
# Needs only torch, numpy and safetensors: the repository root goes on PYTHONPATH. PYTHON picks the
# interpreter (default python3); GPU_CHECK_TIMEOUT_S bounds the whole run (default 480 s).
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUT [--cpu-smoke] [--only check,...]" >&2
    exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$1"
shift
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT_S:-480}" "${PYTHON:-python3}" "$repo/benchmarks/gpu_check.py" --out "$out" "$@"
