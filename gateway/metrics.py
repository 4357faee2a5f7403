"""A gateway's Prometheus metrics and its per-exchange log line (DESIGN §7).

:class:`GatewayMetrics` owns the gateway's :class:`~prometheus_client.CollectorRegistry`
(passed in, never the global default) and is the :class:`~gateway._observe.ExchangeObserver`
of both sides of the exchange. :func:`add_state_gauges` adds the gauges read from the
running gateway's state at scrape time. ``docs/operations.md`` lists every metric.

**Bounded labels.** A label value is either from a set the federation's size bounds, or
the fixed value ``other``:

- ``client`` and ``service`` are subsystem ids of the global configuration in force or
  of this gateway's settings (an unparsable or unknown id is ``other``);
- ``method`` is a method path only when the pair (provider subsystem, method) is known:
  a method-level access rule of this gateway, or a method of the provider's service
  descriptor in the global configuration, or a method the gateways answer themselves
  (``serai.meta.v1.Meta``, server reflection); otherwise ``other`` (a whole-service grant
  lets a client call any method name, so a successful call does not make it known);
- ``code`` is ``ok``, ``provider_status`` (the provider's own non-OK status) or one of
  Serai's error codes (a code in a peer's trailer that is not one of ours is ``other``);
  ``status`` is a gRPC status name.

Message ids and user ids never become labels. The per-exchange JSON line carries the
message id (so an operator can find the records in the message log) but never a body,
a key or the user id (``x-road-user-id`` is personal data; the message log keeps it,
inside the signed header, for auditors).

**Cost.** :meth:`GatewayMetrics.finish` runs once per exchange on the event loop: a
few dictionary lookups (known methods are cached per configuration serial and access
policy generation) and counter updates, whose locks are never held across an ``await``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Final

from cryptography import x509
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway._observe import ExchangeObservation
from gateway._settings import ConfigurationSource, GatewaySettings, PolicySource
from gateway.acl import AccessPolicy
from gateway.meta import META_METHODS
from gateway.reflection import REFLECTION_METHODS
from registry.snapshot import ConfigurationSnapshot
from serai.cliutil import log_event
from serai.errors import SeraiError
from serai.identifiers import SubsystemId
from serai.metrics import LATENCY_BUCKETS_S, OTHER, GaugeReading, StateGauges, bounded

__all__ = ["CertificateInUse", "GatewayMetrics", "GatewayState", "add_state_gauges"]

_SIDES: Final = ("consumer", "provider")
#: Methods the gateways answer themselves (metaservices, reflection): a fixed set.
_GATEWAY_METHODS: Final = META_METHODS | REFLECTION_METHODS
#: Longest method path or message id written to an exchange log line.
_MAX_LOGGED_CHARS: Final = 256


class GatewayMetrics:
    """Counters and histograms of the exchanges, and their log lines (module docstring)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        settings: GatewaySettings,
        configuration: ConfigurationSource,
        policies: PolicySource,
        exchange_log_lines: bool = True,
    ) -> None:
        self.registry = registry
        self._settings = settings
        self._configuration = configuration
        self._policies = policies
        self._log_lines = exchange_log_lines
        own = [str(c.subsystem) for c in settings.clients]
        own += [str(p.subsystem) for p in settings.providers]
        self._own = frozenset(own)
        self._descriptor_methods: dict[SubsystemId, frozenset[str]] = {}
        self._descriptor_serial = -1
        self._rule_methods: dict[SubsystemId, frozenset[str]] = {}
        self._rule_policy: AccessPolicy | None = None

        self.exchanges = Counter(
            "serai_gateway_exchanges_total",
            "Exchanges handled, by side, client and provider subsystem, method and outcome.",
            ["side", "client", "service", "method", "code", "status"],
            registry=registry,
        )
        self.refusals = Counter(
            "serai_gateway_refusals_total",
            "Exchanges this gateway refused, by side, error code and origin.",
            ["side", "code", "origin"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "serai_gateway_exchanges_in_flight",
            "Exchanges being handled now.",
            ["side"],
            registry=registry,
        )
        self.duration = Histogram(
            "serai_gateway_exchange_duration_seconds",
            "Time from receiving an exchange to answering it.",
            ["side", "service"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._phases = {
            phase: Histogram(
                f"serai_gateway_{phase}_duration_seconds",
                text,
                ["side"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            )
            for phase, text in (
                ("signing", "Time to sign a request or response header."),
                ("verification", "Time to verify a signed header, its chain and OCSP response."),
                ("provider", "Time the provider information system took (provider side)."),
                ("peer", "Round trip to the provider's gateway (consumer side)."),
            )
        }
        self.log_commit = Histogram(
            "serai_gateway_log_commit_duration_seconds",
            "Time to commit a record to the message log, by record kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.log_commit_failures = Counter(
            "serai_gateway_log_commit_failures_total",
            "Records the message log could not commit, by record kind.",
            ["kind"],
            registry=registry,
        )
        for side in _SIDES:
            self.in_flight.labels(side)
            for phase in self._phases.values():
                phase.labels(side)

    # -- ExchangeObserver ---------------------------------------------------------------------

    def begin(self, side: str) -> ExchangeObservation:
        """Count an exchange in flight on ``side``."""
        self.in_flight.labels(side).inc()
        return ExchangeObservation(side)

    def finish(self, observation: ExchangeObservation) -> None:
        """Count the exchange, observe its durations, write its log line. Never raises."""
        try:
            self._finish(observation)
        except Exception as exc:  # noqa: BLE001  (metrics never fail an exchange)
            log_event("metrics_failed", error=f"{type(exc).__name__}: {exc}")

    def _finish(self, obs: ExchangeObservation) -> None:
        elapsed = time.perf_counter() - obs.started
        side = obs.side
        self.in_flight.labels(side).dec()
        snapshot = self._snapshot()
        client = self._subsystem_label(obs.client, snapshot)
        service = self._subsystem_label(obs.service, snapshot)
        method = self._method_label(obs.service, obs.method, snapshot)
        self.exchanges.labels(side, client, service, method, obs.code, obs.status).inc()
        if obs.ours:
            self.refusals.labels(side, obs.code, obs.origin).inc()
        self.duration.labels(side, service).observe(elapsed)
        for phase, seconds in obs.phases.items():
            histogram = self._phases.get(phase)
            if histogram is not None:
                histogram.labels(side).observe(seconds)
        if self._log_lines:
            log_event(
                "exchange",
                side=side,
                message_id=_loggable(obs.message_id),
                client=None if obs.client is None else str(obs.client),
                service=None if obs.service is None else str(obs.service),
                method=_loggable(obs.method),
                code=obs.code,
                status=obs.status,
                duration_ms=round(elapsed * 1000, 3),
                **{f"{p}_ms": round(s * 1000, 3) for p, s in obs.phases.items()},
            )

    def observe_commit(self, kind: str, seconds: float, *, ok: bool) -> None:
        """A message-log commit of a record of ``kind`` took ``seconds``."""
        self.log_commit.labels(kind).observe(seconds)
        if not ok:
            self.log_commit_failures.labels(kind).inc()

    # -- bounded labels --------------------------------------------------------------------------

    def _snapshot(self) -> ConfigurationSnapshot | None:
        try:
            return self._configuration.current()
        except SeraiError:
            return None

    def _subsystem_label(
        self, subsystem: SubsystemId | None, snapshot: ConfigurationSnapshot | None
    ) -> str:
        if subsystem is None:
            return OTHER
        text = str(subsystem)
        if text in self._own or (snapshot is not None and snapshot.has_subsystem(subsystem)):
            return text
        return OTHER

    def _method_label(
        self,
        provider: SubsystemId | None,
        method: str | None,
        snapshot: ConfigurationSnapshot | None,
    ) -> str:
        if method in _GATEWAY_METHODS:
            return method
        if provider is None or method is None:
            return OTHER
        if method in self._methods_of_rules(provider):
            return method
        if snapshot is not None and method in self._methods_of_descriptor(provider, snapshot):
            return method
        return OTHER

    def _methods_of_rules(self, provider: SubsystemId) -> frozenset[str]:
        policy = self._policies.policy()
        if policy is not self._rule_policy:
            self._rule_policy, self._rule_methods = policy, {}
        known = self._rule_methods.get(provider)
        if known is None:
            known = frozenset(
                str(rule.target)
                for rule in policy.rules_for(provider)
                if not rule.target.is_whole_service
            )
            self._rule_methods[provider] = known
        return known

    def _methods_of_descriptor(
        self, provider: SubsystemId, snapshot: ConfigurationSnapshot
    ) -> frozenset[str]:
        if snapshot.serial != self._descriptor_serial:
            self._descriptor_serial, self._descriptor_methods = snapshot.serial, {}
        known = self._descriptor_methods.get(provider)
        if known is None:
            known = _descriptor_methods(snapshot.service_descriptor(provider))
            self._descriptor_methods[provider] = known
        return known


def _descriptor_methods(data: bytes | None) -> frozenset[str]:
    """The method paths a FileDescriptorSet declares (empty when none or unreadable)."""
    if not data:
        return frozenset()
    try:
        files = FileDescriptorSet.FromString(data).file
    except DecodeError:
        return frozenset()
    paths = set()
    for file in files:
        prefix = f"{file.package}." if file.package else ""
        for service in file.service:
            for method in service.method:
                paths.add(f"/{prefix}{service.name}/{method.name}")
    return frozenset(paths)


def _loggable(text: str | None) -> str | None:
    if text is None:
        return None
    text = text[:_MAX_LOGGED_CHARS]
    return text if text.isascii() and text.isprintable() else ascii(text)[1:-1]


# -- gauges read from state --------------------------------------------------------------------


class CertificateInUse:
    """A certificate whose expiry is watched, by role (``auth``, ``signing``, ``log_signing``)."""

    __slots__ = ("certificate", "role")

    def __init__(self, role: str, certificate: x509.Certificate) -> None:
        self.role = role
        self.certificate = certificate


class GatewayState:
    """Where the state gauges read from (each a cheap callable or attribute)."""

    def __init__(
        self,
        *,
        globalconf_status: Callable[[], object],
        log_records: Callable[[], int],
        scheduler: object,
        overdue_after_s: float,
        certificates: Sequence[CertificateInUse],
        ocsp_this_update: Callable[[], Mapping[str, dt.datetime]],
        acl_generation: Callable[[], int],
        ready: Callable[[], bool],
        clock: Callable[[], dt.datetime],
        peer_ocsp_this_update: Callable[[], Mapping[str, dt.datetime]] = dict,
        known_members: Callable[[], Collection[str]] = frozenset,
        log_in_flight_age_s: Callable[[], float] = lambda: 0.0,
        log_stuck_after_s: float | None = None,
    ) -> None:
        self.globalconf_status = globalconf_status
        self.log_records = log_records
        self.scheduler = scheduler
        self.overdue_after_s = overdue_after_s
        self.certificates = tuple(certificates)
        self.ocsp_this_update = ocsp_this_update
        self.acl_generation = acl_generation
        self.ready = ready
        self.clock = clock
        self.peer_ocsp_this_update = peer_ocsp_this_update
        self.known_members = known_members
        #: Seconds the oldest message-log request in flight has waited (0: none).
        self.log_in_flight_age_s = log_in_flight_age_s
        #: ``message_log_stuck_after_s`` (``None``: not watched, no sample).
        self.log_stuck_after_s = log_stuck_after_s


def add_state_gauges(gauges: StateGauges, state: GatewayState) -> None:
    """The gateway's gauges: configuration, message log, time-stamps, certificates, OCSP."""
    now = state.clock

    def status_field(name: str) -> object:
        return getattr(state.globalconf_status(), name)

    def globalconf_serial() -> GaugeReading:
        serial = status_field("serial")
        return serial if isinstance(serial, int) else None

    def globalconf_age() -> GaugeReading:
        generated = status_field("generated_at")
        if not isinstance(generated, dt.datetime):
            return None
        return (now() - generated).total_seconds()

    def globalconf_expiry() -> GaugeReading:
        expires = status_field("expires_at")
        if not isinstance(expires, dt.datetime):
            return None
        return (expires - now()).total_seconds()

    def globalconf_refresh_failures() -> Iterable[tuple[Sequence[str], float]]:
        failures = status_field("refresh_failures")
        if not isinstance(failures, Mapping):
            return []
        return [((code,), float(count)) for code, count in sorted(failures.items())]

    scheduler = state.scheduler

    def tree_size() -> GaugeReading:
        head = getattr(scheduler, "newest_head", None)
        return None if head is None else head.head.tree_size

    def timestamped_size() -> GaugeReading:
        size = getattr(scheduler, "timestamped_size", -1)
        return None if size < 0 else size

    def last_timestamp_age() -> GaugeReading:
        when = getattr(scheduler, "last_timestamped_at", None)
        return None if when is None else (now() - when).total_seconds()

    def untimestamped_age() -> GaugeReading:
        since = getattr(scheduler, "untimestamped_since", None)
        return 0.0 if since is None else max(0.0, (now() - since).total_seconds())

    def certificate_expiry() -> Iterable[tuple[Sequence[str], float]]:
        moment = now()
        return [
            ((c.role,), (c.certificate.not_valid_after_utc - moment).total_seconds())
            for c in state.certificates
        ]

    def ocsp_age() -> Iterable[tuple[Sequence[str], float]]:
        moment = now()
        return [
            ((role,), (moment - this_update).total_seconds())
            for role, this_update in state.ocsp_this_update().items()
        ]

    def peer_ocsp_age() -> Iterable[tuple[Sequence[str], float]]:
        moment, known = now(), state.known_members()
        oldest_newest: dict[str, float] = {}
        for subject, this_update in state.peer_ocsp_this_update().items():
            member = bounded(subject, known)
            age = (moment - this_update).total_seconds()
            # several subjects may fold into "other": report the stalest of them
            oldest_newest[member] = max(age, oldest_newest.get(member, age))
        return [((member,), age) for member, age in sorted(oldest_newest.items())]

    for name, text, read in (
        ("serai_gateway_ready", "1 when the gateway is ready (see /readyz), else 0.",
         lambda: 1.0 if state.ready() else 0.0),
        ("serai_gateway_globalconf_serial", "Serial of the global configuration held.",
         globalconf_serial),
        ("serai_gateway_globalconf_age_seconds",
         "Seconds since the global configuration held was generated.", globalconf_age),
        ("serai_gateway_globalconf_expiry_seconds",
         "Seconds until the global configuration held expires (negative: expired).",
         globalconf_expiry),
        ("serai_gateway_log_records", "Records committed to the message log.",
         state.log_records),
        ("serai_gateway_log_tree_size", "Tree size of the newest signed tree head.", tree_size),
        ("serai_gateway_log_timestamped_tree_size",
         "Tree size up to which a time-stamp token covers the log.", timestamped_size),
        ("serai_gateway_log_last_timestamp_age_seconds",
         "Seconds since a tree head was last time-stamped (by this process).",
         last_timestamp_age),
        ("serai_gateway_log_untimestamped_age_seconds",
         "Seconds the oldest record without a time-stamp has waited (0: none waits).",
         untimestamped_age),
        ("serai_gateway_log_in_flight_age_seconds",
         "Seconds the oldest message-log database request in flight (a batch of records, "
         "a tree-head write or a read) has waited; 0 when none is. Past "
         "serai_gateway_log_stuck_after_seconds the store counts as stuck.",
         state.log_in_flight_age_s),
        ("serai_gateway_log_stuck_after_seconds",
         "The time a message-log request may stay in flight before the gateway reports "
         "itself not ready and refuses exchanges with log_unavailable.",
         lambda: state.log_stuck_after_s),
        ("serai_gateway_log_timestamping_overdue_after_seconds",
         "The wait after which exchanges are refused with timestamping_overdue.",
         lambda: state.overdue_after_s),
        ("serai_gateway_timestamp_consecutive_failures",
         "Time-stamp attempts failed since the last success.",
         lambda: getattr(scheduler, "consecutive_failures", 0)),
        ("serai_gateway_acl_generation", "Change counter of the access rights in force.",
         state.acl_generation),
    ):  # fmt: skip
        gauges.add(name, text, read)
    gauges.add(
        "serai_gateway_globalconf_refresh_failures",
        "Global configuration downloads refused or failed since the gateway started, by "
        "error code (globalconf_rollback, globalconf_expired, globalconf_unavailable...).",
        globalconf_refresh_failures,
        labels=("code",),
        counter=True,
    )
    gauges.add(
        "serai_gateway_timestamp_failures",
        "Time-stamp attempts that failed since the gateway started.",
        lambda: getattr(scheduler, "failures_total", 0),
        counter=True,
    )
    gauges.add(
        "serai_gateway_certificate_expiry_seconds",
        "Seconds until a certificate in use expires, by role (auth, signing, log_signing).",
        certificate_expiry,
        labels=("role",),
    )
    gauges.add(
        "serai_gateway_peer_ocsp_response_age_seconds",
        "Seconds since the newest OCSP response a peer member stapled to its signed "
        "headers was produced (its thisUpdate), by member, from the verification cache.",
        peer_ocsp_age,
        labels=("member",),
    )
    gauges.add(
        "serai_gateway_ocsp_response_age_seconds",
        "Seconds since the cached OCSP response of a certificate in use was produced "
        "(its thisUpdate), by role.",
        ocsp_age,
        labels=("role",),
    )
