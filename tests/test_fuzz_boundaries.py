"""Fuzzing every decoder at a trust boundary (issue 9, point 4): no input crashes it or
yields anything but its documented error.

Each property feeds a decoder random structure of its format family and mutations of a
valid input (``tests/fuzzstrategies.py``) and asserts that the outcome is a success that
round-trips, or exactly the documented refusal: the documented exception class, with a
code from the documented set and the documented origin. Any other exception fails the
property. The network servers these decoders sit behind are fuzzed in
``tests/test_fuzz_servers.py``.

Decoders covered, and the one refusal each documents (anything else fails):

- Identifiers (``serai.identifiers``: every ``parse``, ``parse_subject``,
  ``parse_instance``, ``ServiceId.for_method``): ``InvalidIdentifierError``
  (``invalid_identifier``, origin client); a success prints back to the input.
- Signed header bytes (``gateway.headers``: ``RequestHeader.decode``,
  ``ResponseHeader.decode``): ``HeaderError`` (``invalid_request``, and
  ``invalid_identifier`` for requests; origin client for requests, provider for
  responses); a success re-encodes to the same bytes.
- Transport envelope (``gateway._messages``: ``ExchangeRequestMessage.decode``,
  ``ExchangeResponseMessage.decode``): ``GatewayError`` ``invalid_request``.
- JWS headers (``gateway.signing.verify_request`` / ``verify_response``, with mutated
  tokens, hostile protected headers and payloads validly signed by the member's key,
  damaged x5c certificates and damaged stapled OCSP responses): ``GatewayError`` with a
  code of the module's rules (``signature_invalid``, ``certificate_*``, ``ocsp_*``,
  ``invalid_request``, ``invalid_identifier``, ``clock_skew``) and the side's origin.
- Logged header JWS (``gateway.messagelog._headerjws.verify_header_jws``):
  ``HeaderJwsError``.
- Tree heads (``serai.treehead``: ``parse_signed_tree_head``,
  ``verify_signed_tree_head``, ``verify_tree_head_timestamp``): ``TreeHeadError``
  (``signature_invalid``, ``certificate_*``; ``timestamp_invalid`` for tokens).
- Proofs (``serai.merkle``: ``verify_inclusion``, ``verify_consistency``):
  ``ProofError``; a changed valid proof never verifies.
- Configuration log documents (``registry.conflog``: ``ProofBundle.decode``,
  ``decode_consistency``): ``ConfigurationError`` ``globalconf_equivocation``.
- Global configuration (``registry.signing.verify_signed_configuration``):
  ``ConfigurationError`` (``globalconf_invalid``, ``globalconf_unknown_signer``,
  ``globalconf_signature_invalid``); ``registry.codec.decode_configuration`` and
  ``decode_anchor`` (the anchor file): ``globalconf_invalid``;
  ``registry.client.TrustedConfiguration.check`` of an envelope the registry's key
  validly signed over fuzzed bytes: ``globalconf_invalid``, ``globalconf_wrong_instance``
  or ``globalconf_expired``; ``registry.client.GlobalConfigurationClient.refresh`` of a
  validly signed configuration whose configuration-log proof bundle is hostile:
  ``ConfigurationError``, nothing held.
- Evidence bundle documents (``gateway.messagelog.bundle``: ``Manifest.decode``,
  ``read_proof``): ``BundleError``.
- OCSP requests (``certs.ocsp.OCSPResponder.answer``): never raises; ``malformedRequest``,
  ``unauthorized`` or a signed answer, never ``internalError``.
- TSA requests (``certs.tsa.TimeStampAuthority.respond``): never raises; a DER
  ``TimeStampResp`` granted, or rejected with ``badDataFormat``, ``badAlg``,
  ``unacceptedPolicy`` or ``unacceptedExtensions``, never ``systemFailure``.
- Time-stamp replies and tokens (``certs.timestamp``: ``verify_reply``,
  ``verify_token``): ``TimestampError`` ``timestamp_invalid``.
- Certificates (``certs.keys.parse_der_certificate``): ``ValueError``.
- Bearer tokens (``serai.tokens.TokenVerifier.verify``): ``SeraiError``
  ``unauthenticated``.

Every property runs a modest number of examples by default; ``@fuzz`` also defines a
``*_deep`` twin of each, marked ``slow``, that runs thousands.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs.ca import CertificateAuthority
from certs.errors import TimestampError
from certs.keys import (
    PrivateKey,
    generate_private_key,
    load_certificate_chain,
    parse_der_certificate,
)
from certs.ocsp import OCSPResponder
from certs.ocsp_client import build_request
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import (
    TimeStampRespStructure,
    build_query,
    new_nonce,
    verify_reply,
    verify_token,
)
from certs.tsa import TimeStampAuthority
from certs.validation import TrustStore
from gateway._messages import ExchangeRequestMessage, ExchangeResponseMessage, Receipt
from gateway.errors import GatewayError, HeaderError
from gateway.headers import RequestHeader, ResponseHeader, request_header_for, response_header_for
from gateway.messagelog._headerjws import HeaderJwsError, verify_header_jws
from gateway.messagelog.bundle import BundleError, Manifest, read_proof
from gateway.signing import HeaderSigner, SignedHeader, verify_request, verify_response
from registry.client import GlobalConfigurationClient, InMemoryFetchTransport, TrustedConfiguration
from registry.codec import (
    TrustAnchor,
    decode_anchor,
    decode_configuration,
    encode_anchor,
    encode_configuration,
)
from registry.conflog import ProofBundle, bundle_path, decode_consistency, encode_consistency
from registry.errors import ConfigurationError
from registry.model import ApprovedCA, Federation, Gateway, GlobalConfiguration, Member, Subsystem
from registry.signing import sign_configuration, verify_signed_configuration
from serai import merkle
from serai.errors import ErrorCode, InvalidIdentifierError, Origin, SeraiError
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    ServiceId,
    SubsystemId,
    parse_instance,
    parse_subject,
)
from serai.merkle import MemoryTree, ProofError
from serai.tokens import TokenIssuer, TokenVerifier
from serai.treehead import (
    TreeHead,
    TreeHeadError,
    TreeHeadSigner,
    parse_signed_tree_head,
    verify_signed_tree_head,
    verify_tree_head_timestamp,
)
from serai_proto.globalconf.v1 import globalconf_pb2 as gpb
from tests import fuzzstrategies as fz

# -- settings: a default run and a slow deep twin ---------------------------------------------

_HEALTH = [
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]
DEFAULT = settings(max_examples=120, deadline=None, suppress_health_check=_HEALTH)
DEEP = settings(max_examples=fz.deep_examples(1_000), deadline=None, suppress_health_check=_HEALTH)

_F = TypeVar("_F", bound=Callable[..., None])


def fuzz(**strategies: st.SearchStrategy[Any]) -> Callable[[_F], _F]:
    """``@given(**strategies)`` with :data:`DEFAULT`, plus a twin ``<name>_deep`` in the
    module, marked ``slow``, with :data:`DEEP` (1,000 examples; ``SERAI_FUZZ_DEEP`` scales it)."""

    def decorate(test: _F) -> _F:
        @functools.wraps(test)
        def twin(*args: Any, **kwargs: Any) -> None:
            test(*args, **kwargs)

        twin.__name__ = twin.__qualname__ = f"{test.__name__}_deep"
        deep = pytest.mark.timeout(3600)(pytest.mark.slow(DEEP(given(**strategies)(twin))))
        setattr(sys.modules[test.__module__], twin.__name__, deep)
        return cast("_F", DEFAULT(given(**strategies)(test)))

    return decorate


# -- the federation's material: a real development PKI ------------------------------------------

CLIENT = SubsystemId.parse("UZ/GOV/STC/tax")
PROVIDER = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
SERVICE = PROVIDER.service("/cadastre.v1.Cadastre/GetParcel")
BODY = b"parcel 42"
LOG_ID = "UZ/GOV/STC/gw:main"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _es256(key: PrivateKey, data: bytes) -> bytes:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@dataclass(frozen=True, repr=False)
class World:
    """Valid inputs of every decoder, and what verifies them."""

    pki: PKIDirectory
    ca: CertificateAuthority
    root: x509.Certificate
    issuing: x509.Certificate
    trust: TrustStore
    responder: OCSPResponder
    tsa: TimeStampAuthority
    tsa_chain: tuple[x509.Certificate, ...]
    member_key: PrivateKey
    member_chain: tuple[bytes, ...]
    member_ocsp: bytes
    ocsp_request: bytes
    signed_request: SignedHeader
    signed_response: SignedHeader
    log_key: PrivateKey
    log_chain: tuple[x509.Certificate, ...]
    sth: bytes
    sth_token: bytes
    tsa_query: bytes
    tsa_reply: bytes
    conf_key: PrivateKey
    conf_cert: x509.Certificate
    configuration: bytes
    envelope: bytes
    anchor: TrustAnchor
    anchor_bytes: bytes
    #: The clock every check runs at: when the headers were signed, so that a run of any
    #: length sees them as fresh (no clock_skew, no stale OCSP response).
    now: dt.datetime

    def __repr__(self) -> str:
        return "World(...)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("World(...)")  # Hypothesis would print every certificate

    def sign_request_payload(self, payload: bytes) -> str:
        """A compact JWS over any payload, validly signed by the client member."""
        protected = self.signed_request.jws.split(".")[0]
        signing_input = f"{protected}.{fz.b64url(payload)}"
        signature = _es256(self.member_key, signing_input.encode())
        return f"{signing_input}.{fz.b64url(signature)}"

    def sign_request_protected(self, protected: bytes, payload: bytes) -> str:
        """A compact JWS with any protected header, validly signed by the client member."""
        signing_input = f"{fz.b64url(protected)}.{fz.b64url(payload)}"
        signature = _es256(self.member_key, signing_input.encode())
        return f"{signing_input}.{fz.b64url(signature)}"

    def sign_tree_head_payload(self, payload: bytes, protected: bytes | None = None) -> bytes:
        """A compact JWS over any tree-head payload, validly signed by the log key."""
        head = protected if protected is not None else self.sth.split(b".")[0]
        part = head if protected is None else fz.b64url(protected).encode()
        signing_input = part + b"." + fz.b64url(payload).encode()
        return signing_input + b"." + fz.b64url(_es256(self.log_key, signing_input)).encode()

    def sign_configuration(self, configuration: bytes) -> bytes:
        return sign_configuration(configuration, key=self.conf_key, certificate=self.conf_cert)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = PKIDirectory.init(tmp_path_factory.mktemp("fuzz") / "pki", instance="UZ")
    ca = pki.issuing_ca()
    root = pki.root_certificate()
    issuing = load_certificate_chain(pki.issuing_cert)[0]
    ocsp_key, ocsp_chain = pki.ocsp_signer()
    responder = OCSPResponder(
        key=ocsp_key, certificate=ocsp_chain[0], issuers=[ca.certificate], source=ca.records
    )
    tsa_key, tsa_chain = pki.tsa_signer()
    tsa = TimeStampAuthority(key=tsa_key, chain=tsa_chain)

    member_key = generate_private_key()
    member_cert = ca.issue(Profile.SIGN, "UZ/GOV/STC", member_key.public_key())
    ocsp_request = build_request(member_cert, issuing)
    member_ocsp = responder.respond(ocsp_request)
    signer = HeaderSigner(
        key=member_key, certificate_chain=[member_cert, issuing], ocsp_response=lambda: member_ocsp
    )
    request = request_header_for(
        message_id="m-1", client=CLIENT, service=SERVICE, body=BODY, created_at=_now()
    )
    signed_request = signer.sign(request)
    signed_response = signer.sign(
        response_header_for(
            message_id="m-1",
            request_header_sha256=signed_request.header_sha256,
            body=BODY,
            created_at=_now(),
        )
    )

    log_key = generate_private_key()
    log_cert = ca.issue(Profile.LOG_SIGNING, LOG_ID, log_key.public_key())
    log_chain = (log_cert, issuing)
    head = TreeHead(
        log_id=LOG_ID,
        tree_size=7,
        root_hash=hashlib.sha256(b"root").digest(),
        time=_now().replace(microsecond=123_000),
    )
    sth = TreeHeadSigner(key=log_key, certificate_chain=log_chain).sign(head).jws
    nonce = new_nonce()
    tsa_query = build_query(sth, nonce=nonce)
    tsa_reply = tsa.respond(tsa_query)
    sth_token = verify_reply(tsa_reply, data=sth, nonce=nonce, trusted_roots=[root]).token_der

    conf_key = generate_private_key()
    conf_cert = ca.issue(Profile.CONFIGURATION_SIGNING, "UZ registry", conf_key.public_key())
    now = _now().replace(microsecond=0)
    minjust = MemberId.parse("UZ/GOV/MINJUST")
    cadastre = MemberId.parse("UZ/GOV/CADASTRE")
    gateway_key = generate_private_key()
    gateway_cert = ca.issue(Profile.AUTH, "UZ/GOV/CADASTRE/gw:main", gateway_key.public_key())
    configuration = encode_configuration(
        GlobalConfiguration(
            federation=Federation(
                instance="UZ",
                members=(Member(id=minjust, name="Justice"), Member(id=cadastre, name="Cadastre")),
                subsystems=(Subsystem(id=minjust.subsystem("property")), Subsystem(id=PROVIDER)),
                gateways=(
                    Gateway.with_certificate(
                        id=cadastre.gateway("main"),
                        address="127.0.0.1:1",
                        auth_certificate=_der(gateway_cert),
                        subsystems=(PROVIDER,),
                    ),
                ),
                certificate_authorities=(
                    ApprovedCA(
                        name="UZ CA",
                        root_certificate=_der(root),
                        intermediate_certificates=(_der(issuing),),
                        ocsp_urls=("http://127.0.0.1:1/",),
                    ),
                ),
            ),
            serial=3,
            generated_at=now,
            expires_at=now + dt.timedelta(days=1),
        )
    )
    anchor = TrustAnchor(
        instance="UZ",
        download_url="http://registry.invalid/globalconf/v1/current",
        signing_certificates=(_der(conf_cert),),
        generated_at=now,
        configuration_log_id="UZ registry",
    )
    return World(
        pki=pki,
        ca=ca,
        root=root,
        issuing=issuing,
        trust=TrustStore(roots=[root]),
        responder=responder,
        tsa=tsa,
        tsa_chain=tuple(tsa_chain),
        member_key=member_key,
        member_chain=signed_request.certificate_chain,
        member_ocsp=member_ocsp,
        ocsp_request=ocsp_request,
        signed_request=signed_request,
        signed_response=signed_response,
        log_key=log_key,
        log_chain=log_chain,
        sth=sth,
        sth_token=sth_token,
        tsa_query=tsa_query,
        tsa_reply=tsa_reply,
        conf_key=conf_key,
        conf_cert=conf_cert,
        configuration=configuration,
        envelope=sign_configuration(configuration, key=conf_key, certificate=conf_cert),
        anchor=anchor,
        anchor_bytes=encode_anchor(anchor),
        now=_now(),
    )


# -- the outcome: success or the documented refusal --------------------------------------------

_T = TypeVar("_T")


def refused_or(
    call: Callable[[], _T],
    error: type[BaseException],
    codes: set[ErrorCode] | None = None,
    origin: Origin | None = None,
) -> _T | None:
    """``call()``'s result, or ``None`` if it raised ``error`` with one of ``codes`` and
    ``origin``; any other exception fails the property."""
    try:
        return call()
    except error as exc:
        refusal: BaseException = exc
    if codes is not None:
        assert isinstance(refusal, SeraiError), repr(refusal)
        assert refusal.code in codes, repr(refusal)
    if origin is not None:
        assert isinstance(refusal, SeraiError), repr(refusal)
        assert refusal.origin is origin, repr(refusal)
    return None


def _with_one(valid: dict[str, object], which: int, text: str) -> bytes:
    """``valid`` as compact JSON with the value of member ``which`` replaced by ``text``."""
    names = sorted(valid)
    replaced = names[which % len(names)]
    members = {
        name: text if name == replaced else json.dumps(valid[name], separators=(",", ":"))
        for name in names
    }
    return fz.json_object_with(members).replace(", ", ",").encode()


PROTO = (fz.raw_bytes(), fz.protobuf_wire())
REQUEST_CODES = {
    ErrorCode.SIGNATURE_INVALID,
    ErrorCode.CERTIFICATE_INVALID,
    ErrorCode.CERTIFICATE_UNTRUSTED,
    ErrorCode.CERTIFICATE_EXPIRED,
    ErrorCode.CERTIFICATE_REVOKED,
    ErrorCode.OCSP_INVALID,
    ErrorCode.OCSP_STALE,
    ErrorCode.OCSP_UNAVAILABLE,
    ErrorCode.INVALID_REQUEST,
    ErrorCode.INVALID_IDENTIFIER,
    ErrorCode.CLOCK_SKEW,
}


# -- identifiers --------------------------------------------------------------------------------

VALID_IDS = [
    "UZ/GOV/STC",
    "UZ/GOV/STC/tax",
    "UZ/GOV/STC/gw:main",
    "UZ/group:tax-officials",
    "UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel",
    "UZ",
]
PARSERS: list[Callable[[Any], object]] = [
    MemberId.parse,
    SubsystemId.parse,
    GatewayId.parse,
    GlobalGroupId.parse,
    ServiceId.parse,
    parse_subject,
    parse_instance,
]


@fuzz(
    text=fz.identifier_texts(VALID_IDS)
    | st.none()
    | st.integers()
    | st.binary(max_size=20)
    | st.lists(st.text(max_size=3), max_size=3)
)
def test_identifier_parsers_refuse_with_invalid_identifier_only(text: object) -> None:
    for parse in PARSERS:
        parsed = refused_or(
            lambda parse=parse: parse(text),  # type: ignore[misc]
            InvalidIdentifierError,
            {ErrorCode.INVALID_IDENTIFIER},
            Origin.CLIENT,
        )
        if parsed is not None:
            assert str(parsed) == text
    service = refused_or(
        lambda: ServiceId.for_method(subsystem=PROVIDER, method_path=text),  # type: ignore[arg-type]
        InvalidIdentifierError,
        {ErrorCode.INVALID_IDENTIFIER},
    )
    if service is not None:
        assert service.method_path == text


# -- transport envelope and signed header bytes -------------------------------------------------

_HEADER_TIMES = fz.timestamp_fields([7, 8])


@fuzz(item=fz.inputs(*PROTO, _HEADER_TIMES, append=True), times=_HEADER_TIMES)
def test_request_header_decode(world: World, item: fz.Item, times: bytes) -> None:
    valid = world.signed_request.header_bytes
    for data in (fz.resolve(item, valid), valid + times):
        header = refused_or(
            lambda data=data: RequestHeader.decode(data),  # type: ignore[misc]
            HeaderError,
            {ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_IDENTIFIER},
            Origin.CLIENT,
        )
        if header is not None:
            assert header.encode() == data


@fuzz(item=fz.inputs(*PROTO, append=True), times=_HEADER_TIMES)
def test_response_header_decode(world: World, item: fz.Item, times: bytes) -> None:
    valid = world.signed_response.header_bytes
    for data in (fz.resolve(item, valid), valid + times):
        header = refused_or(
            lambda data=data: ResponseHeader.decode(data),  # type: ignore[misc]
            HeaderError,
            {ErrorCode.INVALID_REQUEST},
            Origin.PROVIDER,
        )
        if header is not None:
            assert header.encode() == data


def _exchange_messages(world: World) -> tuple[bytes, bytes]:
    signed = world.signed_request
    request = ExchangeRequestMessage(
        signed_header=signed.jws,
        body=BODY,
        certificate_chain=signed.certificate_chain,
        ocsp_response=signed.ocsp_response,
        timeout_s=5.0,
    ).encode()
    response = ExchangeResponseMessage(
        signed_header=world.signed_response.jws,
        body=BODY,
        certificate_chain=signed.certificate_chain,
        ocsp_response=signed.ocsp_response,
        receipt=Receipt(gateway_id=LOG_ID, request_index=0, response_index=1, tree_size=2),
    ).encode()
    return request, response


@fuzz(item=fz.inputs(*PROTO, append=True))
def test_exchange_envelopes_decode(world: World, item: fz.Item) -> None:
    valid_request, valid_response = _exchange_messages(world)
    request = refused_or(
        lambda: ExchangeRequestMessage.decode(fz.resolve(item, valid_request)),
        GatewayError,
        {ErrorCode.INVALID_REQUEST},
        Origin.CLIENT,
    )
    if request is not None:
        assert isinstance(request.signed_header, str)
        assert all(isinstance(c, bytes) for c in request.certificate_chain)
        assert request.timeout_s is None or isinstance(request.timeout_s, float)
    response = refused_or(
        lambda: ExchangeResponseMessage.decode(fz.resolve(item, valid_response)),
        GatewayError,
        {ErrorCode.INVALID_REQUEST},
        Origin.PROVIDER,
    )
    if response is not None:
        assert isinstance(response.signed_header, str)


# -- JWS: signed request and response headers ---------------------------------------------------


def _verify_request(world: World, jws: str, **changes: Any) -> object:
    signed = world.signed_request
    arguments: dict[str, Any] = {
        "chain": signed.certificate_chain,
        "ocsp_response": signed.ocsp_response,
        "body": BODY,
        "trust": world.trust,
        "now": world.now,
    }
    arguments.update(changes)
    return refused_or(
        lambda: verify_request(jws, **arguments), GatewayError, REQUEST_CODES, Origin.CLIENT
    )


@fuzz(mutation=fz.mutations())
def test_verify_request_refuses_a_changed_jws(world: World, mutation: fz.Mutation) -> None:
    jws = mutation.text(world.signed_request.jws)
    verified = _verify_request(world, jws)
    if verified is not None:  # only a change that leaves the same signed bytes
        assert verified.header_bytes == world.signed_request.header_bytes  # type: ignore[attr-defined]


_X5C_SENTINEL = "x5c-of-the-member"


@fuzz(
    protected=fz.hostile_json()
    | st.tuples(st.integers(0, 2), fz.hostile_json_value()).map(lambda t: ("one", *t)),
)
def test_verify_request_refuses_a_hostile_protected_header(world: World, protected: Any) -> None:
    """Validly signed by the member, so nothing stops at the signature first."""
    if isinstance(protected, tuple):
        _, which, text = protected
        header = json.loads(base64.urlsafe_b64decode(world.signed_request.jws.split(".")[0] + "=="))
        protected = _with_one(header, which, text)
    jws = world.sign_request_protected(protected, world.signed_request.header_bytes)
    _verify_request(world, jws)


@fuzz(item=fz.inputs(*PROTO, _HEADER_TIMES, append=True))
def test_verify_request_refuses_a_signed_hostile_payload(world: World, item: fz.Item) -> None:
    """The member's valid signature over any payload: the header decoder's rules decide."""
    payload = fz.resolve(item, world.signed_request.header_bytes)
    verified = _verify_request(world, world.sign_request_payload(payload))
    if verified is not None:
        assert verified.header_bytes == payload  # type: ignore[attr-defined]


@fuzz(item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_verify_request_refuses_a_damaged_ocsp_response(world: World, item: fz.Item) -> None:
    ocsp_response = fz.resolve(item, world.member_ocsp)
    verified = refused_or(
        lambda: verify_request(
            world.signed_request.jws,
            chain=world.signed_request.certificate_chain,
            ocsp_response=ocsp_response,
            body=BODY,
            trust=world.trust,
            now=world.now,
        ),
        GatewayError,
        {
            ErrorCode.OCSP_INVALID,
            ErrorCode.OCSP_STALE,
            ErrorCode.OCSP_UNAVAILABLE,
            ErrorCode.CERTIFICATE_REVOKED,
        },
        Origin.CLIENT,
    )
    if verified is not None:
        assert (
            ocsp.load_der_ocsp_response(ocsp_response).certificate_status
            == ocsp.OCSPCertStatus.GOOD
        )


@fuzz(which=st.integers(0, 1), item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_verify_request_refuses_a_damaged_certificate(
    world: World, which: int, item: fz.Item
) -> None:
    """A damaged leaf or intermediate, named in an x5c the member validly signed."""
    chain = list(world.member_chain)
    chain[which] = fz.resolve(item, chain[which])
    header = {
        "alg": "ES256",
        "typ": "serai-request+jws",
        "x5c": [base64.b64encode(der).decode() for der in chain],
    }
    jws = world.sign_request_protected(
        json.dumps(header, separators=(",", ":")).encode(), world.signed_request.header_bytes
    )
    _verify_request(world, jws, chain=tuple(chain))


@fuzz(mutation=fz.mutations(), item=fz.inputs(*PROTO, append=True))
def test_verify_response_refuses_changes(
    world: World, mutation: fz.Mutation, item: fz.Item
) -> None:
    response = world.signed_response
    protected = response.jws.split(".")[0]
    payload = fz.resolve(item, response.header_bytes)
    signing_input = f"{protected}.{fz.b64url(payload)}"
    forged = f"{signing_input}.{fz.b64url(_es256(world.member_key, signing_input.encode()))}"
    for jws in (mutation.text(response.jws), forged):
        refused_or(
            lambda jws=jws: verify_response(  # type: ignore[misc]
                jws,
                chain=response.certificate_chain,
                ocsp_response=response.ocsp_response,
                body=BODY,
                trust=world.trust,
                now=world.now,
                expected_request_sha256=world.signed_request.header_sha256,
                expected_message_id="m-1",
                provider=SubsystemId.parse("UZ/GOV/STC/tax"),
            ),
            GatewayError,
            REQUEST_CODES,
            Origin.PROVIDER,
        )


@fuzz(mutation=fz.mutations(), protected=fz.hostile_json())
def test_logged_header_jws_refuses_with_header_jws_error_only(
    world: World, mutation: fz.Mutation, protected: bytes
) -> None:
    signed = world.signed_request
    hostile = world.sign_request_protected(protected, signed.header_bytes)
    for jws in (mutation(signed.jws.encode("ascii")), hostile.encode("ascii")):
        result = refused_or(
            lambda jws=jws: verify_header_jws(  # type: ignore[misc]
                jws, typ="serai-request+jws", chain=signed.certificate_chain
            ),
            HeaderJwsError,
        )
        if result is not None:
            assert result[0] == signed.header_bytes


# -- tree heads and their time-stamps ----------------------------------------------------------

TREE_HEAD_CODES = {
    ErrorCode.SIGNATURE_INVALID,
    ErrorCode.CERTIFICATE_INVALID,
    ErrorCode.CERTIFICATE_UNTRUSTED,
    ErrorCode.CERTIFICATE_EXPIRED,
}


def _check_tree_head(world: World, jws: bytes) -> TreeHead | None:
    refused_or(lambda: parse_signed_tree_head(jws), TreeHeadError, TREE_HEAD_CODES)
    return refused_or(
        lambda: verify_signed_tree_head(jws, trusted_roots=[world.root], at=world.now),
        TreeHeadError,
        TREE_HEAD_CODES,
    )


@fuzz(mutation=fz.mutations())
def test_tree_head_refuses_a_changed_jws(world: World, mutation: fz.Mutation) -> None:
    head = _check_tree_head(world, mutation(world.sth))
    if head is not None:
        assert head == parse_signed_tree_head(world.sth)[0]


@fuzz(
    protected=fz.hostile_json()
    | st.tuples(st.integers(0, 2), fz.hostile_json_value()).map(lambda t: ("one", *t)),
    payload=fz.hostile_json()
    | st.tuples(st.integers(0, 4), fz.hostile_json_value()).map(lambda t: ("one", *t)),
)
def test_tree_head_refuses_hostile_json(world: World, protected: Any, payload: Any) -> None:
    """Hostile protected headers and payloads, the payloads validly signed by the log key."""
    header_part, payload_part = world.sth.split(b".")[:2]
    valid_header = json.loads(base64.urlsafe_b64decode(header_part + b"=="))
    valid_payload = json.loads(base64.urlsafe_b64decode(payload_part + b"=="))
    if isinstance(protected, tuple):
        protected = _with_one(valid_header, protected[1], protected[2])
    if isinstance(payload, tuple):
        payload = _with_one(valid_payload, payload[1], payload[2])
    _check_tree_head(world, world.sign_tree_head_payload(payload))
    _check_tree_head(world, world.sign_tree_head_payload(payload, protected))
    _check_tree_head(world, f"{fz.b64url(protected)}.{fz.b64url(payload)}.".encode())


@fuzz(item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_tree_head_timestamp_refuses_a_damaged_token(world: World, item: fz.Item) -> None:
    token = fz.resolve(item, world.sth_token)
    when = refused_or(
        lambda: verify_tree_head_timestamp(world.sth, token, tsa_trusted_roots=[world.root]),
        TreeHeadError,
        {ErrorCode.TIMESTAMP_INVALID},
    )
    if when is not None:
        assert (
            verify_tree_head_timestamp(world.sth, world.sth_token, tsa_trusted_roots=[world.root])
            == when
        )


# -- Merkle proofs -----------------------------------------------------------------------------

_ANY_SIZE = st.one_of(
    st.integers(-(2**65), 2**65), st.booleans(), st.floats(), st.none(), st.text(max_size=3)
)
_ANY_HASH = st.one_of(
    st.binary(max_size=40), st.binary(min_size=32, max_size=32), st.none(), st.text(max_size=32)
)


@fuzz(
    leaf=_ANY_HASH,
    root=_ANY_HASH,
    index=_ANY_SIZE,
    size=_ANY_SIZE,
    proof=st.lists(_ANY_HASH, max_size=70),
)
def test_merkle_verifiers_refuse_any_arguments_with_proof_error(
    leaf: Any, root: Any, index: Any, size: Any, proof: list[Any]
) -> None:
    refused_or(lambda: merkle.verify_inclusion(leaf, index, size, proof, root), ProofError)
    refused_or(lambda: merkle.verify_consistency(index, size, leaf, root, proof), ProofError)


@fuzz(
    size=st.integers(1, 70),
    a=st.integers(0, 2**20),
    b=st.integers(0, 2**20),
    change=st.tuples(st.integers(0, 2**20), st.sampled_from(["flip", "drop", "add", "swap"])),
)
def test_merkle_refuses_a_changed_valid_proof(
    size: int, a: int, b: int, change: tuple[int, str]
) -> None:
    tree = MemoryTree()
    for n in range(size):
        tree.append(n.to_bytes(4, "big"))
    index, old = a % size, 1 + b % size
    where, how = change

    def changed(proof: list[bytes]) -> list[bytes]:
        proof = list(proof)
        i = where % max(1, len(proof))
        if how == "flip" and proof:
            proof[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
        elif how == "drop" and proof:
            del proof[i]
        elif how == "swap" and len(proof) > 1 and proof[i] != proof[-1 - i]:
            proof[i], proof[-1 - i] = proof[-1 - i], proof[i]
        else:
            proof.insert(i, hashlib.sha256(b"extra").digest())
        return proof

    with pytest.raises(ProofError):
        merkle.verify_inclusion(
            merkle.leaf_hash(index.to_bytes(4, "big")),
            index,
            size,
            changed(tree.inclusion_proof(index, size)),
            tree.root(size),
        )
    proof = tree.consistency_proof(old, size)
    if old < size:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, size, tree.root(old), tree.root(size), changed(proof))


# -- the registry's configuration log -----------------------------------------------------------


def _proof_bundle(world: World) -> dict[str, object]:
    h = hashlib.sha256(b"h").digest()
    bundle = ProofBundle(
        serial=3, leaf_index=2, sth=world.sth, inclusion=(h, h), consistency={1: (h,), 2: ()}
    )
    value: dict[str, object] = json.loads(bundle.encode())
    return value


@fuzz(
    data=fz.hostile_json()
    | st.tuples(st.integers(0, 10), fz.hostile_json_value()).map(lambda t: ("one", *t))
    | st.integers(4_301, 6_000).map(lambda n: ("key", n))
    | fz.mutations().map(lambda m: ("mutate", m)),
)
def test_configuration_log_documents_refuse_with_configuration_error(
    world: World, data: Any
) -> None:
    valid = _proof_bundle(world)
    if isinstance(data, tuple) and data[0] == "one":
        data = _with_one(valid, data[1], data[2])
    elif isinstance(data, tuple) and data[0] == "key":
        valid["consistency"] = {"9" * data[1]: []}
        data = json.dumps(valid, sort_keys=True, separators=(",", ":")).encode()
    elif isinstance(data, tuple):
        data = data[1](json.dumps(valid, sort_keys=True, separators=(",", ":")).encode())
    codes = {ErrorCode.GLOBALCONF_EQUIVOCATION}
    bundle = refused_or(lambda: ProofBundle.decode(data), ConfigurationError, codes)
    if bundle is not None:
        assert bundle.encode() == data
    consistency = encode_consistency(1, 2, [hashlib.sha256(b"h").digest()])
    for document in (data, consistency[:-1] + data[-3:]):
        refused_or(lambda d=document: decode_consistency(d, 1, 2), ConfigurationError, codes)  # type: ignore[misc]


# -- global configuration and trust anchor -------------------------------------------------------

_CONF_TIMES = fz.timestamp_fields([3, 4])


@fuzz(item=fz.inputs(*PROTO, append=True), protected=fz.hostile_json())
def test_signed_configuration_envelope_refuses_with_configuration_error(
    world: World, item: fz.Item, protected: bytes
) -> None:
    hostile = gpb.SignedGlobalConfiguration(
        configuration=world.configuration,
        signature=f"{fz.b64url(protected)}..{fz.b64url(b'x' * 64)}",
        signing_certificate_sha256=hashlib.sha256(_der(world.conf_cert)).digest(),
    ).SerializeToString()
    for envelope in (fz.resolve(item, world.envelope), hostile):
        configuration = refused_or(
            lambda e=envelope: verify_signed_configuration(  # type: ignore[misc]
                e, signing_certificates=[_der(world.conf_cert)]
            ),
            ConfigurationError,
            {
                ErrorCode.GLOBALCONF_INVALID,
                ErrorCode.GLOBALCONF_UNKNOWN_SIGNER,
                ErrorCode.GLOBALCONF_SIGNATURE_INVALID,
            },
        )
        if configuration is not None:
            assert configuration == world.configuration


@fuzz(item=fz.inputs(*PROTO, _CONF_TIMES, append=True), times=_CONF_TIMES)
def test_configuration_decoding_refuses_with_globalconf_invalid(
    world: World, item: fz.Item, times: bytes
) -> None:
    for data in (fz.resolve(item, world.configuration), world.configuration + times):
        refused_or(
            lambda d=data: decode_configuration(d),  # type: ignore[misc]
            ConfigurationError,
            {ErrorCode.GLOBALCONF_INVALID},
        )


@fuzz(item=fz.inputs(*PROTO, _CONF_TIMES, append=True))
def test_a_correctly_signed_envelope_of_fuzzed_bytes_is_refused_or_taken(
    world: World, item: fz.Item
) -> None:
    """What the registry's key signs is still decoded strictly by every gateway."""
    envelope = world.sign_configuration(fz.resolve(item, world.configuration))
    refused_or(
        lambda: TrustedConfiguration(world.anchor).check(envelope, now=world.now),
        ConfigurationError,
        {
            ErrorCode.GLOBALCONF_INVALID,
            ErrorCode.GLOBALCONF_WRONG_INSTANCE,
            ErrorCode.GLOBALCONF_EXPIRED,
        },
    )


@fuzz(item=fz.inputs(*PROTO, fz.timestamp_fields([4]), append=True), times=fz.timestamp_fields([4]))
def test_trust_anchor_decoding_refuses_with_configuration_error(
    world: World, item: fz.Item, times: bytes
) -> None:
    for data in (fz.resolve(item, world.anchor_bytes), world.anchor_bytes + times):
        anchor = refused_or(
            lambda d=data: decode_anchor(d),  # type: ignore[misc]
            ConfigurationError,
            {ErrorCode.GLOBALCONF_INVALID},
        )
        if anchor is not None:
            assert anchor.signing_certificates


# -- evidence bundle documents -----------------------------------------------------------------


@fuzz(data=fz.hostile_json())
def test_bundle_documents_refuse_with_bundle_error(data: bytes) -> None:
    manifest = refused_or(lambda: Manifest.decode(data), BundleError)
    if manifest is not None:
        assert manifest.encode()
    proof = refused_or(
        lambda: read_proof(data, "inclusion/1.json", index=1, tree_size=2), BundleError
    )
    if proof is not None:
        assert all(len(h) == 32 for h in proof)


# -- OCSP and TSA requests, time-stamp replies and tokens, certificates --------------------


@fuzz(item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_ocsp_responder_answers_any_request_without_internal_error(
    world: World, item: fz.Item
) -> None:
    answer = world.responder.answer(fz.resolve(item, world.ocsp_request))
    assert answer.response_status in {
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
        ocsp.OCSPResponseStatus.SUCCESSFUL,
    }
    assert ocsp.load_der_ocsp_response(answer.der).response_status == answer.response_status


_TSA_FAILURES = {"bad_data_format", "bad_alg", "unaccepted_policy", "unaccepted_extensions"}


@fuzz(item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_tsa_answers_any_query_with_a_documented_status(world: World, item: fz.Item) -> None:
    reply = TimeStampRespStructure.load(world.tsa.respond(fz.resolve(item, world.tsa_query)))
    status = reply["status"]["status"].native
    if status == "granted":
        assert reply["time_stamp_token"].native is not None
    else:
        assert status == "rejection"
        failures = set(reply["status"]["fail_info"].native)
        assert failures, reply["status"].native
        assert failures <= _TSA_FAILURES, failures


@fuzz(item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_time_stamp_replies_and_tokens_refuse_with_timestamp_error(
    world: World, item: fz.Item
) -> None:
    codes = {ErrorCode.TIMESTAMP_INVALID}
    refused_or(
        lambda: verify_token(
            fz.resolve(item, world.sth_token), data=world.sth, trusted_roots=[world.root]
        ),
        TimestampError,
        codes,
    )
    nonce = tsp.TimeStampReq.load(world.tsa_query)["nonce"].native
    refused_or(
        lambda: verify_reply(
            fz.resolve(item, world.tsa_reply),
            data=world.sth,
            nonce=nonce,
            trusted_roots=[world.root],
        ),
        TimestampError,
        codes,
    )


@fuzz(item=fz.inputs(fz.raw_bytes(), fz.der_values()))
def test_certificate_parsing_raises_value_error_only(world: World, item: fz.Item) -> None:
    certificate = refused_or(
        lambda: parse_der_certificate(fz.resolve(item, world.member_chain[0])), ValueError
    )
    if certificate is not None:
        assert isinstance(certificate, x509.Certificate)


_TOKEN_KEY = ec.generate_private_key(ec.SECP256R1())


@fuzz(mutation=fz.mutations(), protected=fz.hostile_json(), payload=fz.hostile_json())
def test_bearer_tokens_refuse_with_unauthenticated(
    mutation: fz.Mutation, protected: bytes, payload: bytes
) -> None:
    token = TokenIssuer(key=_TOKEN_KEY, issuer="fuzz").issue(
        subject="alice", roles=["observer"], audience="serai-registry:UZ", lifetime_s=600
    )
    verifier = TokenVerifier(public_keys=[_TOKEN_KEY.public_key()], audience="serai-registry:UZ")
    forged_input = f"{fz.b64url(protected)}.{fz.b64url(payload)}"
    forged = f"{forged_input}.{fz.b64url(_es256(_TOKEN_KEY, forged_input.encode()))}"
    for text in (mutation.text(token), forged):
        refused_or(
            lambda t=text: verifier.verify(t),  # type: ignore[misc]
            SeraiError,
            {ErrorCode.UNAUTHENTICATED},
        )


@fuzz(
    data=fz.hostile_json()
    | st.tuples(st.integers(0, 10), fz.hostile_json_value()).map(lambda t: ("one", *t))
    | fz.mutations().map(lambda m: ("mutate", m)),
)
def test_configuration_client_refuses_a_hostile_proof_bundle(world: World, data: Any) -> None:
    """A correctly signed configuration whose configuration-log proof bundle, fetched
    beside it, is hostile: ``refresh`` raises ``ConfigurationError`` only and holds
    nothing."""
    valid = _proof_bundle(world)
    if isinstance(data, tuple) and data[0] == "one":
        data = _with_one(valid, data[1], data[2])
    elif isinstance(data, tuple):
        data = data[1](json.dumps(valid, sort_keys=True, separators=(",", ":")).encode())
    transport = InMemoryFetchTransport(world.envelope, files={bundle_path(3): bytes(data)})

    async def refresh(cache: Path) -> None:
        client = GlobalConfigurationClient(
            anchor=world.anchor, cache_dir=cache, transport=transport, clock=lambda: world.now
        )
        with pytest.raises(ConfigurationError) as refused:
            await client.refresh()
        assert refused.value.code is not ErrorCode.GLOBALCONF_UNAVAILABLE  # it was read
        assert client.status().serial is None

    with tempfile.TemporaryDirectory() as cache:
        asyncio.run(refresh(Path(cache)))


def _negative_serial(der: bytes) -> bytes:
    """``der`` with its serial number's sign bit set (the certificate's signature no longer
    matches, which parsing does not check)."""
    # Certificate and TBSCertificate headers (30 82 xx xx each), version [0] (a0 03 02 01
    # 02), then the serial: 02 len value.
    serial_at = 4 + 4 + 5
    assert der[serial_at] == 0x02
    value_at = serial_at + 2
    return der[:value_at] + bytes([der[value_at] | 0x80]) + der[value_at + 1 :]


def test_a_certificate_with_a_negative_serial_is_refused_whatever_the_warning_filters(
    world: World,
) -> None:
    """Regression (fixed in certs/keys): cryptography only warns about it, so under an
    "error" filter the warning escaped parse_der_certificate and the configuration
    snapshot of a correctly signed configuration listing such a CA."""
    negative = _negative_serial(world.member_chain[0])
    with pytest.raises(ValueError, match="not a certificate"):
        parse_der_certificate(negative)
    configuration = decode_configuration(world.configuration)
    ca = configuration.federation.certificate_authorities[0]
    changed = dataclasses.replace(
        configuration,
        federation=dataclasses.replace(
            configuration.federation,
            certificate_authorities=(dataclasses.replace(ca, root_certificate=negative),),
        ),
    )
    envelope = world.sign_configuration(encode_configuration(changed))
    with pytest.raises(ConfigurationError) as refused:
        TrustedConfiguration(world.anchor).check(envelope, now=world.now)
    assert refused.value.code is ErrorCode.GLOBALCONF_INVALID
