"""Shared by store fixtures: open a store from settings, close it after the test."""

from __future__ import annotations

from collections.abc import Iterator

from calmq.settings import Settings
from calmq.stores import open_store
from calmq.stores.base import Store


def opened_store(settings: Settings) -> Iterator[Store]:
    """A store for a fixture to yield, closed after the test."""
    store = open_store(settings.url, settings)
    try:
        yield store
    finally:
        store.close()
