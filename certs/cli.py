"""``serai pki``: create a development PKI, issue and revoke certificates, and run the
OCSP responder and time-stamping authority."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from certs.errors import PKIError
from certs.keys import (
    KeyAlgorithm,
    generate_private_key,
    load_certificate_chain,
    write_certificate_chain,
    write_private_key,
)
from certs.pkidir import DEFAULT_OCSP_URL, DEFAULT_TSA_URL, PKIDirectory
from certs.profiles import Profile
from serai.cliutil import read_passphrase
from serai.errors import ConfigError, ErrorCode
from serai.identifiers import parse_instance

__all__ = ["register"]

_ISSUABLE = [p.value for p in Profile if p not in (Profile.ROOT_CA, Profile.ISSUING_CA)]
_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def register(subparsers: Any) -> None:
    """Add ``serai pki …`` to the top-level parser."""
    pki = subparsers.add_parser(
        "pki",
        help="development PKI: CA, certificates, OCSP responder, time-stamping authority",
        description="Create and run a development PKI for one federation. Production "
        "federations point the registry at real CAs, OCSP responders and TSAs instead.",
    )
    sub = pki.add_subparsers(dest="pki_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser(
        "init",
        help="create a root CA, issuing CA, OCSP responder and TSA in a new directory",
        description="Create a complete development PKI in DIR (see docs/pki.md for the layout).",
    )
    init.add_argument("--dir", required=True, type=Path, help="directory to create the PKI in")
    init.add_argument("--instance", required=True, help="federation instance id, e.g. UZ")
    init.add_argument(
        "--algorithm",
        choices=[a.value for a in KeyAlgorithm],
        default=KeyAlgorithm.EC_P256.value,
        help="key algorithm of the CA and service keys (default: %(default)s)",
    )
    init.add_argument(
        "--ocsp-url",
        default=DEFAULT_OCSP_URL,
        help="OCSP responder URL put in issued certificates (default: %(default)s)",
    )
    init.add_argument(
        "--tsa-url", default=DEFAULT_TSA_URL, help="time-stamping URL (default: %(default)s)"
    )
    init.add_argument(
        "--passphrase-file",
        type=Path,
        help="encrypt every private key of the PKI with the passphrase in this file",
    )
    init.set_defaults(handler=_cmd_init)

    issue = sub.add_parser(
        "issue",
        help="issue a certificate under a profile",
        description="Generate a key and issue a certificate for it. Writes PREFIX.pem "
        "(certificate, then the issuing CA) and PREFIX.key (PKCS#8 PEM, mode 0600).",
    )
    issue.add_argument("--dir", required=True, type=Path, help="the PKI directory")
    issue.add_argument(
        "--profile",
        required=True,
        choices=_ISSUABLE,
        help="auth: gateway TLS (server and client); sign: member signing (nonRepudiation); "
        "ocsp: OCSP signing; tsa: time-stamping; confsign: global configuration signing; "
        "logsign: gateway message-log signing",
    )
    issue.add_argument(
        "--subject",
        required=True,
        help="sign: a member id (UZ/GOV/STC); auth, logsign: a gateway id "
        "(UZ/GOV/STC/gw:main); other profiles: a name of at most 64 characters",
    )
    issue.add_argument("--out", required=True, type=Path, help="output path prefix")
    issue.add_argument(
        "--algorithm",
        choices=[a.value for a in KeyAlgorithm],
        default=KeyAlgorithm.EC_P256.value,
        help="key algorithm of the new key (default: %(default)s)",
    )
    issue.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="NAME",
        help="auth: DNS name of the gateway (repeatable)",
    )
    issue.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDR",
        help="auth: IP address of the gateway (repeatable; localhost and 127.0.0.1 when "
        "neither --dns nor --ip is given)",
    )
    issue.add_argument("--days", type=int, help="validity in days (default: the profile's)")
    issue.add_argument(
        "--passphrase-file", type=Path, help="encrypt the new key with the passphrase in this file"
    )
    issue.add_argument(
        "--ca-passphrase-file", type=Path, help="passphrase of the PKI's keys, if encrypted"
    )
    issue.set_defaults(handler=_cmd_issue)

    revoke = sub.add_parser(
        "revoke",
        help="revoke a certificate issued by this PKI",
        description="Mark CERT revoked in the CA's records; the OCSP responder answers "
        "'revoked' from then on.",
    )
    revoke.add_argument("--dir", required=True, type=Path, help="the PKI directory")
    revoke.add_argument("cert", type=Path, metavar="CERT.pem", help="the certificate to revoke")
    revoke.add_argument(
        "--reason", choices=sorted(_REASONS), default="unspecified", help="revocation reason"
    )
    revoke.set_defaults(handler=_cmd_revoke)

    listing = sub.add_parser("list", help="list the certificates this PKI issued")
    listing.add_argument("--dir", required=True, type=Path, help="the PKI directory")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_cmd_list)

    _register_services(sub)


def _register_services(sub: Any) -> None:
    from certs.cli_ocsp import register_ocsp  # noqa: PLC0415  (keeps `serai --help` light)
    from certs.cli_tsa import register_tsa  # noqa: PLC0415

    register_ocsp(sub)
    register_tsa(sub)


def _cmd_init(args: argparse.Namespace) -> int:
    instance = parse_instance(args.instance)
    pki = PKIDirectory.init(
        args.dir,
        instance=instance,
        algorithm=KeyAlgorithm(args.algorithm),
        ocsp_url=args.ocsp_url,
        tsa_url=args.tsa_url,
        passphrase=read_passphrase(args.passphrase_file),
    )
    print(f"created PKI for instance {instance} in {pki.root}")
    print(f"  root CA certificate: {pki.root_cert}")
    print(f"  TSA certificate and chain: {pki.tsa_cert}")
    print(f"  OCSP responder certificate and chain: {pki.ocsp_cert}")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    pki = PKIDirectory(args.dir)
    ca = pki.issuing_ca(passphrase=read_passphrase(args.ca_passphrase_file))
    profile = Profile(args.profile)
    if profile is not Profile.AUTH and (args.dns or args.ip):
        raise ConfigError("--dns and --ip apply only to --profile auth")
    if args.days is not None and args.days <= 0:
        raise ConfigError("--days must be a positive number of days")
    key_path = Path(f"{args.out}.key")
    cert_path = Path(f"{args.out}.pem")
    for path in (key_path, cert_path):
        if path.exists():
            raise PKIError(
                f"{path} already exists; refusing to overwrite it", code=ErrorCode.INVALID_REQUEST
            )
    key = generate_private_key(KeyAlgorithm(args.algorithm))
    cert = ca.issue(
        profile,
        args.subject,
        key.public_key(),
        validity=None if args.days is None else dt.timedelta(days=args.days),
        dns_names=args.dns,
        ip_addresses=args.ip,
    )
    write_private_key(key_path, key, passphrase=read_passphrase(args.passphrase_file))
    write_certificate_chain(cert_path, ca.chain_for(cert))
    print(f"issued {profile.value} certificate {cert.serial_number:x} for {args.subject}")
    print(f"  certificate and chain: {cert_path}")
    print(f"  private key: {key_path}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    pki = PKIDirectory(args.dir)
    cert = load_certificate_chain(args.cert)[0]
    records = pki.records()
    record = records.get(cert.serial_number)
    if record is None or record.certificate != cert:
        raise PKIError(
            f"{args.cert} was not issued by the PKI in {args.dir}", code=ErrorCode.INVALID_REQUEST
        )
    revoked = records.revoke(cert.serial_number, reason=_REASONS[args.reason])
    assert revoked.revoked_at is not None
    print(
        f"revoked certificate {cert.serial_number:x} ({record.subject}) "
        f"at {revoked.revoked_at.isoformat()}, reason {args.reason}"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for record in PKIDirectory(args.dir).records().all():
        row = {
            "serial": format(record.serial, "x"),
            "profile": record.profile.value,
            "subject": record.subject,
            "status": record.status.value,
            "not_after": record.certificate.not_valid_after_utc.isoformat(),
            "revoked_at": None if record.revoked_at is None else record.revoked_at.isoformat(),
        }
        if args.json:
            print(json.dumps(row, sort_keys=True))
        else:
            not_after = record.certificate.not_valid_after_utc.date().isoformat()
            print(
                f"{row['serial']:>40}  {row['profile']:<10} {row['status']:<8} "
                f"{not_after}  {row['subject']}"
            )
    sys.stdout.flush()
    return 0
