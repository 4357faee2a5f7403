"""Fresh PostgreSQL databases for tests, on the server named by ``SERAI_TEST_POSTGRES_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``).

Without a reachable server a test that asks for one skips with the reason, unless
``SERAI_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    """The DSN of the server's administrative database."""
    return os.environ.get("SERAI_TEST_POSTGRES_DSN", DEFAULT_ADMIN_DSN)


def postgres_required() -> bool:
    """Whether a missing server fails the test instead of skipping it."""
    return os.environ.get("SERAI_REQUIRE_POSTGRES", "") not in ("", "0")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A DSN for a brand-new, empty database, dropped on exit."""
    admin = admin_dsn()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {admin!r}: {exc}".strip()
        if postgres_required():
            pytest.fail(f"SERAI_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    name = f"serai_test_{secrets.token_hex(6)}"
    with conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(admin).items() if v is not None}
            params["dbname"] = name
            yield make_conninfo("", **params)
        finally:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
