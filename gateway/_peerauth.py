"""Revocation of a calling gateway's authentication (TLS) certificate, checked by the
provider side (DESIGN §4 hop 3; §9: no revoked certificate gets through).

The peer port's TLS handshake checks the client certificate's chain and validity against
the approved roots, and the provider then checks that it is a registered gateway's; grpc
checks no revocation of client certificates. So :class:`PeerAuthRevocation` asks the OCSP
responder of the certificate's CA (the approved CA's first in the configuration in force,
else the certificate's AIA) through the gateway's :class:`~certs.ocsp_client.OCSPClient`,
which validates each answer, caches it by issuer and serial, and renews it in the
background once it is half its maximum age old: one round trip per peer certificate, not
per exchange (the certificate's parsing and its issuer, found among the certificates the
peer sent and the approved CAs, are remembered per certificate too). An answer of
``revoked`` refuses the exchange with ``certificate_revoked``, ``unknown`` with
``certificate_invalid`` (origin ``client``); no valid answer at all (the responder down
before any answer was cached, or a bad response) refuses it with the OCSP code
(``ocsp_unavailable``, ``ocsp_invalid``; origin ``gateway``): fail closed, as X-Road does
for authentication certificates.

Bound: a certificate revoked after its ``good`` answer was cached is refused from the
first exchange after the cached answer is renewed (half the client's maximum age, 30
minutes by default), like the stapled answers of signing certificates.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.errors import OCSPError
from certs.ocsp_client import OCSPClient, ocsp_url_of
from gateway.errors import GatewayError
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, Origin

__all__ = ["PeerAuthRevocation"]

_LEAF_KEY: Final = "x509_pem_cert"
_CHAIN_KEY: Final = "x509_pem_cert_chain"
#: Peer certificates whose issuer is remembered.
_MAX_ENTRIES: Final = 1024
_CLIENT_CODES: Final = frozenset({ErrorCode.CERTIFICATE_REVOKED, ErrorCode.CERTIFICATE_INVALID})


class PeerAuthRevocation:
    """Refuses a peer whose authentication certificate is revoked (module docstring)."""

    def __init__(self, *, client: OCSPClient, max_entries: int = _MAX_ENTRIES) -> None:
        self._client = client
        self._max_entries = max_entries
        #: (leaf PEM, chain PEMs) -> (leaf, its issuer): parsing and the issuer's signature
        #: check cost about half a millisecond, once per peer certificate, not per call.
        #: Only touched on the event loop.
        self._paths: OrderedDict[tuple[bytes, ...], tuple[x509.Certificate, x509.Certificate]]
        self._paths = OrderedDict()

    async def check(
        self, auth_context: Mapping[str, Iterable[bytes]], snapshot: ConfigurationSnapshot
    ) -> None:
        """Raise a :class:`GatewayError` unless the TLS client certificate of the call
        whose ``auth_context`` is given has a valid ``good`` OCSP answer."""
        leaves = list(auth_context.get(_LEAF_KEY) or ())
        if not leaves:  # no client certificate: the registration check refuses the call
            return
        chain = tuple(auth_context.get(_CHAIN_KEY) or ())
        key = (leaves[0], *chain)
        found = self._paths.get(key)
        if found is None:
            found = _leaf_and_issuer(leaves[0], chain, snapshot)
            self._paths[key] = found
            if len(self._paths) > self._max_entries:
                self._paths.popitem(last=False)
        else:
            self._paths.move_to_end(key)
        leaf, issuer = found
        url = next(iter(snapshot.ocsp_urls_for(issuer)), None) or ocsp_url_of(leaf)
        try:
            result = await self._client.status(leaf, issuer, url=url)
            result.require_good()
        except OCSPError as exc:
            raise _refusal(
                f"the calling gateway's TLS certificate: {exc.message}", exc.code
            ) from exc


def _leaf_and_issuer(
    leaf_pem: bytes, chain: Sequence[bytes], snapshot: ConfigurationSnapshot
) -> tuple[x509.Certificate, x509.Certificate]:
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    sent: list[x509.Certificate] = []
    for pem in chain:
        sent += x509.load_pem_x509_certificates(pem)
    trust = snapshot.trust_store
    issuer = _issuer_of(leaf, [*sent, *trust.intermediates, *trust.roots])
    if issuer is None:
        raise _refusal(
            "the calling gateway's TLS certificate: its issuer is not at hand",
            ErrorCode.OCSP_UNAVAILABLE,
        )
    return leaf, issuer


def _issuer_of(
    leaf: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def _refusal(message: str, code: ErrorCode) -> GatewayError:
    origin = Origin.CLIENT if code in _CLIENT_CODES else Origin.GATEWAY
    return GatewayError(message, code=code, origin=origin)
