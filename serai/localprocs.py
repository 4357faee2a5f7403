"""Running ``serai`` commands and long-running Serai processes on this machine, for the
tests and the benchmarks that bring a federation up on loopback.

Long-running processes (``serai ... serve``, the echo provider) announce themselves
with one JSON line per event (``{"event": "registry_listening", ...}``); a
:class:`Process` reads those lines in a thread so a caller can wait for one.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Final

from registry.codec import decode_anchor, decode_configuration
from registry.signing import verify_signed_configuration

__all__ = [
    "SERAI",
    "Process",
    "free_port",
    "serai_command",
    "start",
    "wait_until_published",
]

#: The ``serai`` command line, run with this interpreter.
SERAI: Final = [sys.executable, "-m", "serai.cli"]
#: How long to wait for an event or a publication, in seconds.
_WAIT_S: Final = 90.0
#: Output lines a :class:`Process` keeps for error messages.
_KEEP_LINES: Final = 1000


def serai_command(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run ``serai ARGS`` to completion; its standard output, or an error with stderr."""
    result = subprocess.run(  # noqa: S603  (our own command line)
        [*SERAI, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"serai {' '.join(map(str, args))} failed: {result.stderr}")
    return result.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen *below* the kernel's
    ephemeral range.

    Callers choose a port now and bind it later, in another process (a gateway's peer
    port is registered before the gateway starts). A port from the ephemeral range
    could meanwhile be handed to any socket that binds port 0 or connects out — another
    gateway's metrics port, say — and the later bind would fail. Below the range only
    an explicit choice takes a port, and this process never hands out the same one twice.
    """
    low, _ = _ephemeral_range()
    first = max(_MIN_CHOSEN_PORT, low - _CHOSEN_SPAN)
    for _ in range(_ATTEMPTS):
        port = _RANDOM.randrange(first, low)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # a crowded range: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


_DEFAULT_EPHEMERAL: Final = (32768, 60999)
_MIN_CHOSEN_PORT: Final = 10000
_CHOSEN_SPAN: Final = 12000
_ATTEMPTS: Final = 200
_RANDOM: Final = random.SystemRandom()
_handed_out: set[int] = set()


class Process:
    """A long-running process and the JSON event lines it writes (stderr or stdout)."""

    def __init__(self, argv: list[str], *, events_on_stdout: bool = False) -> None:
        self.process = subprocess.Popen(  # noqa: S603  (argv from the caller)
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if events_on_stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if events_on_stdout else subprocess.PIPE,
            text=True,
        )
        stream = self.process.stdout if events_on_stdout else self.process.stderr
        assert stream is not None  # piped above
        self._stream = stream
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            if len(self.lines) < _KEEP_LINES:
                self.lines.append(line)
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and "event" in event:
                self.events.put(event)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The next event named ``event``; raises when none comes within the wait."""
        deadline = time.monotonic() + _WAIT_S
        while True:
            try:
                item = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {event} event; output: {''.join(self.lines)}") from None
            if item.get("event") == event:
                return item

    def terminate(self) -> int:
        """SIGTERM, then the exit status once the process has stopped."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        """Stop it gracefully if it still runs (SIGKILL after 10 s), and clean up."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL if it still runs (no graceful stop), and clean up."""
        if self.process.poll() is None:
            self.process.kill()
        self._close()

    def _close(self) -> None:
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        self._stream.close()


def start(processes: list[Process], argv: list[str], *, events_on_stdout: bool = False) -> Process:
    """Start ``argv`` as a :class:`Process` and add it to ``processes`` (to stop later)."""
    process = Process(argv, events_on_stdout=events_on_stdout)
    processes.append(process)
    return process


def wait_until_published(anchor_path: Path, gateways: set[str]) -> None:
    """Wait until the registry of the anchor at ``anchor_path`` publishes a verified
    configuration that lists every gateway id in ``gateways``."""
    anchor = decode_anchor(anchor_path.read_bytes())
    deadline = time.monotonic() + _WAIT_S
    while True:
        with urllib.request.urlopen(anchor.download_url, timeout=30) as response:  # noqa: S310  (the anchor's http URL)
            envelope = response.read()
        data = verify_signed_configuration(
            envelope, signing_certificates=anchor.signing_certificates
        )
        listed = {str(g.id) for g in decode_configuration(data).federation.gateways}
        if gateways <= listed:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the registry never published {gateways}")
        time.sleep(0.5)
