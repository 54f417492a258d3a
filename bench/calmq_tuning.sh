#!/usr/bin/env bash
# Pre-scan of calmq worker settings for the harness's "tuned" mode: phase B only (bulk enqueue,
# then drain with PEERS_CALMQ_TUNED), N jobs each. The candidate flag sets are interleaved
# (ROUNDS rounds of all candidates), so foreign load hits them alike. Needs the redis on
# $PEERS_REDIS_PORT and /tmp/peers/venv-calmq (bench/run_peers.sh creates both).
# Appends JSON lines (with the flags) to $OUT and prints one line per run.
#
#   bench/calmq_tuning.sh                                  # sync job, 3 candidates, 2 rounds
#   ROUNDS=3 ADAPTERS="peer_calmq peer_calmq_async" bench/calmq_tuning.sh
#   FLAGS="--concurrency 16|--pool solo --concurrency 64" bench/calmq_tuning.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
HARNESS="${PEERS_HARNESS:-/work/shared/bench/peers}"
N="${N:-20000}"
ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-/tmp/peers/tuning.jsonl}"
ADAPTERS="${ADAPTERS:-peer_calmq}"
FLAGS="${FLAGS:---pool solo --concurrency 64 --processes 2|--pool solo --concurrency 64|--pool threads --concurrency 32 --processes 2}"
export PEERS_ADAPTER_PATH="$HERE/peers"
IFS='|' read -r -a CANDIDATES <<< "$FLAGS"
# Bytecode for the editable install, as run_peers.sh does (a pip install has it).
/tmp/peers/venv-calmq/bin/python -m compileall -q "$HERE/../src/calmq" "$HERE/peers"
for round in $(seq "$ROUNDS"); do
  for adapter in $ADAPTERS; do
    for flags in "${CANDIDATES[@]}"; do
      tmp="$(mktemp)"
      (cd "$HARNESS" && PEERS_CALMQ_TUNED="$flags" timeout 120 /tmp/peers/venv-calmq/bin/python common.py \
         "$adapter" --n "$N" --phases B --drain-timeout 45 --out "$tmp" --rep "$round") >/dev/null || true
      FLAGS_NOW="$flags" ADAPTER="$adapter" ROUND="$round" python3 -c 'import json, os, sys
for r in map(json.loads, open(sys.argv[1])):
    r["flags"], r["round"] = os.environ["FLAGS_NOW"], int(os.environ["ROUND"])
    print(json.dumps(r), file=open(sys.argv[2], "a"))
    if r["phase"] == "drain":
        print("round %s %-16s %-48s rate %6.0f steady %6.0f cpu_us/job %4.0f rss %5.1f load %.1f" % (
            r["round"], os.environ["ADAPTER"], r["flags"], r["rate"], r.get("steady_rate", 0),
            r["cpu_s"] * 1e6 / max(1, r["completed"]), r["rss_mb"], r["load1"]))' "$tmp" "$OUT"
      rm -f "$tmp"
    done
  done
done
