#!/usr/bin/env bash
# A long CPU study beside a session's work (issue 33's search): its own git worktree at a fixed commit, its own
# venv, its store outside the repository, and a publisher that writes its progress into the repository's
# results/<study>-<budget>/ whenever a trial completes (every 40 min otherwise, and when the sweep ends), so a
# session's end loses at most the running epochs since: the next session, on any box, starts it again from the
# published folder and it resumes mid-trial. Commit results/<study>-<budget>/ as it grows.
#
#   scripts/cpu_longrun.sh start STUDY_FILE BUDGET [COMMIT]   # worktree + venv (once), import, sweep + publisher
#   scripts/cpu_longrun.sh status                             # the sweep, the last epochs, the last publish
#   scripts/cpu_longrun.sh pause | resume                     # SIGSTOP / SIGCONT, while timing something
#   scripts/cpu_longrun.sh stop                               # SIGTERM (the running trial keeps its last epoch),
#                                                             # then the publisher's last publish
#   scripts/cpu_longrun.sh publish                            # publish now
#
# LONGRUN_DIR (default: longrun/ beside the repository) holds wt/ (the worktree), venv/, fmlab.db, the logs,
# run.env (what start was given) and the copy of this script the publisher runs from. LONGRUN_VENV reuses an
# existing venv. The code that runs and publishes is the worktree's (PYTHONPATH=wt/src), so run.json names the
# run's commit. LONGRUN_SWEEP_ARGS: the sweep's workers and threads (default: one single-thread worker per core,
# the sweep's own default: in fp32 1.2x the img/s of one worker on every core, BENCHMARKS.md).
set -euo pipefail
REPO=${LONGRUN_REPO:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
DIR=${LONGRUN_DIR:-$(dirname "$REPO")/longrun}
EVERY_S=${LONGRUN_PUBLISH_EVERY_S:-2400}
die() { echo "cpu_longrun: $*" >&2; exit 2; }
alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }
settings() { [ -f "$DIR/run.env" ] || die "$DIR/run.env: no run started here; run 'start STUDY_FILE BUDGET' first"
  # shellcheck source=/dev/null
  . "$DIR/run.env"; }
fm() { (cd "$DIR/wt" && PYTHONPATH="$DIR/wt/src" "$VENV/bin/python" -m fmlab "$@"); }

count() {  # COMPLETE trials and epoch rows in the store
  "$VENV/bin/python" - "$DIR/fmlab.db" <<'EOF'
import sqlite3, sys
try:
    c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    print(c.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0],
          c.execute("select count(*) from epochs").fetchone()[0])
except sqlite3.Error:  # no store yet: the sweep is creating it
    print(0, 0)
EOF
}

publish() {
  settings
  fm publish "$STUDY" --budget "$BUDGET" --store "$DIR/fmlab.db" --out "$REPO/results/$NAME-$BUDGET"
}

publisher() {  # publish on each COMPLETE trial, every EVERY_S if epochs moved, and once the sweep has ended
  settings
  local last now c t
  t=$(date +%s)
  last=$(count)
  while alive sweep; do
    sleep "${LONGRUN_POLL_S:-60}"; now=$(count); c=${now% *}
    if [ "$c" != "${last% *}" ] || { [ "$now" != "$last" ] && [ $(( $(date +%s) - t )) -ge "$EVERY_S" ]; }; then
      publish && echo "$(date -u +%FT%TZ) published: $now (complete, epochs)"; last=$now; t=$(date +%s)
    fi
  done
  publish && echo "$(date -u +%FT%TZ) the sweep ended; published: $(count) (complete, epochs)"
}

start() {
  [ $# -ge 2 ] || die "usage: start STUDY_FILE BUDGET [COMMIT]"
  local study=$1 budget=$2 commit
  alive sweep && die "a sweep already runs from $DIR (pid $(cat "$DIR/sweep.pid")); 'stop' it first"
  [ -f "$REPO/$study" ] || die "$study: no such study file in $REPO; give a path relative to the repository root"
  commit=$(git -C "$REPO" rev-parse --verify "${3:-HEAD}^{commit}" 2>/dev/null) || die "${3:-HEAD}: not a commit"
  git -C "$REPO" cat-file -e "$commit:$study" 2>/dev/null || die "$study is not in commit $commit; commit it first"
  mkdir -p "$DIR"
  if [ -d "$DIR/wt" ]; then git -C "$DIR/wt" checkout -q --detach "$commit"
  else git -C "$REPO" worktree add -q --detach "$DIR/wt" "$commit"; fi
  local venv=${LONGRUN_VENV:-$DIR/venv}
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
    "$venv/bin/pip" install -q --disable-pip-version-check "$DIR/wt"
  fi
  VENV=$venv
  local name
  name=$("$VENV/bin/python" -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['name'])" "$DIR/wt/$study")
  printf 'STUDY=%q\nBUDGET=%q\nCOMMIT=%q\nVENV=%q\nNAME=%q\n' "$study" "$budget" "$commit" "$VENV" "$name" > "$DIR/run.env"
  if [ -f "$REPO/results/$name-$budget/run.json" ]; then
    fm import "$REPO/results/$name-$budget" --store "$DIR/fmlab.db"
  fi
  # One process from fork to exec (setsid makes it its own group), so sweep.pid is the sweep's pid and group,
  # and nothing keeps the caller's stdout open: start returns at once.
  # shellcheck disable=SC2086  # the sweep's arguments split on purpose
  (cd "$DIR/wt" && PYTHONPATH="$DIR/wt/src" exec setsid nohup "$VENV/bin/python" -m fmlab sweep "$study" \
    --budget "$budget" ${LONGRUN_SWEEP_ARGS:---workers $(nproc) --threads 1} --store "$DIR/fmlab.db") \
    >> "$DIR/sweep.log" 2>&1 < /dev/null &
  echo $! > "$DIR/sweep.pid"
  sleep 1
  # the publisher runs from a copy of this script: bash reads a script as it goes, so editing the repository's
  # copy while the publisher loops would break it
  cp "$0" "$DIR/cpu_longrun.sh"
  LONGRUN_REPO=$REPO setsid nohup "$DIR/cpu_longrun.sh" _publisher >> "$DIR/publish.log" 2>&1 < /dev/null &
  echo $! > "$DIR/publisher.pid"
  echo "cpu_longrun: $study --budget $budget at ${commit:0:12} runs from $DIR (pid $(cat "$DIR/sweep.pid")); " \
    "it publishes into results/$name-$budget/"
}

status() {
  settings
  echo "$STUDY --budget $BUDGET at ${COMMIT:0:12}: sweep $(alive sweep && echo running || echo stopped)," \
    "publisher $(alive publisher && echo running || echo stopped)"
  tail -n 2 "$DIR/sweep.log" 2>/dev/null || true
  tail -n 1 "$DIR/publish.log" 2>/dev/null || true
}

signal_sweep() {  # STOP/CONT: the sweep's process group (its parent and workers); TERM: the parent, which
  alive sweep || die "no sweep runs from $DIR"  # gives its running trials back at their last epoch
  if [ "$1" = TERM ]; then kill -TERM "$(cat "$DIR/sweep.pid")"; kill -CONT -- "-$(cat "$DIR/sweep.pid")"
  else kill "-$1" -- "-$(cat "$DIR/sweep.pid")"; fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  status) status ;;
  pause) signal_sweep STOP ;;
  resume) signal_sweep CONT ;;
  stop) signal_sweep TERM ;;
  publish) publish ;;
  _publisher) publisher ;;
  *) die "usage: $0 start STUDY_FILE BUDGET [COMMIT] | status | pause | resume | stop | publish" ;;
esac
