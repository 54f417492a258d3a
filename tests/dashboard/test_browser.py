"""End to end in headless Chromium: the page loads, follows the store, and its buttons work.

Skipped (with the reason) only when no chromium binary is installed; ``.ci/run`` installs
Debian's ``chromium``. Every wait polls a condition with a generous deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from calmq import App
from calmq.dashboard.auth import TokenAuth
from calmq.job import JobState
from tests.dashboard.browser import chromium_path, launch
from tests.dashboard.live import LiveServer, make_dead, wait_until

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="no chromium binary (apt-get install -y chromium)"
)

Serve = Callable[..., LiveServer]
TOKEN = "browser-" + "t" * 24
DEADLINE_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context; any JavaScript error on the page fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield tab
    finally:
        context.close()
    unexpected = [e for e in errors if "401" not in e]  # the refused-login test expects 401s
    assert not unexpected, unexpected


def test_page_follows_queue_depth(sqlite_app: App, serve: Serve, page: Any) -> None:
    from playwright.sync_api import expect

    sqlite_app.enqueue("append", "/dev/null", "a")
    server = serve(sqlite_app, sample_interval=1)
    page.goto(server.url + "/")
    ready = page.locator('#queues tr[data-queue="default"] td[data-state="ready"]')
    expect(ready).to_have_text("1", timeout=DEADLINE_MS)
    sqlite_app.enqueue("append", "/dev/null", "b")
    sqlite_app.tasks["append"].options(queue="sms").enqueue("/dev/null", "c")
    expect(ready).to_have_text("2", timeout=DEADLINE_MS)
    expect(page.locator('#queues tr[data-queue="sms"]')).to_be_visible(timeout=DEADLINE_MS)
    expect(page.locator("figure.chart")).to_have_count(3)

    page.locator('#queues tr[data-queue="sms"] button[data-action="pause"]').click()
    expect(page.locator('#queues tr[data-queue="sms"] .badge')).to_have_text(
        "paused", timeout=DEADLINE_MS
    )
    assert sqlite_app.store.queue_config("sms").paused


def test_replay_dead_job_with_a_click(sqlite_app: App, serve: Serve, page: Any) -> None:
    from playwright.sync_api import expect

    for _ in range(2):
        sqlite_app.enqueue("always_fails", "/dev/null")
    first, second = make_dead(sqlite_app.store, "default"), make_dead(sqlite_app.store, "default")
    server = serve(sqlite_app)
    page.goto(server.url + "/#/dead")
    row = page.locator(f'#dead tr[data-job="{first}"]')
    expect(row).to_be_visible(timeout=DEADLINE_MS)
    row.locator('button[data-action="replay"]').click()
    expect(row).to_have_count(0, timeout=DEADLINE_MS)
    expect(page.locator(f'#dead tr[data-job="{second}"]')).to_be_visible()
    replayed = sqlite_app.store.get_job("default", first)
    assert replayed is not None and replayed.state is JobState.READY


def test_job_detail_shows_arguments_and_traceback(sqlite_app: App, serve: Serve, page: Any) -> None:
    from playwright.sync_api import expect

    job = sqlite_app.enqueue("append", "/tmp/report.csv", "<b>not markup</b>")
    make_dead(sqlite_app.store, "default", error="ValueError: <script>alert(1)</script>")
    server = serve(sqlite_app)
    page.goto(f"{server.url}/#/job?queue=default&id={job.id}")
    expect(page.locator("pre.code").first).to_contain_text("<b>not markup</b>",
                                                           timeout=DEADLINE_MS)  # fmt: skip
    expect(page.locator("pre.code.error")).to_have_text("ValueError: <script>alert(1)</script>")
    expect(page.locator("pre.code").last).to_contain_text("Traceback (most recent call last)")
    assert page.locator("b").count() == 0  # data is text, never markup


def test_refused_without_the_token(sqlite_app: App, serve: Serve, page: Any) -> None:
    from playwright.sync_api import expect

    sqlite_app.enqueue("append", "/dev/null", "a")
    server = serve(sqlite_app, auth=TokenAuth(TOKEN))
    page.goto(server.url + "/")
    wait_until(lambda: page.url.endswith("/login"), what="the redirect to the login page")
    status = page.evaluate("fetch('api/overview').then((r) => r.status)")
    assert status == 401
    page.fill("#token", "wrong-token-" + "w" * 20)
    page.click("button[type=submit]")
    expect(page.locator(".error-text")).to_have_text("That token is not right.",
                                                     timeout=DEADLINE_MS)  # fmt: skip
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    ready = page.locator('#queues tr[data-queue="default"] td[data-state="ready"]')
    expect(ready).to_have_text("1", timeout=DEADLINE_MS)
