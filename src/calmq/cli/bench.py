"""``calmq bench``: how fast calmq runs here, against a real store."""

from __future__ import annotations

import json

import click

from calmq.benchmark.runner import Bench, BenchConfig


@click.command()
@click.option("--url", default=None, help="Store URL (default: CALMQ_URL or a temporary SQLite).")
@click.option("--jobs", "-n", default=20_000, show_default=True, help="Jobs per enqueue phase.")
@click.option("--concurrency", "-c", default=64, show_default=True)
@click.option("--processes", "-p", default=1, show_default=True)
@click.option("--pool", default="solo", show_default=True, type=click.Choice(["threads", "solo"]))
@click.option("--latency-rate", default=500.0, show_default=True, help="Jobs/s in the latency run.")
@click.option("--latency-seconds", default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else.")
def bench(url: str | None, jobs: int, concurrency: int, processes: int, pool: str,
          latency_rate: float, latency_seconds: float, as_json: bool) -> None:  # fmt: skip
    """Enqueue (one by one and in bulk), drain and latency runs; prints the figures."""
    import os
    import tempfile

    if url is None:
        url = os.environ.get("CALMQ_URL") or (
            f"sqlite:///{tempfile.mkdtemp(prefix='calmq-bench-')}/bench.sqlite3"
        )
    config = BenchConfig(url=url, jobs=jobs, concurrency=concurrency, processes=processes,
                         pool=pool, latency_rate=latency_rate,
                         latency_seconds=latency_seconds)  # fmt: skip
    if as_json:
        result = Bench(config, lambda phase, done, total: None).run()
        click.echo(json.dumps(result.as_dict()))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress
    from rich.table import Table

    console = Console()
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:  # fmt: skip
        bars: dict[str, object] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(phase, total=total)
            progress.update(bars[phase], completed=done)  # type: ignore[arg-type]

        result = Bench(config, report).run()
    table = Table(title=f"calmq bench: {result.store}", show_header=False)
    for key, value in result.as_dict().items():
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    console.print(table)
