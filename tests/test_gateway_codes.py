"""Every error code the exchange can put on the wire, each triggered over real gRPC
(DESIGN §4, Errors; issue 4 item 8: "a test for every code").

Each case of :data:`CASES` starts the in-process federation of tests/gatewayharness.py
(real mutual TLS, OCSP, signed global configuration, echo provider IS), provokes one
refusal and asserts the gRPC status (:func:`serai.errors.grpc_status_for` of the code,
the one map) and the ``x-road-error`` trailer ``origin:code:``, and how many calls
reached the provider IS (none for a refusal; the replay cases make one good call
first; ``deadline_exceeded`` is the provider IS being too slow, so it was called).

Two entry points are used: the consumer gateway's IS port as a plain grpcio client
(:meth:`Harness.call`), and the provider gateway's peer port as the *registered*
consumer gateway (its TLS key) sending hand-made ``ExchangeRequest`` messages, which
is how a misbehaving or compromised peer, a revoked signing certificate or a stale OCSP
response reaches the provider gateway. Several codes are also asserted by
tests/test_gateway_exchange.py; they are repeated here so that this table alone proves
the set.

:func:`test_every_code_the_exchange_can_send_is_covered` is the meta-test: the codes the
gateway's source (and the certificate and configuration code it calls while
exchanging) mentions are all in :data:`COVERED` or in :data:`EXCLUDED`, each exclusion
with its reason.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from certs.ca import CertificateAuthority
from certs.keys import generate_private_key
from certs.ocsp import OCSPResponder
from certs.ocsp_client import build_request
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway.errors import GatewayError
from gateway.headers import request_header_for
from gateway.replay import ReplayGuard
from gateway.signing import HeaderSigner, SignedHeader
from serai.errors import ErrorCode, Origin, grpc_status_for
from serai.identifiers import MemberId, SubsystemId
from serai_proto.transport.v1 import transport_pb2
from tests import gatewayharness
from tests.gatewayharness import (
    ARCHIVE,
    CADASTRE,
    GET_PARCEL,
    MINJUST,
    PROPERTY,
    REGISTRY,
    SLOW,
    Harness,
    Result,
    federation,
    trailers_of,
)

EXCHANGE_METHOD = "/serai.transport.v1.Transport/Exchange"
ROOT = Path(__file__).resolve().parent.parent

#: (status, "origin:code" of the x-road-error trailer or None)
Outcome = tuple[grpc.StatusCode, str | None]


# --- the provider gateway's peer port, spoken to as the registered consumer gateway ---


def _ocsp_der(
    tmp_path: Path,
    ca: CertificateAuthority,
    cert: x509.Certificate,
    *,
    pki: str = "pki",
    clock: Callable[[], dt.datetime] | None = None,
) -> bytes:
    """An OCSP answer about ``cert`` from the PKI's own responder key and records."""
    key, chain = PKIDirectory(tmp_path / pki).ocsp_signer()
    responder = OCSPResponder(
        key=key, certificate=chain[0], issuers=[ca.certificate], source=ca.records, clock=clock
    )
    return responder.respond(build_request(cert, ca.certificate))


def _signer(
    tmp_path: Path,
    ca: CertificateAuthority,
    member: MemberId = MINJUST,
    *,
    pki: str = "pki",
    revoke: bool = False,
    ocsp_clock: Callable[[], dt.datetime] | None = None,
    issued_at: dt.datetime | None = None,
) -> HeaderSigner:
    """A new signing certificate of ``member`` from ``ca``, with an OCSP answer for it."""
    key = generate_private_key()
    if issued_at is None:
        cert = ca.issue(Profile.SIGN, str(member), key.public_key())
    else:
        cert = ca.issue(
            Profile.SIGN,
            str(member),
            key.public_key(),
            now=issued_at,
            validity=dt.timedelta(days=1),
        )
    if revoke:
        ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise)
    der = _ocsp_der(tmp_path, ca, cert, pki=pki, clock=ocsp_clock)
    return HeaderSigner(
        key=key, certificate_chain=[cert, ca.certificate], ocsp_response=lambda: der
    )


def _sign(
    signer: HeaderSigner,
    *,
    client: SubsystemId = PROPERTY,
    provider: SubsystemId = REGISTRY,
    method: str = GET_PARCEL,
    body: bytes = b"parcel 42",
    created_at: dt.datetime | None = None,
    message_id: str = "raw-1",
) -> SignedHeader:
    return signer.sign(
        request_header_for(
            message_id=message_id,
            client=client,
            service=provider.service(method),
            body=body,
            created_at=created_at or dt.datetime.now(dt.UTC),
        )
    )


async def _send_raw(
    fed: Harness,
    signed: SignedHeader | None,
    body: bytes = b"parcel 42",
    *,
    ocsp_response: bytes | None = None,
    timeout_s: float | None = None,
    raw: bytes | None = None,
) -> Outcome:
    """Send an ExchangeRequest (or ``raw`` bytes) to the provider's peer port."""
    if raw is None:
        assert signed is not None
        request = transport_pb2.ExchangeRequest(
            signed_header=signed.jws,
            body=body,
            certificate_chain=list(signed.certificate_chain),
            ocsp_response=signed.ocsp_response if ocsp_response is None else ocsp_response,
        )
        if timeout_s is not None:
            request.timeout.FromNanoseconds(int(timeout_s * 1e9))
        raw = request.SerializeToString()
    key_pem, chain_pem = fed.consumer_tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem, private_key=key_pem, certificate_chain=chain_pem
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fed.provider.peer_port}",
        credentials,
        options=(
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ),
    ) as channel:
        exchange = channel.unary_unary(EXCHANGE_METHOD, None, None)
        try:
            await exchange(raw, timeout=30)
        except grpc.aio.AioRpcError as exc:
            error = trailers_of(exc.trailing_metadata()).get("x-road-error")
            return exc.code(), None if error is None else ":".join(error.split(":", 2)[:2])
    return grpc.StatusCode.OK, None


def _seen(result: Result) -> Outcome:
    return result.code, result.error


# --- the cases: each provokes one code ------------------------------------------------


async def _invalid_identifier(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call(service="UZ/GOV/CADASTRE"))  # a member, not a subsystem


async def _invalid_request(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call(message_id="x" * 256))  # message ids are 1 to 255 characters


async def _invalid_request_peer(fed: Harness, _: Path) -> Outcome:
    return await _send_raw(fed, None, raw=b"\x0a\xff")  # a truncated protobuf field


async def _unknown_client(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call(client="UZ/GOV/STC/tax"))


async def _unknown_service(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call(service="UZ/GOV/NOBODY/registry"))


async def _unknown_service_peer(fed: Harness, tmp_path: Path) -> Outcome:
    """The provider gateway does not serve the subsystem the request names."""
    signed = _sign(_signer(tmp_path, fed.ca), provider=CADASTRE.subsystem("archive"))
    return await _send_raw(fed, signed)


async def _client_not_authenticated(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call(client=str(ARCHIVE)))  # allowed only from 10.1.2.3


async def _message_too_large(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call(body=b"x" * (64 * 1024 + 1)))


async def _message_too_large_peer(fed: Harness, tmp_path: Path) -> Outcome:
    """Above the provider gateway's 4 MiB default; refused before any verification."""
    signed = _sign(_signer(tmp_path, fed.ca))
    return await _send_raw(fed, signed, b"x" * (4 * 1024 * 1024 + 1))


async def _access_denied(fed: Harness, _: Path) -> Outcome:
    return _seen(await fed.call("/cadastre.v1.Secrets/GetOwner"))


async def _replay_detected(fed: Harness, _: Path) -> Outcome:
    first = await fed.call(message_id="once")
    assert first.code == grpc.StatusCode.OK, first.details
    return _seen(await fed.call(message_id="once"))


async def _gateway_overloaded(fed: Harness, _: Path) -> Outcome:
    """The provider's replay guard holds one id (``max_entries=1``) and is full."""
    first = await fed.call(message_id="first")
    assert first.code == grpc.StatusCode.OK, first.details
    return _seen(await fed.call(message_id="second"))


async def _clock_skew(fed: Harness, tmp_path: Path) -> Outcome:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca), created_at=old))


async def _signature_invalid(fed: Harness, tmp_path: Path) -> Outcome:
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca)), b"parcel 43")


async def _certificate_revoked(fed: Harness, tmp_path: Path) -> Outcome:
    """The client member's signing certificate revoked in the PKI; the OCSP answer says so."""
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca, revoke=True)))


async def _certificate_untrusted(fed: Harness, tmp_path: Path) -> Outcome:
    """Signed under a CA that the global configuration does not approve."""
    other = PKIDirectory.init(tmp_path / "other-pki", instance="UZ")
    return await _send_raw(fed, _sign(_signer(tmp_path, other.issuing_ca(), pki="other-pki")))


async def _certificate_expired(fed: Harness, tmp_path: Path) -> Outcome:
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca, issued_at=ten_days_ago)))


async def _certificate_invalid(fed: Harness, tmp_path: Path) -> Outcome:
    """A valid signing certificate of another member (CADASTRE) for a MINJUST client."""
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca, CADASTRE)))


async def _ocsp_unavailable(fed: Harness, tmp_path: Path) -> Outcome:
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca)), ocsp_response=b"")


async def _ocsp_invalid(fed: Harness, tmp_path: Path) -> Outcome:
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca)), ocsp_response=b"not ocsp")


async def _ocsp_stale(fed: Harness, tmp_path: Path) -> Outcome:
    """An OCSP answer produced two hours ago (at most one hour is accepted)."""

    def two_hours_ago() -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)

    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca, ocsp_clock=two_hours_ago)))


async def _peer_not_registered(fed: Harness, tmp_path: Path) -> Outcome:
    """The calling gateway is registered, but not as serving this client subsystem."""
    signed = _sign(_signer(tmp_path, fed.ca), client=MINJUST.subsystem("elsewhere"))
    return await _send_raw(fed, signed)


async def _peer_not_registered_impostor(fed: Harness, _: Path) -> Outcome:
    """The provider's address answers with a valid certificate that is not registered."""
    return _seen(await fed.call())


async def _globalconf_expired(fed: Harness, _: Path) -> Outcome:
    fed.configuration_clock.offset = dt.timedelta(minutes=11)
    return _seen(await fed.call())


async def _log_unavailable(fed: Harness, _: Path) -> Outcome:
    fed.provider_log.set_unavailable("disk full")
    return _seen(await fed.call())


def _overdue() -> GatewayError:
    return GatewayError(
        "the message log's records have waited 4h for a time-stamp",
        code=E.TIMESTAMPING_OVERDUE,
        origin=Origin.GATEWAY,
    )


async def _timestamping_overdue_consumer(fed: Harness, _: Path) -> Outcome:
    """The consumer gateway's log is overdue: it refuses before signing or sending."""
    fed.consumer_admission.refusal = _overdue()
    return _seen(await fed.call())


async def _timestamping_overdue_provider(fed: Harness, _: Path) -> Outcome:
    """The provider gateway's log is overdue: it refuses before anything else."""
    fed.provider_admission.refusal = _overdue()
    return _seen(await fed.call())


async def _provider_unavailable(fed: Harness, _: Path) -> Outcome:
    """The provider IS is down: the provider gateway says so, blaming the provider."""
    await fed.echo.stop()
    return _seen(await fed.call())


async def _provider_unavailable_no_gateway(fed: Harness, _: Path) -> Outcome:
    """No gateway of the provider can be reached: the consumer gateway says so."""
    await fed.provider.stop(0)
    return _seen(await fed.call())


async def _deadline_exceeded(fed: Harness, tmp_path: Path) -> Outcome:
    """The request's 1 s ``timeout`` passes while the provider IS sleeps on Slow."""
    return await _send_raw(fed, _sign(_signer(tmp_path, fed.ca), method=SLOW), timeout_s=1.0)


async def _internal(fed: Harness, _: Path) -> Outcome:
    fed.provider_policy.failure = RuntimeError("a broken policy store")
    return _seen(await fed.call())


@dataclass(frozen=True)
class Case:
    name: str
    code: ErrorCode
    origin: Origin
    run: Callable[[Harness, Path], Awaitable[Outcome]]
    #: Calls that reached the provider IS.
    provider_calls: int = 0
    impostor: bool = False
    replay_max_entries: int | None = None


C, G, P = Origin.CLIENT, Origin.GATEWAY, Origin.PROVIDER
E = ErrorCode

CASES: tuple[Case, ...] = (
    Case("invalid_identifier", E.INVALID_IDENTIFIER, C, _invalid_identifier),
    Case("invalid_request", E.INVALID_REQUEST, C, _invalid_request),
    Case("invalid_request_peer", E.INVALID_REQUEST, C, _invalid_request_peer),
    Case("unknown_client", E.UNKNOWN_CLIENT, C, _unknown_client),
    Case("unknown_service", E.UNKNOWN_SERVICE, C, _unknown_service),
    Case("unknown_service_peer", E.UNKNOWN_SERVICE, C, _unknown_service_peer),
    Case("client_not_authenticated", E.CLIENT_NOT_AUTHENTICATED, C, _client_not_authenticated),
    Case("message_too_large", E.MESSAGE_TOO_LARGE, C, _message_too_large),
    Case("message_too_large_peer", E.MESSAGE_TOO_LARGE, C, _message_too_large_peer),
    Case("access_denied", E.ACCESS_DENIED, C, _access_denied),
    Case("replay_detected", E.REPLAY_DETECTED, C, _replay_detected, provider_calls=1),
    Case(
        "gateway_overloaded",
        E.GATEWAY_OVERLOADED,
        G,
        _gateway_overloaded,
        provider_calls=1,
        replay_max_entries=1,
    ),
    Case("clock_skew", E.CLOCK_SKEW, C, _clock_skew),
    Case("signature_invalid", E.SIGNATURE_INVALID, C, _signature_invalid),
    Case("certificate_revoked", E.CERTIFICATE_REVOKED, C, _certificate_revoked),
    Case("certificate_untrusted", E.CERTIFICATE_UNTRUSTED, C, _certificate_untrusted),
    Case("certificate_expired", E.CERTIFICATE_EXPIRED, C, _certificate_expired),
    Case("certificate_invalid", E.CERTIFICATE_INVALID, C, _certificate_invalid),
    Case("ocsp_unavailable", E.OCSP_UNAVAILABLE, C, _ocsp_unavailable),
    Case("ocsp_invalid", E.OCSP_INVALID, C, _ocsp_invalid),
    Case("ocsp_stale", E.OCSP_STALE, C, _ocsp_stale),
    Case("peer_not_registered", E.PEER_NOT_REGISTERED, C, _peer_not_registered),
    Case(
        "peer_not_registered_impostor",
        E.PEER_NOT_REGISTERED,
        P,
        _peer_not_registered_impostor,
        impostor=True,
    ),
    Case("globalconf_expired", E.GLOBALCONF_EXPIRED, G, _globalconf_expired),
    Case("log_unavailable", E.LOG_UNAVAILABLE, G, _log_unavailable),
    Case(
        "timestamping_overdue_consumer",
        E.TIMESTAMPING_OVERDUE,
        G,
        _timestamping_overdue_consumer,
    ),
    Case(
        "timestamping_overdue_provider",
        E.TIMESTAMPING_OVERDUE,
        G,
        _timestamping_overdue_provider,
    ),
    Case("provider_unavailable", E.PROVIDER_UNAVAILABLE, P, _provider_unavailable),
    Case(
        "provider_unavailable_no_gateway",
        E.PROVIDER_UNAVAILABLE,
        G,
        _provider_unavailable_no_gateway,
    ),
    Case("deadline_exceeded", E.DEADLINE_EXCEEDED, P, _deadline_exceeded, provider_calls=1),
    Case("internal", E.INTERNAL, G, _internal),
)

#: The codes :data:`CASES` put on the wire (kept explicit; checked against CASES).
COVERED: frozenset[ErrorCode] = frozenset(
    {
        E.INVALID_IDENTIFIER,
        E.INVALID_REQUEST,
        E.UNKNOWN_CLIENT,
        E.UNKNOWN_SERVICE,
        E.CLIENT_NOT_AUTHENTICATED,
        E.MESSAGE_TOO_LARGE,
        E.ACCESS_DENIED,
        E.REPLAY_DETECTED,
        E.GATEWAY_OVERLOADED,
        E.TIMESTAMPING_OVERDUE,
        E.CLOCK_SKEW,
        E.SIGNATURE_INVALID,
        E.CERTIFICATE_REVOKED,
        E.CERTIFICATE_UNTRUSTED,
        E.CERTIFICATE_EXPIRED,
        E.CERTIFICATE_INVALID,
        E.OCSP_UNAVAILABLE,
        E.OCSP_INVALID,
        E.OCSP_STALE,
        E.PEER_NOT_REGISTERED,
        E.GLOBALCONF_EXPIRED,
        E.LOG_UNAVAILABLE,
        E.PROVIDER_UNAVAILABLE,
        E.DEADLINE_EXCEEDED,
        E.INTERNAL,
    }
)

#: Codes the scanned source mentions that an exchange never puts on the wire.
EXCLUDED: dict[ErrorCode, str] = {
    # The admin API and the ACL store (admin port, `serai acl ...`), not the exchange;
    # tested in tests/test_gateway_admin.py and tests/test_gateway_acl*.py.
    E.ALREADY_EXISTS: "admin API / ACL store only (grant of an existing rule)",
    E.NOT_FOUND: "admin API / ACL store only (revoke of a missing rule)",
    # Raised while loading configuration or building a HeaderSigner (key and
    # certificate mismatch, bad settings): the gateway refuses to start instead.
    E.INVALID_CONFIG: "start-up and admin API only; a misconfigured gateway does not serve",
    # registry.client: GatewayRuntime.start() calls configuration.current() first, so a
    # serving gateway always holds a good copy; current() raises only globalconf_expired.
    E.GLOBALCONF_UNAVAILABLE: "only before the first good copy; the gateway does not start",
    # registry.client.refresh() refusals: the background follower logs them and keeps
    # the last good copy; the exchange only sees globalconf_expired when that runs out.
    E.GLOBALCONF_INVALID: "refresh() only; logged by the follower, never answered",
    E.GLOBALCONF_ROLLBACK: "refresh() only; logged by the follower, never answered",
    E.GLOBALCONF_EQUIVOCATION: "refresh() only; logged by the follower, never answered",
    E.GLOBALCONF_WRONG_INSTANCE: "refresh() only; logged by the follower, never answered",
}

#: Where the gateway's codes come from: its own package and what verification and the
#: configuration client raise during an exchange.
SCANNED = (
    *sorted((ROOT / "gateway").glob("*.py")),
    ROOT / "certs" / "validation.py",
    ROOT / "certs" / "revocation.py",
    ROOT / "certs" / "ocsp_client.py",
    ROOT / "registry" / "client.py",
)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_code_on_the_wire(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.replay_max_entries is not None:
        small = functools.partial(ReplayGuard, max_entries=case.replay_max_entries)
        monkeypatch.setattr(gatewayharness, "ReplayGuard", small)
    async with federation(tmp_path, impostor=case.impostor) as fed:
        status, error = await case.run(fed, tmp_path)
        assert error == f"{case.origin}:{case.code}", (case.name, status)
        assert status == grpc_status_for(case.code), case.name
        assert len(fed.echo.calls) == case.provider_calls, fed.echo.calls


def _mentioned_codes() -> set[ErrorCode]:
    pattern = re.compile(r"ErrorCode\.([A-Z_]+)")
    names = {name for path in SCANNED for name in pattern.findall(path.read_text("utf-8"))}
    return {ErrorCode[name] for name in names}


def test_every_code_the_exchange_can_send_is_covered() -> None:
    assert {case.code for case in CASES} == COVERED
    assert not COVERED & EXCLUDED.keys()
    mentioned = _mentioned_codes()
    assert mentioned - COVERED - EXCLUDED.keys() == set(), "a code without a wire test"
    # every exclusion is still mentioned somewhere, or the list has gone stale
    assert EXCLUDED.keys() <= mentioned
