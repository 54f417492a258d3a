"""The jobs of the demo platform: SMS, e-mail, contracts, CRM sync and exports.

Modelled on the platform calmq exists for: web requests and a workflow-automation feature
spawn many small jobs that talk to outside services. Some are slow, some fail now and then
and are retried, one CRM account is broken for good and ends in the dead-letter store.
Delays are shortened so the whole demo takes seconds.
"""

from __future__ import annotations

import asyncio
import random
import time

from calmq import App, Backoff, Retry

# The store comes from CALMQ_URL (``calmq demo`` sets it); the embedded SQLite file otherwise.
app = App()
quick_retry = Backoff(base=0.2, cap=1.0)


class ProviderError(Exception):
    """An outside service answered with an error."""


@app.task(queue="sms", retries=5, timeout=5, priority=5, backoff=quick_retry)
async def send_sms(to: str, body: str) -> None:
    """Hand an SMS to the provider; about 1 in 20 calls hits a rate limit and is retried."""
    await asyncio.sleep(random.uniform(0.002, 0.010))  # noqa: S311
    if random.random() < 0.05:  # noqa: S311
        raise Retry(delay=0.3, reason=f"SMS provider rate-limited the message to {to}")


@app.task(queue="email", retries=3, timeout=5, backoff=quick_retry)
async def send_email(to: str, subject: str) -> None:
    """Send an e-mail through the mail relay."""
    await asyncio.sleep(random.uniform(0.005, 0.020))  # noqa: S311


@app.task(queue="documents", retries=2, timeout=10, backoff=quick_retry)
def generate_contract(account_id: int, template: str) -> str:
    """Render a contract PDF: slow and blocking, so it runs on a worker thread."""
    time.sleep(random.uniform(0.03, 0.12))  # noqa: S311
    return f"contracts/{account_id}/{template}.pdf"


@app.task(queue="integrations", retries=3, timeout=5, backoff=quick_retry)
async def sync_crm(account_id: int) -> None:
    """Push an account to the CRM; the CRM flakes 1 time in 10, and account 13 never works."""
    await asyncio.sleep(random.uniform(0.010, 0.030))  # noqa: S311
    if account_id % 100 == 13:
        raise ProviderError(f"CRM rejected account {account_id}: invalid billing address")
    if random.random() < 0.10:  # noqa: S311
        raise ProviderError("CRM answered 503 Service Unavailable")


@app.task(queue="exports", retries=1, timeout=20)
def export_report(account_id: int, kind: str) -> None:
    """Build a CSV export: the slowest job of all."""
    time.sleep(random.uniform(0.1, 0.3))  # noqa: S311
