"""The service descriptors of provider subsystems, indexed for metaservices and reflection.

A provider's services are described by the serialized ``FileDescriptorSet`` that the
registry operator publishes in the global configuration (``serai registry descriptor
set``). :class:`DescriptorIndex` reads one such set once and answers what the
metaservices (:mod:`gateway.meta`) and server reflection (:mod:`gateway.reflection`) ask:
the services and method paths it declares, a file by name or by a symbol it defines,
with every file it depends on.

:class:`DescriptorCache` keeps the indexes of the configuration in force, keyed by its
serial: a new configuration drops them all, so a descriptor the registry withdraws or
replaces is not served once the gateway uses the new configuration.

Guarantees: the set's bytes come from a verified configuration but are not otherwise
trusted; a set that does not decode, or holds two files of one name, is refused with
:class:`DescriptorSetError` (``unknown_service``, origin ``provider``), never a crash. A
dependency the set leaves out is served from protobuf's own well-known types when it is
one (``google/protobuf/*.proto``), and otherwise simply missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError

from gateway.errors import GatewayError
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, Origin
from serai.identifiers import SubsystemId

__all__ = ["DescriptorCache", "DescriptorIndex", "DescriptorSetError"]

_WELL_KNOWN_PREFIX: Final = "google/protobuf/"


class DescriptorSetError(GatewayError):
    """A provider subsystem has no usable service descriptors (``unknown_service``)."""

    default_code = ErrorCode.UNKNOWN_SERVICE
    default_origin = Origin.PROVIDER


class DescriptorIndex:
    """One FileDescriptorSet, indexed (module docstring). Immutable once built."""

    __slots__ = ("_deps", "_extensions", "_files", "_methods", "_services", "_symbols")

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self._files: dict[str, bytes] = {}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._symbols: dict[str, str] = {}
        self._extensions: dict[str, dict[int, str]] = {}
        services: list[str] = []
        methods: list[str] = []
        for file in files:
            name = file.name
            if not name or name in self._files:
                raise ValueError(f"file name {name!r} is empty or appears twice")
            self._files[name] = file.SerializeToString()
            self._deps[name] = tuple(file.dependency)
            prefix = f"{file.package}." if file.package else ""
            for service in file.service:
                full = prefix + service.name
                services.append(full)
                self._symbols.setdefault(full, name)
                for method in service.method:
                    methods.append(f"/{full}/{method.name}")
                    self._symbols.setdefault(f"{full}.{method.name}", name)
            self._index_scope(name, prefix, file.message_type, file.enum_type, file.extension)
        self._services = tuple(sorted(set(services)))
        self._methods = tuple(sorted(set(methods)))

    @classmethod
    def decode(
        cls, data: bytes, *, extra: Iterable[descriptor_pb2.FileDescriptorProto] = ()
    ) -> DescriptorIndex:
        """Index the serialized FileDescriptorSet ``data`` (plus the files ``extra`` whose
        names it does not use); raises :class:`ValueError` when it cannot be read."""
        try:
            files = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
        except DecodeError as exc:
            raise ValueError(f"not a serialized FileDescriptorSet: {exc}") from exc
        names = {f.name for f in files}
        files.extend(f for f in extra if f.name not in names)
        return cls(files)

    @property
    def services(self) -> tuple[str, ...]:
        """Full names of the services declared, sorted (``cadastre.v1.Cadastre``)."""
        return self._services

    @property
    def method_paths(self) -> tuple[str, ...]:
        """Method paths declared, sorted (``/cadastre.v1.Cadastre/GetParcel``)."""
        return self._methods

    def file_by_name(self, name: str) -> tuple[bytes, ...] | None:
        """The serialized file ``name`` then every file it depends on, or ``None``."""
        if _file_bytes(self._files, name) is None:
            return None
        return self._closure(name)

    def file_containing_symbol(self, symbol: str) -> tuple[bytes, ...] | None:
        """The file defining the fully qualified ``symbol`` (a message, enum, enum value,
        field, service, method or extension), with its dependencies; or ``None``."""
        name = self._symbols.get(symbol.removeprefix("."))
        return None if name is None else self._closure(name)

    def file_containing_extension(self, extendee: str, number: int) -> tuple[bytes, ...] | None:
        """The file declaring extension ``number`` of message ``extendee``, or ``None``."""
        name = self._extensions.get(extendee.removeprefix("."), {}).get(number)
        return None if name is None else self._closure(name)

    def extension_numbers(self, extendee: str) -> tuple[int, ...] | None:
        """The extension numbers declared for message ``extendee`` (``None``: unknown type)."""
        extendee = extendee.removeprefix(".")
        if extendee not in self._symbols:
            return None
        return tuple(sorted(self._extensions.get(extendee, {})))

    def _closure(self, name: str) -> tuple[bytes, ...]:
        """``name`` first, then its transitive dependencies (each once; missing ones left out)."""
        out: list[bytes] = []
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            data = _file_bytes(self._files, current)
            if data is None:
                continue
            out.append(data)
            deps = self._deps.get(current)
            if deps is None:  # a well-known type: read its dependencies from the proto
                deps = tuple(descriptor_pb2.FileDescriptorProto.FromString(data).dependency)
            stack.extend(reversed(deps))
        return tuple(out)

    def _index_scope(
        self,
        file_name: str,
        prefix: str,
        messages: Iterable[descriptor_pb2.DescriptorProto],
        enums: Iterable[descriptor_pb2.EnumDescriptorProto],
        extensions: Iterable[descriptor_pb2.FieldDescriptorProto],
    ) -> None:
        for enum in enums:
            self._symbols.setdefault(prefix + enum.name, file_name)
            for value in enum.value:  # enum values live in the enum's enclosing scope
                self._symbols.setdefault(prefix + value.name, file_name)
        for extension in extensions:
            self._symbols.setdefault(prefix + extension.name, file_name)
            extendee = extension.extendee.removeprefix(".")
            self._extensions.setdefault(extendee, {}).setdefault(extension.number, file_name)
        for message in messages:
            full = prefix + message.name
            self._symbols.setdefault(full, file_name)
            for field in message.field:
                self._symbols.setdefault(f"{full}.{field.name}", file_name)
            for oneof in message.oneof_decl:
                self._symbols.setdefault(f"{full}.{oneof.name}", file_name)
            self._index_scope(
                file_name, f"{full}.", message.nested_type, message.enum_type, message.extension
            )


class DescriptorCache:
    """The :class:`DescriptorIndex` of each provider subsystem in the configuration in
    force, built on first use and dropped when the configuration's serial changes.

    ``extra`` files are added to every index (the IS port's reflection adds the
    metaservices' own file). Used on the event loop only.
    """

    def __init__(self, *, extra: Iterable[descriptor_pb2.FileDescriptorProto] = ()) -> None:
        self._extra = tuple(extra)
        self._serial = -1
        #: An index, or why there is none (a fresh error is raised each time: raising one
        #: instance again would grow its traceback).
        self._entries: dict[SubsystemId, DescriptorIndex | str] = {}

    def index(self, snapshot: ConfigurationSnapshot, provider: SubsystemId) -> DescriptorIndex:
        """The index of ``provider``'s descriptors in ``snapshot``; raises
        :class:`DescriptorSetError` when it published none or they cannot be read."""
        if snapshot.serial != self._serial:
            self._serial, self._entries = snapshot.serial, {}
        entry = self._entries.get(provider)
        if entry is None:
            entry = self._build(snapshot, provider)
            self._entries[provider] = entry
        if isinstance(entry, str):
            raise DescriptorSetError(entry)
        return entry

    def _build(
        self, snapshot: ConfigurationSnapshot, provider: SubsystemId
    ) -> DescriptorIndex | str:
        data = snapshot.service_descriptor(provider)
        if not data:
            return f"{provider} has published no service descriptors in the global configuration"
        try:
            return DescriptorIndex.decode(data, extra=self._extra)
        except ValueError as exc:
            return f"the service descriptors of {provider} are unusable: {exc}"


def _file_bytes(files: dict[str, bytes], name: str) -> bytes | None:
    data = files.get(name)
    if data is not None or not name.startswith(_WELL_KNOWN_PREFIX):
        return data
    try:
        file = descriptor_pool.Default().FindFileByName(name)  # type: ignore[no-untyped-call]
    except KeyError:
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto.SerializeToString()
