"""Checks of certificates, CAs, TSAs and service descriptors before they are stored.

Each check returns (or returns a digest) when the object is acceptable and raises a
:class:`~registry.errors.RegistryError` refusal naming the object otherwise. A gateway's
authentication certificate must validate, at the given time, for both TLS roles up to an
approved CA root and name the gateway's member; a CA root must be a self-signed CA with
intermediates that chain up to it; a TSA's own certificate must carry the timeStamping
extended key usage; a service descriptor must parse as a ``FileDescriptorSet``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from google.protobuf.message import DecodeError

from certs.errors import PKIError
from certs.keys import parse_der_certificate
from certs.profiles import Profile
from certs.validation import TlsRole, TrustStore, member_of, validate_path
from registry._sqlerrors import _refuse
from registry.errors import RegistryError
from registry.model import ApprovedCA, ApprovedTSA, Gateway
from serai.errors import ErrorCode, Origin
from serai.identifiers import SubsystemId


class _TrustedCAs:
    """The approved CAs as a trust store for gateway authentication certificates."""

    def __init__(self, cas: Sequence[ApprovedCA]) -> None:
        self.names = [ca.name for ca in cas]
        self.intermediates = [
            _parse_certificate(f"intermediate certificate of CA {ca.name!r}", der)
            for ca in cas
            for der in ca.intermediate_certificates
        ]
        try:
            self.trust = TrustStore(
                roots=[
                    _parse_certificate(f"root certificate of CA {ca.name!r}", ca.root_certificate)
                    for ca in cas
                ],
                intermediates=self.intermediates,
            )
        except PKIError as exc:
            raise RegistryError(
                f"the approved CAs do not make a trust store: {exc.message}",
                code=ErrorCode.INTERNAL,
                origin=Origin.GATEWAY,
            ) from exc

    def check(self, gateway: Gateway, cert: x509.Certificate, at: dt.datetime) -> None:
        """Refuse (failed_precondition) unless ``cert`` validates for both TLS roles."""
        if not self.names:
            raise _refuse(
                ErrorCode.FAILED_PRECONDITION,
                f"authentication certificate of gateway {gateway.id} cannot be checked: no "
                "certificate authority is approved",
            )
        for role in (TlsRole.SERVER, TlsRole.CLIENT):
            try:
                validate_path(
                    cert,
                    intermediates=self.intermediates,
                    trust=self.trust,
                    at=at,
                    purpose=Profile.AUTH,
                    tls_role=role,
                    revocation=None,
                )
            except PKIError as exc:
                raise _refuse(
                    ErrorCode.FAILED_PRECONDITION,
                    f"authentication certificate of gateway {gateway.id} is not valid as a TLS "
                    f"{role.value} certificate from an approved CA ({exc.code.value}): "
                    f"{exc.message}",
                ) from exc

    def accepts(self, gateway: Gateway, at: dt.datetime) -> bool:
        """Whether ``gateway``'s stored certificate validates against these CAs at ``at``."""
        try:
            cert = _parse_certificate("", gateway.auth_certificate)
            self.check(gateway, cert, at)
        except RegistryError:
            return False
        return True


def _check_gateway_certificate(gateway: Gateway, trusted: _TrustedCAs, at: dt.datetime) -> None:
    what = f"authentication certificate of gateway {gateway.id}"
    if not gateway.auth_certificate:
        raise _refuse(
            ErrorCode.INVALID_REQUEST,
            f"{what} is missing: the registry needs the whole DER certificate, not its hash",
        )
    cert = _parse_certificate(what, gateway.auth_certificate)
    trusted.check(gateway, cert, at)
    try:
        named = member_of(cert)
    except PKIError as exc:
        raise _refuse(ErrorCode.FAILED_PRECONDITION, f"{what}: {exc.message}") from exc
    if named != str(gateway.id.member):
        raise _refuse(
            ErrorCode.FAILED_PRECONDITION,
            f"{what} names member {named} in its subject, not {gateway.id.member}",
        )


def _check_ca(ca: ApprovedCA) -> bytes:
    """Check a CA's certificates; return the SHA-256 of its root."""
    what = f"root certificate of CA {ca.name!r}"
    root = _parse_certificate(what, ca.root_certificate)
    if not _issued_by(root, root):
        raise _refuse(ErrorCode.INVALID_REQUEST, f"{what} is not self-signed")
    if not _is_ca(root):
        raise _refuse(
            ErrorCode.INVALID_REQUEST,
            f"{what} is not a CA certificate (basicConstraints cA and keyUsage keyCertSign)",
        )
    try:
        TrustStore(roots=[root])
    except PKIError as exc:
        raise _refuse(ErrorCode.INVALID_REQUEST, f"{what}: {exc.message}") from exc
    pending = {
        index: _parse_certificate(f"intermediate certificate {index} of CA {ca.name!r}", der)
        for index, der in enumerate(ca.intermediate_certificates)
    }
    for index, cert in pending.items():
        if not _is_ca(cert):
            raise _refuse(
                ErrorCode.INVALID_REQUEST,
                f"intermediate certificate {index} of CA {ca.name!r} is not a CA certificate",
            )
    chained = [root]
    while pending:
        linked = [i for i, c in pending.items() if any(_issued_by(c, up) for up in chained)]
        if not linked:
            raise _refuse(
                ErrorCode.INVALID_REQUEST,
                f"intermediate certificate {min(pending)} of CA {ca.name!r} does not chain up "
                "to its root certificate",
            )
        chained.extend(pending.pop(i) for i in linked)
    return _sha256(ca.root_certificate)


def _check_tsa(tsa: ApprovedTSA) -> None:
    own = _parse_certificate(f"certificate of TSA {tsa.name!r}", tsa.certificates[0])
    for index, der in enumerate(tsa.certificates[1:], start=1):
        _parse_certificate(f"certificate {index} of TSA {tsa.name!r}", der)
    try:
        usages = own.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.TIME_STAMPING not in usages:
        raise _refuse(
            ErrorCode.INVALID_REQUEST,
            f"certificate of TSA {tsa.name!r} lacks the timeStamping extended key usage",
        )


def _check_descriptor(provider: SubsystemId, data: bytes) -> None:
    what = f"service descriptor of {provider}"
    try:
        parsed = FileDescriptorSet.FromString(data)
    except (DecodeError, ValueError) as exc:
        raise _refuse(
            ErrorCode.INVALID_REQUEST, f"{what} is not a serialized FileDescriptorSet: {exc}"
        ) from exc
    if not parsed.file:
        raise _refuse(ErrorCode.INVALID_REQUEST, f"{what} describes no .proto file")


def _parse_certificate(what: str, der: bytes) -> x509.Certificate:
    try:
        cert = parse_der_certificate(der)
        _ = (cert.subject, cert.issuer, cert.extensions)
    except ValueError as exc:
        raise _refuse(
            ErrorCode.INVALID_REQUEST, f"{what} is not a DER X.509 certificate: {exc}"
        ) from exc
    return cert


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return basic.ca and usage.key_cert_sign


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
