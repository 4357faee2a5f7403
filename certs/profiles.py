"""Certificate profiles: what each kind of certificate in a Serai federation may do.

Every profile fixes the key usage, extended key usage and basic constraints of the
certificates issued under it; path validation (``certs.validation``) checks a leaf
against the profile its use requires, so a certificate issued for one purpose is never
accepted for another.

Serai's own extended key usages live under the UUID arc ``2.25`` (ITU-T X.667), which
needs no registration: configuration signing and gateway log signing.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

__all__ = [
    "EKU_CONFIGURATION_SIGNING",
    "EKU_LOG_SIGNING",
    "SERAI_OID_ARC",
    "Profile",
    "ProfileSpec",
    "key_usage_extension",
    "spec_for",
]

#: Serai's private OID arc (a UUID under 2.25).
SERAI_OID_ARC: Final = "2.25.185394888431899794766124391822526115"
#: Extended key usage of the registry's global-configuration signing certificates.
EKU_CONFIGURATION_SIGNING: Final = ObjectIdentifier(SERAI_OID_ARC + ".1.1")
#: Extended key usage of a gateway's message-log (tree head) signing certificate.
EKU_LOG_SIGNING: Final = ObjectIdentifier(SERAI_OID_ARC + ".1.2")


class Profile(enum.StrEnum):
    """The kinds of certificate the toolkit issues (names used on the command line)."""

    ROOT_CA = "root-ca"
    ISSUING_CA = "issuing-ca"
    AUTH = "auth"
    SIGN = "sign"
    OCSP = "ocsp"
    TSA = "tsa"
    CONFIGURATION_SIGNING = "confsign"
    LOG_SIGNING = "logsign"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileSpec:
    """What a profile puts in a certificate.

    ``key_usage`` names the ``x509.KeyUsage`` flags that are set (all others clear);
    ``eku`` is ``None`` when the profile has no extended key usage extension.
    """

    profile: Profile
    is_ca: bool
    path_length: int | None
    key_usage: frozenset[str]
    eku: tuple[ObjectIdentifier, ...] | None
    eku_critical: bool
    validity: dt.timedelta
    needs_ocsp_url: bool
    ocsp_no_check: bool = False
    #: Whether the subject must be a member (``sign``) or gateway (``auth``, ``logsign``) id.
    subject_kind: str = "name"


_DAY = dt.timedelta(days=1)

_SPECS: Final[dict[Profile, ProfileSpec]] = {
    Profile.ROOT_CA: ProfileSpec(
        profile=Profile.ROOT_CA,
        is_ca=True,
        path_length=1,
        key_usage=frozenset({"key_cert_sign", "crl_sign"}),
        eku=None,
        eku_critical=False,
        validity=20 * 365 * _DAY,
        needs_ocsp_url=False,
    ),
    Profile.ISSUING_CA: ProfileSpec(
        profile=Profile.ISSUING_CA,
        is_ca=True,
        path_length=0,
        key_usage=frozenset({"key_cert_sign", "crl_sign"}),
        eku=None,
        eku_critical=False,
        validity=10 * 365 * _DAY,
        needs_ocsp_url=False,
    ),
    Profile.AUTH: ProfileSpec(
        profile=Profile.AUTH,
        is_ca=False,
        path_length=None,
        key_usage=frozenset({"digital_signature"}),
        eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        eku_critical=False,
        validity=2 * 365 * _DAY,
        needs_ocsp_url=True,
        subject_kind="gateway",
    ),
    Profile.SIGN: ProfileSpec(
        profile=Profile.SIGN,
        is_ca=False,
        path_length=None,
        key_usage=frozenset({"digital_signature", "content_commitment"}),
        eku=None,
        eku_critical=False,
        validity=2 * 365 * _DAY,
        needs_ocsp_url=True,
        subject_kind="member",
    ),
    Profile.OCSP: ProfileSpec(
        profile=Profile.OCSP,
        is_ca=False,
        path_length=None,
        key_usage=frozenset({"digital_signature"}),
        eku=(ExtendedKeyUsageOID.OCSP_SIGNING,),
        eku_critical=False,
        validity=365 * _DAY,
        needs_ocsp_url=False,
        ocsp_no_check=True,
    ),
    Profile.TSA: ProfileSpec(
        profile=Profile.TSA,
        is_ca=False,
        path_length=None,
        key_usage=frozenset({"digital_signature", "content_commitment"}),
        eku=(ExtendedKeyUsageOID.TIME_STAMPING,),
        eku_critical=True,
        validity=5 * 365 * _DAY,
        needs_ocsp_url=True,
    ),
    Profile.CONFIGURATION_SIGNING: ProfileSpec(
        profile=Profile.CONFIGURATION_SIGNING,
        is_ca=False,
        path_length=None,
        key_usage=frozenset({"digital_signature", "content_commitment"}),
        eku=(EKU_CONFIGURATION_SIGNING,),
        eku_critical=False,
        validity=5 * 365 * _DAY,
        needs_ocsp_url=True,
    ),
    Profile.LOG_SIGNING: ProfileSpec(
        profile=Profile.LOG_SIGNING,
        is_ca=False,
        path_length=None,
        key_usage=frozenset({"digital_signature", "content_commitment"}),
        eku=(EKU_LOG_SIGNING,),
        eku_critical=False,
        validity=5 * 365 * _DAY,
        needs_ocsp_url=True,
        subject_kind="gateway",
    ),
}


def spec_for(profile: Profile) -> ProfileSpec:
    """The specification of ``profile``."""
    return _SPECS[profile]


def key_usage_extension(spec: ProfileSpec, *, rsa_key: bool) -> x509.KeyUsage:
    """The KeyUsage extension for ``spec`` (RSA TLS keys also get keyEncipherment)."""
    flags = set(spec.key_usage)
    if rsa_key and spec.profile is Profile.AUTH:
        flags.add("key_encipherment")
    return x509.KeyUsage(
        digital_signature="digital_signature" in flags,
        content_commitment="content_commitment" in flags,
        key_encipherment="key_encipherment" in flags,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign="key_cert_sign" in flags,
        crl_sign="crl_sign" in flags,
        encipher_only=False,
        decipher_only=False,
    )
