#!/usr/bin/env python3
"""Print the chaos results (JSON lines written by tests/chaos via $CHAOS_RESULTS) as the
Markdown table used in docs/reliability.md.

    python bench/chaos/table.py bench/chaos/results.jsonl
"""

import json
import sys

HEADER = (
    "| scenario | store | jobs | lost | dup | stuck | peak conns | recovery s | run s | result"
    " | notes |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(r: dict) -> str:
    peak = "-" if r["peak_connections"] is None else str(r["peak_connections"])
    rec = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}"
    verdict = "pass" if r["passed"] else "FAIL"
    return (
        f"| {r['scenario']} | {r['store']} | {r['jobs']} | {r['lost']} | {r['duplicates']}"
        f" | {r['stuck']} | {peak} | {rec} | {r['seconds']:.1f} | {verdict} | {r['notes']} |"
    )


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/chaos/results.jsonl"
    with open(path, encoding="utf-8") as f:
        results = [json.loads(line) for line in f if line.strip()]
    results.sort(key=lambda r: (int(r["scenario"].split()[0]), r["scenario"], r["store"]))
    print(HEADER)
    for r in results:
        print(row(r))


if __name__ == "__main__":
    main()
