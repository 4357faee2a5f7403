"""The TLS IS port (DESIGN §4 hop 1, issue 4 item 1): client certificates of the member's
own IS CA required in the handshake, the certificate pinned per client subsystem by its
SHA-256, the address allow-list still applied; and the ``gateway.toml`` keys
(``is_tls``, ``is_client_ca``, ``client_cert_sha256``) down to the runtime's settings.
In-process federation with real TLS (tests/gatewayharness.py)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from certs.ca import CertificateAuthority, CertificateRecords, self_signed_root
from certs.keys import generate_private_key
from certs.profiles import Profile
from gateway._assembly import settings_from_config
from gateway._settings import ClientSettings, GatewaySettings
from gateway.config import parse_config, render_config
from gateway.tlsconf import certificates_pem
from serai.errors import ConfigError
from tests.gatewayharness import PROPERTY, Harness, der, federation, pem_key

GATEWAY_ID = "UZ/GOV/MINJUST/gw:main"


@dataclass
class ISCredentials:
    key_pem: bytes
    chain_pem: bytes
    sha256: bytes


def _is_ca(tmp_path: Path) -> CertificateAuthority:
    key = generate_private_key()
    root = self_signed_root(key, name="MINJUST information systems CA")
    return CertificateAuthority(
        certificate=root,
        key=key,
        chain=[root],
        records=CertificateRecords(tmp_path / "is-ca.db"),
        ocsp_url=None,
    )


def _credentials(ca: CertificateAuthority, subject: str) -> ISCredentials:
    key = generate_private_key()
    cert = ca.issue(Profile.AUTH, subject, key.public_key())
    return ISCredentials(
        key_pem=pem_key(key),
        chain_pem=certificates_pem([cert]),
        sha256=hashlib.sha256(der(cert)).digest(),
    )


@dataclass
class TLSFederation:
    fed: Harness
    is_ca: CertificateAuthority
    right: ISCredentials

    def channel(self, client: ISCredentials | None) -> grpc.aio.Channel:
        """A TLS channel to the consumer's IS port, trusting the federation root (the
        port serves the gateway's authentication certificate)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.fed.root_pem,
            private_key=None if client is None else client.key_pem,
            certificate_chain=None if client is None else client.chain_pem,
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{self.fed.consumer.is_port}", credentials)


@asynccontextmanager
async def tls_federation(
    tmp_path: Path, *, property_allow: tuple[str, ...] = ("127.0.0.1",)
) -> AsyncIterator[TLSFederation]:
    is_ca = _is_ca(tmp_path)
    right = _credentials(is_ca, "UZ/GOV/MINJUST/gw:property-is")
    async with federation(
        tmp_path,
        is_client_ca_pem=certificates_pem([is_ca.certificate]),
        property_cert_sha256=right.sha256,
        property_allow=property_allow,
    ) as fed:
        yield TLSFederation(fed=fed, is_ca=is_ca, right=right)


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[TLSFederation]:
    async with tls_federation(tmp_path) as harness:
        yield harness


async def _call(tls: TLSFederation, client: ISCredentials | None) -> tuple[grpc.StatusCode, str]:
    channel = tls.channel(client)
    try:
        result = await tls.fed.call(channel=channel, deadline_s=10.0)
    finally:
        await channel.close(None)
    if result.code == grpc.StatusCode.OK:
        assert result.body == b"parcel 42"
    return result.code, result.error or result.details


async def test_the_pinned_certificate_gets_through(tls: TLSFederation) -> None:
    assert await _call(tls, tls.right) == (grpc.StatusCode.OK, "")
    assert len(tls.fed.echo.calls) == 1


async def test_another_certificate_of_the_is_ca_is_not_authenticated(tls: TLSFederation) -> None:
    other = _credentials(tls.is_ca, "UZ/GOV/MINJUST/gw:other-is")
    channel = tls.channel(other)
    try:
        result = await tls.fed.call(channel=channel)
    finally:
        await channel.close(None)
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert result.error == "client:client_not_authenticated"
    assert str(PROPERTY) in result.details
    assert tls.fed.echo.calls == []
    assert not tls.fed.consumer_log.records


async def test_no_client_certificate_is_refused_in_the_handshake(tls: TLSFederation) -> None:
    code, _ = await _call(tls, None)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert tls.fed.echo.calls == []


async def test_a_federation_certificate_is_not_an_is_certificate(tls: TLSFederation) -> None:
    """The IS port trusts the member's IS CA, not the federation's approved CAs."""
    key = generate_private_key()
    cert = tls.fed.ca.issue(Profile.AUTH, "UZ/GOV/MINJUST/gw:stray", key.public_key())
    stray = ISCredentials(
        key_pem=pem_key(key),
        chain_pem=certificates_pem([cert, tls.fed.ca.certificate]),
        sha256=hashlib.sha256(der(cert)).digest(),
    )
    code, _ = await _call(tls, stray)
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_on_a_tls_port_is_refused(tls: TLSFederation) -> None:
    result = await tls.fed.call(deadline_s=10.0)  # the harness's plaintext channel
    assert result.code == grpc.StatusCode.UNAVAILABLE


async def test_the_address_allow_list_still_applies(tmp_path: Path) -> None:
    async with tls_federation(tmp_path, property_allow=("10.9.9.9",)) as tls:
        code, error = await _call(tls, tls.right)
        assert (code, error) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "client:client_not_authenticated",
        )


async def test_the_certificate_alone_when_no_allow_list(tmp_path: Path) -> None:
    async with tls_federation(tmp_path, property_allow=()) as tls:
        assert await _call(tls, tls.right) == (grpc.StatusCode.OK, "")


# -- settings -------------------------------------------------------------------------


def test_settings_refuse_a_pinned_certificate_on_a_plaintext_port() -> None:
    client = ClientSettings(
        subsystem=PROPERTY, allowed_addresses=("127.0.0.1",), client_cert_sha256=b"\0" * 32
    )
    with pytest.raises(ConfigError, match="needs a TLS IS port"):
        GatewaySettings(clients=(client,))
    assert GatewaySettings(clients=(client,), is_client_ca_pem=b"pem").clients == (client,)
    with pytest.raises(ConfigError, match="32 bytes"):
        ClientSettings(subsystem=PROPERTY, allowed_addresses=(), client_cert_sha256=b"short")


# -- gateway.toml -----------------------------------------------------------------------


def _toml(extra: str = "", *, is_tls: bool = False) -> str:
    text = render_config(
        gateway_id=GATEWAY_ID, peer_address="127.0.0.1:5501", clients=["UZ/GOV/MINJUST/property"]
    )
    if is_tls:
        text = text.replace("is_tls = false", "is_tls = true")
    head, sep, tail = text.partition("\n[[client]]")
    return head + extra + sep + tail


def test_is_tls_needs_is_client_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'is_client_ca': needed when is_tls = true"):
        parse_config(tmp_path / "gateway.toml", _toml(is_tls=True))


def test_is_client_ca_needs_is_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'is_client_ca': IS client certificates need"):
        parse_config(tmp_path / "gateway.toml", _toml('is_client_ca = "is-ca.pem"\n'))


def test_is_client_ca_must_be_a_string(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'is_client_ca'"):
        parse_config(tmp_path / "gateway.toml", _toml("is_client_ca = 3\n", is_tls=True))


def test_plaintext_is_the_default(tmp_path: Path) -> None:
    config = parse_config(tmp_path / "gateway.toml", _toml())
    assert (config.is_tls, config.is_client_ca) == (False, None)
    settings = settings_from_config(config)
    assert settings.is_client_ca_pem is None
    assert settings.is_listen == "127.0.0.1:5500"
    assert settings.clients[0].allowed_addresses == ("127.0.0.1/32", "::1/128")
    assert settings.clients[0].client_cert_sha256 is None


def test_a_tls_configuration_reaches_the_settings(tmp_path: Path) -> None:
    fingerprint = "AB:" + "cd" * 31
    text = _toml('is_client_ca = "keys/is-ca.pem"\n', is_tls=True).replace(
        "\nallow = ", f'\nclient_cert_sha256 = "{fingerprint}"\nallow = '
    )
    config = parse_config(tmp_path / "gateway.toml", text)
    assert config.is_client_ca == tmp_path / "keys" / "is-ca.pem"
    with pytest.raises(ConfigError, match="key 'is_client_ca'"):
        settings_from_config(config)  # the CA file was not loaded
    settings = settings_from_config(config, is_client_ca_pem=b"PEM")
    assert settings.is_client_ca_pem == b"PEM"
    client = settings.clients[0]
    assert client.client_cert_sha256 == bytes.fromhex(fingerprint.replace(":", ""))
    assert client.allowed_addresses == ("127.0.0.1/32", "::1/128")
