"""The demo's processes: long-running services with their output in the work
directory, and ``serai`` commands run to completion (one at a time or side by side).

Every long-running Serai process announces itself with JSON event lines
(``{"event": "gateway_listening", ...}``) and, on SIGTERM, stops gracefully and says
so (``gateway_stopped``). :class:`Service` waits for those lines in the process's log
file, which stays in the work directory for the curious.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from serai.errors import SeraiError

__all__ = [
    "SERAI",
    "Service",
    "count_event",
    "interrupts_deferred",
    "must",
    "run_serai",
    "run_serai_parallel",
    "signals_ignored",
    "stop_all",
    "stop_services",
    "termination_as_exit",
]

#: The ``serai`` command line, run with this interpreter.
SERAI: Final = [sys.executable, "-m", "serai.cli"]
#: How long to wait for a process to report an event (generous: a busy 2-core machine).
READY_S: Final = 60.0
#: How long a process may take to stop after SIGTERM before it is killed.
_STOP_S: Final = 15.0
#: A ``serai`` command that takes longer than this is a failure.
_COMMAND_S: Final = 120.0


@dataclass
class Service:
    """A long-running process of the demo, writing its output to ``log``."""

    name: str
    argv: list[str]
    log: Path
    stopped_event: str
    process: subprocess.Popen[bytes] = field(init=False)
    _events: list[dict[str, Any]] = field(init=False, default_factory=list)
    _offset: int = field(init=False, default=0)
    _partial: bytes = field(init=False, default=b"")

    @classmethod
    def start(cls, name: str, argv: Sequence[str], *, log: Path, stopped_event: str) -> Service:
        """Start ``argv`` (stdout and stderr to ``log``)."""
        service = cls(name=name, argv=list(argv), log=log, stopped_event=stopped_event)
        with log.open("wb") as out:
            service.process = subprocess.Popen(  # noqa: S603  (our own programs)
                service.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return service

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for(
        self,
        event: str,
        *,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout_s: float = READY_S,
    ) -> dict[str, Any]:
        """The first event line named ``event`` for which ``where`` holds, waiting for it;
        raises :class:`SeraiError` (with the end of the log) if none comes."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.find(event, where=where)
            if found is not None:
                return found
            if not self.running() or time.monotonic() > deadline:
                state = (
                    f"exited with {self.process.returncode}"
                    if not self.running()
                    else f"nothing within {timeout_s:.0f} s"
                )
                tail = self.log.read_text(errors="replace").strip()[-800:]
                raise SeraiError(f"{self.name}: no {event} ({state}); {self.log}:\n{tail}")
            time.sleep(0.05)

    def find(
        self, event: str, *, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any] | None:
        """The first event line so far named ``event`` for which ``where`` holds."""
        self._read_new_lines()
        return next((e for e in self._events if e["event"] == event and where(e)), None)

    def terminate(self) -> None:
        """Send SIGTERM (if it still runs)."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> tuple[int, bool]:
        """Wait for the exit (SIGKILL after a while); the exit status and whether the
        process reported its ``stopped_event``."""
        try:
            status = self.process.wait(timeout=_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        return status, self.find(self.stopped_event) is not None

    def _read_new_lines(self) -> None:
        with self.log.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and isinstance(event.get("event"), str):
                    self._events.append(event)


def stop_services(services: Sequence[Service], say: Callable[[str], None]) -> None:
    """Stop every service (SIGTERM to all, then SIGKILL to whoever lingers); a second
    Ctrl-C or SIGTERM meanwhile does not cut the clean-up short."""
    if not services:
        return
    say(f"stopping {len(services)} processes")
    with signals_ignored():
        stop_all(services)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP meanwhile (in the main thread; elsewhere a
    signal handler cannot be set, and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), signal.SIG_IGN):
        yield


@contextlib.contextmanager
def termination_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C does: the clean-up runs, and the
    process exits with 128 + the signal number."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    with _handling((signal.SIGTERM, signal.SIGHUP), leave):
        yield


def count_event(service: Service, event: str) -> int:
    """How many event lines named ``event`` the service has written so far."""
    needle = f'"event": "{event}"'
    with service.log.open(errors="replace") as log:
        return sum(1 for line in log if needle in line)


def stop_all(services: Sequence[Service]) -> list[tuple[Service, int, bool]]:
    """SIGTERM every service at once, then wait for each: (service, status, reported)."""
    for service in services:
        service.terminate()
    return [(s, *s.wait_stopped()) for s in services]


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a child is started and recorded, then deliver them.

    A Ctrl-C that lands while ``subprocess.Popen`` forks and execs interrupts it after
    the child exists but before anyone holds its pid, and nothing would ever stop that
    child. Within this block the signals are only noted; on leaving it they are raised
    again for the handlers in force, once the caller has recorded the child (so the
    clean-up that follows stops it). Only the main thread installs handlers; elsewhere
    this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def note(signum: int, _frame: object) -> None:
        pending.append(signum)

    try:
        with _handling((signal.SIGINT, signal.SIGTERM), note):
            yield
    finally:
        for number in dict.fromkeys(pending):
            signal.raise_signal(number)


@contextlib.contextmanager
def _handling(signals: Sequence[int], handler: Any) -> Iterator[None]:
    """``handler`` for ``signals`` meanwhile; the previous handlers back afterwards."""
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, former in previous.items():
            signal.signal(signum, former)


def run_serai(
    *argv: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``serai ARGV`` to completion, as an operator would type it; an interruption
    (Ctrl-C, SIGTERM) kills the command before it propagates."""
    args = [*SERAI, *map(str, argv)]
    process: subprocess.Popen[str] | None = None
    try:
        with interrupts_deferred():  # a signal held here is raised once `process` is set
            process = subprocess.Popen(  # noqa: S603  (our own console entry point)
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        try:
            out, err = process.communicate(timeout=_COMMAND_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise SeraiError(
                f"serai {' '.join(args[len(SERAI) :])} took over {_COMMAND_S:g} s"
            ) from None
    except BaseException:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        raise
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def run_serai_parallel(
    commands: Sequence[Sequence[str | Path]], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``serai`` commands side by side; their results, in order."""
    running: list[subprocess.Popen[str]] = []
    try:
        for argv in commands:
            with interrupts_deferred():
                running.append(
                    subprocess.Popen(  # noqa: S603  (our own console entry point)
                        [*SERAI, *map(str, argv)],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=env,
                    )
                )
        results = []
        for argv, proc in zip(commands, running, strict=True):
            try:
                out, err = proc.communicate(timeout=_COMMAND_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            results.append(
                subprocess.CompletedProcess([*SERAI, *map(str, argv)], proc.returncode, out, err)
            )
    except BaseException:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise
    return results


def must(result: subprocess.CompletedProcess[str]) -> str:
    """The standard output of a command that must succeed; else an error naming it."""
    if result.returncode != 0:
        command = " ".join(str(a) for a in result.args[len(SERAI) :])
        raise SeraiError(f"serai {command} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout
