"""The ``calmq`` command line: worker, enqueue, info, dead-letter tools and the demo."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import Any

import click
import msgspec

from calmq.app import App
from calmq.errors import CalmqError
from calmq.job import CancelOutcome, EnqueueOutcome, JobInfo, JobState, QueueOverflow
from calmq.limits import QueueLimit, Unique, validate_key
from calmq.settings import Settings
from calmq.stores import open_store, redact_url
from calmq.stores.base import Store
from calmq.task import CallOptions, validate_queue_name
from calmq.worker.worker import DEFAULT_LEASE, WorkerConfig

log = logging.getLogger("calmq.cli")


def load_app(path: str) -> App:
    """Import ``package.module:attribute`` (the current directory is importable)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{path!r}: expected 'package.module:app'", param_hint="APP")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="APP") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise click.BadParameter(f"{path!r} is not a calmq.App", param_hint="APP")
    return app


def parse_queues(spec: str) -> tuple[list[str], dict[str, float] | None]:
    """``sms,default`` (strict order) or ``sms:3,default:1`` (weights)."""
    queues: list[str] = []
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition(":")
        if not name:
            raise click.BadParameter(f"empty queue name in {spec!r}", param_hint="--queues")
        queues.append(name)
        if weight:
            try:
                weights[name] = float(weight)
            except ValueError:
                raise click.BadParameter(f"bad weight {weight!r}", param_hint="--queues") from None
    return queues, (dict.fromkeys(queues, 1.0) | weights) if weights else None


def store_from(url: str | None, app_path: str | None) -> Store:
    if app_path:
        return load_app(app_path).store
    return open_store(url, Settings.from_env(url=url) if url else Settings.from_env())


#: Commands imported only when run (or listed by --help): a worker never loads the
#: benchmark runner, the dashboard, the demo, doctor's SQLite checks or top.
LAZY_COMMANDS = {
    "bench": "calmq.cli.bench",
    "dashboard": "calmq.cli.dashboard",
    "demo": "calmq.cli.demo",
    "doctor": "calmq.cli.doctor",
    "top": "calmq.cli.top",
}


class CalmqGroup(click.Group):
    """Turns calmq's own errors into one clear line and exit code 1, not a traceback; loads
    the :data:`LAZY_COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module = importlib.import_module(LAZY_COMMANDS[cmd_name])
            self.add_command(getattr(module, cmd_name))
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CalmqError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=CalmqGroup)
@click.version_option(package_name="calmq")
def cli() -> None:
    """calmq: background jobs that never stall the caller and never get lost."""


@cli.command()
@click.argument("app_path", metavar="APP")
@click.option(
    "--queues",
    "-q",
    default="default",
    show_default=True,
    help="Comma-separated queues in strict priority order, or name:weight pairs.",
)
@click.option(
    "--concurrency", "-c", default=16, show_default=True, help="Jobs at once per process."
)
@click.option("--processes", "-p", default=1, show_default=True, help="Worker processes.")
@click.option("--burst", is_flag=True, help="Exit once no job is ready or running.")
@click.option("--lease", default=DEFAULT_LEASE, show_default=True, help="Lease length, seconds.")
@click.option(
    "--grace",
    default=25.0,
    show_default=True,
    help="Seconds to let running jobs finish after a stop signal.",
)
@click.option(
    "--pool",
    default="threads",
    show_default=True,
    type=click.Choice(["threads", "solo"]),
    help="Where sync jobs run: a thread per slot, or one at a time on the worker's own thread"
    " (least overhead per job; for short jobs).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus metrics on this port (needs calmq[prometheus]).",
)
def worker(app_path: str, queues: str, concurrency: int, processes: int, burst: bool,
           lease: float, grace: float, pool: str, log_level: str, log_json: bool,
           metrics_port: int | None) -> None:  # fmt: skip
    """Run workers for APP (``package.module:app``)."""
    from calmq.cli import worker_run

    worker_run.setup(log_level, log_json)
    queue_list, weights = parse_queues(queues)
    config = WorkerConfig(queues=queue_list, concurrency=concurrency, lease=lease, burst=burst,
                          grace=grace, weights=weights, pool=pool)  # fmt: skip
    if processes < 1:
        raise click.BadParameter("must be >= 1", param_hint="--processes")
    if processes == 1:
        worker_run.run_single(app_path, config, metrics_port=metrics_port)
    child = ["worker", app_path, "--queues", queues, "--concurrency", str(concurrency),
             "--lease", str(lease), "--grace", str(grace), "--pool", pool,
             "--log-level", log_level]  # fmt: skip
    child += ["--burst"] if burst else []
    child += ["--log-json"] if log_json else []
    worker_run.run_supervised(app_path, config, child, processes, metrics_port=metrics_port)


@cli.command()
@click.argument("app_path", metavar="APP")
@click.argument("task_name", metavar="TASK")
@click.argument("args", nargs=-1)
@click.option("--kw", multiple=True, metavar="NAME=JSON", help="A keyword argument (repeatable).")
@click.option("--queue", default=None, help="Override the task's queue.")
@click.option("--delay", type=float, default=None, help="Seconds from now.")
@click.option("--priority", type=int, default=None)
@click.option("--job-id", default=None, help="Idempotency: an existing id is not enqueued twice.")
@click.option("--unique-key", default=None, help="Skip if a job with this key is queued.")
@click.option("--unique-scope", type=click.Choice(["queued", "active", "ttl"]), default="queued",
              show_default=True)  # fmt: skip
@click.option("--unique-ttl", type=float, default=None, help="Seconds (with --unique-scope ttl).")
@click.option("--on-duplicate", type=click.Choice(["keep", "replace", "raise"]), default="keep",
              show_default=True, help="replace: new payload, run at now + delay.")  # fmt: skip
@click.option("--fairness-key", default=None, help="Claims round-robin across these keys.")
def enqueue(app_path: str, task_name: str, args: tuple[str, ...], kw: tuple[str, ...],
            queue: str | None, delay: float | None, priority: int | None,
            job_id: str | None, unique_key: str | None, unique_scope: str,
            unique_ttl: float | None, on_duplicate: str,
            fairness_key: str | None) -> None:  # fmt: skip
    """Enqueue TASK with JSON ARGS, e.g. ``calmq enqueue app:app send_sms '"+316..."' '"hi"'``."""
    app = load_app(app_path)
    task = (
        app.get_task(task_name) if task_name in app.tasks else _task_by_short_name(app, task_name)
    )
    positional = [_json_arg(a) for a in args]
    keywords = {}
    for item in kw:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=JSON", param_hint="--kw")
        keywords[name] = _json_arg(value)
    from calmq.task import Call

    unique = None
    if unique_key is not None:
        unique = Unique(_literal(unique_key), unique_scope, unique_ttl, on_duplicate)
    fair = _literal(fairness_key) if fairness_key is not None else None
    options = CallOptions(job_id=job_id, queue=queue, priority=priority, delay=delay,
                          unique=unique, fairness_key=fair)  # fmt: skip
    job = app.enqueue_calls(task, [Call(positional, keywords)], options)[0]
    verb = _ENQUEUE_VERBS[job.outcome]
    click.echo(f"{verb}: {job.id} ({job.task} on queue {job.queue}, {job.state})")


_ENQUEUE_VERBS = {
    EnqueueOutcome.CREATED: "enqueued",
    EnqueueOutcome.EXISTS: "already exists",
    EnqueueOutcome.DUPLICATE: "duplicate of",
    EnqueueOutcome.REPLACED: "replaced payload of",
    EnqueueOutcome.THROTTLED: "throttled (not stored)",
    EnqueueOutcome.REJECTED: "rejected (queue full)",
}


def _literal(key: str) -> Any:
    """A key given on the command line, used as is (not as a format string)."""
    validate_key(key, "key")
    return lambda *_a, **_k: key


def _task_by_short_name(app: App, name: str) -> Any:
    matches = [t for full, t in app.tasks.items() if full.rsplit(".", 1)[-1] == name]
    if len(matches) != 1:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise click.BadParameter(f"no single task named {name!r}; known: {known}",
                                 param_hint="TASK")  # fmt: skip
    return matches[0]


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{text!r} is not JSON (strings need quotes: '\"hello\"')", param_hint="ARGS"
        ) from exc


url_option = click.option("--url", default=None, help="Store URL (default: CALMQ_URL or SQLite).")
app_option = click.option("--app", "app_path", default=None, help="Use APP's store and settings.")


@cli.command()
@url_option
@app_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(url: str | None, app_path: str | None, as_json: bool) -> None:
    """Jobs per queue and state: ready, scheduled, running, dead."""
    store = store_from(url, app_path)
    counts = store.counts()
    configs = {c.queue: store.queue_config(c.queue) for c in counts}
    workers = store.workers()
    if as_json:
        queues = [msgspec.to_builtins(c) | _config_fields(configs[c.queue]) for c in counts]
        click.echo(json.dumps({"store": store.display_url, "queues": queues,
                               "workers": [msgspec.to_builtins(w) for w in workers]}))  # fmt: skip
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"calmq queues on {redact_url(store.display_url)}")
    for column in ("queue", "ready", "scheduled", "running", "dead", "paused", "max ready"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for c in counts:
        config = configs[c.queue]
        bound = f"{config.max_ready} ({config.overflow})" if config.max_ready else "-"
        table.add_row(c.queue, str(c.ready), str(c.scheduled), str(c.running), str(c.dead),
                      "yes" if config.paused else "no", bound)  # fmt: skip
    if not counts:
        table.add_row("(no queues yet)", "", "", "", "", "", "")
    console = Console()
    console.print(table)
    workers_table = Table(title=f"{len(workers)} live workers")
    for column in ("worker", "queues", "running", "succeeded", "version"):
        workers_table.add_column(column)
    for w in workers:
        workers_table.add_row(w.id, ",".join(w.queues), f"{len(w.running)}/{w.concurrency}",
                              f"{w.stats.get('succeeded', 0):,.0f}",
                              w.versions.get("calmq", "?"))  # fmt: skip
    console.print(workers_table)


def _config_fields(config: Any) -> dict[str, Any]:
    return {"paused": config.paused, "max_ready": config.max_ready,
            "overflow": config.overflow.value}  # fmt: skip


@cli.command()
@click.argument("queue")
@url_option
@app_option
def pause(queue: str, url: str | None, app_path: str | None) -> None:
    """Stop workers claiming from QUEUE (enqueue keeps working)."""
    validate_queue_name(queue)
    store_from(url, app_path).pause(queue)
    click.echo(f"paused: {queue}")


@cli.command()
@click.argument("queue")
@url_option
@app_option
def resume(queue: str, url: str | None, app_path: str | None) -> None:
    """Let workers claim from QUEUE again."""
    validate_queue_name(queue)
    store_from(url, app_path).resume(queue)
    click.echo(f"resumed: {queue}")


@cli.command()
@click.argument("job_id")
@click.option("--queue", default="default", show_default=True)
@url_option
@app_option
def cancel(job_id: str, queue: str, url: str | None, app_path: str | None) -> None:
    """Cancel JOB_ID: removed if queued; if running, its lease is revoked."""
    validate_queue_name(queue)
    outcome = store_from(url, app_path).cancel(queue, job_id)
    click.echo(f"{outcome}: {job_id}")
    if outcome is CancelOutcome.NOT_CANCELLABLE:
        sys.exit(1)


@cli.command("limit")
@click.argument("queue")
@click.option("--max-ready", type=int, default=None, help="Bound on ready jobs (omit: none).")
@click.option("--overflow", type=click.Choice(["reject", "drop_oldest"]), default="reject",
              show_default=True)  # fmt: skip
@url_option
@app_option
def limit_queue(queue: str, max_ready: int | None, overflow: str, url: str | None,
                app_path: str | None) -> None:  # fmt: skip
    """Bound the ready jobs of QUEUE (admission control), or remove the bound."""
    validate_queue_name(queue)
    store = store_from(url, app_path)
    if max_ready is None:
        store.set_queue_limit(queue, None)
        click.echo(f"unbounded: {queue}")
        return
    bound = QueueLimit(max_ready, overflow)
    store.set_queue_limit(queue, bound.max_ready, QueueOverflow(bound.overflow))
    click.echo(f"bounded: {queue} max_ready={max_ready} overflow={overflow}")


@cli.group()
def dead() -> None:
    """The dead-letter store: list, replay or purge dead jobs."""


def _queues_for(store: Store, queue: str | None) -> list[str]:
    return [queue] if queue else store.queues()


@dead.command("list")
@url_option
@app_option
@click.option("--queue", default=None, help="Only this queue.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dead_list(url: str | None, app_path: str | None, queue: str | None, limit: int,
              as_json: bool) -> None:  # fmt: skip
    """Dead jobs, newest first, with their last error."""
    store = store_from(url, app_path)
    jobs: list[JobInfo] = []
    for name in _queues_for(store, queue):
        jobs.extend(store.list_jobs(name, JobState.DEAD, limit=limit))
    jobs.sort(key=lambda j: j.finished_at_ms or 0, reverse=True)
    jobs = jobs[:limit]
    if as_json:
        rows = [{**msgspec.to_builtins(j), "payload": j.payload.decode("utf-8", "replace")}
                for j in jobs]  # fmt: skip
        click.echo(json.dumps(rows))
        return
    for j in jobs:
        click.echo(f"{j.id}  {j.queue}  {j.task}  attempts={j.attempt}/{j.max_attempts}  {j.error}")
    if not jobs:
        click.echo("no dead jobs")


@dead.command("replay")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead job.")
@click.option("--queue", default=None, help="Only this queue.")
@url_option
@app_option
def dead_replay(job_ids: tuple[str, ...], replay_all: bool, queue: str | None, url: str | None,
                app_path: str | None) -> None:  # fmt: skip
    """Put dead jobs back on their queue with fresh attempts."""
    if bool(job_ids) == replay_all:
        raise click.UsageError("give JOB_IDs or --all (not both)")
    store = store_from(url, app_path)
    total = sum(store.replay_dead(q, list(job_ids) if job_ids else None)
                for q in _queues_for(store, queue))  # fmt: skip
    click.echo(f"replayed {total} job(s)")
    if job_ids and total < len(job_ids):
        click.echo(f"{len(job_ids) - total} id(s) were not dead jobs", err=True)
        sys.exit(1)


@dead.command("purge")
@click.argument("job_ids", nargs=-1)
@click.option("--queue", default=None, help="Only this queue.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation when purging all.")
@url_option
@app_option
def dead_purge(job_ids: tuple[str, ...], queue: str | None, yes: bool, url: str | None,
               app_path: str | None) -> None:  # fmt: skip
    """Delete dead jobs for good (all of them unless JOB_IDs are given)."""
    store = store_from(url, app_path)
    if not job_ids and not yes:
        click.confirm("Delete every dead job?", abort=True)
    total = sum(store.purge_dead(q, list(job_ids) if job_ids else None)
                for q in _queues_for(store, queue))  # fmt: skip
    click.echo(f"purged {total} job(s)")


def main() -> None:
    """Entry point of the ``calmq`` console script."""
    cli(prog_name="calmq")
