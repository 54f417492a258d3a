"""Run the store conformance suite against every bundled store.

The ``store`` and ``store_settings`` fixtures come from ``tests/conftest.py`` and are
parametrised over redis, sqlite-file and sqlite-memory; select one with ``-k``.
"""

from calmq.testing.conformance import *  # noqa: F403
