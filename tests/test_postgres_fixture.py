"""The PostgreSQL fixture gives each test its own real, empty database."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.postgres


def test_fresh_database_is_empty_and_writable(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'one')")
        assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("one",)


def test_each_test_gets_a_different_database(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        assert str(row[0]).startswith("serai_test_")
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)
