"""The consumer's probe of provider gateways follows the approved roots of the
configuration in force (gateway/peers.py), from the next new channel on."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.keys import generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway.peers import PeerPool
from gateway.tlsconf import certificates_pem
from registry.errors import ConfigurationError
from serai.errors import ErrorCode
from tests.gatewayharness import pem_key


def _pool(tmp_path: Path, source: list[bytes | ConfigurationError]) -> tuple[PeerPool, bytes]:
    pki = PKIDirectory.init(tmp_path / "pki", instance="UZ")
    key = generate_private_key()
    ca = pki.issuing_ca()
    cert = ca.issue(Profile.AUTH, "UZ/GOV/MINJUST/gw:main", key.public_key())
    first = certificates_pem([pki.root_certificate()])

    def roots() -> bytes:
        value = source[0]
        if isinstance(value, ConfigurationError):
            raise value
        return value

    pool = PeerPool(
        key_pem=pem_key(key),
        chain_pem=certificates_pem(ca.chain_for(cert)),
        roots_pem=first,
        max_message_bytes=1024,
        roots_source=roots,
    )
    return pool, first


def test_probe_is_rebuilt_when_the_roots_change(tmp_path: Path) -> None:
    source: list[bytes | ConfigurationError] = []
    pool, first = _pool(tmp_path, source)
    source.append(first)
    probe = pool._current_probe()
    assert pool._current_probe() is probe  # unchanged roots: the same context

    other = PKIDirectory.init(tmp_path / "other", instance="UZ")
    source[0] = first + certificates_pem([other.root_certificate()])
    changed = pool._current_probe()
    assert changed is not probe
    assert len(changed.context.get_ca_certs()) == 2


@pytest.mark.parametrize("code", [ErrorCode.GLOBALCONF_EXPIRED, ErrorCode.GLOBALCONF_UNAVAILABLE])
def test_probe_keeps_its_roots_without_a_configuration(tmp_path: Path, code: ErrorCode) -> None:
    source: list[bytes | ConfigurationError] = []
    pool, first = _pool(tmp_path, source)
    source.append(first)
    probe = pool._current_probe()
    source[0] = ConfigurationError("no configuration in force", code=code)
    assert pool._current_probe() is probe
