"""serai._demoprocs: processes of the demo and the benchmark are never lost to a signal."""

from __future__ import annotations

import os
import signal

import pytest

from serai._demoprocs import interrupts_deferred, run_serai


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
