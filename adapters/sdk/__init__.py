"""The SDK an agency developer uses to put an information system (IS) on the bus.

Provider side (your IS serves a gRPC service to other agencies, through your gateway):
register generated servicers with :func:`service`, serve them with
:class:`ProviderServer`, read who is calling with :func:`request_context`, and answer
errors with :func:`abort` / :func:`invalid_argument`.

Consumer side (your IS calls another agency's service, through your gateway):
:class:`GatewayClient` gives ordinary generated stubs bound to a provider subsystem;
a gateway's refusal is :class:`ExchangeRefused`, a provider's own error an unchanged
``grpc.aio.AioRpcError``; :func:`call_with_receipt` returns the exchange's
:class:`Receipt` (message id and request hash) with the response.

What the SDK guarantees (details in each module's docstring):

- a provider never handles a call whose ``x-road-client``, ``x-road-service`` and
  ``x-road-id`` are missing or malformed without being told (:class:`ProviderError`,
  answered UNAUTHENTICATED or INVALID_ARGUMENT naming the key), and never sends a stack
  trace on the wire;
- a ProviderServer answers gRPC health (SERVING per service and overall) and reflection;
- a consumer's every call carries its client, service, user id and issue and a deadline,
  and a refusal is told apart from a provider's own error by the ``x-road-error``
  trailer, which only gateways send.

What it does not do: the gateway, not the SDK, authenticates, signs, checks access
rights and logs. The SDK trusts the gateway's metadata, so a provider IS must be
reachable by its gateway only. See docs/adapters.md.
"""

# First: importing serai sets the TLS policy before any module here imports grpc.
import serai as _serai  # noqa: F401, I001

from adapters.sdk.consumer import (
    GatewayClient,
    Receipt,
    call_with_receipt,
    parse_refusal,
    refusal_from_trailer,
    rich_status,
)
from adapters.sdk.context import RequestContext, context_from_metadata, request_context
from adapters.sdk.errors import ExchangeRefused, ProviderError
from adapters.sdk.provider import (
    ProviderServer,
    ServiceRegistration,
    abort,
    invalid_argument,
    service,
)

__all__ = [
    "ExchangeRefused",
    "GatewayClient",
    "ProviderError",
    "ProviderServer",
    "Receipt",
    "RequestContext",
    "ServiceRegistration",
    "abort",
    "call_with_receipt",
    "context_from_metadata",
    "invalid_argument",
    "parse_refusal",
    "refusal_from_trailer",
    "request_context",
    "rich_status",
    "service",
]
