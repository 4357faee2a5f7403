"""The peer port follows the approved CAs of the configuration in force, without a
restart (gateway.tlsconf.PeerServerCredentials), with the in-process federation of
tests/gatewayharness.py.

A new configuration (serial + 1) is served through the provider gateway's in-memory
configuration transport and refreshed. The harness keeps the registry's signing key to
itself, so the test adds a second configuration-signing certificate to the provider's
trust anchor first, as an anchor re-issued for a signing-key rotation would.

A client whose certificate passes the TLS handshake reaches the provider's checks and is
refused ``client:peer_not_registered`` (its certificate is no registered gateway's):
that refusal proves the handshake passed. A refused handshake is UNAVAILABLE with no
``x-road-error``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

import grpc
import pytest
from cryptography import x509

from certs.ca import CertificateAuthority, self_signed_root
from certs.keys import generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway.tlsconf import PeerServerCredentials, certificates_pem, roots_digest
from registry.client import GlobalConfigurationClient, InMemoryFetchTransport
from registry.codec import encode_configuration
from registry.model import ApprovedCA
from registry.signing import sign_configuration
from tests.gatewayharness import Harness, der, federation, pem_key, trailers_of

EXCHANGE_METHOD = "/serai.transport.v1.Transport/Exchange"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Harness]:
    async with federation(tmp_path) as harness:
        yield harness


class _Registry:
    """Publishes new configurations to the provider gateway (module docstring)."""

    def __init__(self, fed: Harness) -> None:
        self.client = cast(
            GlobalConfigurationClient,
            fed.provider._parts.configuration,
        )
        self._key = generate_private_key()
        self._cert = fed.ca.issue(
            Profile.CONFIGURATION_SIGNING, "UZ registry rotated", self._key.public_key()
        )
        trusted = self.client._trusted
        trusted._anchor = dataclasses.replace(
            trusted._anchor,
            signing_certificates=(*trusted._anchor.signing_certificates, der(self._cert)),
        )

    @property
    def cas(self) -> tuple[ApprovedCA, ...]:
        return self.client.current().configuration.federation.certificate_authorities

    async def publish(self, cas: Sequence[ApprovedCA]) -> None:
        """Serve the configuration in force with ``cas`` under serial + 1, and refresh."""
        conf = self.client.current().configuration
        new = dataclasses.replace(
            conf,
            serial=conf.serial + 1,
            federation=dataclasses.replace(conf.federation, certificate_authorities=tuple(cas)),
        )
        envelope = sign_configuration(
            encode_configuration(new), key=self._key, certificate=self._cert
        )
        transport = cast(InMemoryFetchTransport, self.client._transport)
        transport.publish(envelope)
        assert await self.client.refresh()
        assert self.client.current().serial == new.serial


def _second_ca(
    tmp_path: Path, ocsp_urls: tuple[str, ...]
) -> tuple[CertificateAuthority, ApprovedCA]:
    pki = PKIDirectory.init(tmp_path / "pki-second", instance="UZ")
    ca = pki.issuing_ca()
    approved = ApprovedCA(
        name="UZ second CA",
        root_certificate=der(pki.root_certificate()),
        intermediate_certificates=(der(ca.certificate),),
        ocsp_urls=ocsp_urls,
    )
    return ca, approved


def _client_credentials(fed: Harness, ca: CertificateAuthority) -> grpc.ChannelCredentials:
    """A client certificate of ``ca`` for a gateway nobody registered."""
    key = generate_private_key()
    cert = ca.issue(Profile.AUTH, "UZ/GOV/MINJUST/gw:elsewhere", key.public_key())
    return grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem,
        private_key=pem_key(key),
        certificate_chain=certificates_pem([cert, ca.certificate]),
    )


def _channel(fed: Harness, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        f"127.0.0.1:{fed.provider.peer_port}",
        credentials,
        options=(("grpc.ssl_target_name_override", "localhost"),),
    )


async def _exchange(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    """(status, origin:code of x-road-error) of an empty Exchange on the peer port."""
    exchange = channel.unary_unary(EXCHANGE_METHOD, None, None)
    try:
        await exchange(b"", timeout=30)
    except grpc.aio.AioRpcError as exc:
        error = trailers_of(exc.trailing_metadata()).get("x-road-error", "")
        return exc.code(), ":".join(error.split(":", 2)[:2])
    return grpc.StatusCode.OK, ""


NOT_REGISTERED = (grpc.StatusCode.UNAUTHENTICATED, "client:peer_not_registered")
HANDSHAKE_REFUSED = (grpc.StatusCode.UNAVAILABLE, "")


async def test_a_newly_approved_ca_is_accepted_without_restart(
    fed: Harness, tmp_path: Path
) -> None:
    registry = _Registry(fed)
    original = registry.cas
    second_ca, second = _second_ca(tmp_path, original[0].ocsp_urls)
    credentials = _client_credentials(fed, second_ca)
    async with _channel(fed, credentials) as channel:
        assert await _exchange(channel) == HANDSHAKE_REFUSED  # not approved yet

    await registry.publish((*original, second))

    async with _channel(fed, credentials) as channel:
        assert await _exchange(channel) == NOT_REGISTERED  # the handshake passed
    # the gateways, whose certificates are of the original CA, still exchange
    result = await fed.call()
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
    assert fed.provider_log.records[0].peer_gateway is not None


async def test_a_withdrawn_ca_is_refused_on_new_connections(fed: Harness, tmp_path: Path) -> None:
    registry = _Registry(fed)
    original = registry.cas
    second_ca, second = _second_ca(tmp_path, original[0].ocsp_urls)
    await registry.publish((*original, second))
    credentials = _client_credentials(fed, second_ca)
    async with _channel(fed, credentials) as open_before:
        assert await _exchange(open_before) == NOT_REGISTERED

        await registry.publish(original)  # the second CA is withdrawn

        async with _channel(fed, credentials) as channel:
            assert await _exchange(channel) == HANDSHAKE_REFUSED
        # documented: a connection established before the withdrawal is not re-checked
        # (the provider's per-call checks still apply to what it carries)
        assert await _exchange(open_before) == NOT_REGISTERED
    result = await fed.call()
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)


async def test_withdrawing_the_gateways_own_ca_stops_their_handshakes(
    fed: Harness, tmp_path: Path
) -> None:
    registry = _Registry(fed)
    original = registry.cas
    second_ca, second = _second_ca(tmp_path, original[0].ocsp_urls)
    await registry.publish((second,))  # the CA of every registered gateway is withdrawn
    consumer_key, consumer_chain = fed.consumer_tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem, private_key=consumer_key, certificate_chain=consumer_chain
    )
    async with _channel(fed, credentials) as channel:
        assert await _exchange(channel) == HANDSHAKE_REFUSED
    async with _channel(fed, _client_credentials(fed, second_ca)) as channel:
        assert await _exchange(channel) == NOT_REGISTERED


# --- the fetcher on its own ---


def _root(name: str) -> x509.Certificate:
    return self_signed_root(generate_private_key(), name=name)


def test_fetcher_answers_only_when_the_set_of_roots_changes() -> None:
    a, b = _root("A"), _root("B")
    key = generate_private_key()
    leaf = self_signed_root(key, name="server")
    in_force: list[Sequence[x509.Certificate]] = [(a, b)]
    failure: list[Exception] = []

    def roots() -> Sequence[x509.Certificate]:
        if failure:
            raise failure[0]
        return in_force[0]

    creds = PeerServerCredentials(
        key_pem=pem_key(key), chain_pem=certificates_pem([leaf]), roots=roots
    )
    assert creds.digest == roots_digest([b, a, a])
    assert creds.fetch() is None  # same snapshot
    in_force[0] = (b, a)  # a new snapshot, the same set
    assert creds.fetch() is None
    in_force[0] = (a,)  # b withdrawn
    assert isinstance(creds.fetch(), grpc.ServerCertificateConfiguration)
    assert creds.digest == roots_digest([a])
    assert creds.fetch() is None
    failure.append(RuntimeError("globalconf_expired"))
    assert creds.fetch() is None  # no configuration: the roots in force stay
    assert creds.digest == roots_digest([a])
    failure.clear()
    in_force[0] = ()  # every CA withdrawn: a configuration nobody can pass
    assert isinstance(creds.fetch(), grpc.ServerCertificateConfiguration)
    assert creds.digest == roots_digest([])
