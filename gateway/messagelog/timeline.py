"""The global configurations in force over a stretch of a message log (DESIGN §3, §6).

A gateway judges a signature by the global configuration it holds at the time: its
approved CAs, TSAs and members. An auditor replays that judgement years later from the
configuration envelopes kept with the log. :class:`ConfigurationTimeline` holds those
envelopes once each has been checked against the trust anchor, and answers "which
configurations could have been in force at ``t``".

Rules.

1. **Verified before held.** An envelope is held only if it verifies against one of the
   anchor's signing certificates, decodes, is of the anchor's instance, and indexes into
   a :class:`~registry.snapshot.ConfigurationSnapshot`
   (:meth:`ConfigurationTimeline.add` raises the refusal's
   :class:`~registry.errors.ConfigurationError` otherwise). Expiry is not a refusal
   here: old configurations are expected.
2. **One configuration per serial.** Two different configurations under one serial are
   refused with ``globalconf_equivocation``; the same one twice is held once.
3. **In force.** A configuration was in force at ``t`` when ``generated_at <= t <
   expires_at``. A gateway refreshes every minute but may serve the copy it holds until
   it expires, so several can have been in force at one instant;
   :meth:`ConfigurationTimeline.in_force` returns all of them, newest first, and a
   check passes when it passes under one of them.

Where the envelopes come from: the gateway archives every envelope it accepts as
``<globalconf_cache_dir>/archive/<serial>.bin`` (the exact signed bytes), next to its
last good copy ``globalconf.signed``; :func:`read_archive` reads both. A bundle carries
its own (see :mod:`gateway.messagelog.bundle`).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from registry.client import CACHE_FILE_NAME
from registry.codec import TrustAnchor, decode_configuration
from registry.errors import ConfigurationError
from registry.signing import verify_signed_configuration
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode

__all__ = [
    "ARCHIVE_DIR_NAME",
    "ArchivedConfiguration",
    "ConfigurationTimeline",
    "add_all",
    "read_archive",
]

#: Sub-directory of ``globalconf_cache_dir`` where the gateway archives every envelope.
ARCHIVE_DIR_NAME: Final = "archive"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedConfiguration:
    """One verified configuration: its exact signed envelope and its snapshot."""

    envelope: bytes
    snapshot: ConfigurationSnapshot

    @property
    def serial(self) -> int:
        return self.snapshot.serial

    def in_force_at(self, at: dt.datetime) -> bool:
        """Rule 3 of the module docstring."""
        return self.snapshot.generated_at <= at < self.snapshot.expires_at


class ConfigurationTimeline:
    """Verified configurations by serial (see the module docstring for the rules)."""

    def __init__(self, anchor: TrustAnchor) -> None:
        self._anchor = anchor
        self._by_serial: dict[int, ArchivedConfiguration] = {}
        self._sorted: list[ArchivedConfiguration] = []

    @property
    def anchor(self) -> TrustAnchor:
        return self._anchor

    def add(self, envelope: bytes) -> ArchivedConfiguration:
        """Verify ``envelope`` against the anchor and hold it (rules 1 and 2); returns
        what is held for its serial. Raises :class:`ConfigurationError`."""
        configuration_bytes = verify_signed_configuration(
            envelope, signing_certificates=self._anchor.signing_certificates
        )
        configuration = decode_configuration(configuration_bytes)
        if configuration.instance != self._anchor.instance:
            raise ConfigurationError(
                f"configuration serial {configuration.serial} is of instance "
                f"{configuration.instance!r}, the trust anchor's is {self._anchor.instance!r}",
                code=ErrorCode.GLOBALCONF_WRONG_INSTANCE,
            )
        held = self._by_serial.get(configuration.serial)
        if held is not None:
            if (
                verify_signed_configuration(
                    held.envelope, signing_certificates=self._anchor.signing_certificates
                )
                != configuration_bytes
            ):
                raise ConfigurationError(
                    f"two different configurations carry serial {configuration.serial}",
                    code=ErrorCode.GLOBALCONF_EQUIVOCATION,
                )
            return held
        entry = ArchivedConfiguration(
            envelope=envelope, snapshot=ConfigurationSnapshot(configuration)
        )
        self._by_serial[entry.serial] = entry
        bisect.insort(self._sorted, entry, key=lambda e: e.snapshot.generated_at)
        return entry

    def __len__(self) -> int:
        return len(self._by_serial)

    @property
    def configurations(self) -> tuple[ArchivedConfiguration, ...]:
        """Every held configuration, by serial."""
        return tuple(self._by_serial[s] for s in sorted(self._by_serial))

    def in_force(self, at: dt.datetime) -> list[ArchivedConfiguration]:
        """The configurations in force at ``at``, newest (highest serial) first."""
        end = bisect.bisect_right(self._sorted, at, key=lambda e: e.snapshot.generated_at)
        found = [e for e in self._sorted[:end] if at < e.snapshot.expires_at]
        return sorted(found, key=lambda e: e.serial, reverse=True)

    def overlapping(self, start: dt.datetime, end: dt.datetime) -> list[ArchivedConfiguration]:
        """The configurations in force at some instant of ``[start, end]``, by serial."""
        return [
            e
            for e in self.configurations
            if e.snapshot.generated_at <= end and e.snapshot.expires_at > start
        ]


def read_archive(cache_dir: Path) -> list[tuple[Path, bytes]]:
    """The envelopes a gateway kept under ``cache_dir``: every ``archive/*.bin`` by name,
    then its last good copy; unverified (give them to :meth:`ConfigurationTimeline.add`).
    A directory that cannot be read is a :class:`ConfigurationError` naming it."""
    found: list[tuple[Path, bytes]] = []
    archive = cache_dir / ARCHIVE_DIR_NAME
    try:
        paths = sorted(archive.glob("*.bin")) if archive.is_dir() else []
        paths += [p for p in (cache_dir / CACHE_FILE_NAME,) if p.is_file()]
        for path in paths:
            found.append((path, path.read_bytes()))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the global configuration archive {archive}: {exc.strerror}",
            code=ErrorCode.INVALID_CONFIG,
        ) from exc
    return found


def add_all(
    timeline: ConfigurationTimeline, envelopes: Iterable[tuple[str, bytes]]
) -> list[tuple[str, ConfigurationError]]:
    """Add each ``(name, envelope)``; the refusals, by name (nothing is raised)."""
    refused = []
    for name, envelope in envelopes:
        try:
            timeline.add(envelope)
        except ConfigurationError as exc:
            refused.append((name, exc))
    return refused
