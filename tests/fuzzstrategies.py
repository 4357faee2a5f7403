"""Hypothesis strategies for the fuzz tests of Serai's trust-boundary decoders.

Two kinds of input, for every decoder:

- **Random structure** of the decoder's own format family, so that the input gets past
  the first byte of the parser: raw protobuf wire records (:func:`protobuf_wire`), ASN.1
  DER (:func:`der_values`), JSON (:func:`hostile_json`), compact JWS
  (:func:`compact_jws`) and identifier-like text (:func:`identifier_texts`).
- **Mutations of a valid input** (:func:`mutations`, which the test applies to its valid
  input): one to three of a bit flip, an insertion, a deletion, a truncation, a span
  overwritten, a span duplicated or an interesting byte (0x00, 0x7f, 0x80, 0xff)
  planted. Every position is drawn as an
  independent integer reduced modulo the length, so what is drawn never depends on what
  was drawn before (Hypothesis finds data-dependent draws flaky at thousands of
  examples).

The hostile JSON values are those a parser written against well-behaved peers
forgets: nesting deeper than the interpreter's recursion limit, integer literals of more
than 4,300 digits (which Python refuses with a bare ``ValueError``), ``NaN`` and
``Infinity``, ``1e999``, duplicate names, escaped lone surrogates, byte-order marks,
invalid UTF-8 and trailing data.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def deep_examples(count: int) -> int:
    """Examples for a slow (deep) fuzzing run: ``count`` times ``SERAI_FUZZ_DEEP``
    (default 1; ``SERAI_FUZZ_DEEP=3`` runs the thorough sizes of docs/reliability.md)."""
    return max(1, round(count * float(os.environ.get("SERAI_FUZZ_DEEP", "1"))))


#: Fuzzed inputs per fuzz test of a running server (``parametrize("examples", ...)``):
#: 100 in the default run, and 500 (:func:`deep_examples`) in the ``slow`` run.
SERVER_EXAMPLES: list[Any] = [
    100,
    pytest.param(deep_examples(500), marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]


def server_settings(examples: int) -> settings:
    """Hypothesis settings for fuzzing a running server with ``examples`` inputs: no
    deadline, and none of the health checks that a server shared by the examples, slow
    calls and large inputs trip."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


__all__ = [
    "SERVER_EXAMPLES",
    "Data",
    "Item",
    "Mutation",
    "Text",
    "b64url",
    "compact_jws",
    "deep_json",
    "der_values",
    "hostile_json",
    "hostile_json_value",
    "identifier_texts",
    "inputs",
    "json_object_with",
    "mutations",
    "protobuf_wire",
    "raw_bytes",
    "resolve",
    "server_settings",
    "set_field",
    "varint",
]

#: Depths above the default recursion limit (1,000) and well above it.
DEEP: st.SearchStrategy[int] = st.sampled_from([1_100, 3_000, 20_000])
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF)


_SHOW = 160


class Text(str):
    """A drawn text whose repr is short (Hypothesis reports stay readable, and under its
    large-repr warning, for 20,000-deep nesting)."""

    __slots__ = ()

    def __repr__(self) -> str:
        plain = str(self)
        if len(plain) <= _SHOW:
            return repr(plain)
        return f"{plain[:_SHOW]!r}... ({len(plain)} characters)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class Data(bytes):
    """Drawn bytes whose repr is short (see :class:`Text`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        plain = bytes(self)
        if len(plain) <= _SHOW:
            return repr(plain)
        return f"{plain[:_SHOW]!r}... ({len(plain)} bytes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def varint(value: int) -> bytes:
    """A protobuf base-128 varint (``value`` taken modulo 2**64, as protobuf does)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def raw_bytes(max_size: int = 512) -> st.SearchStrategy[bytes]:
    """Plain random bytes."""
    return st.binary(max_size=max_size)


# -- mutations of a valid input ----------------------------------------------------------

_Position = st.integers(0, 2**24)


def _flip(data: bytes, where: int, mask: int) -> bytes:
    if not data:
        return bytes([mask])
    i = where % len(data)
    return data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]


def _insert(data: bytes, where: int, extra: bytes) -> bytes:
    i = where % (len(data) + 1)
    return data[:i] + extra + data[i:]


def _delete(data: bytes, where: int, length: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    return data[:i] + data[i + length :]


def _truncate(data: bytes, where: int) -> bytes:
    return data[: where % (len(data) + 1)]


def _overwrite(data: bytes, where: int, extra: bytes) -> bytes:
    if not data:
        return extra
    i = where % len(data)
    return data[:i] + extra + data[i + len(extra) :]


def _duplicate(data: bytes, where: int, length: int, times: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    chunk = data[i : i + length]
    return data[:i] + chunk * times + data[i:]


def _plant(data: bytes, where: int, value: int) -> bytes:
    return _overwrite(data, where, bytes([value]))


_STEPS: dict[str, Callable[..., bytes]] = {
    "flip": _flip,
    "insert": _insert,
    "delete": _delete,
    "truncate": _truncate,
    "overwrite": _overwrite,
    "duplicate": _duplicate,
    "plant": _plant,
}

_STEP: st.SearchStrategy[tuple[Any, ...]] = st.one_of(
    st.tuples(st.just("flip"), _Position, st.integers(1, 255)),
    st.tuples(st.just("insert"), _Position, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), _Position, st.integers(1, 64)),
    st.tuples(st.just("truncate"), _Position),
    st.tuples(st.just("overwrite"), _Position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("duplicate"), _Position, st.integers(1, 64), st.integers(2, 50)),
    st.tuples(st.just("plant"), _Position, st.sampled_from(_INTERESTING)),
)


@dataclass(frozen=True)
class Mutation:
    """One to three mutation steps, applied in order to a valid input; its repr is the
    steps, so a failure report says exactly what was done."""

    steps: tuple[tuple[Any, ...], ...]

    def __call__(self, data: bytes) -> bytes:
        for name, *args in self.steps:
            data = _STEPS[name](data, *args)
        return data

    def text(self, text: str) -> str:
        """The mutation of an ASCII text (bytes mapped through Latin-1, so any byte
        becomes one character)."""
        return self(text.encode("latin-1")).decode("latin-1")


def mutations() -> st.SearchStrategy[Mutation]:
    """Mutations to apply to a valid input (module docstring)."""
    return st.lists(_STEP, min_size=1, max_size=3).map(lambda s: Mutation(tuple(s)))


# -- JSON --------------------------------------------------------------------------------

_PLAIN_JSON: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=16,
)


def deep_json(depth: int, kind: str) -> str:
    """``depth`` nested arrays or objects (balanced)."""
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def hostile_json_value() -> st.SearchStrategy[str]:
    """The text of one JSON value, well-formed or hostile (module docstring)."""
    return _hostile_json_value().map(Text)


def _hostile_json_value() -> st.SearchStrategy[str]:
    return st.one_of(
        _PLAIN_JSON.map(json.dumps),
        st.builds(deep_json, DEEP, st.sampled_from(["array", "object"])),
        st.integers(4_301, 12_000).map(lambda n: "9" * n),
        st.integers(4_301, 12_000).map(lambda n: "-" + "1" * n),
        st.sampled_from(
            [
                "NaN",
                "Infinity",
                "-Infinity",
                "1e999",
                "-0",
                "1.0",
                "true",
                "null",
                '"\\ud800"',
                '"\\udfff\\ud800"',
                '"\\u0000"',
                '"' + "a" * 70_000 + '"',
                "[]",
                "{}",
                '""',
                '"' + "/" * 300 + '"',
            ]
        ),
    )


def json_object_with(members: dict[str, str]) -> str:
    """A JSON object from member names and the raw text of their values."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in members.items()) + "}"


def hostile_json() -> st.SearchStrategy[bytes]:
    """Bytes that a JSON decoder may meet: hostile values, objects holding them, duplicate
    names, bad encodings and trailing data."""
    return _hostile_json().map(Data)


def _hostile_json() -> st.SearchStrategy[bytes]:
    value = hostile_json_value()
    return st.one_of(
        value.map(str.encode),
        st.dictionaries(st.text(max_size=8), value, max_size=4).map(
            lambda d: json_object_with(d).encode()
        ),
        st.tuples(st.text(max_size=8), value, value).map(
            lambda t: (
                json_object_with({})
                .replace("{}", "{" + f"{json.dumps(t[0])}:{t[1]},{json.dumps(t[0])}:{t[2]}" + "}")
                .encode()
            )
        ),
        st.tuples(value, st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\x80", b""])).map(
            lambda t: t[1] + t[0].encode()
        ),
        st.tuples(value, st.sampled_from([" ", "\n", "x", "{}", "\x00"])).map(
            lambda t: (t[0] + t[1]).encode()
        ),
        st.binary(max_size=64),
    )


# -- compact JWS -------------------------------------------------------------------------


def compact_jws(
    protected: st.SearchStrategy[bytes],
    payload: st.SearchStrategy[bytes],
    signature: st.SearchStrategy[bytes] | None = None,
) -> st.SearchStrategy[str]:
    """``b64url(protected).b64url(payload).b64url(signature)``."""
    return st.builds(
        lambda h, p, s: f"{b64url(h)}.{b64url(p)}.{b64url(s)}",
        protected,
        payload,
        signature if signature is not None else st.binary(max_size=80),
    )


# -- protobuf wire format ------------------------------------------------------------------

_FIELD_NUMBERS = st.one_of(st.integers(1, 12), st.sampled_from([0, 15, 16, 2047, 2**29 - 1]))


@st.composite
def _wire_record(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> bytes:
    number = draw(_FIELD_NUMBERS)
    wire_type = draw(st.integers(0, 7))
    key = varint((number << 3) | wire_type)
    if wire_type == 0:
        return key + varint(
            draw(st.one_of(st.integers(0, 300), st.sampled_from([2**31, 2**32, 2**63, 2**64 - 1])))
        )
    if wire_type == 1:
        return key + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return key + draw(st.binary(min_size=4, max_size=4))
    if wire_type == 2:
        body = draw(inner | st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
        lie = draw(st.sampled_from([0, 0, 0, 1, -1, 2**31]))
        return key + varint(max(0, len(body) + lie)) + body
    # 3, 4 (deprecated groups) and 6, 7 (no such wire type): a key and maybe junk.
    return key + draw(st.binary(max_size=4))


def protobuf_wire(max_records: int = 8) -> st.SearchStrategy[bytes]:
    """Raw protobuf encodings: records of any field number and wire type (invalid ones
    included), nested messages, lying lengths, huge varints."""
    return st.recursive(
        st.just(b""),
        lambda inner: st.lists(_wire_record(inner), max_size=max_records).map(b"".join),
        max_leaves=6,
    )


def set_field(message: Any, field: Any, values: list[Any]) -> None:
    """Set ``field`` (a descriptor of one of ``message``'s fields) to ``values``: all of
    them for a repeated field, else the first."""
    if field.is_repeated:
        getattr(message, field.name).extend(values)
    else:
        setattr(message, field.name, values[0])


def field(number: int, value: bytes | int) -> bytes:
    """One protobuf record: a varint for ``int``, length-delimited for ``bytes``."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint((number << 3) | 2) + varint(len(value)) + value


# -- ASN.1 DER ---------------------------------------------------------------------------


def _tlv(tag: int, body: bytes, length: bytes | None = None) -> bytes:
    if length is None:
        n = len(body)
        length = bytes([n]) if n < 0x80 else b"\x82" + n.to_bytes(2, "big")
    return bytes([tag]) + length + body


def der_values() -> st.SearchStrategy[bytes]:
    """ASN.1 TLVs: common tags, nested constructions, indefinite and huge lengths, deep
    nesting."""
    tags = st.sampled_from(
        [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x17, 0x18, 0x30, 0x31, 0xA0, 0xA3, 0x1F]
    )
    lengths = st.sampled_from(
        [None, None, None, b"\x80", b"\x84\xff\xff\xff\xff", b"\x81\x01", b"\x89" + b"\x01" * 9]
    )
    leaf = st.builds(_tlv, tags, st.binary(max_size=24), lengths)
    deep = DEEP.map(lambda n: b"\x30\x80" * n) | DEEP.map(lambda n: b"\x30\x84\x00\x00\x00\x00" * n)
    return st.one_of(
        st.recursive(
            leaf,
            lambda inner: st.builds(
                _tlv,
                st.sampled_from([0x30, 0x31, 0xA0, 0xA1, 0x04]),
                st.lists(inner, max_size=4).map(b"".join),
                lengths,
            ),
            max_leaves=10,
        ),
        deep,
    ).map(Data)


# -- identifiers ------------------------------------------------------------------------

_ID_ALPHABET = "AZaz09'()+,-.=?/_:gwroup \x00\u00e9\u0130\u212a\ud7ff\uff0f\u2044"


def identifier_texts(valid: Sequence[str]) -> st.SearchStrategy[str]:
    """Identifier-like text: random over the identifier characters, the separators,
    markers and look-alikes; valid identifiers mutated; overlong parts."""
    pieces = st.sampled_from(
        ["/", "gw:", "group:", "UZ", "GOV", "a" * 256, "", "//", "/x.Y/Z", "é"]
    )
    return st.one_of(
        st.text(alphabet=_ID_ALPHABET, max_size=40),
        st.lists(pieces | st.text(alphabet=_ID_ALPHABET, max_size=6), max_size=10).map("".join),
        st.builds(
            lambda base, where, text: (
                base[: where % (len(base) + 1)] + text + base[where % (len(base) + 1) :]
            ),
            st.sampled_from(list(valid)),
            _Position,
            st.text(max_size=4),
        ),
        st.builds(
            lambda base, where: base[: where % (len(base) + 1)],
            st.sampled_from(list(valid)),
            _Position,
        ),
        st.text(max_size=30),
    )


def timestamp_fields(numbers: Sequence[int]) -> st.SearchStrategy[bytes]:
    """A ``google.protobuf.Timestamp`` with extreme seconds and nanos (out of range,
    negative as two's complement, the year 1 and 9999 edges), as field ``numbers``."""
    seconds = st.sampled_from(
        [0, -1, -62135596801, -62135596800, 253402300799, 253402300800, 2**62, 2**63 - 1]
    )
    nanos = st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1])
    return st.builds(
        lambda n, s, ns: field(n, field(1, s) + field(2, ns)),
        st.sampled_from(list(numbers)),
        seconds,
        nanos,
    )


# -- tagged inputs ----------------------------------------------------------------------

#: An input: bytes as drawn, a valid input mutated, or a valid input with records appended.
Item = tuple[str, Any]


def inputs(*families: st.SearchStrategy[bytes], append: bool = False) -> st.SearchStrategy[Item]:
    """Tagged inputs: ``("bytes", b)``, ``("mutate", Mutation)``, ``("append", b)``."""
    options: list[st.SearchStrategy[Item]] = [mutations().map(lambda m: ("mutate", m))]
    options += [f.map(lambda b: ("bytes", b)) for f in families]
    if append:
        options.append(protobuf_wire().map(lambda b: ("append", b)))
    return st.one_of(options)


def resolve(item: Item, valid: bytes) -> bytes:
    kind, value = item
    if kind == "mutate":
        return bytes(value(valid))
    if kind == "append":
        return valid + bytes(value)
    return bytes(value)


# -- hostile text for the string fields of well-formed messages -------------------------

#: Characters a huge text is made of, each at most 250,000 UTF-8 bytes long in total so
#: that a request of three such fields stays under a server's 1 MiB receive limit.
_HUGE_CHARS = ("a", "/", ".", "\u00e9", "\u0130", "\U0001f600", "\x00")
_HUGE_SIZES = (256, 257, 511, 4_097, 65_536, 250_000)
_ODD_TEXTS = (
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "\x7f",
    "\u202e",
    "\ufeff",
    "\u200b",
    "\u00e9",
    "\U0001f600",
    "..",
    "/",
    "//",
    "-1",
    "0",
    "18446744073709551615",
    "%00",
    "' OR '1'='1",
    "Robert'); DROP TABLE acl_rules;--",
    "{}",
    "null",
)


def hostile_texts(valid: Sequence[str]) -> st.SearchStrategy[str]:
    """Text for a string field: :func:`identifier_texts`, huge runs of one character
    (ASCII, non-ASCII, astral, NUL), odd short values (empty, whitespace, controls,
    bidi and zero-width characters, numbers, SQL), and valid values padded, re-cased
    or with a character appended. Never a lone surrogate (protobuf cannot carry one)."""
    return st.one_of(
        identifier_texts(valid),
        st.builds(
            lambda c, n: c * (n // len(c.encode("utf-8"))),
            st.sampled_from(_HUGE_CHARS),
            st.sampled_from(_HUGE_SIZES),
        ),
        st.sampled_from(_ODD_TEXTS),
        st.builds(
            lambda base, how, extra: {
                "pad": f" {base} ",
                "lower": base.lower(),
                "upper": base.upper(),
                "append": base + extra,
                "prepend": extra + base,
            }[how],
            st.sampled_from(list(valid)),
            st.sampled_from(["pad", "lower", "upper", "append", "prepend"]),
            st.sampled_from(["\x00", "/", " ", "\u00e9", "\n", "x"]),
        ),
    ).map(Text)
