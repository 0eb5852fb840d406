#!/usr/bin/env bash
# The answers on one GPU, time-bounded (issue 18): down this list while time remains, each step under `timeout`:
#   1. studies/seed.toml --budget full, seeds growing 1, 2, ... toward 5 (the next count once the last is done)
#   2. studies/best.toml --budget full (3 seeds x 150 epochs)
#   3. studies/further.toml --budget full (5 seeds)
# Each sweep first imports results/<study>-<budget>/ (so it resumes what any machine finished), and after it
# publishes the store back into results/<study>-<budget>/ (commit those folders). Stores and logs go under $OUT.
# Run from the repository root:  OUT=gpu-out WORKERS=8 scripts/gpu_answers.sh
# TOTAL_S (default 540) bounds the whole script, publishing included: the device tool runs one command for
# at most 600 s, and a command cut off there would lose the publish of the step it was in.
# Smoke check on a CPU (quick/smoke budgets, tiny limits, results into $OUT/results, not the repo's):
#   SMOKE=1 OUT=/tmp/smoke scripts/gpu_answers.sh   (about 5 minutes; every step runs, cut short)
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT/logs" "$OUT/stores"
export FMLAB_DATA=${FMLAB_DATA:-$PWD/.gpudata} PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -n "${SMOKE:-}" ]; then
  # every step gets its turn: one seed round, each sweep cut at STEP_MAX_S, room to publish after each
  TOTAL_S=${TOTAL_S:-330}; DEVICE=${DEVICE:-cpu}; WORKERS=${WORKERS:-1}; MAX_SEEDS=${MAX_SEEDS:-1}
  SEED_B=quick; BEST_B=smoke; FURTHER_B=quick; STEP_MAX_S=${STEP_MAX_S:-40}; PUBLISH_S=${PUBLISH_S:-60}
  RESULTS=${RESULTS:-$OUT/results}; STORES=$OUT/stores  # never the repository's results/ in smoke mode
else
  TOTAL_S=${TOTAL_S:-540}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-8}; MAX_SEEDS=${MAX_SEEDS:-5}
  SEED_B=full; BEST_B=full; FURTHER_B=full; STEP_MAX_S=${STEP_MAX_S:-100000}; PUBLISH_S=${PUBLISH_S:-90}
  RESULTS=${RESULTS:-results}; STORES=${STORES:-/tmp/gpu-answers}
fi
mkdir -p "$RESULTS" "$STORES"
END=$(( $(date +%s) + TOTAL_S ))
left() { echo $(( END - $(date +%s) )); }
log() { echo "[$(date -u +%H:%M:%S) left $(left)s] $*" | tee -a "$OUT/logs/gpu_answers.log"; }
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU") \
  > "$OUT/logs/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" >> "$OUT/logs/gpu.txt" 2>&1

# step NAME STUDY_FILE BUDGET [SEEDS]: import, sweep (bounded), publish, copy the store; returns the sweep's status
step() {
  local name=$1 file=$2 budget=$3 seeds=${4:-} study res store budget_s rc
  study=$($PY -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['name'])" "$file")
  res=$RESULTS/$study-$budget; store=$STORES/$study-$budget/fmlab.db
  budget_s=$(( $(left) - PUBLISH_S )); [ "$budget_s" -gt "$STEP_MAX_S" ] && budget_s=$STEP_MAX_S
  if [ "$budget_s" -lt 30 ]; then log "$name: skipped, $(left)s left (the next GPU run resumes from $res)"; return 3; fi
  if [ -f "$res/run.json" ]; then
    timeout 120 $PY -m fmlab import "$res" --store "$store" >> "$OUT/logs/$name.log" 2>&1 || log "$name: import failed"
  fi
  log "$name: sweep $file --budget $budget ${seeds:+--seeds $seeds} for at most ${budget_s}s"
  timeout -s TERM -k 30 "$budget_s" $PY -m fmlab sweep "$file" --budget "$budget" ${seeds:+--seeds "$seeds"} \
    --device "$DEVICE" --workers "$WORKERS" --pack "${PACK:-auto}" --store "$store" --plain >> "$OUT/logs/$name.log" 2>&1
  rc=$?; log "$name: sweep exit $rc; $(tail -1 "$OUT/logs/$name.log")"
  if [ -f "$store" ]; then
    timeout "$PUBLISH_S" $PY -m fmlab publish "$file" --budget "$budget" ${seeds:+--seeds "$seeds"} --store "$store" \
      --out "$res" >> "$OUT/logs/$name.log" 2>&1 || log "$name: publish failed or timed out (see logs/$name.log)"
    mkdir -p "$OUT/stores/$study-$budget"
    [ "$STORES" = "$OUT/stores" ] || sqlite3 "$store" ".backup $OUT/stores/$study-$budget/fmlab.db" 2>/dev/null \
      || $PY -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
        "$store" "$OUT/stores/$study-$budget/fmlab.db"
    [ -d "$res" ] && { mkdir -p "$OUT/results"; [ "$RESULTS" = "$OUT/results" ] || cp -r "$res" "$OUT/results/"; }
  fi
  return $rc
}

# 1. The seed study: one more seed each round while the previous round finished (exit 0) and time remains.
n=1
while [ "$n" -le "$MAX_SEEDS" ]; do
  step "seed-s$n" studies/seed.toml "$SEED_B" "$n" || break
  n=$(( n + 1 ))
done
# 2. The best network's full recipe, 3. the further experiments.
step best studies/best.toml "$BEST_B"
step further studies/further.toml "$FURTHER_B"
log "done; results in $RESULTS (commit them), stores and logs in $OUT"
