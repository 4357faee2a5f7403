"""Checks of a live process's operations port, shared by the process tests.

:func:`scrape` fetches ``/metrics`` (and checks ``/healthz``); :func:`promtool_check`
runs ``promtool check metrics`` on the text when promtool is installed. Under CI (the
environment variable ``CI`` set, or ``SERAI_REQUIRE_PROMTOOL=1`` as ``.ci/run`` exports)
a missing promtool is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

__all__ = [
    "fetch",
    "metric_names",
    "promtool",
    "promtool_check",
    "sample",
    "scrape",
]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def promtool() -> str:
    """The promtool command; skips the test when it is missing outside CI, fails under CI."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    if os.environ.get("CI") or os.environ.get("SERAI_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is required under CI (.ci/run installs Debian's prometheus)")
    pytest.skip("promtool is not installed (apt-get install prometheus)")


def fetch(address: str, path: str) -> tuple[int, str]:
    """GET ``http://address/path``: status and body."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(address: str) -> str:
    """``/metrics`` of ``address`` (``/healthz`` must answer ok)."""
    assert fetch(address, "/healthz") == (200, "ok\n")
    status, text = fetch(address, "/metrics")
    assert status == 200, text
    return text


def promtool_check(text: str, tmp_path: Path) -> None:
    """``promtool check metrics`` passes on ``text`` (no lint problem at all)."""
    command = promtool()
    result = subprocess.run(
        [command, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr


def metric_names(text: str) -> set[str]:
    """Every sample name in an exposition (``_bucket``/``_sum``/``_count`` included)."""
    names = set()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            names.add(match.group(1))
    return names


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``, if any."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None
