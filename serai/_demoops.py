"""The demo's look at operations: each gateway's ``/readyz`` and the refusals its
Prometheus ``/metrics`` counted (docs/operations.md)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Final

from serai._demofederation import Federation
from serai._demoreport import Report

__all__ = ["check_operations"]

_TIMEOUT_S: Final = 10.0
#: One sample of the refusals counter: its labels and value.
_REFUSALS: Final = re.compile(r"^serai_gateway_refusals_total\{([^}]*)\} ([0-9.e+]+)$", re.M)
#: Which refusal each gateway must have counted: the tax agency's gateway the method it
#: did not grant, the Ministry's (as provider) the replayed message id.
_EXPECTED: Final = {"stc": "access_denied", "minjust": "replay_detected"}


def check_operations(federation: Federation, report: Report) -> None:
    """Each gateway is ready, and counted the refusals of the scenario."""
    for key, gw in federation.gateways.items():
        if not gw.metrics:
            report.note(f"{gw.agency.gateway_id}: no operations port")
            continue
        ready, _ = _get(f"http://{gw.metrics}/readyz")
        status, text = _get(f"http://{gw.metrics}/metrics")
        counted: dict[str, float] = {}
        for labels, value in _REFUSALS.findall(text):
            code = re.search(r'code="([^"]*)"', labels)
            if code is not None:
                counted[code.group(1)] = counted.get(code.group(1), 0.0) + float(value)
        wanted = _EXPECTED.get(key)
        summary = ", ".join(f"{c} {n:.0f}" for c, n in sorted(counted.items())) or "none"
        report.check(
            ready == 200 and status == 200 and (wanted is None or counted.get(wanted, 0) >= 1),
            f"{gw.agency.gateway_id}: /readyz {ready or 'unreachable'}; http://{gw.metrics}/"
            f"metrics counts its refusals: {summary}",
        )


def _get(url: str) -> tuple[int, str]:
    """The status and text of a GET; ``(0, "")`` when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310  (http on loopback)
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""
