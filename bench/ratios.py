#!/usr/bin/env python3
"""calmq vs the best peer and vs the floor, from the harness's results.jsonl.

    python3 bench/ratios.py /tmp/peers/run-.../results.jsonl [--calmq calmq] [--extra calmq_async]

Per metric: calmq's value, the best peer's value (and which peer), the floor's value, and the
ratios calmq/best-peer and calmq/floor. Values are medians over repetitions. "Better" says
whether calmq beats the best peer (higher is better for rates, lower for CPU, latency, RSS).
Latency: only peers whose latency run had no backlog (received == sent) compete for "best".
Standard library only (runs with any python3).
"""

import argparse
import json
import statistics
from collections import defaultdict

NOT_PEERS = {"floor", "calmq", "calmq_async"}


def load(path):
    recs = [json.loads(line) for line in open(path) if line.strip()]  # noqa: SIM115 - closed at exit of this short script
    by = defaultdict(list)
    for r in recs:
        by[(r["lib"], r["rep"])].append(r)
    for seq in by.values():  # same slotting as summarize.py: enqueue before the default drain = A
        for i, r in enumerate(seq):
            if r["phase"].startswith("enqueue"):
                nxt = seq[i + 1] if i + 1 < len(seq) else {}
                r["slot"] = "A" if nxt.get("mode") == "default" else "B"
    return recs


# metric name -> (higher_is_better, unit, extractor(record) -> value or None, record filter)
def metrics():
    def drain(mode):
        return lambda r: r["phase"] == "drain" and r["mode"] == mode

    return [
        (
            "drain jobs/s, default worker (from spawn)",
            True,
            "jobs/s",
            drain("default"),
            lambda r: r["rate"],
        ),
        (
            "drain jobs/s, tuned worker (from spawn)",
            True,
            "jobs/s",
            drain("tuned"),
            lambda r: r["rate"],
        ),
        (
            "drain steady jobs/s, tuned (first→last job)",
            True,
            "jobs/s",
            drain("tuned"),
            lambda r: r.get("steady_rate"),
        ),
        (
            "worker CPU µs/job, default",
            False,
            "µs",
            drain("default"),
            lambda r: r["cpu_s"] * 1e6 / max(1, r["completed"]) if "cpu_s" in r else None,
        ),
        (
            "worker CPU µs/job, tuned",
            False,
            "µs",
            drain("tuned"),
            lambda r: r["cpu_s"] * 1e6 / max(1, r["completed"]) if "cpu_s" in r else None,
        ),
        (
            "enqueue/s one-by-one",
            True,
            "jobs/s",
            lambda r: r["phase"] == "enqueue" and r.get("slot") == "A",
            lambda r: r["rate"],
        ),
        (
            "enqueue/s bulk API",
            True,
            "jobs/s",
            lambda r: r["phase"] == "enqueue_bulk",
            lambda r: r["rate"],
        ),
        (
            "latency p50 ms @500/s, default worker",
            False,
            "ms",
            lambda r: r["phase"] == "latency" and r["mode"] == "default",
            lambda r: r.get("p50_ms"),
        ),
        (
            "latency p99 ms @500/s, default worker",
            False,
            "ms",
            lambda r: r["phase"] == "latency" and r["mode"] == "default",
            lambda r: r.get("p99_ms"),
        ),
        (
            "worker RSS MB, default (process tree)",
            False,
            "MB",
            drain("default"),
            lambda r: r.get("rss_mb"),
        ),
        (
            "worker RSS MB, tuned (process tree)",
            False,
            "MB",
            drain("tuned"),
            lambda r: r.get("rss_mb"),
        ),
        (
            "worker PSS MB, tuned (process tree)",
            False,
            "MB",
            drain("tuned"),
            lambda r: r.get("pss_mb"),
        ),
    ]


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "ms":
        return f"{v:,.2f}"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "—"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--calmq", default="calmq")
    ap.add_argument(
        "--extra", default="calmq_async", help="extra calmq variant shown in its own column"
    )
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args()
    recs = load(args.results)
    libs = sorted({r["lib"] for r in recs})
    peers = [lib for lib in libs if lib not in NOT_PEERS]

    rows = []
    for name, higher, unit, keep, get in metrics():
        vals = {}
        for lib in libs:
            sel = [r for r in recs if r["lib"] == lib and keep(r)]
            if name.startswith("latency"):
                sel = (
                    [r for r in sel if r.get("received") == r.get("sent")] if lib in peers else sel
                )
            xs = [get(r) for r in sel if get(r) is not None]
            if xs:
                vals[lib] = statistics.median(xs)
        cands = {p: vals[p] for p in peers if p in vals}
        best = (max if higher else min)(cands, key=cands.get) if cands else None
        c, b, f, e = vals.get(args.calmq), cands.get(best), vals.get("floor"), vals.get(args.extra)
        better = None
        if c is not None and b is not None:
            better = c > b if higher else c < b
        rows.append(
            {
                "metric": name,
                "unit": unit,
                "higher_is_better": higher,
                "calmq": c,
                "best_peer": best,
                "best_peer_value": b,
                "floor": f,
                args.extra: e,
                "calmq_vs_best_peer": c / b if c is not None and b else None,
                "calmq_vs_floor": c / f if c is not None and f else None,
                "calmq_better": better,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    partial = {r["lib"] for r in recs if r["phase"] == "drain" and not r.get("complete", True)}
    print(
        f"| metric | calmq | best peer | calmq ÷ best peer | floor | calmq ÷ floor | {args.extra} |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        u = row["unit"]
        bp = f"{fmt(row['best_peer_value'], u)} ({row['best_peer']})" if row["best_peer"] else "—"
        mark = (
            "" if row["calmq_better"] is None else (" better" if row["calmq_better"] else " worse")
        )
        print(
            f"| {row['metric']} | {fmt(row['calmq'], u)} | {bp} "
            f"| {ratio(row['calmq'], row['best_peer_value'])}{mark} | {fmt(row['floor'], u)} "
            f"| {ratio(row['calmq'], row['floor'])} | {fmt(row[args.extra], u)} |"
        )
    reps = sorted({r["rep"] for r in recs})
    print(
        f"\nMedians over {len(reps)} repetition(s). Rates: higher is better; CPU, latency, RSS: lower is better."
        " Latency 'best peer' only among peers with no backlog in that run."
    )
    if partial:
        print("Drains that hit the cap (rate = completed ÷ elapsed): " + ", ".join(sorted(partial)))


if __name__ == "__main__":
    main()
