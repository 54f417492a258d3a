#!/usr/bin/env bash
# Pre-scan of calmq worker settings for the harness's "tuned" mode: phase B only (bulk enqueue,
# then drain with PEERS_CALMQ_TUNED), N jobs, sync and async job. Needs the redis on $PEERS_REDIS_PORT
# and /tmp/peers/venv-calmq (bench/run_peers.sh creates both). Appends to /tmp/peers/tuning.jsonl.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
HARNESS="${PEERS_HARNESS:-/work/shared/bench/peers}"
N="${N:-20000}"
OUT="${OUT:-/tmp/peers/tuning.jsonl}"
export PEERS_ADAPTER_PATH="$HERE/peers"
for adapter in peer_calmq peer_calmq_async; do
  for flags in "--concurrency 16" "--concurrency 64" "--processes 2 --concurrency 16" \
               "--processes 2 --concurrency 32" "--processes 2 --concurrency 64"; do
    echo "== $adapter $flags"
    (cd "$HARNESS" && PEERS_CALMQ_TUNED="$flags" timeout 120 /tmp/peers/venv-calmq/bin/python common.py \
       "$adapter" --n "$N" --phases B --drain-timeout 45 --out "$OUT" --rep 0) \
       | grep '"drain"' | python3 -c 'import json,sys
for r in map(json.loads, sys.stdin):
    print("   rate %8.0f steady %8.0f cpu_us/job %5.0f rss %5.1f load %.1f" % (r["rate"], r.get("steady_rate", 0), r["cpu_s"]*1e6/max(1, r["completed"]), r["rss_mb"], r["load1"]))'
  done
done
