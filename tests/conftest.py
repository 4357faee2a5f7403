"""Shared fixtures, and Hypothesis's profile.

``postgres_dsn`` gives a test a fresh, empty PostgreSQL database (see ``tests/pgutil.py``
for the server it uses and when it skips) and drops it afterwards.

With ``SERAI_HYPOTHESIS_PROFILE=ci`` (``.ci/run`` sets it) Hypothesis runs the ``ci``
profile: derandomized, so a CI run draws the same examples for the same code and
its verdict can be reproduced; every other run draws new examples (and keeps those that
failed in ``.hypothesis/``), which is where new defects are found. Either way a failure
prints the ``@reproduce_failure`` blob that replays it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.pgutil import fresh_database

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("SERAI_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN for a brand-new database, dropped when the test ends."""
    with fresh_database() as dsn:
        yield dsn
