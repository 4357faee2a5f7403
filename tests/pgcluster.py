"""A private PostgreSQL cluster for tests that stop and restart the server.

The machine's shared server (``tests/pgutil.py``) must never be restarted by a test:
other tests use it. :func:`private_cluster` makes a throw-away cluster with the
server's own programs (``initdb``, ``pg_ctl``) in a fresh directory, on a free
loopback port, and always stops it and removes its files on exit, whatever happened.

PostgreSQL refuses to run as root, so under root the programs run as the ``postgres``
user (``runuser -u postgres --``) in a directory that user owns (created outside
pytest's per-user temporary tree, which other users cannot enter). Without the
programs, or as root without a ``postgres`` user, the test skips with the reason,
unless ``SERAI_REQUIRE_POSTGRES=1``, where it fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import psycopg
import pytest
from psycopg import sql

from serai.localprocs import free_port
from tests.pgutil import postgres_required

__all__ = ["PrivateCluster", "private_cluster"]

#: How long pg_ctl may wait for the server to start or stop.
_PG_CTL_WAIT_S: Final = 120
_SUPERUSER: Final = "postgres"


def _bin_dir() -> Path | None:
    """The newest installed server's programs (Debian layout), or those on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _unavailable(reason: str) -> None:
    if postgres_required():
        pytest.fail(f"SERAI_REQUIRE_POSTGRES=1 but no private PostgreSQL cluster: {reason}")
    pytest.skip(f"no private PostgreSQL cluster: {reason}")


@dataclass
class PrivateCluster:
    """A running private cluster (see the module docstring)."""

    bin_dir: Path
    root: Path  # owned by the server's user: data/, server.log, the socket
    port: int
    as_postgres: bool  # run the programs as the postgres user (we are root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> str:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", _SUPERUSER, "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=_PG_CTL_WAIT_S + 30,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"\n{self.server_log_tail()}"
            )
        return result.stdout

    def server_log_tail(self) -> str:
        try:
            return self.server_log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.server_log),
            "-w", "-t", str(_PG_CTL_WAIT_S), *extra,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._pg_ctl("start", "-o", options)

    def restart(self, mode: Literal["smart", "fast", "immediate"]) -> None:
        """``pg_ctl restart -m MODE``: stop (``immediate``: no shutdown checkpoint, a
        crash as far as the database is concerned), then start with the same options;
        returns once the server accepts connections."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, background workers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [postmaster]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == postmaster:
                found.append(int(entry.name))
        return found

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the server stopped (SIGSTOP) inside the block, resumed
        (SIGCONT) on leaving it whatever happens: connections stay open and nothing
        answers, as across a network partition."""
        pids = self.pids()
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def create_database(self, name: str) -> str:
        """A new database ``name``; its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=30) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A fresh cluster, started; stopped (immediately) and removed on exit."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        _unavailable("initdb and pg_ctl are not installed")
        raise AssertionError("unreachable")  # pragma: no cover
    as_postgres = os.geteuid() == 0
    owner = None
    if as_postgres:
        try:
            owner = pwd.getpwnam(_SUPERUSER)
        except KeyError:
            _unavailable("running as root and there is no postgres user to run the server")
    root = Path(tempfile.mkdtemp(prefix="serai-pgcluster-"))
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        root.chmod(0o700)
        cluster = PrivateCluster(
            bin_dir=bin_dir, root=root, port=free_port(), as_postgres=as_postgres
        )
        cluster._run(
            "initdb", "-D", str(cluster.data), "-A", "trust", "-U", _SUPERUSER,
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    cluster.stop("immediate")
            _kill_leftover_postmaster(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _kill_leftover_postmaster(cluster: PrivateCluster) -> None:
    """If pg_ctl could not stop the server, SIGKILL the postmaster this cluster started
    (its pid is the first line of ``postmaster.pid``); its backends exit with it."""
    pid_file = cluster.data / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
