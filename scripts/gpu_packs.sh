#!/usr/bin/env bash
# Packs on one GPU, side by side and time-bounded (issue 16; about 8 minutes by default):
#   1. the quick seed study (48 trials) with --pack off on 10 worker processes, then --pack on
#      (12 packs of 4) on PACK_WORKERS processes, each into a fresh store: wall time of each;
#   2. the full seed study at 2 seeds, packed (the moonshot: 48 full-budget trials in <= 60 s);
#   3. more seeds of it (3, 4, 5) while time remains (each run adds only the new seeds' trials).
# Every step runs under `timeout`; stores and logs go under $OUT; after step 2/3 the store is published to
# $RESULTS/seed-full (the published-answers issue commits it). Run from the repository root:
#   OUT=gpu-out TOTAL_S=480 scripts/gpu_packs.sh
# Smoke check on a CPU (a 4,000-image quick study subset, tiny limits; results under $OUT, not the repo):
#   SMOKE=1 OUT=/tmp/gpu-packs-smoke scripts/gpu_packs.sh
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT/logs" "$OUT/stores"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -d "$PWD/.gpudata" ] && export FMLAB_DATA=${FMLAB_DATA:-$PWD/.gpudata}  # the IDX files, as gpu_check.sh brings them
PY=${PYTHON:-python3}
if [ -n "${SMOKE:-}" ]; then
  TOTAL_S=${TOTAL_S:-300}; DEVICE=cpu; PROC_WORKERS=${PROC_WORKERS:-2}; PACK_WORKERS=${PACK_WORKERS:-2}
  FULL_B=quick; MAX_SEEDS=${MAX_SEEDS:-2}; SEEDS1=--seeds=1; RESULTS=$OUT/results; QUICK_S=${QUICK_S:-40}
else
  TOTAL_S=${TOTAL_S:-480}; DEVICE=${DEVICE:-cuda}; PROC_WORKERS=${PROC_WORKERS:-10}; PACK_WORKERS=${PACK_WORKERS:-4}
  FULL_B=full; MAX_SEEDS=${MAX_SEEDS:-5}; SEEDS1=; RESULTS=${RESULTS:-results}; QUICK_S=${QUICK_S:-150}
fi
END=$(( $(date +%s) + TOTAL_S ))
left() { echo $(( END - $(date +%s) )); }
log() { echo "[$(date -u +%H:%M:%S) left $(left)s] $*" | tee -a "$OUT/logs/gpu_packs.log"; }
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU") \
  > "$OUT/logs/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" >> "$OUT/logs/gpu.txt" 2>&1

# run NAME SECONDS ARGS...: one bounded sweep, timed; prints its wall time to the log
run() {
  local name=$1 limit=$2 t0 rc; shift 2
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  if [ "$limit" -lt 20 ]; then log "$name: skipped, $(left)s left"; return 3; fi
  t0=$(date +%s.%N)  # shellcheck disable=SC2086 below: $SEEDS1 is empty or one word
  timeout -s TERM -k 20 "$limit" $PY -m fmlab sweep studies/seed.toml --device "$DEVICE" --plain "$@" \
    > "$OUT/logs/$name.log" 2>&1
  rc=$?
  log "$name: exit $rc, wall $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s; $(tail -1 "$OUT/logs/$name.log")"
  return $rc
}

# 1. quick study: processes, then packs (fresh stores, so neither reuses the other's trials)
run quick-processes "$QUICK_S" --budget quick $SEEDS1 --pack off --workers "$PROC_WORKERS" --store "$OUT/stores/quick-off/fmlab.db"
run quick-packed "$QUICK_S" --budget quick $SEEDS1 --pack on --workers "$PACK_WORKERS" --store "$OUT/stores/quick-on/fmlab.db"
# 2-3. the full study, packed, 2 seeds first, then one more seed per round while time remains
n=2
while [ "$n" -le "$MAX_SEEDS" ]; do
  run "full-s$n" $(( $(left) - 60 )) --budget "$FULL_B" --seeds "$n" --pack on --workers "$PACK_WORKERS" \
    --store "$OUT/stores/seed-$FULL_B/fmlab.db" || break
  n=$(( n + 1 ))
done
if [ -f "$OUT/stores/seed-$FULL_B/fmlab.db" ]; then
  timeout 55 $PY -m fmlab publish studies/seed.toml --budget "$FULL_B" --store "$OUT/stores/seed-$FULL_B/fmlab.db" \
    --out "$RESULTS/seed-$FULL_B" >> "$OUT/logs/publish.log" 2>&1 || log "publish failed or timed out (logs/publish.log)"
fi
log "done; stores and logs in $OUT, results in $RESULTS/seed-$FULL_B"
