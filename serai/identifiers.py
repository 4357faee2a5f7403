"""Identifiers of members, subsystems, gateways, services and global groups (DESIGN §2).

Every identifier is an immutable, hashable, ordered value object. Its keyword-only
constructor validates each part, so an instance that exists is well formed; ``parse``
reads the one textual form and ``str()`` prints it.

Grammar (``PART`` is one to 255 characters of X-Road's strict set
``A-Z a-z 0-9 ' ( ) + , - . = ?``; ``/`` separates parts and never occurs inside one)::

    member        = INSTANCE "/" CLASS "/" MEMBER                  UZ/GOV/STC
    subsystem     = member "/" SUBSYSTEM                           UZ/GOV/CADASTRE/registry
    gateway       = member "/gw:" CODE                             UZ/GOV/STC/gw:main
    global group  = INSTANCE "/group:" CODE                        UZ/group:tax-officials
    service       = subsystem method-path                          see below
    method-path   = "/" SERVICE "/" METHOD                         /cadastre.v1.Cadastre/GetParcel
    SERVICE       = IDENT *("." IDENT)         package-qualified gRPC service name
    METHOD        = IDENT
    IDENT         = [A-Za-z_][A-Za-z0-9_]*     protobuf identifier, at most 255 characters
                                               for SERVICE and for METHOD

    INSTANCE, CLASS, MEMBER, SUBSYSTEM, CODE = PART

A service is printed as its subsystem immediately followed by the method path exactly as
gRPC sends it on the wire, so ``UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel``
has exactly six ``/``-separated parts: four of the subsystem, the service name and the
method name. Since no part may contain ``/``, every textual form splits in one way only.

Parsers assume nothing of their input: it may come straight from gRPC metadata or an
admin request, and may be of any type and length.

Invariants:

- Parsing and printing round-trip exactly: ``str(X.parse(s)) == s`` for every valid
  ``s`` and ``X.parse(str(x)) == x`` for every ``x``. Nothing is normalised: parts are
  case-sensitive and compared as written.
- The markers ``gw:`` and ``group:`` are recognised only in their own slot (the last part
  of a gateway or global group id). Anywhere else, including inside a code given to a
  constructor, a part that starts with one is refused with a message naming the marker.
- Every malformed input raises :class:`~serai.errors.InvalidIdentifierError` (code
  ``invalid_identifier``, origin ``client``) whose message names the part, the offending
  character and its index within that part, or the expected and found numbers of parts.
  Input is echoed only through :func:`ascii` and truncated to 64 characters, so a message
  never carries unbounded or unprintable text. Input longer than
  :data:`MAX_IDENTIFIER_CHARS` is refused before it is split.
- Instances of different types never compare equal; ordering is defined between
  instances of the same type only (by their parts, left to right).
"""

from __future__ import annotations

import contextlib
import enum
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Final, Self, TypeAlias, TypeVar

from serai.errors import InvalidIdentifierError

__all__ = [
    "MAX_IDENTIFIER_CHARS",
    "MAX_PART_CHARS",
    "GatewayId",
    "GlobalGroupId",
    "IdentifierKind",
    "MemberId",
    "ServiceId",
    "Subject",
    "SubsystemId",
    "parse_instance",
    "parse_subject",
]

#: Longest part (and longest gRPC service or method name), as X-Road's database columns.
MAX_PART_CHARS: Final = 255
#: Longest text any ``parse`` accepts; above every valid identifier (a service is at most
#: 4 * 255 + 255 + 255 + 5 characters), so it only bounds the work spent on junk.
MAX_IDENTIFIER_CHARS: Final = 2048

_GATEWAY_MARKER: Final = "gw:"
_GROUP_MARKER: Final = "group:"

_STRICT: Final = frozenset(string.ascii_letters + string.digits + "'()+,-.=?")
_STRICT_DESCRIPTION: Final = "A-Z a-z 0-9 ' ( ) + , - . = ?"
_STRICT_PART: Final = re.compile(r"[A-Za-z0-9'()+,\-.=?]{1,255}")
_P: Final = r"([A-Za-z0-9'()+,\-.=?]{1,255})"
#: Whole-identifier fast paths: a match is valid by construction (every part in the
#: strict set, so no marker where it does not belong); anything else takes the slow path
#: that explains the refusal.
_MEMBER_RE: Final = re.compile(f"{_P}/{_P}/{_P}")
_SUBSYSTEM_RE: Final = re.compile(f"{_P}/{_P}/{_P}/{_P}")
_GATEWAY_RE: Final = re.compile(f"{_P}/{_P}/{_P}/gw:{_P}")
_T = TypeVar("_T")
_IDENT_FIRST: Final = frozenset(string.ascii_letters + "_")
_IDENT_REST: Final = frozenset(string.ascii_letters + string.digits + "_")
_MARKER_PLACE: Final = {
    _GATEWAY_MARKER: "the CODE of a gateway id INSTANCE/CLASS/MEMBER/gw:CODE",
    _GROUP_MARKER: "the CODE of a global group id INSTANCE/group:CODE",
}
_SHOW_MAX_CHARS: Final = 64


class IdentifierKind(enum.StrEnum):
    """What an identifier names; the ``kind`` of every identifier type."""

    MEMBER = "member"
    SUBSYSTEM = "subsystem"
    GATEWAY = "gateway"
    SERVICE = "service"
    GLOBAL_GROUP = "global_group"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class MemberId:
    """A member (an agency): ``INSTANCE/CLASS/MEMBER``, e.g. ``UZ/GOV/STC``."""

    instance: str
    member_class: str
    member_code: str

    kind: ClassVar[IdentifierKind] = IdentifierKind.MEMBER
    _FORM: ClassVar[str] = "INSTANCE/CLASS/MEMBER"

    def __post_init__(self) -> None:
        with _reporting("member id", None):
            _check_member_parts(self.instance, self.member_class, self.member_code)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/MEMBER``; raises :class:`InvalidIdentifierError`."""
        if type(text) is str and (match := _MEMBER_RE.fullmatch(text)) is not None:
            return _trusted(cls, instance=match[1], member_class=match[2], member_code=match[3])
        instance, member_class, member_code = _split(text, "member id", cls._FORM, 3)
        with _reporting("member id", text):
            _check_member_parts(instance, member_class, member_code)
        return cls(instance=instance, member_class=member_class, member_code=member_code)

    def subsystem(self, subsystem_code: str) -> SubsystemId:
        """The subsystem ``subsystem_code`` of this member."""
        return SubsystemId(
            instance=self.instance,
            member_class=self.member_class,
            member_code=self.member_code,
            subsystem_code=subsystem_code,
        )

    def gateway(self, gateway_code: str) -> GatewayId:
        """The gateway ``gateway_code`` (given without the ``gw:`` marker) of this member."""
        return GatewayId(
            instance=self.instance,
            member_class=self.member_class,
            member_code=self.member_code,
            gateway_code=gateway_code,
        )

    def __str__(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class SubsystemId:
    """A subsystem: ``INSTANCE/CLASS/MEMBER/SUBSYSTEM``, e.g. ``UZ/GOV/CADASTRE/registry``.

    Only subsystems send or serve requests.
    """

    instance: str
    member_class: str
    member_code: str
    subsystem_code: str

    kind: ClassVar[IdentifierKind] = IdentifierKind.SUBSYSTEM
    _FORM: ClassVar[str] = "INSTANCE/CLASS/MEMBER/SUBSYSTEM"

    def __post_init__(self) -> None:
        with _reporting("subsystem id", None):
            _check_member_parts(self.instance, self.member_class, self.member_code)
            _check_part("SUBSYSTEM", self.subsystem_code)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/MEMBER/SUBSYSTEM``; raises :class:`InvalidIdentifierError`."""
        if type(text) is str and (match := _SUBSYSTEM_RE.fullmatch(text)) is not None:
            return _trusted(
                cls,
                instance=match[1],
                member_class=match[2],
                member_code=match[3],
                subsystem_code=match[4],
            )
        instance, member_class, member_code, code = _split(text, "subsystem id", cls._FORM, 4)
        with _reporting("subsystem id", text):
            _check_member_parts(instance, member_class, member_code)
            _check_part("SUBSYSTEM", code)
        return cls(
            instance=instance,
            member_class=member_class,
            member_code=member_code,
            subsystem_code=code,
        )

    @property
    def member(self) -> MemberId:
        """The member this subsystem belongs to."""
        # The parts were checked when this id was built.
        return _trusted(
            MemberId,
            instance=self.instance,
            member_class=self.member_class,
            member_code=self.member_code,
        )

    def service(self, method_path: str) -> ServiceId:
        """The service ``method_path`` (e.g. ``/cadastre.v1.Cadastre/GetParcel``) it serves."""
        return ServiceId.for_method(subsystem=self, method_path=method_path)

    def __str__(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}/{self.subsystem_code}"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class GatewayId:
    """A gateway (security server): ``INSTANCE/CLASS/MEMBER/gw:CODE``, e.g. ``UZ/GOV/STC/gw:main``.

    ``gateway_code`` is the CODE alone, without the ``gw:`` marker.
    """

    instance: str
    member_class: str
    member_code: str
    gateway_code: str

    kind: ClassVar[IdentifierKind] = IdentifierKind.GATEWAY
    _FORM: ClassVar[str] = "INSTANCE/CLASS/MEMBER/gw:CODE"

    def __post_init__(self) -> None:
        with _reporting("gateway id", None):
            _check_member_parts(self.instance, self.member_class, self.member_code)
            _check_part("gateway CODE", self.gateway_code)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/MEMBER/gw:CODE``; raises :class:`InvalidIdentifierError`."""
        if type(text) is str and (match := _GATEWAY_RE.fullmatch(text)) is not None:
            return _trusted(
                cls,
                instance=match[1],
                member_class=match[2],
                member_code=match[3],
                gateway_code=match[4],
            )
        instance, member_class, member_code, last = _split(text, "gateway id", cls._FORM, 4)
        with _reporting("gateway id", text):
            _check_member_parts(instance, member_class, member_code)
            code = _strip_marker("4th", last, _GATEWAY_MARKER)
            _check_part("gateway CODE", code)
        return cls(
            instance=instance,
            member_class=member_class,
            member_code=member_code,
            gateway_code=code,
        )

    @property
    def member(self) -> MemberId:
        """The member that owns this gateway."""
        # The parts were checked when this id was built.
        return _trusted(
            MemberId,
            instance=self.instance,
            member_class=self.member_class,
            member_code=self.member_code,
        )

    def __str__(self) -> str:
        return (
            f"{self.instance}/{self.member_class}/{self.member_code}/"
            f"{_GATEWAY_MARKER}{self.gateway_code}"
        )


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class GlobalGroupId:
    """A global group from the global configuration: ``INSTANCE/group:CODE``.

    ``group_code`` is the CODE alone, without the ``group:`` marker.
    """

    instance: str
    group_code: str

    kind: ClassVar[IdentifierKind] = IdentifierKind.GLOBAL_GROUP
    _FORM: ClassVar[str] = "INSTANCE/group:CODE"

    def __post_init__(self) -> None:
        with _reporting("global group id", None):
            _check_part("INSTANCE", self.instance)
            _check_part("group CODE", self.group_code)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/group:CODE``; raises :class:`InvalidIdentifierError`."""
        instance, last = _split(text, "global group id", cls._FORM, 2)
        with _reporting("global group id", text):
            _check_part("INSTANCE", instance)
            code = _strip_marker("2nd", last, _GROUP_MARKER)
            _check_part("group CODE", code)
        return cls(instance=instance, group_code=code)

    def __str__(self) -> str:
        return f"{self.instance}/{_GROUP_MARKER}{self.group_code}"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class ServiceId:
    """A gRPC method served by a subsystem.

    Printed as the subsystem followed by the method path as sent on the wire:
    ``UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel`` is subsystem
    ``UZ/GOV/CADASTRE/registry`` and method path ``/cadastre.v1.Cadastre/GetParcel``.
    ``service_name`` is the package-qualified gRPC service (``cadastre.v1.Cadastre``),
    ``method_name`` the bare method (``GetParcel``).
    """

    subsystem: SubsystemId
    service_name: str
    method_name: str

    kind: ClassVar[IdentifierKind] = IdentifierKind.SERVICE
    _FORM: ClassVar[str] = "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE/METHOD"

    def __post_init__(self) -> None:
        with _reporting("service id", None):
            _check_subsystem(self.subsystem)
            _check_service_name(self.service_name)
            _check_method_name(self.method_name)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE/METHOD``.

        Raises :class:`InvalidIdentifierError`.
        """
        parts = _split(text, "service id", cls._FORM, 6, hint=_doubled_slash_hint)
        instance, member_class, member_code, code, service_name, method_name = parts
        with _reporting("service id", text):
            _check_member_parts(instance, member_class, member_code)
            _check_part("SUBSYSTEM", code)
            _check_service_name(service_name)
            _check_method_name(method_name)
        subsystem = SubsystemId(
            instance=instance,
            member_class=member_class,
            member_code=member_code,
            subsystem_code=code,
        )
        return cls(subsystem=subsystem, service_name=service_name, method_name=method_name)

    @classmethod
    def for_method(cls, *, subsystem: SubsystemId, method_path: str) -> Self:
        """The service ``method_path`` (``/package.Service/Method``) of ``subsystem``."""
        with _reporting("method path", method_path):
            service_name, method_name = _split_method_path(method_path)
        return cls(subsystem=subsystem, service_name=service_name, method_name=method_name)

    @property
    def method_path(self) -> str:
        """The gRPC method path as on the wire, e.g. ``/cadastre.v1.Cadastre/GetParcel``."""
        return f"/{self.service_name}/{self.method_name}"

    @property
    def member(self) -> MemberId:
        """The member whose subsystem serves this method."""
        return self.subsystem.member

    def __str__(self) -> str:
        return f"{self.subsystem}{self.method_path}"


#: Who an access right can be granted to (DESIGN §5).
Subject: TypeAlias = SubsystemId | MemberId | GlobalGroupId

_SUBJECT_FORMS: Final = (
    "2 (INSTANCE/group:CODE), 3 (INSTANCE/CLASS/MEMBER) or 4 (INSTANCE/CLASS/MEMBER/SUBSYSTEM)"
)


def parse_subject(text: str) -> Subject:
    """Parse an access-rights subject: a subsystem, a whole member, or a global group.

    The number of parts decides the type: 2 is a :class:`GlobalGroupId`, 3 a
    :class:`MemberId`, 4 a :class:`SubsystemId`. A gateway id is refused: gateways are
    not subjects. Raises :class:`InvalidIdentifierError`.
    """
    what = "access-rights subject"
    parts = _split(text, what, _SUBJECT_FORMS, None)
    count = len(parts)
    if count == 2:
        return GlobalGroupId.parse(text)
    if count == 3:
        return MemberId.parse(text)
    if count == 4:
        if parts[3].startswith(_GATEWAY_MARKER):
            raise _invalid(
                what,
                text,
                "names a gateway; a subject is a subsystem, a member or a global group",
            )
        return SubsystemId.parse(text)
    raise _invalid(what, text, f"expected {_SUBJECT_FORMS} parts separated by '/', found {count}")


def parse_instance(text: str) -> str:
    """Check a federation instance id (one part of the strict set, e.g. ``UZ``) and return it."""
    (instance,) = _split(text, "instance id", "INSTANCE", 1)
    with _reporting("instance id", text):
        _check_part("INSTANCE", instance)
    return instance


# --- helpers ---------------------------------------------------------------------------


def _trusted(cls: type[_T], **fields: str) -> _T:
    """An instance of the frozen dataclass ``cls`` from parts already checked, without
    running ``__post_init__`` again (parsing is on the gateway's hot path)."""
    obj = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj


class _PartError(Exception):
    """What is wrong with one part; :func:`_reporting` adds which identifier it was in."""


@contextlib.contextmanager
def _reporting(what: str, text: object) -> Iterator[None]:
    """Turn a :class:`_PartError` into an :class:`InvalidIdentifierError` naming the input."""
    try:
        yield
    except _PartError as problem:
        raise _invalid(what, text, str(problem)) from None


def _invalid(what: str, text: object, detail: str) -> InvalidIdentifierError:
    """The error for ``text`` (echoed only when it is a ``str``) being a bad ``what``."""
    where = f"{what} {_show(text)}" if isinstance(text, str) else what
    return InvalidIdentifierError(f"invalid {where}: {detail}")


def _show(text: str) -> str:
    """Echo untrusted text safely: ASCII-escaped, quoted, at most 64 characters of it."""
    if len(text) <= _SHOW_MAX_CHARS:
        return ascii(text)
    return f"{text[:_SHOW_MAX_CHARS]!a}... ({len(text)} characters)"


def _show_char(char: str) -> str:
    return f"{char!a} (U+{ord(char):04X})"


def _doubled_slash_hint(parts: list[str]) -> str:
    if len(parts) == 7 and not parts[4]:
        return " (the method path's leading '/' is the separator after SUBSYSTEM; do not double it)"
    return ""


def _split(
    text: object,
    what: str,
    form: str,
    count: int | None,
    *,
    hint: Callable[[list[str]], str] | None = None,
) -> list[str]:
    """Split ``text`` on ``/`` after checking it is a non-empty, bounded ``str``.

    With ``count``, the number of parts must be exactly that; ``hint`` (a callable from the
    parts to a suffix) may add advice to the wrong-count message.
    """
    if not isinstance(text, str):
        raise _invalid(what, None, f"expected a str, got {type(text).__name__}")
    if not text:
        raise _invalid(what, None, f"the text is empty; expected {form}")
    if len(text) > MAX_IDENTIFIER_CHARS:
        raise _invalid(
            what,
            text,
            f"the text is {len(text)} characters long; the maximum is {MAX_IDENTIFIER_CHARS}",
        )
    parts = text.split("/")
    if count is not None and len(parts) != count:
        advice = hint(parts) if hint is not None else ""
        raise _invalid(
            what,
            text,
            f"expected {count} parts {form} separated by '/', found {len(parts)}{advice}",
        )
    return parts


def _check_subsystem(value: object) -> None:
    # A runtime guard for untyped callers; type checkers already insist on it.
    if not isinstance(value, SubsystemId):
        raise _PartError(f"subsystem must be a SubsystemId, not {type(value).__name__}")


def _check_member_parts(instance: object, member_class: object, member_code: object) -> None:
    _check_part("INSTANCE", instance)
    _check_part("CLASS", member_class)
    _check_part("MEMBER", member_code)


def _check_part(slot: str, value: object) -> None:
    """Check one part against the strict set; raises :class:`_PartError` naming ``slot``."""
    # Fast path for the common, valid case; the checks below explain a refusal. The set
    # excludes ':', so a part that matches cannot start with a marker.
    if type(value) is str and _STRICT_PART.fullmatch(value) is not None:
        return
    if not isinstance(value, str):
        raise _PartError(f"{slot} part must be a str, not {type(value).__name__}")
    if not value:
        raise _PartError(f"{slot} part is empty")
    for marker, place in _MARKER_PLACE.items():
        if value.startswith(marker):
            raise _PartError(
                f"{slot} part {_show(value)} starts with the reserved marker {marker!r}, "
                f"which may only introduce {place} and is not itself part of any code"
            )
    if len(value) > MAX_PART_CHARS:
        raise _PartError(
            f"{slot} part is {len(value)} characters long; the maximum is {MAX_PART_CHARS}"
        )
    for index, char in enumerate(value):
        if char not in _STRICT:
            raise _PartError(
                f"{slot} part {_show(value)} has forbidden character {_show_char(char)} "
                f"at index {index}; allowed characters are {_STRICT_DESCRIPTION}"
            )


def _strip_marker(position: str, part: str, marker: str) -> str:
    if not part.startswith(marker):
        raise _PartError(f"{position} part {_show(part)} must start with the marker {marker!r}")
    return part[len(marker) :]


def _split_method_path(method_path: object) -> tuple[str, str]:
    """Split ``/SERVICE/METHOD`` and check both names; raises :class:`_PartError`."""
    if not isinstance(method_path, str):
        raise _PartError(f"expected a str, got {type(method_path).__name__}")
    if not method_path.startswith("/"):
        raise _PartError("a method path starts with '/': /package.Service/Method")
    names = method_path[1:].split("/")
    if len(names) != 2:
        raise _PartError(
            f"expected 2 names /SERVICE/METHOD after the leading '/', found {len(names)}"
        )
    service_name, method_name = names
    _check_service_name(service_name)
    _check_method_name(method_name)
    return service_name, method_name


def _check_service_name(value: object) -> None:
    """A package-qualified gRPC service name: dot-separated protobuf identifiers."""
    slot = "SERVICE"
    name = _checked_name_length(slot, value)
    offset = 0
    for segment in name.split("."):
        if not segment:
            raise _PartError(
                f"{slot} name {_show(name)} has an empty dot-separated name at index {offset}"
            )
        _check_ident(slot, name, segment, offset)
        offset += len(segment) + 1


def _check_method_name(value: object) -> None:
    """A bare gRPC method name: one protobuf identifier."""
    name = _checked_name_length("METHOD", value)
    _check_ident("METHOD", name, name, 0)


def _checked_name_length(slot: str, value: object) -> str:
    """Return ``value`` once it is a non-empty ``str`` of at most 255 characters."""
    if not isinstance(value, str):
        raise _PartError(f"{slot} name must be a str, not {type(value).__name__}")
    if not value:
        raise _PartError(f"{slot} name is empty")
    if len(value) > MAX_PART_CHARS:
        raise _PartError(
            f"{slot} name is {len(value)} characters long; the maximum is {MAX_PART_CHARS}"
        )
    return value


def _check_ident(slot: str, whole: str, ident: str, offset: int) -> None:
    """Check ``ident`` (found at ``offset`` in ``whole``) is ``[A-Za-z_][A-Za-z0-9_]*``."""
    if ident[0] not in _IDENT_FIRST:
        raise _PartError(
            f"{slot} name {_show(whole)} has {_show_char(ident[0])} at index {offset}; "
            "a protobuf identifier starts with A-Z a-z or _"
        )
    for index, char in enumerate(ident[1:], start=offset + 1):
        if char not in _IDENT_REST:
            raise _PartError(
                f"{slot} name {_show(whole)} has forbidden character {_show_char(char)} "
                f"at index {index}; a protobuf identifier has only A-Z a-z 0-9 _"
            )
