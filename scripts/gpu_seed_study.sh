#!/usr/bin/env bash
# The seed study at the full budget on a CUDA machine, bounded in time (BENCHMARKS.md "GPU").
# Usage: OUT=DIR LIMIT_S=400 SEEDS=0,1 WORKERS=10 scripts/gpu_seed_study.sh
# A sweep stopped by the limit keeps every finished trial; rerunning the same sweep resumes it.
# Brings back: the store (a consistent copy) and the best trial's checkpoint, for `fmlab report`.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT/best"
export FMLAB_DATA=${FMLAB_DATA:-$PWD/.gpudata} PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
store=/tmp/gpu-full/fmlab.db
/usr/bin/time -f "wall_s %e" timeout "${LIMIT_S:-400}" python3 -m fmlab sweep studies/seed.toml --budget full \
  --seeds "${SEEDS:-0,1}" --device cuda --workers "${WORKERS:-10}" --store $store --plain > "$OUT/sweep.log" 2>&1
tail -3 "$OUT/sweep.log"
python3 - "$store" "$OUT" <<'PY'
import shutil, sqlite3, sys
from pathlib import Path
from fmlab.store.db import resolve_checkpoint
store, out = sys.argv[1], Path(sys.argv[2])
dst = sqlite3.connect(out / "fmlab.db")
sqlite3.connect(store).backup(dst)
dst.close()
best = resolve_checkpoint("seed:best", store)
for f in ("trial.json", "best.safetensors"):
    shutil.copy(best / f, out / "best" / f)
print("best", best.name)
PY
