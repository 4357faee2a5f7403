"""Metaservices ``serai.meta.v1.Meta``: what the federation offers, answered by gateways.

X-Road's listClients, listMethods, allowedMethods and getOpenAPI in gRPC form
(``proto/serai_proto/meta/v1/meta.proto``). A consumer IS calls them on its own
gateway's IS port with ``x-road-client``, authenticated as for any exchange
(:mod:`gateway._iscaller`).

Who answers what:

- ``ListClients``: the consumer gateway itself, from the global configuration in force
  (:class:`ConsumerMeta`); ``x-road-service`` is not needed. Every member, then its
  subsystems, sorted by id; the request's ``instance_id`` must be empty or the
  configuration's instance (``not_found`` otherwise: a gateway knows one federation).
- ``ListMethods``, ``AllowedMethods``, ``GetServiceDescriptors``: with ``x-road-service``
  naming the provider subsystem, they travel as an ordinary exchange
  (:mod:`gateway.consumer`): signed, verified and committed to both message logs. The
  provider gateway recognises the method path and answers **itself**
  (:func:`answer_provider_meta`); the provider IS never sees the call.

Sources. The methods of a provider are those of the FileDescriptorSet the registry
publishes for it in the global configuration (``serai registry descriptor set``), the one
source every gateway of the federation holds, signed, identical for every gateway of the
provider and for the consumer gateway's reflection. The provider's IS is not asked (it
never sees metaservice calls). ``AllowedMethods`` reads the provider gateway's access
rights for the **signed** client of the request: the descriptor's methods the client may
call (a whole-service grant covers every method of that service), plus the methods
granted to it individually (callable even when no descriptor lists them). Without
descriptors it still answers, with the individually granted methods only.

What a caller may see. Access rights do not apply to metaservices (any client may ask),
so the answers hold nothing a client could not learn otherwise: the configuration's
members and subsystems, the published descriptors, and for ``AllowedMethods`` only the
signed caller's own methods, never a rule, a subject or another client's rights.

Refusals (before any record is written on the provider side; the usual ``x-road-error``):

- a request body that does not decode, or whose ``provider_subsystem`` is not the call's
  ``x-road-service``: ``invalid_request`` (INVALID_ARGUMENT), checked by both gateways;
- a method of ``serai.meta.v1.Meta`` that does not exist, or ``ListClients`` arriving at
  a provider gateway: ``invalid_request``; it is never forwarded;
- ``ListMethods`` or ``GetServiceDescriptors`` of a provider that published no
  descriptors, or unreadable ones: ``unknown_service`` (NOT_FOUND), origin ``provider``.
"""

from __future__ import annotations

from typing import Any, Final

import grpc

from gateway import _metamessages as messages
from gateway._descriptors import DescriptorCache, DescriptorIndex, DescriptorSetError
from gateway._iscaller import (
    CLIENT_KEY,
    authenticate_is,
    check_registered_client,
    required,
    x_road_metadata,
)
from gateway._settings import ExchangeParts
from gateway.acl import AccessPolicy
from gateway.errors import GatewayError
from gateway.wire import refusing
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import ServiceId, SubsystemId

__all__ = [
    "ALLOWED_METHODS",
    "GET_SERVICE_DESCRIPTORS",
    "LIST_CLIENTS",
    "LIST_METHODS",
    "META_METHODS",
    "META_SERVICE",
    "ConsumerMeta",
    "answer_provider_meta",
    "check_provider_meta_request",
    "is_meta_method",
]

META_SERVICE: Final = "serai.meta.v1.Meta"
LIST_CLIENTS: Final = f"/{META_SERVICE}/ListClients"
LIST_METHODS: Final = f"/{META_SERVICE}/ListMethods"
ALLOWED_METHODS: Final = f"/{META_SERVICE}/AllowedMethods"
GET_SERVICE_DESCRIPTORS: Final = f"/{META_SERVICE}/GetServiceDescriptors"
#: Every method of the metaservices.
META_METHODS: Final = frozenset(
    {LIST_CLIENTS, LIST_METHODS, ALLOWED_METHODS, GET_SERVICE_DESCRIPTORS}
)
#: The metaservices a provider gateway answers (the others are the consumer gateway's).
_PROVIDER_SCOPED: Final = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_SERVICE_DESCRIPTORS})
_PREFIX: Final = f"/{META_SERVICE}/"

_Context = grpc.aio.ServicerContext[bytes, bytes]


def is_meta_method(method_path: str) -> bool:
    """Whether ``method_path`` is in ``serai.meta.v1.Meta`` (never forwarded to an IS)."""
    return method_path.startswith(_PREFIX)


def check_provider_meta_request(method_path: str, body: bytes, provider: SubsystemId) -> None:
    """For a metaservice call to ``provider`` (the call's ``x-road-service``): return if
    the method is one a provider gateway answers and the body names ``provider``; else
    raise ``invalid_request``. Returns at once for any other method."""
    if not is_meta_method(method_path):
        return
    if method_path not in _PROVIDER_SCOPED:
        if method_path == LIST_CLIENTS:
            raise _invalid("ListClients is answered by the caller's own gateway")
        raise _invalid(f"{META_SERVICE} has no method {method_path[len(_PREFIX) :]!a}")
    named = messages.decode_provider_request(body)
    if named != str(provider):
        raise _invalid(
            f"provider_subsystem {named[:300]!a} is not the call's x-road-service {provider}"
        )


def answer_provider_meta(
    *,
    method_path: str,
    body: bytes,
    client: SubsystemId,
    provider: SubsystemId,
    snapshot: ConfigurationSnapshot,
    policy: AccessPolicy,
    descriptors: DescriptorCache,
) -> bytes:
    """The provider gateway's answer to a metaservice call of the verified ``client`` to
    ``provider`` (a subsystem this gateway serves): the serialized response. Raises a
    refusal (module docstring) before anything is committed."""
    check_provider_meta_request(method_path, body, provider)
    if method_path == ALLOWED_METHODS:
        return messages.encode_allowed_methods(
            _allowed_methods(client, provider, snapshot, policy, descriptors)
        )
    index = descriptors.index(snapshot, provider)
    if method_path == LIST_METHODS:
        return messages.encode_list_methods(index.method_paths)
    # the exact bytes the registry published (the index re-serialises what it keeps)
    data = snapshot.service_descriptor(provider)
    if data is None:  # pragma: no cover  (descriptors.index refused it already)
        raise DescriptorSetError(f"{provider} has published no service descriptors")
    return messages.encode_service_descriptors(data)


class ConsumerMeta(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable at run time
    """The IS port's handler of the metaservices its gateway answers itself: ListClients,
    and a refusal for any method of ``serai.meta.v1.Meta`` that does not exist (the
    provider-scoped ones are forwarded as exchanges)."""

    def __init__(self, *, parts: ExchangeParts) -> None:
        self._parts = parts

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if not is_meta_method(method) or method in _PROVIDER_SCOPED:
            return None
        handle = self.handle

        async def answer(body: bytes, context: Any) -> bytes:
            return await handle(method, body, context)

        return grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=None, response_serializer=None
        )

    async def handle(self, method: str, body: bytes, context: _Context) -> bytes:
        """Answer ``method`` (ListClients) for the calling IS, or refuse."""
        observer = self._parts.observer
        observation = observer.begin("consumer")
        observation.method = method
        try:
            async with refusing(context, side="consumer", outcome=observation):
                client = SubsystemId.parse(required(x_road_metadata(context), CLIENT_KEY))
                observation.client = client
                authenticate_is(self._parts.settings, client, context)
                snapshot = self._parts.configuration.current()
                check_registered_client(self._parts, snapshot, client)
                if method != LIST_CLIENTS:
                    raise _invalid(f"{META_SERVICE} has no method {method[len(_PREFIX) :]!a}")
                return _list_clients(messages.decode_list_clients_request(body), snapshot)
        finally:
            observer.finish(observation)
        raise AssertionError("unreachable: refusing() aborts")  # pragma: no cover


def _list_clients(instance: str, snapshot: ConfigurationSnapshot) -> bytes:
    if instance and instance != snapshot.instance:
        raise GatewayError(
            f"this gateway knows only federation instance {snapshot.instance}, "
            f"not {instance[:64]!a}",
            code=ErrorCode.NOT_FOUND,
            origin=Origin.CLIENT,
        )
    clients: list[tuple[str, str]] = []
    for member in sorted(snapshot.configuration.federation.members, key=lambda m: m.id):
        clients.append((str(member.id), member.name))
        clients.extend((str(s), member.name) for s in snapshot.subsystems_of(member.id))
    return messages.encode_list_clients(clients)


def _allowed_methods(
    client: SubsystemId,
    provider: SubsystemId,
    snapshot: ConfigurationSnapshot,
    policy: AccessPolicy,
    descriptors: DescriptorCache,
) -> tuple[str, ...]:
    """The method paths ``client`` may call of ``provider`` (module docstring)."""
    try:
        index: DescriptorIndex | None = descriptors.index(snapshot, provider)
    except DescriptorSetError:
        index = None
    candidates = set(index.method_paths) if index is not None else set()
    candidates.update(
        str(rule.target) for rule in policy.rules_for(provider) if not rule.target.is_whole_service
    )
    allowed = set()
    for path in candidates:
        try:
            service = ServiceId.for_method(subsystem=provider, method_path=path)
        except InvalidIdentifierError:  # a descriptor's name the gateway could not route
            continue
        if policy.is_allowed(client, service, groups=snapshot):
            allowed.add(path)
    return tuple(sorted(allowed))


def _invalid(message: str) -> GatewayError:
    return GatewayError(message, code=ErrorCode.INVALID_REQUEST, origin=Origin.CLIENT)
