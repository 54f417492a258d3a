"""Take the screenshots in docs/ of a real dashboard: the demo platform's jobs on a SQLite
file, processed by two real worker processes, seen through headless Chromium.

    .venv/bin/python -m tests.dashboard.screenshots docs

Takes about 30 seconds; needs Debian's chromium (see docs/dashboard.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from calmq.job import JobState
from tests.dashboard.browser import launch
from tests.dashboard.live import LiveServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
WORKERS = (["sms,email,integrations", "24"], ["documents,exports", "4"])


def main(out: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="calmq-shots-"))
    os.environ["CALMQ_URL"] = f"sqlite:///{workdir}/calmq.sqlite3"
    from calmq.dashboard.app import create_app
    from calmq.demo import jobs

    app = jobs.app
    app.store.pause("exports")  # a paused queue, for the badge and a visible backlog
    workers = [worker(queues, slots) for queues, slots in WORKERS]
    server = LiveServer(create_app(app, sample_interval=1)).start()
    try:
        wait_until(lambda: len(app.store.workers()) == len(WORKERS), 30, "the workers")
        produce(jobs, seconds=22)
        shoot(server.url, app, out)
    finally:
        server.stop()
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)
        app.close()


def worker(queues: str, slots: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "calmq", "worker", "calmq.demo.jobs:app",
               "--queues", queues, "--concurrency", slots, "--log-level", "error"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)


def produce(jobs: Any, seconds: float) -> None:
    """Enqueue a day's traffic in miniature: bursts of SMS and mail, contracts, CRM syncs
    (account 13 always fails: dead letters), exports piling up in the paused queue."""
    end = time.monotonic() + seconds
    tick = 0
    while time.monotonic() < end:
        tick += 1
        burst = 20 + 15 * (tick % 6)
        jobs.send_sms.enqueue_many(
            [(f"+3160000{i:04d}", "Your code is 4711") for i in range(burst)]
        )
        jobs.send_email.enqueue_many(
            [(f"user{i}@example.com", "Welcome") for i in range(burst // 2)]
        )
        jobs.generate_contract.enqueue_many([(tick * 10 + i, "msa") for i in range(3)])
        jobs.sync_crm.enqueue_many([(tick * 100 + i,) for i in range(10, 16)])
        jobs.export_report.enqueue(tick, "invoices")
        jobs.send_email.options(delay=600).enqueue(f"later{tick}@example.com", "Trial ends soon")
        time.sleep(0.5)


def shoot(url: str, app: Any, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    dead = app.store.list_jobs("integrations", JobState.DEAD, limit=1)
    assert dead, "the demo should have dead-lettered a CRM sync by now"
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(url + "/#/queues")
        expect(page.locator("#queues")).to_be_visible(timeout=15_000)
        page.wait_for_timeout(2500)  # let one more refresh draw the latest samples
        page.screenshot(path=str(out / "dashboard-queues.png"), full_page=True)
        page.goto(f"{url}/#/job?queue=integrations&id={dead[0].id}")
        expect(page.locator("pre.code.error")).to_be_visible(timeout=15_000)
        page.screenshot(path=str(out / "dashboard-job.png"), full_page=True)
        page.goto(url + "/#/dead")
        expect(page.locator("#dead")).to_be_visible(timeout=15_000)
        page.locator("#dead tbody input[type=checkbox]").nth(1).check()
        page.locator("#dead tbody input[type=checkbox]").nth(2).check()
        page.screenshot(path=str(out / "dashboard-dead.png"))
        page.goto(url + "/#/workers")
        expect(page.locator("#workers")).to_be_visible(timeout=15_000)
        page.screenshot(path=str(out / "dashboard-workers.png"), full_page=True)
        page.goto(url + "/#/jobs?queue=exports&state=ready")
        expect(page.locator("#jobs")).to_be_visible(timeout=15_000)
        page.screenshot(path=str(out / "dashboard-jobs.png"))
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
