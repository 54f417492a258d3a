"""`calmq bench` runs end to end and reports every figure (no timing assertions: benchmarks
are not tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

KEYS = {"enqueue_per_s", "bulk_enqueue_per_s", "drain_per_s", "cpu_us_per_job",
        "latency_p50_ms", "latency_p99_ms", "worker_rss_mb", "redis_ops_per_job"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_bench_json_reports_every_figure(
    kind: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url if kind == "redis" else f"sqlite:///{tmp_path}/bench.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALMQ")}
    result = subprocess.run(
        [sys.executable, "-m", "calmq", "bench", "--url", url, "--jobs", "300",
         "--latency-rate", "100", "--latency-seconds", "1", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures.keys() >= KEYS
    assert figures["drain_per_s"] > 0 and figures["enqueue_per_s"] > 0
    assert figures["latency_p99_ms"] >= figures["latency_p50_ms"] > 0
    if kind == "redis":
        assert 0 < figures["redis_ops_per_job"] < 5
    else:
        assert figures["redis_ops_per_job"] is None
