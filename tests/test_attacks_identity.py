"""Attacks on identity and transport against a real-process federation (DESIGN §9,
Security): each refused with its code, never reaching the provider IS, counted in the
provider gateway's metrics.

One federation for the module (tests/attackkit_identity.py): development PKI with its
OCSP responder and TSA, registry, echo provider IS, consumer and provider gateways, all
``serai`` processes on loopback; the registry's configuration reaches the gateways
through a relay the tests control. The attacker is test code playing a gateway at the
provider gateway's peer port, with the project's own header and signing code.

For every attack: (1) the gRPC status and the ``x-road-error`` code; (2) the echo
provider's ``Reached`` count is the same before and after; (3) the provider gateway's
``/metrics`` counted the refusal under its code, and its message log committed nothing.
Attacks that the TLS handshake stops (a certificate of an unknown CA, an expired one,
TLS 1.2) never become a call, so they have no Serai code: for them the tests assert the
failed handshake, grpc's logged reason in the gateway's output, its count by reason in
``serai_gateway_tls_handshake_failures_total`` (gateway._grpclog), and that no exchange
was counted. A configuration offered to the gateway's configuration client is refused with
its code and counted in ``serai_gateway_globalconf_refresh_failures_total``. No timing
is asserted; waits are bounded by generous deadlines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509

from certs.keys import generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway.signing import HeaderSigner
from gateway.tlsconf import certificates_pem
from serai._demoprocs import Service, stop_all
from serai.localprocs import free_port
from tests.attackkit_identity import (
    CONSUMER,
    CONSUMER_GW,
    AttackFederation,
    Outcome,
    Tls,
    configuration_of,
    counter,
    ocsp_der,
    openssl_tls12,
    openssl_tls13,
    start_federation,
    tls_session,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackFederation]:
    services: list[Service] = []
    federation: AttackFederation | None = None
    try:
        federation = start_federation(tmp_path_factory.mktemp("attacks"), services)
        yield federation
    finally:
        stop_all(services)
        if federation is not None:
            federation.close()


def refused(
    fed: AttackFederation,
    attack: Callable[[], Outcome],
    *,
    status: str,
    code: str,
    origin: str = "client",
) -> Outcome:
    """Run ``attack``; assert its status and code, that the provider IS was not reached,
    and that the provider gateway counted one more refusal under ``code``."""
    reached, counted, records = fed.reached(), fed.refusals(code, origin=origin), fed.log_records()
    outcome = attack()
    assert (outcome.status, outcome.error) == (status, f"{origin}:{code}"), outcome
    assert fed.reached() == reached
    assert fed.refusals(code, origin=origin) == counted + 1
    assert fed.log_records() == records
    return outcome


def test_the_registered_consumer_gateway_is_served(fed: AttackFederation) -> None:
    """The control: the attacker's path itself works, with the legitimate keys."""
    ok = {"side": "provider", "code": "ok"}
    reached, served = fed.reached(), counter(fed.scrape(), "serai_gateway_exchanges_total", ok)
    outcome = fed.exchange(fed.consumer_tls(), fed.consumer_signer())
    assert outcome == Outcome("OK", "", "")
    assert fed.reached() == reached + 1
    assert counter(fed.scrape(), "serai_gateway_exchanges_total", ok) == served + 1


def test_a_gateway_with_a_certificate_of_the_approved_ca_but_not_registered(
    fed: AttackFederation,
) -> None:
    rogue = Tls.from_files(fed.issue("auth", "UZ/GOV/MINJUST/gw:rogue", "rogue-auth"))
    signer = fed.consumer_signer()
    refused(
        fed,
        lambda: fed.exchange(rogue, signer),
        status="UNAUTHENTICATED",
        code="peer_not_registered",
    )


def test_a_header_signed_with_another_members_key(fed: AttackFederation) -> None:
    """The registered consumer gateway signs for its client with the provider member's
    (UZ/GOV/CADASTRE) own signing key and certificate: valid, but not the client's member."""
    other = fed.signer(fed.provider_keys / "sign")
    refused(
        fed,
        lambda: fed.exchange(fed.consumer_tls(), other),
        status="UNAUTHENTICATED",
        code="certificate_invalid",
    )


def test_an_expired_signing_certificate(fed: AttackFederation) -> None:
    ca = PKIDirectory(fed.pki).issuing_ca()
    key = generate_private_key()
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    cert = ca.issue(
        Profile.SIGN, "UZ/GOV/MINJUST", key.public_key(), validity=dt.timedelta(days=1),
        now=long_ago,
    )  # fmt: skip
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    answer = ocsp_der(cert, ca.certificate, fed.ocsp_url)
    signer = HeaderSigner(
        key=key, certificate_chain=[cert, ca.certificate], ocsp_response=lambda: answer
    )
    refused(
        fed,
        lambda: fed.exchange(fed.consumer_tls(), signer),
        status="UNAUTHENTICATED",
        code="certificate_expired",
    )


def test_a_revoked_signing_certificate(fed: AttackFederation) -> None:
    prefix = fed.issue("sign", "UZ/GOV/MINJUST", "revoked-sign")
    fed.serai(
        "pki", "revoke", "--dir", fed.pki, "--reason", "keyCompromise", prefix.with_suffix(".pem")
    )
    signer = fed.signer(prefix)  # staples the responder's fresh answer: revoked
    refused(
        fed,
        lambda: fed.exchange(fed.consumer_tls(), signer),
        status="UNAUTHENTICATED",
        code="certificate_revoked",
    )


# -- attacks the TLS handshake stops ----------------------------------------------------------


HANDSHAKE_FAILURES = "serai_gateway_tls_handshake_failures_total"


def handshake_failures_counted(fed: AttackFederation, reason: str) -> float:
    """The provider gateway's count of TLS handshakes refused for ``reason``."""
    return counter(fed.scrape(), HANDSHAKE_FAILURES, {"reason": reason})


def tls_refused(fed: AttackFederation, tls: Tls, *, reason: str, counted_as: str) -> None:
    """``tls`` is refused at the handshake: the gRPC call fails UNAVAILABLE with no Serai
    code (no call was ever made, so there is none to carry), the server closes a raw TLS
    session after the handshake, the provider gateway's output names ``reason`` once
    more for each attempt and its ``/metrics`` counts them under ``counted_as``
    (gateway._grpclog), the provider IS was not reached, and the gateway counted no
    exchange at all."""
    reached, failures = fed.reached(), fed.handshake_failures(reason)
    counted = handshake_failures_counted(fed, counted_as)
    exchanges = counter(fed.scrape(), "serai_gateway_exchanges_total", {"side": "provider"})
    outcome = fed.exchange(tls, fed.consumer_signer())
    assert (outcome.status, outcome.error) == ("UNAVAILABLE", ""), outcome
    assert tls_session(fed.peer, tls, roots=fed.root_pem()) == "closed"
    fed.wait_until(lambda: fed.handshake_failures(reason) >= failures + 2)
    fed.wait_until(lambda: handshake_failures_counted(fed, counted_as) >= counted + 2)
    assert fed.reached() == reached
    after = counter(fed.scrape(), "serai_gateway_exchanges_total", {"side": "provider"})
    assert after == exchanges


def test_an_authentication_certificate_of_an_unknown_ca(fed: AttackFederation) -> None:
    """A second CA made with ``serai pki init`` elsewhere issues a certificate naming the
    registered consumer gateway: the peer port's TLS does not chain it to an approved root."""
    other = fed.workdir / "other-pki"
    if not other.exists():
        fed.serai("pki", "init", "--dir", other, "--instance", "UZ")
    prefix = fed.workdir / "attacker" / "unknown-ca-auth"
    fed.serai(
        "pki", "issue", "--dir", other, "--profile", "auth", "--subject", CONSUMER_GW,
        "--out", prefix,
    )  # fmt: skip
    tls_refused(
        fed,
        Tls.from_files(prefix),
        reason="unable to get local issuer certificate",
        counted_as="certificate_untrusted",
    )


def test_an_expired_authentication_certificate(fed: AttackFederation) -> None:
    ca = PKIDirectory(fed.pki).issuing_ca()
    key = generate_private_key()
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    cert = ca.issue(
        Profile.AUTH, "UZ/GOV/MINJUST/gw:expired", key.public_key(),
        validity=dt.timedelta(days=1), now=long_ago,
    )  # fmt: skip
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    tls_refused(
        fed,
        Tls.of(key, [cert, ca.certificate]),
        reason="certificate has expired",
        counted_as="certificate_expired",
    )


def test_a_tls_1_2_connection(fed: AttackFederation) -> None:
    """``openssl s_client -tls1_2`` with the registered consumer gateway's own valid
    certificate: no TLS 1.2 session is established on the peer port."""
    reached, failures = fed.reached(), fed.handshake_failures("NO_SHARED_CIPHER")
    counted = handshake_failures_counted(fed, "no_shared_cipher")
    exchanges = counter(fed.scrape(), "serai_gateway_exchanges_total", {"side": "provider"})
    result = openssl_tls12(fed.peer, fed.workdir / "attacker" / "tls12", fed.consumer_tls())
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "CONNECTION ESTABLISHED" not in output, output
    assert "Protocol version: TLSv1.2" not in output, output
    # grpc refused it for want of a TLS 1.2 cipher it may use (serai.tlspolicy)
    fed.wait_until(lambda: fed.handshake_failures("NO_SHARED_CIPHER") > failures)
    fed.wait_until(lambda: handshake_failures_counted(fed, "no_shared_cipher") > counted)
    # the control: the same openssl and identity get a TLS 1.3 session
    control = openssl_tls13(fed.peer, fed.workdir / "attacker" / "tls12", fed.consumer_tls())
    assert "Protocol version: TLSv1.3" in control.stdout + control.stderr, control
    assert fed.reached() == reached
    after = counter(fed.scrape(), "serai_gateway_exchanges_total", {"side": "provider"})
    assert after == exchanges


# -- a registered gateway whose authentication certificate is revoked -----------------------


def test_a_revoked_authentication_certificate_of_a_registered_gateway(
    fed: AttackFederation,
) -> None:
    """Two more gateways of the consumer member are registered as serving its client,
    each with an authentication certificate of the approved CA; both certificates are
    revoked before their gateway's first call. The registrations still stand: only
    revocation refuses them. Cutting the provider gateway off the OCSP responder does not
    help the attacker either: with no answer at hand it fails closed."""
    ca = PKIDirectory(fed.pki).issuing_ca()  # what `serai pki issue|revoke` use, in-process
    gateways = ("UZ/GOV/MINJUST/gw:backup", "UZ/GOV/MINJUST/gw:standby")
    keys = [generate_private_key() for _ in gateways]
    certs = [ca.issue(Profile.AUTH, g, k.public_key()) for g, k in zip(gateways, keys, strict=True)]
    for gateway, cert in zip(gateways, certs, strict=True):
        pem = fed.workdir / f"{gateway.rpartition(':')[2]}-auth.pem"
        pem.write_bytes(certificates_pem([cert, ca.certificate]))
        fed.serai(
            "registry", "gateway", "add", gateway, "--address", f"127.0.0.1:{free_port()}",
            "--cert", pem, "--subsystem", CONSUMER,
        )  # fmt: skip
    fed.wait_globalconf_serial(max(fed.published_serial_listing(g) for g in gateways))
    for cert in certs:
        ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise)
    backup, standby = (
        Tls.of(key, [cert, ca.certificate]) for key, cert in zip(keys, certs, strict=True)
    )
    signer = fed.consumer_signer()
    assert tls_session(fed.peer, backup, roots=fed.root_pem()) == "accepted"  # TLS lets it in
    refused(
        fed,
        lambda: fed.exchange(backup, signer),
        status="UNAUTHENTICATED",
        code="certificate_revoked",
    )
    with fed.ocsp_down():
        refused(
            fed,
            lambda: fed.exchange(standby, signer),
            status="UNAVAILABLE",
            code="ocsp_unavailable",
            origin="gateway",
        )
    refused(
        fed,
        lambda: fed.exchange(standby, signer),
        status="UNAUTHENTICATED",
        code="certificate_revoked",
    )


# -- the global configuration -----------------------------------------------------------------


def test_a_rolled_back_global_configuration_is_refused(fed: AttackFederation) -> None:
    """The relay answers the provider gateway's refreshes with an older configuration,
    genuinely signed by the registry and captured earlier: refused as a rollback, the
    held serial stays, and the refusal is counted."""
    held = fed.globalconf_serial()
    older = next(e for e in fed.relay.forwarded() if configuration_of(e, fed.anchor).serial < held)
    refusals = fed.globalconf_refusals("globalconf_rollback")
    events = fed.provider_events("globalconf_refresh_failed", "globalconf_rollback")
    fed.relay.serve(older)
    try:
        fed.wait_provider_event(
            "globalconf_refresh_failed", "globalconf_rollback", more_than=events
        )
        assert fed.globalconf_serial() >= held
        assert fed.globalconf_refusals("globalconf_rollback") > refusals
        # the configuration in force still serves
        reached = fed.reached()
        assert fed.exchange(fed.consumer_tls(), fed.consumer_signer()).status == "OK"
        assert fed.reached() == reached + 1
    finally:
        fed.relay.serve(None)


def test_an_expired_global_configuration_is_refused_and_fails_closed(
    fed: AttackFederation,
) -> None:
    """The relay freezes the configuration the provider gateway holds, and withholds the
    newer ones the registry keeps publishing. (1) Once the held copy expires, the gateway
    fails closed: a good exchange is refused ``globalconf_expired``, counted, never
    reaching the provider. (2) A newer configuration captured meanwhile and offered only
    after its own expiry is refused ``globalconf_expired`` and counted. (3) When the
    relay forwards again, the gateway recovers by itself."""
    held_serial = fed.globalconf_serial()
    held = next(
        e for e in fed.relay.forwarded() if configuration_of(e, fed.anchor).serial == held_serial
    )
    fed.relay.serve(held)
    try:
        newer = fed.withheld_configuration()
        expires = configuration_of(newer, fed.anchor).expires_at
        fed.wait_until(lambda: dt.datetime.now(dt.UTC) > expires)
        # (1) the held copy (older than `newer`) has expired too: fail closed
        reached, counted = fed.reached(), fed.refusals("globalconf_expired", origin="gateway")
        outcome = fed.exchange(fed.consumer_tls(), fed.consumer_signer())
        assert (outcome.status, outcome.error) == ("UNAVAILABLE", "gateway:globalconf_expired")
        assert fed.reached() == reached
        assert fed.refusals("globalconf_expired", origin="gateway") == counted + 1
        assert counter(fed.scrape(), "serai_gateway_ready", {}) == 0
        # (2) the withheld, now expired, newer configuration
        holding = fed.globalconf_serial()
        refusals = fed.globalconf_refusals("globalconf_expired")
        events = fed.provider_events("globalconf_refresh_failed", "globalconf_expired")
        fed.relay.serve(newer)
        fed.wait_provider_event("globalconf_refresh_failed", "globalconf_expired", more_than=events)
        assert fed.globalconf_serial() == holding < configuration_of(newer, fed.anchor).serial
        assert fed.globalconf_refusals("globalconf_expired") > refusals
    finally:
        fed.relay.serve(None)
    # (3) recovery
    fed.wait_until(lambda: fed.globalconf_serial() > holding)
    fed.wait_until(lambda: counter(fed.scrape(), "serai_gateway_ready", {}) == 1)
    reached = fed.reached()
    assert fed.exchange(fed.consumer_tls(), fed.consumer_signer()).status == "OK"
    assert fed.reached() == reached + 1
