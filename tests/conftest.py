"""Shared fixtures.

``postgres_dsn`` gives a test a fresh, empty PostgreSQL database (see ``tests/pgutil.py``
for the server it uses and when it skips) and drops it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pgutil import fresh_database


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN for a brand-new database, dropped when the test ends."""
    with fresh_database() as dsn:
        yield dsn
