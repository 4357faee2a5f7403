"""Building blocks of Serai's Prometheus metrics (DESIGN §7), shared by every process.

- :class:`StateGauges` is a collector of gauges computed from the process's state at
  scrape time (configuration serial, certificate expiry, tree size...). Each gauge is a
  function that reads attributes already held in memory: collection costs a few
  attribute reads per gauge, takes no lock across an ``await`` and never does I/O. A
  gauge whose function raises is left out of that scrape (and the failure counted in
  ``serai_metrics_collection_errors_total``), so one broken reading never hides the
  others.
- :func:`bounded` keeps label values inside a known set, so a caller cannot grow the
  label set with values of its own choosing (message ids, random method names):
  anything unknown becomes :data:`OTHER`.
- :data:`LATENCY_BUCKETS_S` are the histogram buckets of every ``*_duration_seconds``.

Every process builds its own :class:`~prometheus_client.CollectorRegistry` and passes
it explicitly; nothing here touches the library's global default registry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS_S",
    "OTHER",
    "GaugeReading",
    "StateGauges",
    "bounded",
    "seconds_since",
    "seconds_until",
]

#: The label value of anything outside the known set.
OTHER: Final = "other"
#: Buckets of the latency histograms, in seconds (0.5 ms to 30 s).
LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: What a gauge function returns: one value (``None`` for no sample), or samples as
#: (label values, value) pairs.
GaugeReading = float | int | None | Iterable[tuple[Sequence[str], float]]


def bounded(value: str | None, known: Collection[str]) -> str:
    """``value`` when it is in ``known``, else :data:`OTHER`."""
    return value if value is not None and value in known else OTHER


def seconds_since(when: dt.datetime | None, now: dt.datetime) -> float | None:
    """``now - when`` in seconds, ``None`` when ``when`` is."""
    return None if when is None else (now - when).total_seconds()


def seconds_until(when: dt.datetime | None, now: dt.datetime) -> float | None:
    """``when - now`` in seconds (negative once passed), ``None`` when ``when`` is."""
    return None if when is None else (when - now).total_seconds()


@dataclass(frozen=True, slots=True)
class _Gauge:
    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], GaugeReading]
    counter: bool


class StateGauges(Collector):
    """Gauges read from state at scrape time (module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauges: list[_Gauge] = []
        self._errors = Counter(
            "serai_metrics_collection_errors_total",
            "Gauges left out of a scrape because reading them failed.",
            ["metric"],
            registry=registry,
        )
        registry.register(self)

    def add(
        self,
        name: str,
        documentation: str,
        read: Callable[[], GaugeReading],
        labels: Sequence[str] = (),
        *,
        counter: bool = False,
    ) -> None:
        """Add gauge ``name``; ``read`` runs at every scrape (cheap, no I/O). With
        ``counter``, the value is a count kept elsewhere and exposed as the counter
        ``<name>_total``."""
        self._gauges.append(_Gauge(name, documentation, tuple(labels), read, counter))

    def describe(self) -> Iterator[Metric]:
        """No description: registered collectors are only asked to collect."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """One family per gauge, with the samples its function gives now."""
        for gauge in self._gauges:
            try:
                reading = gauge.read()
                kind = CounterMetricFamily if gauge.counter else GaugeMetricFamily
                family = kind(gauge.name, gauge.documentation, labels=gauge.labels or None)
                if reading is None:
                    pass
                elif isinstance(reading, int | float):
                    family.add_metric([], float(reading))
                else:
                    for label_values, value in reading:
                        family.add_metric(list(label_values), float(value))
            except Exception:  # noqa: BLE001  (one failing gauge must not hide the others)
                self._errors.labels(gauge.name).inc()
                continue
            yield family
