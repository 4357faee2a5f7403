"""Bearer tokens for Serai's management APIs: ES256 JWTs (RFC 7519) with roles.

The registry's management API uses them, and the gateway's admin API reuses them. A
:class:`TokenIssuer` holds a P-256 private key and mints tokens; a
:class:`TokenVerifier` holds one or more public keys (several during a key rollover)
and the audience it serves.

Guarantees of :meth:`TokenVerifier.verify` (it returns :class:`TokenClaims` only if all
hold, and otherwise raises :class:`~serai.errors.SeraiError` with code
``unauthenticated``):

1. The token is a compact JWS whose header ``alg`` is ``ES256``; ``none``, HMAC, RSA and
   every other algorithm are refused before any key is used.
2. Its signature verifies with one of the verifier's public keys.
3. It carries ``sub``, ``aud``, ``iat``, ``exp`` and ``jti``; ``aud`` names the
   verifier's audience; ``exp`` has not passed (allowing ``leeway_s``); ``iat`` is
   not in the future (same leeway); ``roles`` is a list of strings.

What it does not decide: whether the roles suffice. That is the caller's call, refused
with ``permission_denied`` (:meth:`TokenClaims.require_any_role`). Messages never carry
the token itself.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from serai.errors import ErrorCode, Origin, SeraiError

__all__ = [
    "ALGORITHM",
    "DEFAULT_LEEWAY_S",
    "DEFAULT_LIFETIME_S",
    "TokenClaims",
    "TokenIssuer",
    "TokenVerifier",
    "bearer_token",
]

#: The only signature algorithm tokens are minted and accepted with.
ALGORITHM: Final = "ES256"
#: Lifetime of a minted token unless the issuer is told otherwise, in seconds.
DEFAULT_LIFETIME_S: Final = 3600
#: Clock skew tolerated on ``exp`` and ``iat``, in seconds.
DEFAULT_LEEWAY_S: Final = 30

_REQUIRED_CLAIMS: Final = ("sub", "aud", "iat", "exp", "jti")
_MAX_TOKEN_CHARS: Final = 8192


def _unauthenticated(message: str) -> SeraiError:
    return SeraiError(message, code=ErrorCode.UNAUTHENTICATED, origin=Origin.CLIENT)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    """The verified claims of a token."""

    subject: str
    roles: frozenset[str]
    audience: str
    issuer: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    token_id: str

    def require_any_role(self, allowed: Iterable[str]) -> None:
        """Return if the token holds one of ``allowed``; else raise ``permission_denied``."""
        wanted = frozenset(allowed)
        if self.roles & wanted:
            return
        have = ", ".join(sorted(self.roles)) or "none"
        need = " or ".join(sorted(wanted))
        raise SeraiError(
            f"token of {self.subject!r} has roles {have}; this call needs {need}",
            code=ErrorCode.PERMISSION_DENIED,
            origin=Origin.CLIENT,
        )


class TokenIssuer:
    """Mints ES256 tokens with a P-256 private key."""

    def __init__(
        self,
        *,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        lifetime_s: int = DEFAULT_LIFETIME_S,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        _check_p256(key.curve)
        if lifetime_s <= 0:
            raise SeraiError(f"token lifetime must be positive, got {lifetime_s} s")
        self._key = key
        self.issuer = issuer
        self.lifetime_s = lifetime_s
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def issue(
        self,
        *,
        subject: str,
        roles: Sequence[str],
        audience: str,
        lifetime_s: int | None = None,
    ) -> str:
        """A signed compact JWT for ``subject`` holding ``roles``, valid for ``audience``."""
        if not subject:
            raise SeraiError("token subject is empty", code=ErrorCode.INVALID_REQUEST)
        lifetime = self.lifetime_s if lifetime_s is None else lifetime_s
        if lifetime <= 0:
            raise SeraiError(
                f"token lifetime must be positive, got {lifetime} s",
                code=ErrorCode.INVALID_REQUEST,
            )
        now = int(self._clock().timestamp())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "roles": list(roles),
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM, headers={"typ": "JWT"})


class TokenVerifier:
    """Verifies tokens for one audience (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        public_keys: Sequence[ec.EllipticCurvePublicKey],
        audience: str,
        leeway_s: int = DEFAULT_LEEWAY_S,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if not public_keys:
            raise SeraiError("a token verifier needs at least one public key")
        for key in public_keys:
            _check_p256(key.curve)
        self._keys = tuple(public_keys)
        self.audience = audience
        self.leeway_s = leeway_s
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def verify(self, token: str) -> TokenClaims:
        """The claims of ``token``; raises ``unauthenticated`` if any rule fails."""
        if not token:
            raise _unauthenticated("bearer token is missing")
        if len(token) > _MAX_TOKEN_CHARS:
            raise _unauthenticated(f"bearer token is longer than {_MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _unauthenticated(f"bearer token is malformed: {exc}") from exc
        if header.get("alg") != ALGORITHM:
            raise _unauthenticated(
                f"bearer token algorithm {str(header.get('alg'))[:20]!r} is not {ALGORITHM}"
            )
        payload = self._decode(token)
        return _claims(payload)

    def _decode(self, token: str) -> dict[str, Any]:
        now = self._clock()
        for key in self._keys:
            try:
                payload: dict[str, Any] = self._decode_with(token, key, now)
            except jwt.InvalidSignatureError:
                continue
            return payload
        raise _unauthenticated("bearer token signature does not verify")

    def _decode_with(
        self, token: str, key: ec.EllipticCurvePublicKey, now: dt.datetime
    ) -> dict[str, Any]:
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                leeway=self.leeway_s,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.InvalidAudienceError as exc:
            raise _unauthenticated(
                f"bearer token is not for this service (audience {self.audience!r})"
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"bearer token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise _unauthenticated(f"bearer token is invalid: {exc}") from exc
        # Time is checked here, against the verifier's clock (injectable), not pyjwt's.
        exp, iat = payload.get("exp"), payload.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise _unauthenticated("bearer token exp and iat must be integers")
        stamp = now.timestamp()
        if exp + self.leeway_s <= stamp:
            raise _unauthenticated("bearer token has expired")
        if iat - self.leeway_s > stamp:
            raise _unauthenticated("bearer token is issued in the future")
        return payload


def bearer_token(authorization: str | None) -> str:
    """The token of an ``authorization: Bearer <token>`` value; ``unauthenticated`` if
    the value is absent or of another scheme."""
    if not authorization:
        raise _unauthenticated("missing authorization metadata (Bearer token)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("authorization metadata must be 'Bearer <token>'")
    return token.strip()


def _claims(payload: dict[str, Any]) -> TokenClaims:
    sub, aud, jti = payload.get("sub"), payload.get("aud"), payload.get("jti")
    roles = payload.get("roles", [])
    if not isinstance(sub, str) or not sub:
        raise _unauthenticated("bearer token 'sub' must be a non-empty string")
    if isinstance(aud, list):
        aud = aud[0] if len(aud) == 1 else None
    if not isinstance(aud, str):
        raise _unauthenticated("bearer token 'aud' must be one string")
    if not isinstance(jti, str):
        raise _unauthenticated("bearer token 'jti' must be a string")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise _unauthenticated("bearer token 'roles' must be a list of strings")
    issuer = payload.get("iss", "")
    return TokenClaims(
        subject=sub,
        roles=frozenset(roles),
        audience=aud,
        issuer=issuer if isinstance(issuer, str) else "",
        issued_at=dt.datetime.fromtimestamp(payload["iat"], dt.UTC),
        expires_at=dt.datetime.fromtimestamp(payload["exp"], dt.UTC),
        token_id=jti,
    )


def _check_p256(curve: ec.EllipticCurve) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise SeraiError(f"ES256 tokens need a P-256 key, not {curve.name}")
