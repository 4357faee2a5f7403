"""How :class:`registry.sqlstore.SqlRegistryStore` refuses and fails.

A refusal is a :class:`~registry.errors.RegistryError` of origin ``client`` whose code
says why; a driver error becomes one of code ``internal`` and origin ``gateway``, here
and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Final

from registry.errors import ConfigurationError, RegistryError
from serai.errors import ErrorCode, Origin

#: Objects named in a refusal that lists what still refers to something.
_SHOW_AT_MOST: Final = 5


def _refuse(code: ErrorCode, message: str) -> RegistryError:
    return RegistryError(message, code=code, origin=Origin.CLIENT)


def _internal(operation: str, exc: Exception) -> RegistryError:
    """The one translation of a driver error (the caller raises it ``from exc``)."""
    return RegistryError(
        f"{operation}: the registry database failed: {type(exc).__name__}: {exc}",
        code=ErrorCode.INTERNAL,
        origin=Origin.GATEWAY,
    )


@contextlib.contextmanager
def _as_refusal() -> Iterator[None]:
    """A domain type's own refusal (:class:`ConfigurationError`) as a ``RegistryError``."""
    try:
        yield
    except ConfigurationError as exc:
        raise RegistryError(exc.message, code=exc.code, origin=Origin.CLIENT) from exc


def _refuse_if_used(what: str, *uses: tuple[str, Sequence[str]]) -> None:
    """Refuse (failed_precondition) when any of ``uses`` (description, ids) is non-empty."""
    for description, ids in uses:
        if ids:
            shown = ", ".join(sorted(ids)[:_SHOW_AT_MOST])
            more = f" and {len(ids) - _SHOW_AT_MOST} more" if len(ids) > _SHOW_AT_MOST else ""
            raise _refuse(
                ErrorCode.FAILED_PRECONDITION,
                f"{what} is still referred to by {description}: {shown}{more}",
            )
