"""serai._demoprocs and serai.localprocs: the demo's and the benchmark's processes are never
lost to a signal, and the ports chosen for them are not taken meanwhile."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from serai._demoprocs import interrupts_deferred, run_serai
from serai.localprocs import free_port


def _interrupted_block(reached: list[str]) -> None:
    with interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("the rest of the block ran")


def test_a_signal_inside_the_block_is_delivered_after_it() -> None:
    reached: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _interrupted_block(reached)
    assert reached == ["the rest of the block ran"]


def test_without_a_signal_nothing_is_raised_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts_deferred():
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_run_serai_runs_a_command_to_completion() -> None:
    result = run_serai("--help")
    assert result.returncode == 0
    assert "usage" in result.stdout.lower()


def test_free_ports_are_below_the_ephemeral_range_and_never_repeated() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    for port in ports[:5]:  # and each could be bound
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
