"""Conformance tests, close: closing twice and the Store protocol itself.

Part of the store suite, and re-exported by :mod:`calmq.testing.conformance`; the tests
need its ``store`` and ``store_settings`` fixtures.
"""

from __future__ import annotations

from calmq.stores.base import Store

__all__ = ["TestClose"]


class TestClose:
    """``close`` is idempotent."""

    def test_close_twice(self, store: Store) -> None:
        store.close()
        store.close()

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.capabilities, frozenset)
        assert isinstance(store.display_url, str)
