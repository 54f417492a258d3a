#!/usr/bin/env python3
"""Plot drain rate (default and tuned worker) and latency p50/p99 per library from the
harness's results.jsonl. Needs matplotlib (installed in /tmp/peers/venv-calmq).

    /tmp/peers/venv-calmq/bin/python bench/plot.py results.jsonl --out docs/benchmarks.png
"""

import argparse
import json
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ORDER = [
    "floor",
    "calmq",
    "calmq_async",
    "dramatiq",
    "taskiq",
    "huey",
    "bullmq",
    "saq",
    "celery",
    "streaq",
    "arq",
    "rq",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--out", default="docs/benchmarks.png")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    recs = [json.loads(line) for line in open(args.results) if line.strip()]  # noqa: SIM115 - closed at exit of this short script
    drain = defaultdict(list)
    lat = defaultdict(list)
    capped = set()
    for r in recs:
        if r["phase"] == "drain":
            drain[(r["lib"], r["mode"])].append(r["rate"])
            if not r.get("complete", True):
                capped.add((r["lib"], r["mode"]))
        elif r["phase"] == "latency" and r["mode"] == "default" and r.get("p99_ms") is not None:
            lat[r["lib"]].append(r)
    libs = [lib for lib in ORDER if (lib, "default") in drain]
    libs += sorted({lib for lib, _ in drain} - set(libs))
    # order by best drain rate, floor first
    libs.sort(
        key=lambda lib: (
            lib != "floor",
            -max(statistics.median(drain.get((lib, m), [0])) for m in ("default", "tuned")),
        )
    )
    color = {
        lib: ("#444444" if lib == "floor" else "#d62728" if lib.startswith("calmq") else "#1f77b4")
        for lib in libs
    }

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    x = range(len(libs))
    w = 0.4
    for off, mode, alpha in ((-w / 2, "default", 1.0), (w / 2, "tuned", 0.55)):
        vals = [statistics.median(drain.get((lib, mode), [0])) for lib in libs]
        bars = ax1.bar(
            [i + off for i in x],
            vals,
            w,
            color=[color[lib] for lib in libs],
            alpha=alpha,
            edgecolor="black",
            linewidth=0.5,
            label=f"{mode} worker",
        )
        for b, lib in zip(bars, libs, strict=False):
            if (lib, mode) in capped:
                ax1.annotate(
                    "*", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom"
                )
    ax1.set_xticks(list(x), libs, rotation=40, ha="right")
    ax1.set_ylabel("jobs/s (20,000 no-op jobs, from worker spawn)")
    ax1.set_title("Drain rate (higher is better; solid = default, light = tuned; * = hit 45 s cap)")
    ax1.grid(axis="y", alpha=0.3)
    ax1.legend()

    llibs = [lib for lib in libs if lib in lat]
    p50 = [statistics.median(r["p50_ms"] for r in lat[lib]) for lib in llibs]
    p99 = [statistics.median(r["p99_ms"] for r in lat[lib]) for lib in llibs]
    xx = range(len(llibs))
    ax2.bar(
        [i - w / 2 for i in xx],
        p50,
        w,
        color=[color[lib] for lib in llibs],
        alpha=0.55,
        edgecolor="black",
        linewidth=0.5,
        label="p50",
    )
    bars = ax2.bar(
        [i + w / 2 for i in xx],
        p99,
        w,
        color=[color[lib] for lib in llibs],
        edgecolor="black",
        linewidth=0.5,
        label="p99",
    )
    for b, lib in zip(bars, llibs, strict=False):
        backlog = any(r["received"] < r["sent"] for r in lat[lib])
        ax2.annotate(
            f"{b.get_height():,.1f}" + (" †" if backlog else ""),
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax2.set_yscale("log")
    ax2.set_xticks(list(xx), llibs, rotation=40, ha="right")
    ax2.set_ylabel("ms, enqueue → job body runs (log scale)")
    ax2.set_title(
        "Latency at 500 jobs/s, default worker (lower is better; light = p50, solid = p99)"
    )
    ax2.grid(axis="y", alpha=0.3, which="both")
    ax2.legend()
    reps = len({r["rep"] for r in recs})
    fig.suptitle(
        args.title
        or f"calmq vs peer Redis job queues vs the floor — 2 cores, medians of {reps} run(s)"
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
