"""Headless Chromium for dashboard tests and screenshots: Debian's ``chromium`` binary driven
by Playwright for Python (never ``playwright install``: nothing is downloaded)."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium_path() -> str | None:
    """The chromium binary on the PATH (Debian: ``apt-get install chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright: Any) -> Any:
    """A headless browser on the system chromium."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
