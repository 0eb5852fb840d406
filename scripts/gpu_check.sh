#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from the repository root (the figures in BENCHMARKS.md "GPU").
# Needs: the four IDX .gz files in $FMLAB_DATA (default ./.gpudata), python3 with torch (CUDA),
# numpy, safetensors, pandas, scipy, statsmodels, matplotlib, rich, hiplot. Writes into ${OUT:-gpu-out}.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export FMLAB_DATA=${FMLAB_DATA:-$PWD/.gpudata} PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
# 1. The seed network with fmlab's defaults on the full data (early stopping on validation loss).
/usr/bin/time -f "wall_s %e" python3 -m fmlab train --device cuda --out /tmp/gpu-default \
  > "$OUT/default.json" 2> "$OUT/default.log"; tail -3 "$OUT/default.log"
# 2. Device choice, fp32/bf16 epochs, host-sync sites in train(), a Ray worker's device view.
python3 scripts/check_cuda.py --out "$OUT/check_cuda.json" > "$OUT/check_cuda.log" 2>&1; tail -5 "$OUT/check_cuda.log"
# 3. The quick seed study on the GPU (4 worker processes share it), then its report.
store=/tmp/gpu-store/fmlab.db
/usr/bin/time -f "wall_s %e" python3 -m fmlab sweep studies/seed.toml --budget quick --device cuda --workers 4 \
  --store $store --plain > "$OUT/sweep.log" 2>&1; tail -3 "$OUT/sweep.log"
python3 -m fmlab report seed --budget quick --store $store --out /tmp/gpu-report --format json > "$OUT/report.json" \
  2> "$OUT/report.log"; tail -2 "$OUT/report.log"; cp $store "$OUT/fmlab.db" 2>/dev/null
sqlite3 $store "select state, count(*) from trials group by state" 2>/dev/null || true
