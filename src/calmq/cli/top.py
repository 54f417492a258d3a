"""``calmq top``: a live terminal view of queues and workers (rich), or one JSON snapshot.

Everything comes from the store: queue depths from ``counts()``, rates and wait/run
percentiles from the workers' heartbeats (the registry), so no metrics server is needed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import msgspec

from calmq.job import QueueCounts, WorkerInfo
from calmq.stores.base import Store


def snapshot(store: Store) -> dict[str, Any]:
    """Queues and live workers as plain data (what ``--json`` prints)."""
    counts = store.counts()
    workers = store.workers()
    configs = {c.queue: store.queue_config(c.queue) for c in counts}
    return {
        "store": store.display_url,
        "at_ms": store.now_ms(),
        "queues": [{**msgspec.to_builtins(c), "paused": configs[c.queue].paused} for c in counts],
        "workers": [msgspec.to_builtins(w) for w in workers],
    }


def rates(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, float]:
    """Jobs/s per outcome over all workers since the previous snapshot."""
    if previous is None:
        return {}
    seconds = max((current["at_ms"] - previous["at_ms"]) / 1000, 1e-3)
    before = {w["id"]: w["stats"] for w in previous["workers"]}
    totals: dict[str, float] = {}
    for worker in current["workers"]:
        old = before.get(worker["id"], {})
        for key in ("succeeded", "retried", "dead"):
            delta = worker["stats"].get(key, 0) - old.get(key, 0)
            totals[key] = totals.get(key, 0.0) + max(0.0, delta) / seconds
    return totals


def render(data: dict[str, Any], per_second: dict[str, float]) -> Any:
    from rich.console import Group
    from rich.table import Table

    queues = Table(title=f"calmq top: {data['store']}", expand=True)
    for column in ("queue", "ready", "scheduled", "running", "dead", "paused"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for q in data["queues"]:
        counts = QueueCounts(**{k: v for k, v in q.items() if k != "paused"})
        paused = "yes" if q["paused"] else ""
        queues.add_row(counts.queue, str(counts.ready), str(counts.scheduled),
                       str(counts.running), str(counts.dead), paused)  # fmt: skip
    rate_line = "  ".join(f"{k} {v:,.1f}/s" for k, v in per_second.items()) or "measuring..."
    workers = Table(title=f"workers ({len(data['workers'])})   {rate_line}", expand=True)
    for column in ("worker", "queues", "running", "succeeded", "wait p50/p99 ms",
                   "run p50/p99 ms", "seen"):  # fmt: skip
        workers.add_column(column)
    now = data["at_ms"]
    for raw in data["workers"]:
        w = msgspec.convert(raw, WorkerInfo)
        s = w.stats
        workers.add_row(
            w.id, ",".join(w.queues), f"{len(w.running)}/{w.concurrency}",
            f"{s.get('succeeded', 0):,.0f}",
            f"{s.get('wait_p50_ms', 0):.0f} / {s.get('wait_p99_ms', 0):.0f}",
            f"{s.get('run_p50_ms', 0):.1f} / {s.get('run_p99_ms', 0):.1f}",
            f"{(now - w.seen_at_ms) / 1000:.1f}s ago",
        )  # fmt: skip
    return Group(queues, workers)


@click.command()
@click.option("--url", default=None, help="Store URL (default: CALMQ_URL or SQLite).")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON snapshot and exit.")
@click.option("--iterations", default=0, help="Stop after this many refreshes (0: never).")
def top(url: str | None, interval: float, as_json: bool, iterations: int) -> None:
    """Live view of queue depths, rates, wait times and workers."""
    from calmq.cli.main import store_from

    store = store_from(url, None)
    try:
        if as_json:
            click.echo(json.dumps(snapshot(store)))
            return
        from rich.live import Live

        previous = None
        done = 0
        with Live(refresh_per_second=4, screen=False) as live:
            while True:
                current = snapshot(store)
                live.update(render(current, rates(previous, current)))
                previous = current
                done += 1
                if iterations and done >= iterations:
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
