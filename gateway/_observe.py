"""What one exchange reports to the operations side: :class:`ExchangeObservation`.

The consumer and provider sides fill an observation as they learn things (client,
service, method, message id, the time of each phase); :func:`gateway.wire.refusing`
sets its outcome; the :class:`ExchangeObserver` of the gateway (``gateway.metrics``)
turns it into metrics and a log line when the exchange ends. The observation holds no
body, no key and no user id.
"""

from __future__ import annotations

import time
from typing import Final, Protocol

import grpc

from serai.errors import ErrorCode
from serai.identifiers import SubsystemId

__all__ = [
    "CODE_OK",
    "CODE_PROVIDER_STATUS",
    "NO_OBSERVER",
    "ExchangeObservation",
    "ExchangeObserver",
]

#: Outcome code of an exchange that succeeded.
CODE_OK: Final = "ok"
#: Outcome code of an exchange where the provider IS answered with its own non-OK
#: status (signed, logged and relayed like a success).
CODE_PROVIDER_STATUS: Final = "provider_status"
_KNOWN_CODES: Final = frozenset(c.value for c in ErrorCode)


class ExchangeObservation:
    """One exchange as seen by one side of one gateway (module docstring)."""

    __slots__ = (
        "client",
        "code",
        "message_id",
        "method",
        "origin",
        "ours",
        "phases",
        "service",
        "side",
        "started",
        "status",
    )

    def __init__(self, side: str) -> None:
        self.side = side
        self.started = time.perf_counter()
        self.client: SubsystemId | None = None
        self.service: SubsystemId | None = None
        self.method: str | None = None
        self.message_id: str | None = None
        self.code = CODE_OK
        self.status = grpc.StatusCode.OK.name
        self.origin = ""
        #: Whether this gateway refused the exchange (not a peer or the provider).
        self.ours = False
        #: Seconds spent in each phase: signing, verification, provider, peer.
        self.phases: dict[str, float] = {}

    def add(self, phase: str, since: float) -> None:
        """Record that ``phase`` ran from ``since`` (a :func:`time.perf_counter`) until now."""
        self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - since

    def refused(self, *, code: str, origin: str, status: grpc.StatusCode) -> None:
        """The exchange ended with a refusal of ours."""
        self.code, self.origin, self.status = code, origin, status.name
        self.ours = True

    def relayed(self, *, status: grpc.StatusCode, trailer: str | None) -> None:
        """The exchange ended with a status that is not ours: a peer gateway's refusal
        (``trailer`` is its ``x-road-error``, ``origin:code:message``) or the provider's
        own status. A code outside Serai's set is counted as ``other``."""
        self.status = status.name
        if trailer is None:
            self.code, self.origin = CODE_PROVIDER_STATUS, "provider"
            return
        origin, _, rest = trailer.partition(":")
        code = rest.partition(":")[0]
        self.code = code if code in _KNOWN_CODES else "other"
        self.origin = origin if origin in {"client", "gateway", "provider"} else "other"


class ExchangeObserver(Protocol):
    """Receives every exchange of a gateway (``gateway.metrics.GatewayMetrics``)."""

    def begin(self, side: str) -> ExchangeObservation:
        """A new exchange on ``side`` (``consumer`` or ``provider``) starts."""
        ...

    def finish(self, observation: ExchangeObservation) -> None:
        """The exchange ended (successfully or not); must not raise."""
        ...


class _NoObserver:
    def begin(self, side: str) -> ExchangeObservation:
        return ExchangeObservation(side)

    def finish(self, observation: ExchangeObservation) -> None:
        return None


#: The observer of a gateway that reports nothing (tests, tools).
NO_OBSERVER: Final[ExchangeObserver] = _NoObserver()
