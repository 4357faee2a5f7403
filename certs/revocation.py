"""Revocation checking with OCSP for :func:`certs.validation.validate_path`.

Path validation is synchronous and pure; fetching OCSP responses is not. The bridge is
:class:`OCSPResponsesChecker`: a :class:`~certs.validation.RevocationChecker` built from
OCSP responses that were fetched beforehand (by :func:`fetch_for_chain`) or that a peer
attached to a message (as gateways do, DESIGN §4).

Guarantees of :meth:`OCSPResponsesChecker.check` for ``(cert, issuer, at)``:

1. It returns only if it holds a response about exactly ``cert`` (serial, issuer name
   hash and issuer key hash) that :func:`certs.ocsp_client.validate_response` accepts at
   ``at`` (signed by ``issuer`` or a responder ``issuer`` delegated, fresh within
   ``max_age_s``, ``nextUpdate`` not passed) and that says ``good``.
2. ``revoked`` is refused with ``certificate_revoked``, ``unknown`` with
   ``certificate_invalid``; a missing response with ``ocsp_unavailable``; a response that
   does not validate with the validator's code (``ocsp_invalid``, ``ocsp_stale``).
3. A response about another certificate never counts for this one.
4. Built with ``leaf=L``, it checks only ``L`` and passes the intermediate CAs above it.
   That is the federation's policy for gateways (as in X-Road): a member's signing or
   authentication certificate carries a fresh OCSP response, while an intermediate CA
   is trusted because the registry lists it among the approved CAs, and is "revoked" by
   removing it from the global configuration. Built without ``leaf``, every
   certificate it is asked about needs a response.

Nonces are not required here: an attached response answers a request the checker never
saw, so freshness rests on ``thisUpdate`` and the maximum age (X-Road's
ocspFreshnessSeconds), and the response is bound to the certificate by its CertID.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence

from cryptography import x509

from certs.ca import CertStatus
from certs.errors import CertificateError, OCSPError
from certs.ocsp_client import DEFAULT_MAX_AGE_S, OCSPClient, validate_response
from serai.errors import ErrorCode

__all__ = ["OCSPResponsesChecker", "fetch_for_chain"]


class OCSPResponsesChecker:
    """Checks revocation against a fixed set of DER OCSP responses."""

    def __init__(
        self,
        responses: Iterable[bytes],
        *,
        leaf: x509.Certificate | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self._responses = tuple(responses)
        self._leaf = leaf
        self._max_age_s = max_age_s

    @property
    def responses(self) -> tuple[bytes, ...]:
        """The DER responses, as given (to attach to a message or store as evidence)."""
        return self._responses

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
        """Refuse ``cert`` unless a held response validates at ``at`` and says good."""
        if self._leaf is not None and cert != self._leaf:
            return
        last: OCSPError | None = None
        for der in self._responses:
            try:
                result = validate_response(
                    der,
                    cert=cert,
                    issuer=issuer,
                    now=at,
                    max_age_s=self._max_age_s,
                    require_nonce=False,
                )
            except OCSPError as exc:
                last = exc
                continue
            if result.status is CertStatus.REVOKED:
                when = result.revocation_time.isoformat() if result.revocation_time else "?"
                raise CertificateError(
                    f"certificate {cert.serial_number:x} was revoked at {when}",
                    code=ErrorCode.CERTIFICATE_REVOKED,
                )
            if result.status is CertStatus.UNKNOWN:
                raise CertificateError(
                    f"OCSP responder does not know certificate {cert.serial_number:x}",
                    code=ErrorCode.CERTIFICATE_INVALID,
                )
            return
        if last is not None and last.code is not ErrorCode.OCSP_INVALID:
            raise CertificateError(last.message, code=last.code)
        raise CertificateError(
            f"no valid OCSP response for certificate {cert.serial_number:x}"
            + (f" ({last.message})" if last is not None else ""),
            code=ErrorCode.OCSP_UNAVAILABLE if last is None else ErrorCode.OCSP_INVALID,
        )


async def fetch_for_chain(
    client: OCSPClient,
    chain: Sequence[x509.Certificate],
    *,
    leaf_only: bool = True,
    url: str | None = None,
) -> OCSPResponsesChecker:
    """Fetch (through ``client``'s cache) the responses a checker for ``chain`` needs.

    ``chain`` is leaf first, each certificate followed by its issuer. With ``leaf_only``
    (the gateway policy, guarantee 4) only the leaf's status is fetched; otherwise that
    of every certificate but the last. Responses that say revoked are kept: the checker
    refuses them.
    """
    if len(chain) < 2:
        raise ValueError("a chain needs at least the leaf and its issuer")
    links = list(itertools.pairwise(chain))
    if leaf_only:
        links = links[:1]
    responses = [(await client.status(cert, issuer, url=url)).der for cert, issuer in links]
    return OCSPResponsesChecker(
        responses, leaf=chain[0] if leaf_only else None, max_age_s=client.max_age_s
    )
