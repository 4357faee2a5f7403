"""The demo's checks of the trust services on their own: a revoked key refused through
a live OCSP answer, an RFC 3161 time-stamp checked by Serai and by ``openssl ts
-verify``, and a tampered global configuration refused by a gateway's client."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
from pathlib import Path

from cryptography import x509

from certs.errors import CertificateError
from certs.keys import generate_private_key
from certs.ocsp_client import OCSPClient
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.revocation import fetch_for_chain
from certs.timestamp import TimestampClient, verify_token
from certs.validation import TrustStore, validate_path
from registry.client import GlobalConfigurationClient, InMemoryFetchTransport
from registry.codec import TrustAnchor, decode_anchor
from registry.errors import ConfigurationError
from serai._demoreport import Report
from serai.errors import ErrorCode

__all__ = ["check_revocation", "check_tampered_configuration", "check_timestamp"]


async def check_revocation(pki: PKIDirectory, report: Report) -> None:
    """A signing certificate is accepted with a live OCSP answer; one revoked for key
    compromise is refused."""
    ca = pki.issuing_ca()
    trust = TrustStore(roots=[pki.root_certificate()])
    current = ca.issue(Profile.SIGN, "UZ/GOV/MINJUST", generate_private_key().public_key())
    stolen = ca.issue(Profile.SIGN, "UZ/GOV/MINJUST", generate_private_key().public_key())
    ca.revoke(stolen.serial_number, reason=x509.ReasonFlags.key_compromise)
    async with OCSPClient() as ocsp:
        for cert, revoked in ((current, False), (stolen, True)):
            checker = await fetch_for_chain(ocsp, [cert, ca.certificate])
            refused: ErrorCode | None = None
            try:
                validate_path(
                    cert,
                    intermediates=[ca.certificate],
                    trust=trust,
                    at=dt.datetime.now(dt.UTC),
                    purpose=Profile.SIGN,
                    revocation=checker,
                )
            except CertificateError as exc:
                refused = exc.code
            if revoked:
                report.check(
                    refused is ErrorCode.CERTIFICATE_REVOKED,
                    f"UZ/GOV/MINJUST signing certificate {cert.serial_number:x}, revoked for "
                    f"key compromise: refused with "
                    f"{refused.value if refused is not None else 'nothing (accepted!)'}",
                )
            else:
                report.check(
                    refused is None,
                    f"UZ/GOV/MINJUST signing certificate {cert.serial_number:x}: chains to "
                    "the root, OCSP good"
                    + ("" if refused is None else f" (refused: {refused.value})"),
                )


async def check_timestamp(pki: PKIDirectory, workdir: Path, report: Report) -> None:
    """Time-stamp a document; Serai and ``openssl ts -verify`` accept it, and openssl
    refuses it for a changed document."""
    document = json.dumps({"document": "sale contract", "parcel": "10:09:02:01:01:0012"}).encode()
    doc_path = workdir / "contract.json"
    doc_path.write_bytes(document)
    root = pki.root_certificate()
    tsa_chain = pki.tsa_signer()[1]
    async with TimestampClient(
        pki.settings().tsa_url, trusted_roots=[root], untrusted=tsa_chain[1:]
    ) as tsa:
        token = await tsa.timestamp(document)
    token_path = workdir / "contract.tst"
    token_path.write_bytes(token.token_der)
    again = verify_token(token.token_der, data=document, nonce=None, trusted_roots=[root])
    report.check(
        again.serial_number == token.serial_number,
        f"the TSA time-stamps a document (token {token.serial_number:x}, "
        f"genTime {token.gen_time:%H:%M:%S} UTC); Serai verifies it",
    )
    ok, output = _openssl_ts_verify(doc_path, token_path, pki)
    report.check(ok, f"openssl ts -verify: {output}")
    changed = workdir / "contract-changed.json"
    changed.write_bytes(document.replace(b"sale", b"gift"))
    ok, output = _openssl_ts_verify(changed, token_path, pki)
    report.check(not ok, f"openssl ts -verify on a changed document: {output}")


async def check_tampered_configuration(workdir: Path, report: Report) -> None:
    """A gateway's configuration client trusts the published configuration, then
    refuses a copy with one bit flipped and keeps the one it holds."""
    anchor = decode_anchor((workdir / "anchor.bin").read_bytes())
    cache = workdir / "globalconf-check"
    log = workdir / "logs" / "globalconf-check.log"
    # The client writes JSON event lines to stderr, as in a gateway: keep them in a file.
    with log.open("w") as events, contextlib.redirect_stderr(events):
        await _check_tampered(anchor, cache, report)


async def _check_tampered(anchor: TrustAnchor, cache: Path, report: Report) -> None:
    async with GlobalConfigurationClient(anchor=anchor, cache_dir=cache) as client:
        await client.refresh()
        held = client.current()
        envelope = bytearray(client.current_envelope())
    report.check(
        True,
        f"configuration serial {held.serial} downloaded and verified against the anchor "
        f"(expires {held.expires_at:%H:%M:%S} UTC)",
    )
    envelope[len(envelope) // 2] ^= 0x01
    transport = InMemoryFetchTransport(bytes(envelope))
    async with GlobalConfigurationClient(
        anchor=anchor, cache_dir=cache, transport=transport
    ) as tampered:
        await tampered.load_cache()
        try:
            await tampered.refresh()
        except ConfigurationError as exc:
            kept = tampered.current().serial
            report.check(
                kept == held.serial,
                f"a copy with one bit flipped is refused ({exc.code.value}); "
                f"serial {kept} stays in force",
            )
        else:
            report.check(False, "a tampered configuration was accepted")


def _openssl_ts_verify(data: Path, token: Path, pki: PKIDirectory) -> tuple[bool, str]:
    result = subprocess.run(  # noqa: S603  (fixed argument list)
        [  # noqa: S607  (openssl from PATH is the independent verifier)
            "openssl", "ts", "-verify", "-data", str(data), "-in", str(token), "-token_in",
            "-CAfile", str(pki.root_cert), "-untrusted", str(pki.tsa_cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode == 0, (lines[0] if lines else f"exit {result.returncode}")
