#!/usr/bin/env bash
# `calmq bench --json` (Redis and SQLite store; 1 and 2 worker processes, other flags default:
# --pool solo --concurrency 64, 20,000 jobs per enqueue phase, drain of 40,000 no-op jobs,
# latency 500 jobs/s for 5 s) interleaved with the shared no-op floor
# (/work/shared/bench/floor/floor_noop.py) on the same private redis. ROUNDS rounds of
# floor, redis×1, sqlite×1, redis×2, sqlite×2. Needs a redis of your own on $PORT (default 6390).
#
#   bench/calmq_bench_vs_floor.sh > /tmp/calmq-bench.jsonl
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
PORT="${PORT:-6390}"
ROUNDS="${ROUNDS:-2}"
FLOOR="${FLOOR:-/work/shared/bench/floor/floor_noop.py}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Bytecode for the editable install (a pip install has it; PYTHONDONTWRITEBYTECODE may be set).
"$PY" -m compileall -q "$REPO/src/calmq"
for round in $(seq "$ROUNDS"); do
  line="$(timeout 120 "$PY" "$FLOOR" --port "$PORT")"
  echo "{\"round\": $round, \"bench\": \"floor_noop\", \"load1\": $(cut -d' ' -f1 /proc/loadavg), \"out\": \"$line\"}"
  for p in 1 2; do
    for store in redis sqlite; do
      if [ "$store" = redis ]; then url="redis://127.0.0.1:$PORT/0"; else url="sqlite:///$tmp/r$round-p$p.sqlite3"; fi
      load="$(cut -d' ' -f1 /proc/loadavg)"
      res="$(cd "$tmp" && timeout 300 "$PY" -m calmq bench --json --url "$url" --processes "$p")"
      echo "{\"round\": $round, \"bench\": \"calmq\", \"store\": \"$store\", \"processes\": $p, \"load1\": $load, \"result\": $res}"
    done
  done
done
