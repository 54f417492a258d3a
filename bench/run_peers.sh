#!/usr/bin/env bash
# One command: calmq vs the peer job queues vs the floor, interleaved on this machine.
#
#   bench/run_peers.sh            # REPS=1, all libraries, phases A,B,C
#   REPS=2 LIBS=floor,calmq,dramatiq,huey bench/run_peers.sh
#
# 1. creates /tmp/peers/venv-calmq (calmq editable from this repo + psutil + matplotlib) and the
#    peers' venvs if missing (the harness's setup.sh), 2. starts a private redis-server on
#    127.0.0.1:$PEERS_REDIS_PORT (6390, no persistence), 3. runs the harness's run_all.py with
#    calmq interleaved among the peers, 4. summarize.py + bench/ratios.py, 5. (SQLITE=1, default)
#    bench/sqlite_drain.py, 6. bench/plot.py. Stops its redis and its load sampler on exit.
# Everything talks to 127.0.0.1 only. Results: $RUN_DIR (default /tmp/peers/run-<timestamp>).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
HARNESS="${PEERS_HARNESS:-/work/shared/bench/peers}"
export PEERS_VENVS="${PEERS_VENVS:-/tmp/peers}"
export PEERS_REDIS_PORT="${PEERS_REDIS_PORT:-6390}"
export PEERS_ADAPTER_PATH="$HERE/peers"
REPS="${REPS:-1}"
PHASES="${PHASES:-A,B,C}"
LIBS="${LIBS:-floor,calmq,calmq_async,celery,rq,dramatiq,huey,arq,saq,taskiq,streaq,bullmq}"
RUN_DIR="${RUN_DIR:-$PEERS_VENVS/run-$(date +%Y%m%d-%H%M%S)}"
SQLITE="${SQLITE:-1}"
mkdir -p "$RUN_DIR"
V="$PEERS_VENVS"

# --- 1. venvs
if [ ! -x "$V/venv-calmq/bin/calmq" ]; then
  python3 -m venv "$V/venv-calmq"
  "$V/venv-calmq/bin/pip" install -q -e "$REPO" psutil matplotlib
fi
ln -sfn "$V/venv-calmq" "$V/venv-calmq_async"   # run_all.py looks for venv-<lib>
# An editable install has no bytecode and PYTHONDONTWRITEBYTECODE may be set: every worker
# start would compile calmq from source (≈ 65 ms of CPU here), which a pip-installed calmq,
# like every peer, never does. Compiled now, for this tree as it is.
"$V/venv-calmq/bin/python" -m compileall -q "$REPO/src/calmq" "$REPO/bench/peers"
for lib in ${LIBS//,/ }; do
  if [ ! -x "$V/venv-$lib/bin/python" ]; then
    echo "venv-$lib missing: running $HARNESS/setup.sh (several minutes)"
    timeout 1800 bash "$HARNESS/setup.sh" > "$RUN_DIR/setup.log" 2>&1
    break
  fi
done

# --- 2. private redis
PIDFILE="$RUN_DIR/redis-$PEERS_REDIS_PORT.pid"
if redis-cli -p "$PEERS_REDIS_PORT" ping >/dev/null 2>&1; then
  echo "something already listens on $PEERS_REDIS_PORT: not starting a redis (and not stopping it)"
  PIDFILE=""
else
  redis-server --port "$PEERS_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$RUN_DIR/redis.log"
  for _ in $(seq 50); do redis-cli -p "$PEERS_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
SAMPLER=""
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  if [ -n "$PIDFILE" ] && [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; fi
}
trap cleanup EXIT

# --- machine facts + load sampler (every 10 s)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "mem: $(grep MemTotal /proc/meminfo | awk '{print $2/1048576 " GiB"}')"
  echo "kernel: $(uname -r)"
  echo "python: $("$V/venv-calmq/bin/python" -V 2>&1)"
  echo "redis: $(redis-server --version)"
  echo "calmq: $("$V/venv-calmq/bin/python" -c 'import importlib.metadata as m; print(m.version("calmq"))') (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), worktree may be dirty)"
  echo "reps: $REPS phases: $PHASES libs: $LIBS"
} > "$RUN_DIR/machine.txt"
cat "$RUN_DIR/machine.txt"
( while true; do echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 10; done ) > "$RUN_DIR/loadavg.txt" &
SAMPLER=$!

# --- 3. interleaved run (the harness's own driver; it also writes redis-benchmark.txt under $PEERS_VENVS)
cd "$HARNESS"
timeout 5400 python3 run_all.py --reps "$REPS" --libs "$LIBS" --phases "$PHASES" \
  --out "$RUN_DIR/results.jsonl" | tee "$RUN_DIR/run_all.log"
tail -n 12 "$V/redis-benchmark.txt" > "$RUN_DIR/redis-benchmark.txt" || true

# --- 4. tables
python3 summarize.py "$RUN_DIR/results.jsonl" | tee "$RUN_DIR/summary.md"
python3 "$HERE/ratios.py" "$RUN_DIR/results.jsonl" | tee "$RUN_DIR/ratios.md"

# --- 5. SQLite vs Redis store drain, concurrent SQLite producers
if [ "$SQLITE" = "1" ]; then
  timeout 900 "$V/venv-calmq/bin/python" "$HERE/sqlite_drain.py" --out "$RUN_DIR/sqlite.jsonl" \
    | tee "$RUN_DIR/sqlite.md"
fi

# --- 6. plot
"$V/venv-calmq/bin/python" "$HERE/plot.py" "$RUN_DIR/results.jsonl" --out "$RUN_DIR/benchmarks.png"
kill "$SAMPLER" 2>/dev/null || true; SAMPLER=""
awk 'NR==1{min=$2;max=$2} {s+=$2; if($2<min)min=$2; if($2>max)max=$2} END{printf "load1 during run: min %.2f mean %.2f max %.2f (%d samples)\n", min, s/NR, max, NR}' \
  "$RUN_DIR/loadavg.txt" | tee -a "$RUN_DIR/machine.txt"
echo "results in $RUN_DIR"
