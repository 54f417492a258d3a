"""The store conformance suite: the contract of :class:`calmq.stores.base.Store` as tests.

Every store calmq ships runs this suite, and so can a third-party store. The tests are
grouped by area, one ``Test...`` class per area, and need two pytest fixtures:

* ``store``: a fresh, empty store implementing :class:`~calmq.stores.base.Store`, closed by
  the fixture after the test;
* ``store_settings``: the :class:`~calmq.settings.Settings` that store was opened with (the
  suite reads ``completed_ttl`` from it).

To run it against your store, provide both fixtures (in the test module or a
``conftest.py``) and star-import this module so pytest collects the classes::

    # tests/test_my_store_conformance.py
    from collections.abc import Iterator

    import pytest

    from calmq.settings import Settings
    from calmq.stores.base import Store
    from calmq.testing.conformance import *  # noqa: F403

    from mystore import MyStore


    @pytest.fixture
    def store_settings() -> Settings:
        return Settings(url="mystore://localhost")


    @pytest.fixture
    def store(store_settings: Settings) -> Iterator[Store]:
        opened = MyStore(store_settings)
        try:
            yield opened
        finally:
            opened.close()

The areas live in one module each (``enqueue``, ``claim``, ``leases``, ``complete_fail``,
``release``, ``dead_letters``, ``admin``, ``wait``, ``clock``, ``concurrency``, ``close``,
``limits``, ``workers``), their shared helpers in ``helpers``; this package re-exports every
``Test...`` class (``__all__``) and every helper.

Parametrise ``store_settings`` to run the whole suite once per configuration. The lease
tests wait for short leases (50-100 ms) to expire on the store's clock; everything else
finishes in well under a second per test. Nothing here sleeps blindly: waits are polls with
a generous deadline, so a loaded machine slows the suite down but does not fail it.
"""

from __future__ import annotations

from calmq.testing.conformance.admin import TestAdmin
from calmq.testing.conformance.claim import TestClaim
from calmq.testing.conformance.clock import TestClock
from calmq.testing.conformance.close import TestClose
from calmq.testing.conformance.complete_fail import TestCompleteAndFail
from calmq.testing.conformance.concurrency import TestConcurrency
from calmq.testing.conformance.dead_letters import TestDeadLetters
from calmq.testing.conformance.dead_letters import make_dead as make_dead
from calmq.testing.conformance.enqueue import TestEnqueue

# Every helper too (helpers.__all__), for tests of other stores; not in __all__ below.
from calmq.testing.conformance.helpers import *  # noqa: F403
from calmq.testing.conformance.leases import TestLeases
from calmq.testing.conformance.limits import (
    TestBoundedQueue,
    TestCancel,
    TestConcurrencyLimit,
    TestFairness,
    TestPause,
    TestRateLimit,
    TestThrottle,
    TestUnique,
)
from calmq.testing.conformance.release import TestRelease
from calmq.testing.conformance.wait import TestWait, TestWaitThenClaim
from calmq.testing.conformance.workers import TestWorkerRegistry

# Only the test classes: a star import must collect exactly these and nothing else.
__all__ = [
    "TestAdmin",
    "TestBoundedQueue",
    "TestCancel",
    "TestClaim",
    "TestClock",
    "TestClose",
    "TestCompleteAndFail",
    "TestConcurrency",
    "TestConcurrencyLimit",
    "TestDeadLetters",
    "TestEnqueue",
    "TestFairness",
    "TestLeases",
    "TestPause",
    "TestRateLimit",
    "TestRelease",
    "TestThrottle",
    "TestUnique",
    "TestWait",
    "TestWaitThenClaim",
    "TestWorkerRegistry",
]
