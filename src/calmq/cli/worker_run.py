"""What ``calmq worker`` does once its options are parsed: one process, or a supervisor.

Kept apart from the option parsing so the process-level concerns (logging set-up, the
metrics endpoint, the multiprocess metrics folder, how the process ends) read in one place.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from calmq.logs import configure_logging
from calmq.worker.worker import WorkerConfig, run_worker


def run_single(app_path: str, config: WorkerConfig, *, metrics_port: int | None) -> None:
    """Run one worker process in this process; never returns."""
    from calmq.cli.main import load_app

    app = load_app(app_path)
    stop_metrics = None
    metrics = None
    if metrics_port is not None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from calmq.metrics import Metrics, serve

        metrics = Metrics()
        # The kinds it listens to only (no CLAIMED); a worker's batches in one call each.
        app.on_event(metrics.on_event, many=metrics.on_events)
        if metrics_port is not None:  # a supervised child writes files; its parent serves
            stop_metrics = serve(metrics_port, metrics.registry)
    code = run_worker(app, config)
    if metrics is not None:
        metrics.close()  # the last tallies, to the registry or the multiprocess files
    if stop_metrics is not None:
        stop_metrics()
    # Sync jobs still running on threads (cancelled at the end of the grace period, their
    # leases already released) cannot be stopped any other way: end the process without
    # waiting for them, as the shutdown contract promises.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_supervised(app_path: str, config: WorkerConfig, child_args: Sequence[str],
                   processes: int, *, metrics_port: int | None) -> None:  # fmt: skip
    """Run ``processes`` children under a supervisor; never returns.

    On Linux the children are forked from this process once it has imported the app (they
    start with everything imported); elsewhere each is a fresh ``python -m calmq`` with
    ``child_args``.
    """
    from calmq.worker.supervisor import StartChild, Supervisor, can_fork, fork_child, spawn_child

    folder = None
    stop_metrics = None
    if metrics_port is not None:
        # prometheus-client's multiprocess mode: children write, this process sums and serves.
        folder = tempfile.mkdtemp(prefix="calmq-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        from calmq.metrics import serve

        stop_metrics = serve(metrics_port, None)
    start_child: StartChild
    try:
        if can_fork():
            from calmq.cli.main import load_app

            # Imported once, here (after PROMETHEUS_MULTIPROC_DIR is set: prometheus-client
            # picks its mode at import); each child's load_app finds it loaded.
            load_app(app_path)
            # What is loaded now lives as long as the process: kept out of the collector,
            # the children's collections never touch (and so never copy) those pages. The
            # garbage left by imports is collected first, not frozen for good.
            gc.collect()
            gc.freeze()
            start_child = lambda: fork_child(  # noqa: E731
                lambda: run_single(app_path, config, metrics_port=None)
            )
        else:
            start_child = lambda: spawn_child(child_args)  # noqa: E731
        code = Supervisor(start_child, processes, burst=config.burst).run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    sys.exit(code)


def setup(log_level: str, log_json: bool) -> None:
    configure_logging(log_level, json_lines=log_json)
