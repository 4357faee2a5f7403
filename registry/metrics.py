"""The registry's Prometheus metrics and readiness (DESIGN §7).

:func:`registry_metrics` fills a :class:`~prometheus_client.CollectorRegistry` (the
process's own) with

- ``serai_registry_publications_total{outcome}`` (``ok``, ``failed``);
- gauges read from the last publication at scrape time: the configuration serial,
  its age and the seconds until it expires, the members, subsystems and gateways it
  lists, and the size of the configuration log;
- ``serai_registry_conflog_timestamp_age_seconds``: seconds since the newest
  configuration-log head that has an RFC 3161 token was signed (its ``time``), so it
  grows while the TSA is down and falls back when a token arrives (no sample before the
  first token);
- ``serai_registry_conflog_envelopes{state}``: entries of the configuration log whose
  envelope is ``kept`` whole or was ``pruned`` by retention (the pruned count as the
  retention task last read it, at most an hour old; no sample before);
- ``serai_registry_api_calls_total{method, code}``, counted by
  :class:`ApiCallCounter`, a gRPC interceptor on the management port. ``method`` is a
  method of the management, health or reflection service, else ``other`` (a client
  cannot add label values by calling made-up paths); ``code`` is the gRPC status name.

:func:`readiness_reasons` answers ``/readyz``: ready once a configuration was published,
while the last publication did not fail and the one published has not expired.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from registry.publisher import PublicationLoop, PublishedConfiguration
from serai.metrics import GaugeReading, StateGauges, bounded, seconds_since
from serai.treehead import SignedTreeHead

__all__ = ["ApiCallCounter", "readiness_reasons", "registry_metrics"]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class ApiCallCounter(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in stubs only
    """Counts every unary call of the management port by method and status."""

    def __init__(self, registry: CollectorRegistry, *, methods: Collection[str]) -> None:
        self._methods = frozenset(methods)
        self.calls = Counter(
            "serai_registry_api_calls_total",
            "Calls of the registry's management port, by method and gRPC status.",
            ["method", "code"],
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap the unary handler of the call so that its outcome is counted."""
        handler: Any = await continuation(handler_call_details)  # None for unknown methods
        if handler is None or handler.unary_unary is None:
            return handler  # type: ignore[no-any-return]
        method = bounded(handler_call_details.method, self._methods)
        inner: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary
        calls = self.calls

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                response = await inner(request, context)
            except BaseException:
                code: object = context.code()
                name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                calls.labels(method, name).inc()
                raise
            calls.labels(method, grpc.StatusCode.OK.name).inc()
            return response

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def registry_metrics(
    registry: CollectorRegistry,
    publication: PublicationLoop,
    *,
    clock: Callable[[], dt.datetime] = _utc_now,
    conflog_timestamped: Callable[[], SignedTreeHead | None] = lambda: None,
    conflog_pruned: Callable[[], int | None] = lambda: None,
) -> None:
    """Add the publication counter and the state gauges (module docstring);
    ``conflog_timestamped`` gives the newest time-stamped configuration-log head,
    ``conflog_pruned`` how many entries have their envelope pruned."""

    def current() -> PublishedConfiguration | None:
        return publication.publisher.current

    def field(read: Callable[[PublishedConfiguration], float]) -> Callable[[], GaugeReading]:
        def gauge() -> GaugeReading:
            published = current()
            return None if published is None else read(published)

        return gauge

    gauges = StateGauges(registry)
    gauges.add(
        "serai_registry_publications",
        "Publications of the global configuration since start, by outcome.",
        lambda: [(("ok",), publication.publications), (("failed",), publication.failures)],
        labels=("outcome",),
        counter=True,
    )
    for name, text, read in (
        ("serai_registry_globalconf_serial", "Serial of the configuration last published.",
         field(lambda p: p.serial)),
        ("serai_registry_globalconf_age_seconds",
         "Seconds since the configuration last published was generated.",
         field(lambda p: (clock() - p.generated_at).total_seconds())),
        ("serai_registry_globalconf_expiry_seconds",
         "Seconds until the configuration last published expires (negative: expired).",
         field(lambda p: (p.expires_at - clock()).total_seconds())),
        ("serai_registry_members", "Members in the configuration last published.",
         field(lambda p: p.members)),
        ("serai_registry_subsystems", "Subsystems in the configuration last published.",
         field(lambda p: p.subsystems)),
        ("serai_registry_gateways", "Gateways in the configuration last published.",
         field(lambda p: p.gateways)),
        ("serai_registry_conflog_size", "Configurations in the registry's configuration log.",
         field(lambda p: 0 if p.bundle is None else p.bundle.leaf_index + 1)),
    ):  # fmt: skip
        gauges.add(name, text, read)

    def timestamp_age() -> GaugeReading:
        stamped = conflog_timestamped()
        return seconds_since(None if stamped is None else stamped.head.time, clock())

    gauges.add(
        "serai_registry_conflog_timestamp_age_seconds",
        "Seconds since the newest time-stamped configuration log head was signed.",
        timestamp_age,
    )

    def envelopes() -> GaugeReading:
        published, pruned = current(), conflog_pruned()
        if published is None or published.bundle is None or pruned is None:
            return None
        size = published.bundle.leaf_index + 1
        return [(("kept",), max(0, size - pruned)), (("pruned",), pruned)]

    gauges.add(
        "serai_registry_conflog_envelopes",
        "Configuration log entries whose envelope is kept whole or pruned by retention.",
        envelopes,
        labels=("state",),
    )


def readiness_reasons(
    publication: PublicationLoop, *, clock: Callable[[], dt.datetime] = _utc_now
) -> tuple[str, ...]:
    """Why the registry is not ready (empty when it is)."""
    published = publication.publisher.current
    reasons = []
    if published is None:
        reasons.append("no configuration published yet")
    elif published.expires_at <= clock():
        reasons.append(f"the configuration published (serial {published.serial}) has expired")
    if publication.last_failed:
        reasons.append("the last publication failed (see globalconf_publish_failed)")
    return tuple(reasons)
