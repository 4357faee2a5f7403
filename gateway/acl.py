"""Access rights of a provider gateway: who may call which method (DESIGN §5).

An :class:`AccessRule` allows one *subject* (a subsystem, a whole member, or a global
group of the global configuration) to call one *target* of one provider subsystem: a
single method (``/cadastre.v1.Cadastre/GetParcel``) or every method of a gRPC service
(``cadastre.v1.Cadastre``). An :class:`AccessPolicy` is an immutable, indexed set of
rules that decides a call with a few dictionary and set lookups.

Guarantees:

1. Default deny. A call is allowed only when some rule of the called provider names the
   exact method or its whole service, and its subject is the client subsystem, the
   client's member, or a global group the client is in. Nothing else allows a call: no
   wildcard, no rule of another provider, no prefix of a service name (``a.B`` does not
   cover ``a.BC`` or ``a.B.C``).
2. Group membership is asked of the caller's :class:`GroupMembership` (in practice the
   current :class:`~registry.snapshot.ConfigurationSnapshot`), so a client that the
   global configuration no longer lists in a group loses the rights granted to that
   group as soon as the gateway uses the new configuration.
3. A refusal is an :class:`AccessDeniedError` (code ``access_denied``, origin
   ``client``) whose message names the client and the called method only: it never
   says which rules exist or who else is allowed.
4. A policy never changes once built; the gateway replaces the whole policy after a
   change (see :mod:`gateway.aclstore`), so a decision always sees one consistent set.

Assumptions: the client subsystem has been authenticated and the service id names the
provider this gateway serves (DESIGN §4, step 3) before the policy is asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, Self

from gateway.errors import GatewayError
from serai.errors import ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import (
    MAX_PART_CHARS,
    GlobalGroupId,
    MemberId,
    ServiceId,
    Subject,
    SubsystemId,
)

__all__ = [
    "AccessDeniedError",
    "AccessPolicy",
    "AccessRule",
    "AccessTarget",
    "GroupMembership",
]

_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_SERVICE_NAME: Final = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_METHOD_NAME: Final = re.compile(_IDENT)
#: Longest text :meth:`AccessTarget.parse` looks at: ``/`` + two names of 255 + ``/``.
_MAX_TARGET_CHARS: Final = 2 * MAX_PART_CHARS + 2
_SHOW_MAX_CHARS: Final = 64


class AccessDeniedError(GatewayError):
    """No access rule allows the client to call the method (code ``access_denied``)."""

    default_code = ErrorCode.ACCESS_DENIED
    default_origin = Origin.CLIENT


class GroupMembership(Protocol):
    """Who is in which global group; :class:`~registry.snapshot.ConfigurationSnapshot`
    is one."""

    def is_member_of_group(self, subject: Subject, group_id: GlobalGroupId) -> bool:
        """Whether ``subject`` is in the global group ``group_id`` (nested groups too)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessTarget:
    """What a rule opens: one method of a gRPC service, or (``method_name`` ``None``)
    every method of it.

    Textual form: ``/package.Service/Method`` for a method (the path gRPC sends),
    ``package.Service`` for the whole service. Both names are checked as
    :class:`~serai.identifiers.ServiceId` checks them.
    """

    service_name: str
    method_name: str | None = None

    _FORMS: ClassVar[str] = "/package.Service/Method or package.Service"

    def __post_init__(self) -> None:
        _check_name("SERVICE", self.service_name, _SERVICE_NAME)
        if self.method_name is not None:
            _check_name("METHOD", self.method_name, _METHOD_NAME)

    @classmethod
    def method(cls, method_path: str) -> Self:
        """The single method ``/package.Service/Method``."""
        target = cls.parse(method_path)
        if target.method_name is None:
            raise _invalid_target(method_path, "expected a method path /package.Service/Method")
        return target

    @classmethod
    def service(cls, service_name: str) -> Self:
        """Every method of the gRPC service ``package.Service``."""
        return cls(service_name=service_name)

    @classmethod
    def of(cls, service: ServiceId) -> Self:
        """The single method that ``service`` names."""
        return cls(service_name=service.service_name, method_name=service.method_name)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse either textual form; raises :class:`InvalidIdentifierError`."""
        if not isinstance(text, str):
            raise InvalidIdentifierError(
                f"invalid access target: expected a str, got {type(text).__name__}"
            )
        if not text or len(text) > _MAX_TARGET_CHARS:
            raise _invalid_target(text, f"expected {cls._FORMS} of at most 255 + 255 names")
        if not text.startswith("/"):
            if "/" in text:
                raise _invalid_target(text, f"expected {cls._FORMS}")
            return cls(service_name=text)
        names = text[1:].split("/")
        if len(names) != 2:
            raise _invalid_target(
                text, f"expected {cls._FORMS}; a method path has 2 names after the leading '/'"
            )
        return cls(service_name=names[0], method_name=names[1])

    @property
    def is_whole_service(self) -> bool:
        """Whether the target is every method of the service."""
        return self.method_name is None

    def covers(self, service: ServiceId) -> bool:
        """Whether calling ``service``'s method is within this target."""
        return self.service_name == service.service_name and self.method_name in (
            None,
            service.method_name,
        )

    def sort_key(self) -> tuple[str, str]:
        """A total order: by service, the whole service before its methods."""
        return (self.service_name, self.method_name or "")

    def __lt__(self, other: AccessTarget) -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        if self.method_name is None:
            return self.service_name
        return f"/{self.service_name}/{self.method_name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRule:
    """``subject`` may call ``target`` of the provider subsystem ``provider``."""

    provider: SubsystemId
    target: AccessTarget
    subject: Subject

    def __post_init__(self) -> None:
        # Runtime guards for untyped callers (an admin request decoded elsewhere).
        if not isinstance(self.provider, SubsystemId):
            raise InvalidIdentifierError(
                f"access rule provider must be a SubsystemId, not {type(self.provider).__name__}"
            )
        if not isinstance(self.target, AccessTarget):
            raise InvalidIdentifierError(
                f"access rule target must be an AccessTarget, not {type(self.target).__name__}"
            )
        if not isinstance(self.subject, SubsystemId | MemberId | GlobalGroupId):
            raise InvalidIdentifierError(
                "access rule subject must be a SubsystemId, MemberId or GlobalGroupId, "
                f"not {type(self.subject).__name__}"
            )

    def sort_key(self) -> tuple[str, tuple[str, str], str, str]:
        """A total order over rules whose subjects may be of different kinds: by provider,
        target, then subject kind and text."""
        return (
            str(self.provider),
            self.target.sort_key(),
            self.subject.kind.value,
            str(self.subject),
        )

    def __lt__(self, other: AccessRule) -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        return f"{self.subject} may call {self.target} of {self.provider}"


@dataclass(frozen=True, slots=True)
class _Subjects:
    """The subjects of one (provider, target), split by kind for the lookups."""

    subsystems: frozenset[SubsystemId]
    #: Members as (instance, class, code): ``SubsystemId.member`` builds and validates a
    #: new id on every call, too slow for every request.
    members: frozenset[tuple[str, str, str]]
    groups: tuple[GlobalGroupId, ...]

    def allow(self, client: SubsystemId, groups: GroupMembership) -> bool:
        if client in self.subsystems:
            return True
        if (client.instance, client.member_class, client.member_code) in self.members:
            return True
        return any(groups.is_member_of_group(client, group) for group in self.groups)


_Key = tuple[SubsystemId, str, str | None]


class AccessPolicy:
    """An immutable, indexed set of access rules (see the module docstring).

    ``generation`` is the change counter of the store the rules were read from (0 for a
    policy built by hand); the gateway compares it to decide whether to reload.
    """

    __slots__ = ("_by_provider", "_generation", "_index", "_rules")

    def __init__(self, rules: Iterable[AccessRule] = (), *, generation: int = 0) -> None:
        unique = frozenset(rules)
        grouped: dict[_Key, list[Subject]] = {}
        by_provider: dict[SubsystemId, list[AccessRule]] = {}
        for rule in unique:
            if not isinstance(rule, AccessRule):
                raise TypeError(f"an AccessPolicy holds AccessRule, not {type(rule).__name__}")
            key = (rule.provider, rule.target.service_name, rule.target.method_name)
            grouped.setdefault(key, []).append(rule.subject)
            by_provider.setdefault(rule.provider, []).append(rule)
        self._index: dict[_Key, _Subjects] = {
            key: _split_subjects(subjects) for key, subjects in grouped.items()
        }
        self._by_provider = {p: tuple(sorted(rs)) for p, rs in by_provider.items()}
        self._rules = tuple(sorted(unique))
        self._generation = generation

    @property
    def generation(self) -> int:
        """The store's change counter when the rules were read."""
        return self._generation

    @property
    def rules(self) -> tuple[AccessRule, ...]:
        """Every rule, sorted."""
        return self._rules

    def rules_for(self, provider: SubsystemId) -> tuple[AccessRule, ...]:
        """The rules of ``provider``, sorted."""
        return self._by_provider.get(provider, ())

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[AccessRule]:
        return iter(self._rules)

    def __repr__(self) -> str:
        return f"AccessPolicy(rules={len(self._rules)}, generation={self._generation})"

    def is_allowed(
        self, client: SubsystemId, service: ServiceId, *, groups: GroupMembership
    ) -> bool:
        """Whether some rule allows ``client`` to call ``service`` (default deny)."""
        provider, service_name = service.subsystem, service.service_name
        exact = self._index.get((provider, service_name, service.method_name))
        if exact is not None and exact.allow(client, groups):
            return True
        whole = self._index.get((provider, service_name, None))
        return whole is not None and whole.allow(client, groups)

    def check(self, client: SubsystemId, service: ServiceId, *, groups: GroupMembership) -> None:
        """Return if ``client`` may call ``service``; else raise :class:`AccessDeniedError`."""
        if not self.is_allowed(client, service, groups=groups):
            raise AccessDeniedError(f"client {client} may not call {service}")

    def allowed_methods(
        self,
        client: SubsystemId,
        provider: SubsystemId,
        known_methods: Iterable[str],
        *,
        groups: GroupMembership,
    ) -> tuple[str, ...]:
        """The method paths among ``known_methods`` (``/package.Service/Method``, e.g.
        from the provider's service descriptor) that ``client`` may call, sorted.

        Raises :class:`InvalidIdentifierError` for a malformed method path.
        """
        allowed = {
            path
            for path in known_methods
            if self.is_allowed(
                client,
                ServiceId.for_method(subsystem=provider, method_path=path),
                groups=groups,
            )
        }
        return tuple(sorted(allowed))


def _split_subjects(subjects: Iterable[Subject]) -> _Subjects:
    subsystems: set[SubsystemId] = set()
    members: set[tuple[str, str, str]] = set()
    groups: set[GlobalGroupId] = set()
    for subject in subjects:
        if isinstance(subject, SubsystemId):
            subsystems.add(subject)
        elif isinstance(subject, MemberId):
            members.add((subject.instance, subject.member_class, subject.member_code))
        else:
            groups.add(subject)
    return _Subjects(frozenset(subsystems), frozenset(members), tuple(sorted(groups)))


def _check_name(slot: str, value: object, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str):
        raise InvalidIdentifierError(
            f"invalid access target: {slot} name must be a str, not {type(value).__name__}"
        )
    if len(value) > MAX_PART_CHARS:
        raise InvalidIdentifierError(
            f"invalid access target: {slot} name is {len(value)} characters long; "
            f"the maximum is {MAX_PART_CHARS}"
        )
    if pattern.fullmatch(value) is None:
        raise InvalidIdentifierError(
            f"invalid access target: {slot} name {_show(value)} is not "
            + (
                "dot-separated protobuf identifiers"
                if slot == "SERVICE"
                else "a protobuf identifier"
            )
            + " ([A-Za-z_][A-Za-z0-9_]*)"
        )


def _invalid_target(text: str, detail: str) -> InvalidIdentifierError:
    return InvalidIdentifierError(f"invalid access target {_show(text)}: {detail}")


def _show(text: str) -> str:
    """Echo untrusted text safely: ASCII-escaped, quoted, at most 64 characters of it."""
    if len(text) <= _SHOW_MAX_CHARS:
        return ascii(text)
    return f"{text[:_SHOW_MAX_CHARS]!a}... ({len(text)} characters)"
