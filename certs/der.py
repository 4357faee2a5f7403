"""Strict DER, checked in one pass over the bytes (ITU-T X.690 §8, §10 and §11).

Why: a parser such as asn1crypto accepts BER that is not DER, so two encodings of one
value both parse. Where bytes that no signature covers must have one encoding only (the
SignerInfo of a time-stamp token: its signature covers the signed attributes, not the
signer identifier or the unsigned attributes), the usual check re-encodes the parsed
value and compares. asn1crypto's forced re-encoding costs time that grows steeply with
the depth of the schema: a TSA's SignerInfo, with its ESS signing-certificate
attribute, took 60 to 170 ms, on the event loop of every gateway every second. This
module checks the encoding rules themselves instead, in time linear in the input, with
no schema.

Invariants: :func:`check_der` raises :class:`ValueError`, naming the offset and the
rule, unless ``data`` is exactly one TLV (or, with ``sequence_of=True``, any number of
TLVs back to back) in which, recursively:

1. every identifier is minimal (low-tag form below 31; high-tag form without leading
   0x80 octets, and only for tag numbers of 31 and above);
2. every length is definite and minimal (short form below 128; long form with no
   leading zero octet, at most 4 octets) and lies within its parent;
3. a constructed value's children fill it exactly; nothing trails the outer value;
4. universal types are DER's forms: only SEQUENCE and SET are constructed (no
   constructed strings); BOOLEAN is one octet, 0x00 or 0xFF; INTEGER and ENUMERATED are
   non-empty and minimal; NULL is empty; an OBJECT IDENTIFIER is non-empty, ends its
   last sub-identifier, and no sub-identifier starts with the octet 0x80; a BIT
   STRING's unused-bit count is at most 7, is 0 when there are no content octets, and
   those unused bits are zero; UTCTime is
   ``YYMMDDHHMMSSZ``; GeneralizedTime ends in ``Z`` with no fraction that is empty or
   ends in 0;
5. the children of a SET, and of any context-specific constructed tag named in
   ``set_of_tags`` (an IMPLICIT SET OF, such as a SignerInfo's ``[0]`` signed
   attributes), are in ascending order of their encodings (§11.6).

What it cannot know without a schema, it does not claim: the value types of
context-specific primitive tags, and whether a SEQUENCE matches its definition (the
parser that reads the value checks that).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

__all__ = ["check_der"]

_MAX_DEPTH: Final = 64
_UTC_TIME: Final = re.compile(rb"\d{12}Z")
_GENERALIZED_TIME: Final = re.compile(rb"\d{14}(?:\.\d*[1-9])?Z")
_CONSTRUCTED_UNIVERSAL: Final = frozenset({16, 17})  # SEQUENCE, SET


def check_der(data: bytes, *, set_of_tags: Collection[int] = (), sequence_of: bool = False) -> None:
    """Raise :class:`ValueError` unless ``data`` is strict DER (module docstring).
    ``set_of_tags`` holds identifier octets (e.g. ``0xA0``) whose children must be
    sorted like a SET OF's; ``sequence_of`` accepts several TLVs back to back."""
    view = memoryview(data)
    end = _walk(view, 0, len(view), frozenset(set_of_tags), 0, many=sequence_of)
    if end != len(view):
        raise ValueError(f"DER: {len(view) - end} bytes trail the value at offset {end}")


def _walk(
    view: memoryview, at: int, end: int, set_of: frozenset[int], depth: int, *, many: bool
) -> int:
    """Check the TLVs in ``view[at:end]`` (one, or all of them with ``many``); return
    where the last one ends."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"DER: nested deeper than {_MAX_DEPTH} at offset {at}")
    if at >= end:
        raise ValueError(f"DER: a value is missing at offset {at}")
    while True:
        first = view[at]
        constructed = bool(first & 0x20)
        tag_class = first >> 6
        number, content = _identifier(view, at, end)
        length, content = _length(view, content, end)
        stop = content + length
        if stop > end:
            raise ValueError(f"DER: the value at offset {at} runs past its container")
        if constructed:
            if tag_class == 0 and number not in _CONSTRUCTED_UNIVERSAL:
                raise ValueError(f"DER: universal type {number} at offset {at} is constructed")
            if length:
                _walk(view, content, stop, set_of, depth + 1, many=True)
            if (tag_class == 0 and number == 17) or first in set_of:
                _sorted_children(view, content, stop, at)
        elif tag_class == 0:
            _primitive(number, view[content:stop], at)
        at = stop
        if not many or at == end:
            return at


def _identifier(view: memoryview, at: int, end: int) -> tuple[int, int]:
    number = view[at] & 0x1F
    at += 1
    if number != 0x1F:
        return number, at
    if at >= end or view[at] == 0x80:
        raise ValueError(f"DER: a high tag number is not minimal at offset {at - 1}")
    number = 0
    while True:
        if at >= end:
            raise ValueError("DER: an identifier runs past the end")
        octet = view[at]
        number = (number << 7) | (octet & 0x7F)
        at += 1
        if not octet & 0x80:
            break
        if number > 0xFFFFFF:
            raise ValueError(f"DER: a tag number is too large at offset {at}")
    if number < 0x1F:
        raise ValueError(f"DER: tag {number} uses the high-tag form at offset {at}")
    return number, at


def _length(view: memoryview, at: int, end: int) -> tuple[int, int]:
    if at >= end:
        raise ValueError(f"DER: a length is missing at offset {at}")
    first = view[at]
    if first < 0x80:
        return first, at + 1
    if first == 0x80:
        raise ValueError(f"DER: an indefinite length at offset {at}")
    count = first & 0x7F
    if count > 4 or at + 1 + count > end:
        raise ValueError(f"DER: a length of {count} octets at offset {at}")
    octets = bytes(view[at + 1 : at + 1 + count])
    if octets[0] == 0:
        raise ValueError(f"DER: a length with a leading zero octet at offset {at}")
    length = int.from_bytes(octets, "big")
    if length < 0x80:
        raise ValueError(f"DER: the length {length} at offset {at} needs the short form")
    return length, at + 1 + count


def _primitive(number: int, value: memoryview, at: int) -> None:
    size = len(value)
    if number == 1:  # BOOLEAN
        if size != 1 or value[0] not in (0x00, 0xFF):
            raise ValueError(f"DER: a BOOLEAN at offset {at} is not one octet 00 or FF")
    elif number in (2, 10):  # INTEGER, ENUMERATED
        if size == 0:
            raise ValueError(f"DER: an empty INTEGER at offset {at}")
        if size > 1 and (
            (value[0] == 0x00 and not value[1] & 0x80) or (value[0] == 0xFF and value[1] & 0x80)
        ):
            raise ValueError(f"DER: an INTEGER at offset {at} is not minimal")
    elif number == 3:  # BIT STRING
        if size == 0 or value[0] > 7 or (size == 1 and value[0]):
            raise ValueError(f"DER: a BIT STRING at offset {at} has a bad unused-bit count")
        if size > 1 and value[-1] & ((1 << value[0]) - 1):
            raise ValueError(f"DER: a BIT STRING at offset {at} has unused bits set")
    elif number in (6, 13):  # OBJECT IDENTIFIER, RELATIVE-OID
        if size == 0 or value[-1] & 0x80:
            raise ValueError(f"DER: an OBJECT IDENTIFIER at offset {at} is truncated")
        if any(
            octet == 0x80 and (i == 0 or not value[i - 1] & 0x80) for i, octet in enumerate(value)
        ):
            raise ValueError(f"DER: an OBJECT IDENTIFIER at offset {at} is not minimal")
    elif number == 5:  # NULL
        if size:
            raise ValueError(f"DER: a NULL at offset {at} has content")
    elif number == 23:  # UTCTime
        if not _UTC_TIME.fullmatch(value):
            raise ValueError(f"DER: a UTCTime at offset {at} is not YYMMDDHHMMSSZ")
    elif number == 24 and not _GENERALIZED_TIME.fullmatch(value):  # GeneralizedTime
        raise ValueError(f"DER: a GeneralizedTime at offset {at} is not in its DER form")


def _sorted_children(view: memoryview, at: int, end: int, where: int) -> None:
    previous: bytes | None = None
    while at < end:
        _, content = _identifier(view, at, end)
        length, content = _length(view, content, end)
        child = bytes(view[at : content + length])
        if previous is not None and _padded_less(child, previous):
            raise ValueError(f"DER: the SET OF at offset {where} is not sorted")
        previous = child
        at = content + length


def _padded_less(left: bytes, right: bytes) -> bool:
    """X.690 §11.6: compare as octet strings, the shorter padded with zeros at the end."""
    width = max(len(left), len(right))
    return left.ljust(width, b"\x00") < right.ljust(width, b"\x00")
