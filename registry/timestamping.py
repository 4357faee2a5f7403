"""Time-stamps from the TSAs a global configuration approves (DESIGN §6).

Both logs of the federation get their tree heads time-stamped this way: a gateway's
message log (:mod:`gateway.messagelog.heads`) and the registry's configuration log
(:mod:`registry._conflogstamp`). :func:`timestamp_from_approved_tsas` asks the approved
TSAs in the order the configuration lists them and returns the first token that

1. verifies (SHA-256 imprint of the data, the nonce sent, a TSA certificate chaining
   to an approved root now: :class:`certs.timestamp.TimestampClient`),
2. is signed by the very certificate the configuration lists first for that TSA (a
   certificate of an approved CA that is not that TSA's is refused), and
3. passes the caller's own check, if any (``accept`` raises a
   :class:`~serai.errors.SeraiError` to refuse it).

When none does it raises :class:`~certs.errors.TimestampError` with code
``tsa_unavailable``, naming each TSA's failure.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from cryptography.hazmat.primitives import serialization

from certs.errors import TimestampError
from certs.keys import parse_der_certificate
from certs.timestamp import TimestampClient, TimestampToken
from registry.model import ApprovedTSA
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, SeraiError

__all__ = ["backoff_delay_s", "jittered_s", "timestamp_from_approved_tsas"]


async def timestamp_from_approved_tsas(
    data: bytes,
    snapshot: ConfigurationSnapshot,
    *,
    what: str,
    session: aiohttp.ClientSession | None = None,
    timeout_s: float = 10.0,
    accept: Callable[[TimestampToken, ApprovedTSA], None] | None = None,
) -> tuple[TimestampToken, ApprovedTSA]:
    """The first acceptable token over ``data`` and the TSA that gave it (module
    docstring); ``what`` names the data in the error (e.g. "the tree head")."""
    tsas = snapshot.approved_tsas
    if not tsas:
        raise TimestampError(
            "the global configuration approves no TSA", code=ErrorCode.TSA_UNAVAILABLE
        )
    trust = snapshot.trust_store
    failures: list[str] = []
    for tsa in tsas:
        try:
            listed = [parse_der_certificate(der) for der in tsa.certificates]
        except ValueError as exc:
            failures.append(f"{tsa.name}: listed certificate does not parse: {exc}")
            continue
        client = TimestampClient(
            tsa.url,
            trusted_roots=trust.roots,
            untrusted=[*listed[1:], *trust.intermediates],
            timeout_s=timeout_s,
            session=session,
        )
        try:
            token = await client.timestamp(data)
            if (
                token.tsa_certificate.public_bytes(serialization.Encoding.DER)
                != (tsa.certificates[0])
            ):
                failures.append(f"{tsa.name}: token signed by a certificate it is not listed with")
                continue
            if accept is not None:
                accept(token, tsa)
        except SeraiError as exc:
            failures.append(f"{tsa.name}: {exc}")
            continue
        finally:
            await client.aclose()
        return token, tsa
    raise TimestampError(
        f"no approved TSA time-stamped {what}: " + "; ".join(failures),
        code=ErrorCode.TSA_UNAVAILABLE,
    )


def backoff_delay_s(failures: int, *, initial_s: float, max_s: float) -> float:
    """The un-jittered wait before the next attempt after ``failures`` consecutive
    failures: 0 after a success, then ``initial_s`` doubling up to ``max_s``."""
    if failures <= 0:
        return 0.0
    return min(max_s, initial_s * 2.0 ** min(failures - 1, 62))


def jittered_s(delay_s: float, jitter: Callable[[], float]) -> float:
    """``delay_s`` scaled by a factor in [0.5, 1] (``jitter()`` in [0, 1)), so that
    processes retrying after one outage do not retry in step."""
    return delay_s * (0.5 + 0.5 * jitter())
