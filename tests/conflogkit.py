"""What the configuration-log tests (``tests/test_conflog_timestamps.py``,
``tests/test_registry_conflog_retention.py``) share: the development PKI with its TSA
and a configuration-signing key (:func:`make_pki`), and a registry store that approves
them (:func:`approve`), and a publisher signing with its key (:func:`publisher`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.keys import PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.tsa import TimeStampAuthority
from registry.model import ApprovedCA, ApprovedTSA, Member
from registry.publisher import Publisher
from registry.sqlstore import SqlRegistryStore
from registry.store import Change
from serai.identifiers import MemberId

CHANGE = Change(actor="test", action="test")


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclasses.dataclass(frozen=True)
class Pki:
    """The development PKI (instance ``UZ``), its TSA, and the registry's
    configuration-signing key with its certificate from the issuing CA."""

    dir: PKIDirectory
    root: x509.Certificate
    issuing: x509.Certificate
    tsa: TimeStampAuthority
    tsa_chain: tuple[x509.Certificate, ...]
    conf_key: PrivateKey
    conf_cert: x509.Certificate


def make_pki(path: Path) -> Pki:
    """A new development PKI in the directory ``path``."""
    directory = PKIDirectory.init(path, instance="UZ")
    key, chain = directory.tsa_signer()
    issuing = directory.issuing_ca()
    conf_key = generate_private_key()
    return Pki(
        dir=directory,
        root=directory.root_certificate(),
        issuing=issuing.certificate,
        tsa=TimeStampAuthority(key=key, chain=chain),
        tsa_chain=tuple(chain),
        conf_key=conf_key,
        conf_cert=issuing.issue(
            Profile.CONFIGURATION_SIGNING, "UZ registry", conf_key.public_key()
        ),
    )


def approve(store: SqlRegistryStore, pki: Pki, tsa_url: str, *, name: str = "dev-tsa") -> None:
    """Approve the PKI's TSA as ``name`` at ``tsa_url``; first, in a store without one,
    the development CA and the member ``UZ/GOV/STC``."""
    if not store.list_certificate_authorities():
        store.add_certificate_authority(
            ApprovedCA(
                name="dev-ca",
                root_certificate=der(pki.root),
                intermediate_certificates=(der(pki.issuing),),
            ),
            CHANGE,
        )
        store.add_member(Member(id=MemberId.parse("UZ/GOV/STC"), name="STC"), CHANGE)
    store.add_timestamping_authority(
        ApprovedTSA(name=name, url=tsa_url, certificates=tuple(der(c) for c in pki.tsa_chain)),
        CHANGE,
    )


def publisher(
    store: SqlRegistryStore,
    pki: Pki,
    publish_dir: Path,
    *,
    clock: Callable[[], dt.datetime] | None = None,
) -> Publisher:
    """A publisher of ``store``'s configurations into ``publish_dir``, signed with the
    PKI's configuration-signing key (``clock``: the publisher's, or the system clock)."""
    return Publisher(
        store=store,
        signing_key=pki.conf_key,
        signing_certificate=pki.conf_cert,
        publish_dir=publish_dir,
        clock=clock,
    )
