"""Attacks on messages, against real processes (DESIGN §9, security bar): each is refused
with its code, never reaches the provider IS, and is counted in the refusing gateway's
metrics.

One federation of real processes on loopback for the module
(:func:`tests.attackkit_messages.bring_up`: PKI, OCSP responder, TSA, registry, echo
provider IS, consumer gateway ``UZ/GOV/MINJUST/gw:main``, provider gateway
``UZ/GOV/CADASTRE/gw:main``, all started with ``serai`` commands). The attackers:

- on the provider gateway's peer port, test code with the consumer gateway's real TLS
  key and its member's real signing key (a registered gateway, compromised or buggy),
  sending requests built and signed by the project's own code, then altered;
- on the consumer gateway's IS port, an information system (a plain grpcio client,
  from 127.0.0.1 or, through a relay, from 127.0.0.2);
- for the response binding, test code on the registered peer address of a third
  gateway (``UZ/GOV/STC/gw:main``, with its real keys) answering the real consumer
  gateway.

For every attack the test asserts (1) the gRPC status and the ``x-road-error`` origin and
code (DESIGN §4); (2) the echo provider's ``/echo.v1.Echo/Reached`` count is the same
after as before; (3) the refusing gateway's ``/metrics`` counted exactly one more
``serai_gateway_refusals_total`` and ``serai_gateway_exchanges_total`` under that code;
(4) neither gateway's message log grew (``serai_gateway_log_records``), except by the
request record of a consumer gateway that sent the request.
Each attack has a control beside it: the same message unaltered is served (and reaches
the provider), so the refusal is the alteration's, not the test's. No timing is asserted.

An oversize message is refused by the gateway's own check at any size, with its code
and counted: neither port sets a gRPC receive limit, which would answer a bare
RESOURCE_EXHAUSTED before the gateway's handler runs (and bounds no memory: grpc
buffers a whole message before applying it; SECURITY.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from gateway._messages import ExchangeRequestMessage, ExchangeResponseMessage
from gateway.headers import RequestHeader
from gateway.peers import ENVELOPE_BYTES
from gateway.signing import SignedHeader
from serai import jws
from serai._demoprocs import Service
from serai_proto.transport.v1 import transport_pb2 as pb
from tests.attackkit_messages import (
    ARCHIVE,
    ARCHIVE_IS_ADDRESS,
    MAX_MESSAGE_BYTES,
    NOTARY,
    PROPERTY,
    REGISTRY,
    TAX,
    AttackFederation,
    Forger,
    Outcome,
    PeerLink,
    RogueProvider,
    SourceAddressRelay,
    bring_up,
    call_is,
    metric_total,
    reached,
    stop,
)

# The federation comes up once per module, inside the first test's time budget, on a
# machine shared by many: generous, never asserted.
pytestmark = pytest.mark.timeout(900)

_REFUSALS = "serai_gateway_refusals_total"
_EXCHANGES = "serai_gateway_exchanges_total"
_LOG_RECORDS = "serai_gateway_log_records"
#: Longest wait for a count to settle (a busy machine); never asserted.
_SETTLE_S = 60.0
_V = TypeVar("_V")
#: Records of one exchange in a gateway's log: the request and the response.
_EXCHANGE = 2


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackFederation]:
    services: list[Service] = []
    try:
        yield bring_up(tmp_path_factory.mktemp("attacks"), services)
    finally:
        unclean = stop(services)
    assert unclean == [], f"processes that did not stop cleanly: {unclean}"


@pytest.fixture(scope="module")
def forger(fed: AttackFederation) -> Forger:
    """Signs as the consumer gateway signs: UZ/GOV/MINJUST's real signing key."""
    return Forger(fed.consumer_keys)


@pytest.fixture(scope="module")
def peer(fed: AttackFederation) -> Iterator[PeerLink]:
    """The provider gateway's peer port, reached with the consumer gateway's TLS key."""
    with PeerLink(fed.provider_peer, keys=fed.consumer_keys, server_keys=fed.provider_keys) as link:
        yield link


def _records(fed: AttackFederation) -> tuple[float, float]:
    """Records committed to the consumer's and the provider's message logs."""
    return (
        metric_total(fed.consumer_metrics, _LOG_RECORDS),
        metric_total(fed.provider_metrics, _LOG_RECORDS),
    )


def _settled(read: Callable[[], _V], expected: _V) -> _V:
    """``read()`` once it equals ``expected``, or its last value after a generous wait.

    A gateway counts an exchange as its handler ends, which may be just after the
    caller got the answer (grpc sends an abort's status before the handler unwinds),
    so a count is read again until it settles; the wait bounds nothing that is asserted.
    """
    deadline = time.monotonic() + _SETTLE_S
    while True:
        value = read()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _grown(fed: AttackFederation, since: tuple[float, float], expected: tuple[int, int]) -> None:
    def growth() -> tuple[float, float]:
        now = _records(fed)
        return now[0] - since[0], now[1] - since[1]

    grown = _settled(growth, (float(expected[0]), float(expected[1])))
    assert grown == expected, f"log records (consumer, provider) grew by {grown}"


@contextlib.contextmanager
def refused(
    fed: AttackFederation,
    *,
    by: str,
    code: str,
    origin: str = "client",
    logged: tuple[int, int] = (0, 0),
) -> Iterator[None]:
    """The block makes one exchange that gateway ``by`` (``consumer`` or ``provider``,
    also the metrics' side) refuses with ``code``: the provider IS is not reached; the
    refusal is counted once in that gateway's metrics, under its code and origin; and
    the consumer's and provider's message logs grow by ``logged`` records (none: a
    refused message leaves no record, except the request a consumer sent)."""
    metrics = fed.consumer_metrics if by == "consumer" else fed.provider_metrics
    refusals = {"side": by, "code": code, "origin": origin}
    exchanges = {"side": by, "code": code}

    def counts() -> tuple[float, float]:
        return (
            metric_total(metrics, _REFUSALS, **refusals),
            metric_total(metrics, _EXCHANGES, **exchanges),
        )

    before, counted, records = reached(fed.echo), counts(), _records(fed)
    yield
    after = _settled(counts, (counted[0] + 1, counted[1] + 1))
    assert after[0] == counted[0] + 1, f"{_REFUSALS}{refusals}: {counted[0]} -> {after[0]}"
    assert after[1] == counted[1] + 1, f"{_EXCHANGES}{exchanges}: {counted[1]} -> {after[1]}"
    _grown(fed, records, logged)
    assert reached(fed.echo) == before, "the provider IS was reached"


@contextlib.contextmanager
def served(
    fed: AttackFederation, *, by: str, logged: tuple[int, int], reaching: bool = True
) -> Iterator[None]:
    """The block makes one exchange that gateway ``by`` serves (counted ``ok``), that
    reaches the provider IS once (when ``reaching``), and after which the consumer's
    and provider's message logs have grown by ``logged`` records."""
    metrics = fed.consumer_metrics if by == "consumer" else fed.provider_metrics

    def ok() -> float:
        return metric_total(metrics, _EXCHANGES, side=by, code="ok")

    before, counted, records = reached(fed.echo), ok(), _records(fed)
    yield
    assert _settled(ok, counted + 1) == counted + 1
    _grown(fed, records, logged)
    assert reached(fed.echo) == before + (1 if reaching else 0)


def assert_answered(outcome: Outcome, body: bytes) -> None:
    """A peer-port exchange that succeeded, answering ``body``."""
    assert outcome.status == "OK", outcome
    assert outcome.body is not None
    assert ExchangeResponseMessage.decode(outcome.body).body == body


def splice(signed: SignedHeader, header: RequestHeader | bytes) -> SignedHeader:
    """``signed`` with its JWS payload replaced by ``header`` (its encoding), keeping the
    original protected header and signature: what a man in the middle can do."""
    payload = header if isinstance(header, bytes) else header.encode()
    protected, _, signature = signed.jws.split(".")
    return dataclasses.replace(
        signed,
        jws=f"{protected}.{jws.b64url(payload)}.{signature}",
        header_bytes=payload,
        header_sha256=hashlib.sha256(payload).digest(),
    )


def raw_header(header: RequestHeader, **fields: str) -> bytes:
    """The canonical encoding of ``header`` with string ``fields`` set as given,
    bypassing the domain type's checks (for identifiers it would refuse)."""
    message = pb.RequestHeader()
    message.ParseFromString(header.encode())
    for name, value in fields.items():
        setattr(message, name, value)
    return message.SerializeToString(deterministic=True)


# --- the control: the test's forged request, unaltered, is served ---


def test_an_unaltered_forged_request_is_served(
    fed: AttackFederation, forger: Forger, peer: PeerLink
) -> None:
    _, signed = forger.request(b"parcel 42")
    with served(fed, by="provider", logged=(0, _EXCHANGE)):
        outcome = peer.send(signed, b"parcel 42")
    assert_answered(outcome, b"parcel 42")


# --- tampered body ---


def test_tampered_body_is_refused(fed: AttackFederation, forger: Forger, peer: PeerLink) -> None:
    _, signed = forger.request(b"parcel 42")
    with refused(fed, by="provider", code="signature_invalid"):
        outcome = peer.send(signed, b"parcel 43")
    assert outcome.refusal == ("UNAUTHENTICATED", "client", "signature_invalid")
    assert "body does not match the signed digest" in outcome.error


# --- tampered header ---


_HEADER_TAMPERING: dict[str, Callable[[RequestHeader], tuple[RequestHeader, bytes]]] = {
    # a new message id would slip a replay past the replay guard
    "message_id": lambda h: (dataclasses.replace(h, message_id=f"{h.message_id}-again"), b"p42"),
    # another body, and the header's digest and size made to match it
    "body_and_digest": lambda h: (
        dataclasses.replace(h, body_sha256=hashlib.sha256(b"p43").digest(), body_size=len(b"p43")),
        b"p43",
    ),
    # another client subsystem of the same member, served by the same gateway and granted
    "client": lambda h: (dataclasses.replace(h, client=ARCHIVE), b"p42"),
    # an end user the consumer never named
    "user_id": lambda h: (dataclasses.replace(h, user_id="EE38001085718"), b"p42"),
}


@pytest.mark.parametrize("field", sorted(_HEADER_TAMPERING))
def test_tampered_header_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink, field: str
) -> None:
    header, signed = forger.request(b"p42")
    tampered, body = _HEADER_TAMPERING[field](header)
    assert tampered != header
    with refused(fed, by="provider", code="signature_invalid"):
        outcome = peer.send(splice(signed, tampered), body)
    assert outcome.refusal == ("UNAUTHENTICATED", "client", "signature_invalid")
    assert "JWS signature does not verify" in outcome.error


# --- replay ---


def test_a_replayed_message_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink
) -> None:
    _, signed = forger.request(b"pay 100")
    with served(fed, by="provider", logged=(0, _EXCHANGE)):
        assert_answered(peer.send(signed, b"pay 100"), b"pay 100")
    with refused(fed, by="provider", code="replay_detected"):
        outcome = peer.send(signed, b"pay 100")
    assert outcome.refusal == ("ALREADY_EXISTS", "client", "replay_detected")


def test_a_message_id_reused_by_an_is_is_refused_as_a_replay(fed: AttackFederation) -> None:
    """The consumer gateway signs a new header for the second call, but with the IS's
    repeated ``x-road-id``: the provider gateway refuses it, the consumer relays it."""
    message_id = f"reused-{dt.datetime.now(dt.UTC).timestamp()}"
    again = (("x-road-id", message_id),)
    with served(fed, by="consumer", logged=(_EXCHANGE, _EXCHANGE)):
        first = call_is(fed.consumer_is, b"pay 100", client=str(PROPERTY), extra=again)
    assert first.body == b"pay 100", first
    relayed_before = metric_total(fed.consumer_metrics, _EXCHANGES, code="replay_detected")
    # the consumer gateway logged the request it sent
    with refused(fed, by="provider", code="replay_detected", logged=(1, 0)):
        outcome = call_is(fed.consumer_is, b"pay 100", client=str(PROPERTY), extra=again)
    assert outcome.refusal == ("ALREADY_EXISTS", "client", "replay_detected")
    assert outcome.trailers["x-road-id"] == message_id
    relayed = _settled(
        lambda: metric_total(fed.consumer_metrics, _EXCHANGES, code="replay_detected"),
        relayed_before + 1,
    )
    assert relayed == relayed_before + 1


# --- created time outside the skew bound (max_skew_s = 60) ---


@pytest.mark.parametrize("minutes", [-10, 10])
def test_a_created_time_outside_the_skew_bound_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink, minutes: int
) -> None:
    created_at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    _, signed = forger.request(b"parcel 42", created_at=created_at)
    with refused(fed, by="provider", code="clock_skew"):
        outcome = peer.send(signed, b"parcel 42")
    assert outcome.refusal == ("INVALID_ARGUMENT", "client", "clock_skew")


# --- a client subsystem the calling gateway does not serve ---


def test_a_client_the_calling_gateway_does_not_serve_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink
) -> None:
    """NOTARY is a registered subsystem of the signing member, granted the method, but
    UZ/GOV/MINJUST/gw:main is not registered as serving it."""
    _, signed = forger.request(b"parcel 42", client=NOTARY)
    with refused(fed, by="provider", code="peer_not_registered"):
        outcome = peer.send(signed, b"parcel 42")
    assert outcome.refusal == ("UNAUTHENTICATED", "client", "peer_not_registered")
    assert str(NOTARY) in outcome.error


def test_a_client_of_another_member_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink
) -> None:
    """A request for a subsystem of another member (UZ/GOV/STC), signed with
    UZ/GOV/MINJUST's key: the certificate does not speak for that client."""
    _, signed = forger.request(b"parcel 42", client=TAX)
    with refused(fed, by="provider", code="certificate_invalid"):
        outcome = peer.send(signed, b"parcel 42")
    assert outcome.refusal == ("UNAUTHENTICATED", "client", "certificate_invalid")


# --- an IS claiming a client subsystem it may not use ---


def test_an_is_at_the_allowed_address_is_served(fed: AttackFederation) -> None:
    """The control: ARCHIVE's IS calls from 127.0.0.2, its allowed address."""
    with (
        SourceAddressRelay(fed.consumer_is, source_ip=ARCHIVE_IS_ADDRESS) as relay,
        served(fed, by="consumer", logged=(_EXCHANGE, _EXCHANGE)),
    ):
        outcome = call_is(relay.address, b"archive 1", client=str(ARCHIVE))
    assert outcome.body == b"archive 1", outcome


@pytest.mark.parametrize(
    ("client", "source_ip", "status", "code"),
    [
        # ARCHIVE is served by this gateway, but only for an IS at 127.0.0.2
        (ARCHIVE, "127.0.0.1", "UNAUTHENTICATED", "client_not_authenticated"),
        # PROPERTY is served, but only for an IS at 127.0.0.1 or ::1
        (PROPERTY, ARCHIVE_IS_ADDRESS, "UNAUTHENTICATED", "client_not_authenticated"),
        # NOTARY is a registered subsystem of this member that the gateway does not serve
        (NOTARY, "127.0.0.1", "NOT_FOUND", "unknown_client"),
        # a subsystem of another member
        (REGISTRY, "127.0.0.1", "NOT_FOUND", "unknown_client"),
    ],
    ids=["archive_from_elsewhere", "property_from_elsewhere", "not_served", "another_member"],
)
def test_an_is_claiming_a_client_it_may_not_use_is_refused(
    fed: AttackFederation, client: object, source_ip: str, status: str, code: str
) -> None:
    with contextlib.ExitStack() as stack:
        address = fed.consumer_is
        if source_ip != "127.0.0.1":
            relay = stack.enter_context(SourceAddressRelay(address, source_ip=source_ip))
            address = relay.address
        with refused(fed, by="consumer", code=code):
            outcome = call_is(address, b"parcel 42", client=str(client))
    assert outcome.refusal == (status, "client", code)


# --- oversize ---


def test_a_body_of_the_largest_size_is_served(fed: AttackFederation) -> None:
    """The control: exactly ``max_message_bytes`` passes both gateways."""
    body = b"x" * MAX_MESSAGE_BYTES
    with served(fed, by="consumer", logged=(_EXCHANGE, _EXCHANGE)):
        outcome = call_is(fed.consumer_is, body, client=str(PROPERTY))
    assert outcome.body == body


def test_an_oversize_message_from_an_is_is_refused(fed: AttackFederation) -> None:
    with refused(fed, by="consumer", code="message_too_large"):
        outcome = call_is(fed.consumer_is, b"x" * (MAX_MESSAGE_BYTES + 1), client=str(PROPERTY))
    assert outcome.refusal == ("RESOURCE_EXHAUSTED", "client", "message_too_large")


def test_an_oversize_message_from_a_peer_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink
) -> None:
    """Signed as the consumer gateway would sign it, were its limit higher."""
    body = b"x" * (MAX_MESSAGE_BYTES + 1)
    _, signed = forger.request(body)
    with refused(fed, by="provider", code="message_too_large"):
        outcome = peer.send(signed, body)
    assert outcome.refusal == ("RESOURCE_EXHAUSTED", "client", "message_too_large")


#: Far beyond ``max_message_bytes`` plus the 1 MiB the peer port allows around a body
#: for the envelope (``gateway.peers.ENVELOPE_BYTES``), and beyond grpc's default
#: receive limit (4 MiB).
_FAR_OVERSIZE = 6 * 1024 * 1024


@pytest.mark.parametrize("port", ["is", "peer"])
def test_a_far_oversize_message_is_refused_with_its_code_and_counted(
    fed: AttackFederation, forger: Forger, peer: PeerLink, port: str
) -> None:
    """The gateway's own check refuses it, not grpc's receive limit: the status, the
    ``x-road-error`` code, the count, and the provider never reached (``refused``)."""
    body = b"x" * _FAR_OVERSIZE
    with refused(fed, by="consumer" if port == "is" else "provider", code="message_too_large"):
        if port == "is":
            outcome = call_is(fed.consumer_is, body, client=str(PROPERTY))
        else:
            outcome = peer.send(forger.request(body)[1], body)
    assert outcome.refusal == ("RESOURCE_EXHAUSTED", "client", "message_too_large")
    assert outcome.body is None


def test_an_envelope_oversize_around_a_small_body_is_refused_before_it_is_decoded(
    fed: AttackFederation, forger: Forger, peer: PeerLink
) -> None:
    """The body is within the limit, but the envelope carries a padded chain beyond the
    room left for it: refused on its size, not later on its (unparsable) chain."""
    body = b"parcel 42"
    _, signed = forger.request(body)
    padding = b"\x00" * (MAX_MESSAGE_BYTES + ENVELOPE_BYTES)
    envelope = ExchangeRequestMessage(
        signed_header=signed.jws,
        body=body,
        certificate_chain=(*signed.certificate_chain, padding),
        ocsp_response=signed.ocsp_response,
        timeout_s=10.0,
    ).encode()
    with refused(fed, by="provider", code="message_too_large"):
        outcome = peer.send_raw(envelope)
    assert outcome.refusal == ("RESOURCE_EXHAUSTED", "client", "message_too_large")


# --- invalid identifiers ---


@pytest.mark.parametrize(
    ("client", "service"),
    [
        ("UZ/GOV/MINJUST/prop erty", str(REGISTRY)),  # a character outside the set
        ("UZ/GOV/MINJUST", str(REGISTRY)),  # a member, not a subsystem
        ("UZ/GOV/MINJUST/property/x", str(REGISTRY)),  # too many parts
        ("UZ//MINJUST/property", str(REGISTRY)),  # an empty part
        ("", str(REGISTRY)),  # missing
        (str(PROPERTY), "UZ/GOV/CADASTRE/reg*istry"),
        (str(PROPERTY), "UZ/GOV/CADASTRE/gw:main"),  # a gateway, not a subsystem
        (str(PROPERTY), ""),
    ],
)
def test_invalid_identifiers_from_an_is_are_refused(
    fed: AttackFederation, client: str, service: str
) -> None:
    with refused(fed, by="consumer", code="invalid_identifier"):
        outcome = call_is(fed.consumer_is, b"parcel 42", client=client, service=service)
    assert outcome.refusal == ("INVALID_ARGUMENT", "client", "invalid_identifier")


@pytest.mark.parametrize(
    "fields",
    [
        {"client": "UZ/GOV/MINJUST/prop erty"},
        {"client": "UZ/GOV/MINJUST"},
        {"service": "UZ/GOV/CADASTRE/reg<istry>"},
        {"method": "bench.v1.Bench/Echo"},  # a method path starts with '/'
    ],
    ids=["client_with_a_space", "client_a_member", "service_with_brackets", "method_no_slash"],
)
def test_invalid_identifiers_in_a_signed_header_are_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink, fields: dict[str, str]
) -> None:
    """Correctly signed by the member's key: only the identifiers are wrong."""
    header, like = forger.request(b"parcel 42")
    signed = forger.sign_payload(raw_header(header, **fields), like=like)
    with refused(fed, by="provider", code="invalid_identifier"):
        outcome = peer.send(signed, b"parcel 42")
    assert outcome.refusal == ("INVALID_ARGUMENT", "client", "invalid_identifier")


# --- malformed envelope ---


def _not_a_header(header: RequestHeader) -> bytes:
    return b"not a request header"


def _unknown_field(header: RequestHeader) -> bytes:
    return header.encode() + b"\xa0\x06\x01"  # field 100, varint 1


def _not_canonical(header: RequestHeader) -> bytes:
    encoded = header.encode()
    return encoded[2:] + encoded[:2]  # protocol_version (field 1) moved to the end


@pytest.mark.parametrize(
    "payload", [_not_a_header, _unknown_field, _not_canonical], ids=lambda f: f.__name__[1:]
)
def test_a_signed_malformed_header_is_refused(
    fed: AttackFederation,
    forger: Forger,
    peer: PeerLink,
    payload: Callable[[RequestHeader], bytes],
) -> None:
    header, like = forger.request(b"parcel 42")
    signed = forger.sign_payload(payload(header), like=like)
    with refused(fed, by="provider", code="invalid_request"):
        outcome = peer.send(signed, b"parcel 42")
    assert outcome.refusal == ("INVALID_ARGUMENT", "client", "invalid_request")


def test_an_envelope_that_does_not_decode_is_refused(fed: AttackFederation, peer: PeerLink) -> None:
    with refused(fed, by="provider", code="invalid_request"):
        outcome = peer.send_raw(b"\x0a\xff\xff\xff\xff\x0f")  # field 1, length past the end
    assert outcome.refusal == ("INVALID_ARGUMENT", "client", "invalid_request")


@pytest.mark.parametrize("case", ["empty", "two_parts", "four_parts", "padded_payload"])
def test_an_envelope_without_a_compact_jws_is_refused(
    fed: AttackFederation, forger: Forger, peer: PeerLink, case: str
) -> None:
    _, signed = forger.request(b"parcel 42")
    protected, payload, signature = signed.jws.split(".")
    broken = {
        "empty": "",
        "two_parts": f"{protected}.{payload}",
        "four_parts": f"{signed.jws}.{signature}",
        "padded_payload": f"{protected}.{payload}==.{signature}",
    }[case]
    with refused(fed, by="provider", code="signature_invalid"):
        outcome = peer.send(dataclasses.replace(signed, jws=broken), b"parcel 42")
    assert outcome.refusal == ("UNAUTHENTICATED", "client", "signature_invalid")


# --- a response whose request hash does not match ---


@pytest.fixture(scope="module")
def rogue(fed: AttackFederation) -> Iterator[RogueProvider]:
    with RogueProvider(fed) as provider:
        yield provider


def _call_tax(fed: AttackFederation, body: bytes) -> Outcome:
    return call_is(fed.consumer_is, body, client=str(PROPERTY), service=str(TAX))


def test_a_rogue_provider_binding_honestly_is_served(
    fed: AttackFederation, rogue: RogueProvider
) -> None:
    """The control: the test's provider gateway, binding its response to the request it
    received, is accepted by the real consumer gateway."""
    rogue.honest()
    with served(fed, by="consumer", logged=(_EXCHANGE, 0), reaching=False):
        outcome = _call_tax(fed, b"tax 1")
    assert outcome.body == b"tax 1", outcome
    assert outcome.trailers["x-road-request-hash"] == rogue.requests[-1].hex()


@pytest.mark.parametrize("binding", ["an_earlier_request", "a_flipped_bit"])
def test_a_response_whose_request_hash_does_not_match_is_refused(
    fed: AttackFederation, rogue: RogueProvider, binding: str
) -> None:
    """A response signed by the provider member's real key, for the right message id,
    with the right body, whose ``request_header_sha256`` is another request's."""
    rogue.honest()
    assert _call_tax(fed, b"tax 1").status == "OK"
    earlier = rogue.requests[-1]
    if binding == "an_earlier_request":
        rogue.bind_to = lambda _sha256: earlier
    else:
        rogue.bind_to = lambda sha256: bytes([sha256[0] ^ 1]) + sha256[1:]
    count = len(rogue.requests)
    # the consumer gateway logged the request it sent, and no response
    with refused(fed, by="consumer", code="signature_invalid", origin="provider", logged=(1, 0)):
        outcome = _call_tax(fed, b"tax 2")
    assert len(rogue.requests) == count + 1, "the rogue was not asked"
    assert outcome.refusal == ("UNAUTHENTICATED", "provider", "signature_invalid")
    assert "bound to another request" in outcome.error
    assert outcome.body is None


def test_a_response_to_another_message_id_is_refused(
    fed: AttackFederation, rogue: RogueProvider
) -> None:
    """Bound to the right request header, but answering another message id."""
    rogue.honest()
    rogue.answer_to = lambda message_id: f"{message_id}-other"
    with refused(fed, by="consumer", code="signature_invalid", origin="provider", logged=(1, 0)):
        outcome = _call_tax(fed, b"tax 3")
    assert outcome.refusal == ("UNAUTHENTICATED", "provider", "signature_invalid")
    assert "response answers message" in outcome.error


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"x" * _FAR_OVERSIZE, id="far-beyond-the-envelope-allowance"),
        pytest.param(
            ExchangeResponseMessage(
                signed_header="e30.e30.AA",
                body=b"x" * (MAX_MESSAGE_BYTES + 1),
                certificate_chain=(),
                ocsp_response=b"",
                receipt=None,
            ).encode(),
            id="a-body-one-byte-over",
        ),
    ],
)
def test_an_oversize_response_is_refused(
    fed: AttackFederation, rogue: RogueProvider, answer: bytes
) -> None:
    """The consumer gateway refuses an answer larger than a provider gateway may send
    (gateway.consumer, before decoding it) with its code, not grpc's bare limit."""
    rogue.honest()
    rogue.raw_answer = answer
    with refused(fed, by="consumer", code="message_too_large", origin="provider", logged=(1, 0)):
        outcome = _call_tax(fed, b"tax 5")
    assert outcome.refusal == ("RESOURCE_EXHAUSTED", "provider", "message_too_large")


def test_a_response_envelope_that_does_not_decode_is_refused(
    fed: AttackFederation, rogue: RogueProvider
) -> None:
    rogue.honest()
    rogue.raw_answer = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length past the end
    with refused(fed, by="consumer", code="invalid_request", origin="provider", logged=(1, 0)):
        outcome = _call_tax(fed, b"tax 4")
    assert outcome.refusal == ("INVALID_ARGUMENT", "provider", "invalid_request")
