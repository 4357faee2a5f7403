"""certs.der: one test per rule of its docstring, and agreement with asn1crypto's own
re-encoding (the check it replaces) on values asn1crypto builds and on their mutations."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import algos, cms
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.der import check_der
from certs.errors import TimestampError
from certs.timestamp import _check_signer_info_encoding


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


GOOD = [
    tlv(0x30, tlv(0x02, b"\x01") + tlv(0x01, b"\xff") + tlv(0x05, b"")),
    tlv(0x31, tlv(0x02, b"\x01") + tlv(0x02, b"\x02")),
    tlv(0x03, b"\x00"),
    tlv(0x03, b"\x03\xa8"),
    tlv(0x02, b"\x00\x80"),
    tlv(0x02, b"\xff\x7f"),
    tlv(0x17, b"261127143000Z"),
    tlv(0x18, b"20261127143000.5Z"),
    tlv(0x04, b"x" * 200),
    tlv(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x03"),
    tlv(0xA0, tlv(0x02, b"\x05")),
    b"\x9f\x1f\x00",  # [31] IMPLICIT, high-tag form, empty
]


@pytest.mark.parametrize("data", GOOD, ids=range(len(GOOD)))
def test_der_is_accepted(data: bytes) -> None:
    check_der(data)


BAD = {
    "high tag form for a low tag": (b"\x9f\x05\x00", "high-tag form"),
    "high tag with a leading 0x80": (b"\x9f\x80\x1f\x00", "not minimal"),
    "indefinite length": (b"\x30\x80\x02\x01\x01\x00\x00", "indefinite"),
    "long form for a short length": (b"\x04\x81\x05hello", "short form"),
    "length with a leading zero": (b"\x04\x82\x00\x85" + b"x" * 0x85, "leading zero"),
    "length past the end": (b"\x04\x05abc", "runs past"),
    "children not filling the parent": (b"\x30\x04\x02\x01\x01\x00", "missing|runs past"),
    "trailing bytes": (tlv(0x02, b"\x01") + b"\x00", "trail"),
    "constructed OCTET STRING": (tlv(0x24, tlv(0x04, b"ab")), "constructed"),
    "BOOLEAN 0x01": (tlv(0x01, b"\x01"), "BOOLEAN"),
    "BOOLEAN of two octets": (tlv(0x01, b"\xff\xff"), "BOOLEAN"),
    "empty INTEGER": (tlv(0x02, b""), "empty INTEGER"),
    "INTEGER with a leading zero": (tlv(0x02, b"\x00\x01"), "not minimal"),
    "INTEGER with a leading 0xFF": (tlv(0x02, b"\xff\x80"), "not minimal"),
    "ENUMERATED with a leading zero": (tlv(0x0A, b"\x00\x01"), "not minimal"),
    "BIT STRING with 8 unused bits": (tlv(0x03, b"\x08\x00"), "unused-bit count"),
    "empty BIT STRING claiming unused bits": (tlv(0x03, b"\x01"), "unused-bit count"),
    "BIT STRING with unused bits set": (tlv(0x03, b"\x03\xa9"), "unused bits set"),
    "OID with a padded sub-identifier": (tlv(0x06, b"\x2a\x80\x01"), "not minimal"),
    "OID cut inside a sub-identifier": (tlv(0x06, b"\x2a\x86"), "truncated"),
    "empty OID": (tlv(0x06, b""), "truncated"),
    "NULL with content": (tlv(0x05, b"\x00"), "NULL"),
    "UTCTime without Z": (tlv(0x17, b"2611271430+0100"), "UTCTime"),
    "GeneralizedTime with a trailing zero": (tlv(0x18, b"20261127143000.50Z"), "Generalized"),
    "GeneralizedTime with an empty fraction": (tlv(0x18, b"20261127143000.Z"), "Generalized"),
    "unsorted SET": (tlv(0x31, tlv(0x02, b"\x02") + tlv(0x02, b"\x01")), "not sorted"),
}


@pytest.mark.parametrize(("data", "match"), BAD.values(), ids=BAD.keys())
def test_each_rule_refuses_its_breach(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_der(data)


def test_an_implicit_set_of_is_sorted_only_where_named() -> None:
    unsorted = tlv(0xA0, tlv(0x02, b"\x02") + tlv(0x02, b"\x01"))
    check_der(unsorted)  # an implicit [0] is any constructed type without a schema
    with pytest.raises(ValueError, match="not sorted"):
        check_der(unsorted, set_of_tags=(0xA0,))


def test_several_values_only_when_asked() -> None:
    two = tlv(0x02, b"\x01") + tlv(0x02, b"\x02")
    with pytest.raises(ValueError, match="trail"):
        check_der(two)
    check_der(two, sequence_of=True)
    with pytest.raises(ValueError, match="missing"):
        check_der(b"")


def test_depth_is_bounded() -> None:
    deep = tlv(0x05, b"")
    for _ in range(70):
        deep = tlv(0x30, deep)
    with pytest.raises(ValueError, match="deeper"):
        check_der(deep)


# -- agreement with asn1crypto's re-encoding ---------------------------------------------

_signer_infos = st.builds(
    lambda serial, digest, attrs, signature: cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": cms.Name.build({"common_name": "Test TSA", "country_name": "UZ"}),
                        "serial_number": serial,
                    }
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
            "signed_attrs": [
                {"type": "content_type", "values": ["1.2.840.113549.1.9.16.1.4"]},
                {"type": "message_digest", "values": [digest]},
                {"type": "signing_time", "values": [cms.Time({"utc_time": attrs})]},
            ],
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
            "signature": signature,
        }
    ),
    st.integers(min_value=-(2**70), max_value=2**160),
    st.binary(min_size=32, max_size=32),
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2040, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=dt.UTC)
    ),
    st.binary(min_size=0, max_size=80),
)


@settings(max_examples=150, deadline=None)
@given(_signer_infos)
def test_what_asn1crypto_encodes_is_der(info: cms.SignerInfo) -> None:
    check_der(info.dump(force=True), set_of_tags=(0xA0, 0xA1))


@settings(max_examples=300, deadline=None)
@given(_signer_infos, st.data())
def test_a_signer_info_mutated_outside_its_signed_attributes_passes_only_unchanged(
    info: cms.SignerInfo, data: st.DataObject
) -> None:
    """What the token verifier accepts of a SignerInfo re-encodes to the same bytes: no
    second encoding of the fields the signature does not cover gets through. (A change
    inside the signed attributes is the signature's to catch.)"""
    der = bytearray(info.dump(force=True))
    attrs = info["signed_attrs"].dump(force=True)
    start = bytes(der).index(attrs)
    outside = [*range(start), *range(start + len(attrs), len(der))]
    position = data.draw(st.sampled_from(outside))
    der[position] = data.draw(st.integers(min_value=0, max_value=255))
    mutated = bytes(der)
    try:
        _check_signer_info_encoding(mutated)
        parsed = cms.SignerInfo.load(mutated)
        parsed.native  # noqa: B018  (what the verifier parses next)
    except (TimestampError, ValueError, TypeError, KeyError):
        return  # refused
    assert cms.SignerInfo.load(mutated).dump(force=True) == mutated
