"""serai.tokens: each rule of TokenVerifier, named; the issuer's claims; the surface."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import serai.tokens
from serai.errors import ErrorCode, SeraiError
from serai.tokens import TokenIssuer, TokenVerifier, bearer_token

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
AUD = "serai-registry:UZ"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def _clock(at: dt.datetime = NOW) -> Callable[[], dt.datetime]:
    return lambda: at


def _issuer(key: ec.EllipticCurvePrivateKey = KEY) -> TokenIssuer:
    return TokenIssuer(key=key, issuer="serai-registry:UZ", clock=_clock())


def _verifier(at: dt.datetime = NOW) -> TokenVerifier:
    return TokenVerifier(public_keys=[KEY.public_key()], audience=AUD, clock=_clock(at))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(**overrides: object) -> dict[str, object]:
    now = int(NOW.timestamp())
    payload: dict[str, object] = {
        "sub": "alice",
        "aud": AUD,
        "roles": ["observer"],
        "iat": now,
        "exp": now + 600,
        "jti": "x",
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def test_issued_token_verifies_with_typed_claims() -> None:
    token = _issuer().issue(subject="alice", roles=["registry-admin"], audience=AUD)
    claims = _verifier().verify(token)
    assert claims.subject == "alice"
    assert claims.roles == {"registry-admin"}
    assert claims.audience == AUD
    assert claims.issuer == "serai-registry:UZ"
    assert claims.issued_at == NOW
    assert claims.expires_at == NOW + dt.timedelta(seconds=serai.tokens.DEFAULT_LIFETIME_S)
    assert claims.token_id
    assert jwt.get_unverified_header(token)["alg"] == "ES256"


def test_each_token_has_its_own_jti() -> None:
    issuer = _issuer()
    a = _verifier().verify(issuer.issue(subject="a", roles=[], audience=AUD))
    b = _verifier().verify(issuer.issue(subject="a", roles=[], audience=AUD))
    assert a.token_id != b.token_id


def test_lifetime_is_configurable() -> None:
    token = _issuer().issue(subject="a", roles=[], audience=AUD, lifetime_s=5)
    assert _verifier().verify(token).expires_at == NOW + dt.timedelta(seconds=5)
    with pytest.raises(SeraiError) as info:
        _verifier(NOW + dt.timedelta(seconds=5 + serai.tokens.DEFAULT_LEEWAY_S)).verify(token)
    assert info.value.code is ErrorCode.UNAUTHENTICATED


def test_rotation_accepts_any_listed_key() -> None:
    token = _issuer(OTHER_KEY).issue(subject="a", roles=[], audience=AUD)
    verifier = TokenVerifier(
        public_keys=[KEY.public_key(), OTHER_KEY.public_key()], audience=AUD, clock=_clock()
    )
    assert verifier.verify(token).subject == "a"


def _hs256() -> str:
    return jwt.encode(_payload(), "secret-secret-secret-secret-secret", algorithm="HS256")


def _none_alg() -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_payload()).encode())}."


def _rs256() -> str:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_payload(), rsa_key, algorithm="RS256")


def _tampered() -> str:
    token = _issuer().issue(subject="alice", roles=["observer"], audience=AUD)
    header, _, signature = token.split(".")
    forged = _b64(json.dumps(_payload(roles=["registry-admin"])).encode())
    return f"{header}.{forged}.{signature}"


REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "empty": (lambda: "", "missing"),
    "not a jwt": (lambda: "not-a-token", "malformed"),
    "too long": (lambda: "a" * 10_000, "longer"),
    "expired": (
        lambda: _issuer().issue(subject="a", roles=[], audience=AUD, lifetime_s=1),
        "expired",
    ),
    "wrong audience": (
        lambda: _issuer().issue(subject="a", roles=[], audience="serai-gateway:UZ"),
        "not for this service",
    ),
    "other key": (
        lambda: _issuer(OTHER_KEY).issue(subject="a", roles=[], audience=AUD),
        "signature",
    ),
    "tampered payload": (_tampered, "signature"),
    "alg none": (_none_alg, "algorithm"),
    "alg HS256": (_hs256, "algorithm"),
    "alg RS256": (_rs256, "algorithm"),
    "no exp": (lambda: jwt.encode(_payload(exp=None), KEY, algorithm="ES256"), "'exp'"),
    "no sub": (lambda: jwt.encode(_payload(sub=None), KEY, algorithm="ES256"), "'sub'"),
    "no aud": (lambda: jwt.encode(_payload(aud=None), KEY, algorithm="ES256"), "aud"),
    "no jti": (lambda: jwt.encode(_payload(jti=None), KEY, algorithm="ES256"), "'jti'"),
    "issued in the future": (
        lambda: jwt.encode(
            _payload(iat=int(NOW.timestamp()) + 3600, exp=int(NOW.timestamp()) + 7200),
            KEY,
            algorithm="ES256",
        ),
        "future",
    ),
    "roles not a list": (
        lambda: jwt.encode(_payload(roles="registry-admin"), KEY, algorithm="ES256"),
        "roles",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_verifier_refuses_as_unauthenticated(case: str) -> None:
    make, fragment = REFUSED[case]
    token = make()
    at = NOW + dt.timedelta(seconds=3600) if case == "expired" else NOW
    with pytest.raises(SeraiError) as info:
        _verifier(at).verify(token)
    assert info.value.code is ErrorCode.UNAUTHENTICATED
    assert fragment in info.value.message
    if token:
        assert token not in info.value.message


def test_require_any_role() -> None:
    claims = _verifier().verify(_issuer().issue(subject="bob", roles=["observer"], audience=AUD))
    claims.require_any_role(["observer", "registry-admin"])
    with pytest.raises(SeraiError) as info:
        claims.require_any_role(["registry-admin"])
    assert info.value.code is ErrorCode.PERMISSION_DENIED
    assert "registry-admin" in info.value.message


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("Bearer abc", True),
        ("bearer abc", True),
        (None, False),
        ("", False),
        ("Basic abc", False),
        ("Bearer ", False),
    ],
)
def test_bearer_token(value: str | None, ok: bool) -> None:
    if ok:
        assert bearer_token(value) == "abc"
    else:
        with pytest.raises(SeraiError) as info:
            bearer_token(value)
        assert info.value.code is ErrorCode.UNAUTHENTICATED


def test_keys_must_be_p256() -> None:
    with pytest.raises(SeraiError):
        TokenIssuer(key=ec.generate_private_key(ec.SECP384R1()), issuer="x")
    with pytest.raises(SeraiError):
        TokenVerifier(public_keys=[], audience=AUD)


def test_public_surface() -> None:
    assert set(serai.tokens.__all__) == {
        "ALGORITHM",
        "DEFAULT_LEEWAY_S",
        "DEFAULT_LIFETIME_S",
        "TokenClaims",
        "TokenIssuer",
        "TokenVerifier",
        "bearer_token",
    }
