"""``serai demo``: run the federation end to end and show each step.

The demo runs every part as a real process on loopback: it creates a development PKI
for instance ``UZ``, starts ``serai pki ocsp serve`` and ``serai pki tsa serve``,
issues the signing and gateway certificates of the three agencies of the reference
scenario, validates each one with a live OCSP answer, revokes a compromised key and
shows it refused, and time-stamps a document, checking the token both with Serai and
with ``openssl ts -verify``. Then it sets up and starts
the registry, registers the three agencies through its command line, exports the trust
anchor, and shows a gateway downloading, verifying and querying the signed global
configuration, and refusing a tampered copy. Finally it sets up two gateways with
``serai gateway init`` (the Ministry of Justice's as consumer, the Cadastre's as
provider in front of ``tools/echo_provider.py``), registers them as ``gw:edge``,
starts them with ``serai gateway serve``, grants one method with ``serai acl grant``,
and calls the Cadastre through both gateways as a plain gRPC client: the answer comes
back with its message id and request hash, an ungranted method is refused, and a
replayed message id is refused. It exits non-zero if any step does not turn out as it should.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import CertificateError
from certs.keys import (
    generate_private_key,
    load_certificate_chain,
    write_certificate_chain,
    write_private_key,
)
from certs.ocsp_client import OCSPClient
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.revocation import fetch_for_chain
from certs.timestamp import TimestampClient, verify_token
from certs.validation import TlsRole, TrustStore, validate_path
from registry.client import GlobalConfigurationClient, InMemoryFetchTransport
from registry.codec import decode_anchor
from registry.errors import ConfigurationError
from serai.errors import ErrorCode, SeraiError
from serai.identifiers import GlobalGroupId, SubsystemId
from serai.localprocs import free_port

__all__ = ["register"]

#: Subsystem code of each agency's information system.
_SUBSYSTEMS = {"UZ/GOV/STC": "tax", "UZ/GOV/CADASTRE": "registry", "UZ/GOV/MINJUST": "property"}

#: The agencies of the reference scenario (DESIGN, top): member, gateway, description.
AGENCIES = (
    ("UZ/GOV/STC", "UZ/GOV/STC/gw:main", "State Tax Committee"),
    ("UZ/GOV/CADASTRE", "UZ/GOV/CADASTRE/gw:main", "Cadastre Agency"),
    ("UZ/GOV/MINJUST", "UZ/GOV/MINJUST/gw:main", "Ministry of Justice (property registration)"),
)


def register(subparsers: Any) -> None:
    """Add ``serai demo`` to the top-level parser."""
    demo = subparsers.add_parser(
        "demo",
        help="run the federation's trust services end to end",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        help="directory for the demo's files (must not exist or be empty; "
        "default: a temporary directory, removed afterwards)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the OCSP responder, TSA, registry, echo provider and both gateways "
        "running until Ctrl-C",
    )
    demo.set_defaults(handler=_cmd_demo)


@dataclass
class _Step:
    ok: bool
    text: str


class _Report:
    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def check(self, ok: bool, text: str) -> None:
        self.steps.append(_Step(ok, text))
        print(f"  [{'ok' if ok else 'FAILED'}] {text}", flush=True)

    def note(self, text: str) -> None:
        print(f"  - {text}", flush=True)

    @property
    def failures(self) -> int:
        return sum(not s.ok for s in self.steps)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        workdir: Path = args.workdir
        if workdir.exists() and any(workdir.iterdir()):
            raise SeraiError(f"--workdir {workdir} is not empty", code=ErrorCode.INVALID_REQUEST)
        workdir.mkdir(parents=True, exist_ok=True)
        return _run(workdir, keep_running=args.keep_running)
    tmp = Path(tempfile.mkdtemp(prefix="serai-demo-"))
    try:
        return _run(tmp, keep_running=args.keep_running)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(workdir: Path, *, keep_running: bool) -> int:
    report = _Report()
    ocsp_port, tsa_port = free_port(), free_port()
    print(f"Serai demo in {workdir}\n\n1. A development PKI for instance UZ")
    pki = PKIDirectory.init(
        workdir / "pki",
        instance="UZ",
        ocsp_url=f"http://127.0.0.1:{ocsp_port}/",
        tsa_url=f"http://127.0.0.1:{tsa_port}/",
    )
    report.note(f"root CA, issuing CA, OCSP responder and TSA in {pki.root}")
    print("\n2. The OCSP responder and the TSA, as their own processes")
    with (
        _service("ocsp", pki, ocsp_port, workdir / "ocsp.log") as ocsp_proc,
        _service("tsa", pki, tsa_port, workdir / "tsa.log") as tsa_proc,
    ):
        report.note(f"OCSP responder pid {ocsp_proc.pid} on 127.0.0.1:{ocsp_port}")
        report.note(f"TSA pid {tsa_proc.pid} on 127.0.0.1:{tsa_port}")
        asyncio.run(_scenario(pki, workdir, report))
        print("\n7. The registry, run as its own process")
        grpc_port, http_port = free_port(), free_port()
        registry_dir = workdir / "registry"
        init = _serai(
            "registry",
            "init",
            "--dir",
            registry_dir,
            "--instance",
            "UZ",
            "--pki",
            pki.root,
            "--grpc-listen",
            f"127.0.0.1:{grpc_port}",
            "--http-listen",
            f"127.0.0.1:{http_port}",
        )
        if init.returncode != 0:
            raise SeraiError(f"serai registry init failed: {init.stderr.strip()}")
        report.note(f"registry in {registry_dir}, the PKI's CA and TSA approved")
        serve = ["registry", "serve", "--config", str(registry_dir / "registry.toml")]
        with _process(serve, grpc_port, workdir / "registry.log") as registry_proc:
            report.note(
                f"registry pid {registry_proc.pid}: management API on 127.0.0.1:"
                f"{grpc_port}, configuration on http://127.0.0.1:{http_port}/"
            )
            admin_env = _register_federation(registry_dir, grpc_port, workdir, report)
            asyncio.run(_gateway_view(registry_dir, workdir, report))
            with contextlib.ExitStack() as stack:
                running = _exchange(pki, workdir, admin_env, stack, report)
                if keep_running and report.failures == 0:
                    print(
                        "\nOCSP responder, TSA, registry, echo provider and both gateways "
                        "keep running; Ctrl-C stops them."
                    )
                    everything = (ocsp_proc, tsa_proc, registry_proc, *running)
                    with contextlib.suppress(KeyboardInterrupt):
                        while all(p.poll() is None for p in everything):
                            time.sleep(0.5)
    print()
    if report.failures:
        print(f"demo: {report.failures} of {len(report.steps)} checks FAILED")
        return 1
    print(f"demo: all {len(report.steps)} checks passed")
    return 0


async def _scenario(pki: PKIDirectory, workdir: Path, report: _Report) -> None:
    ca = pki.issuing_ca()
    root = pki.root_certificate()
    trust = TrustStore(roots=[root])
    now = dt.datetime.now(dt.UTC)
    print("\n3. Each agency's member signing and gateway authentication certificates")
    issued: list[tuple[str, Profile, x509.Certificate]] = []
    for member, gateway, name in AGENCIES:
        folder = workdir / "agencies" / member.split("/")[2].lower()
        for profile, subject in ((Profile.SIGN, member), (Profile.AUTH, gateway)):
            key = generate_private_key()
            cert = ca.issue(profile, subject, key.public_key())
            write_private_key(folder / f"{profile.value}.key", key)
            write_certificate_chain(folder / f"{profile.value}.pem", ca.chain_for(cert))
            issued.append((subject, profile, cert))
        report.note(f"{name}: {member} (sign), {gateway} (auth) in {folder}")

    print("\n4. Path validation to the root, with a live OCSP answer for each certificate")
    async with OCSPClient() as ocsp:
        for subject, profile, cert in issued:
            chain = [cert, ca.certificate]
            checker = await fetch_for_chain(ocsp, chain)
            path = validate_path(
                cert,
                intermediates=[ca.certificate],
                trust=trust,
                at=now,
                purpose=profile,
                revocation=checker,
                tls_role=TlsRole.CLIENT if profile is Profile.AUTH else None,
            )
            report.check(
                len(path.certificates) == 3,
                f"{subject} ({profile.value}): chains to the root, OCSP good",
            )

        print("\n5. A compromised key is revoked, and from then on refused")
        old_key = generate_private_key()
        old = ca.issue(Profile.SIGN, "UZ/GOV/MINJUST", old_key.public_key())
        ca.revoke(old.serial_number, reason=x509.ReasonFlags.key_compromise)
        checker = await fetch_for_chain(ocsp, [old, ca.certificate])
        try:
            validate_path(
                old,
                intermediates=[ca.certificate],
                trust=trust,
                at=dt.datetime.now(dt.UTC),
                purpose=Profile.SIGN,
                revocation=checker,
            )
        except CertificateError as exc:
            report.check(
                exc.code is ErrorCode.CERTIFICATE_REVOKED,
                f"old UZ/GOV/MINJUST key {old.serial_number:x}: refused with {exc.code.value}",
            )
        else:
            report.check(False, "a revoked certificate was accepted")

    print("\n6. A document is time-stamped (RFC 3161) and checked by Serai and by openssl")
    document = json.dumps(
        {
            "transfer": "UZ-2026-000001",
            "parcel": "10:01:02:03:0004",
            "seller": "301234567",
            "buyer": "302345678",
            "decision": "registered",
        },
        sort_keys=True,
    ).encode()
    doc_path = workdir / "transfer.json"
    doc_path.write_bytes(document)
    tsa_chain = pki.tsa_signer()[1]
    async with TimestampClient(
        pki.settings().tsa_url, trusted_roots=[root], untrusted=tsa_chain[1:]
    ) as tsa:
        token = await tsa.timestamp(document)
    token_path = workdir / "transfer.tst"
    token_path.write_bytes(token.token_der)
    report.note(f"token serial {token.serial_number:x}, genTime {token.gen_time}")
    again = verify_token(token.token_der, data=document, nonce=None, trusted_roots=[root])
    report.check(again.serial_number == token.serial_number, "Serai verifies the stored token")
    ok, output = _openssl_ts_verify(doc_path, token_path, pki)
    report.check(ok, f"openssl ts -verify: {output}")
    tampered = workdir / "transfer-tampered.json"
    tampered.write_bytes(document.replace(b"registered", b"refused"))
    ok, output = _openssl_ts_verify(tampered, token_path, pki)
    report.check(not ok, f"openssl ts -verify on a changed document: {output}")


def _register_federation(
    registry_dir: Path, grpc_port: int, workdir: Path, report: _Report
) -> dict[str, str]:
    """Register the agencies; returns the environment of the registry-admin commands."""
    config = registry_dir / "registry.toml"
    tokens = {}
    for role, subject in (("registry-admin", "demo-operator"), ("observer", "demo-auditor")):
        out = _serai(
            "registry",
            "token",
            "issue",
            "--config",
            config,
            "--role",
            role,
            "--subject",
            subject,
            "--out",
            registry_dir / f"{role}.token",
        )
        if out.returncode != 0:
            raise SeraiError(f"serai registry token issue failed: {out.stderr.strip()}")
        tokens[role] = (registry_dir / f"{role}.token").read_text().strip()
    report.note("tokens issued: registry-admin (demo-operator), observer (demo-auditor)")
    admin_env = {
        **os.environ,
        "SERAI_REGISTRY": f"127.0.0.1:{grpc_port}",
        "SERAI_REGISTRY_TOKEN": tokens["registry-admin"],
    }
    steps: list[tuple[str, list[str | Path]]] = []
    for index, (member, gateway, name) in enumerate(AGENCIES):
        code = member.split("/")[2].lower()
        subsystem = f"{member}/{_SUBSYSTEMS[member]}"
        auth = workdir / "agencies" / code / "auth.pem"
        steps += [
            (f"member {member}", ["member", "add", member, "--name", name]),
            (f"subsystem {subsystem}", ["subsystem", "add", subsystem]),
            (
                f"gateway {gateway}",
                [
                    "gateway",
                    "add",
                    gateway,
                    "--address",
                    f"127.0.0.1:{5501 + index}",
                    "--cert",
                    auth,
                    "--subsystem",
                    subsystem,
                ],
            ),
        ]
    steps += [
        (
            "global group UZ/group:registries",
            ["group", "add", "UZ/group:registries", "--description", "State registries"],
        ),
        (
            "UZ/GOV/CADASTRE in UZ/group:registries",
            ["group", "add-member", "UZ/group:registries", "UZ/GOV/CADASTRE"],
        ),
    ]
    for what, argv in steps:
        out = _serai("registry", *argv, env=admin_env)
        report.check(
            out.returncode == 0,
            f"registered {what}" + ("" if out.returncode == 0 else f": {out.stderr.strip()}"),
        )
    observer_env = {**admin_env, "SERAI_REGISTRY_TOKEN": tokens["observer"]}
    denied = _serai(
        "registry", "member", "add", "UZ/GOV/ROGUE", "--name", "Rogue", env=observer_env
    )
    report.check(
        denied.returncode == 2 and "permission_denied" in denied.stderr,
        "an observer's attempt to add a member: " + (denied.stderr.strip() or "accepted!"),
    )
    audit = _serai("registry", "audit", "--json", env=observer_env)
    entries = [line for line in audit.stdout.splitlines() if line.strip()]
    report.check(
        audit.returncode == 0 and len(entries) >= len(steps),
        f"audit log: {len(entries)} entries, each with who, what and when",
    )
    anchor = _serai("registry", "anchor", "--config", config, "--out", workdir / "anchor")
    report.check(anchor.returncode == 0, f"trust anchor exported to {workdir / 'anchor'}")
    return admin_env


async def _gateway_view(registry_dir: Path, workdir: Path, report: _Report) -> None:
    print("\n8. A gateway downloads the signed global configuration and trusts it")
    anchor = decode_anchor((workdir / "anchor").read_bytes())
    cadastre = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
    wanted = len(AGENCIES)
    async with GlobalConfigurationClient(anchor=anchor, cache_dir=workdir / "gw-cache") as client:
        snapshot = None
        for _ in range(100):  # the registry republishes right after the last change
            await client.refresh()
            snapshot = client.current()
            if len(snapshot.configuration.federation.gateways) == wanted:
                break
            await asyncio.sleep(0.1)
        assert snapshot is not None
        report.check(
            len(snapshot.configuration.federation.gateways) == wanted,
            f"configuration serial {snapshot.serial} verified against the anchor "
            f"(expires {snapshot.expires_at:%H:%M:%S} UTC)",
        )
        serving = [str(g.id) for g in snapshot.gateways_serving(cadastre)]
        report.check(
            serving == ["UZ/GOV/CADASTRE/gw:main"],
            f"who serves {cadastre}? {', '.join(serving) or 'nobody'}",
        )
        auth = load_certificate_chain(workdir / "agencies" / "minjust" / "auth.pem")[0]
        sha = hashlib.sha256(auth.public_bytes(serialization.Encoding.DER)).digest()
        peer = snapshot.gateway_by_auth_hash(sha)
        report.check(
            peer is not None and str(peer.id) == "UZ/GOV/MINJUST/gw:main",
            f"whose TLS certificate is {sha.hex()[:16]}...? {peer.id if peer else 'nobody'}",
        )
        in_group = snapshot.is_member_of_group(cadastre, GlobalGroupId.parse("UZ/group:registries"))
        report.check(in_group, f"{cadastre} is in UZ/group:registries (through its member)")
        envelope = bytearray(client.current_envelope())
        envelope[len(envelope) // 2] ^= 0x01
        transport = InMemoryFetchTransport(bytes(envelope))
    async with GlobalConfigurationClient(
        anchor=anchor, cache_dir=workdir / "gw-cache", transport=transport
    ) as tampered_client:
        held = await tampered_client.load_cache()
        try:
            await tampered_client.refresh()
        except ConfigurationError as exc:
            kept = tampered_client.current().serial
            report.check(
                held is not None and kept == held.serial,
                f"a tampered copy is refused ({exc.code.value}); serial {kept} stays in force",
            )
        else:
            report.check(False, "a tampered configuration was accepted")


#: The consumer and the provider subsystem of the exchange, and the granted method.
_PROPERTY = "UZ/GOV/MINJUST/property"
_REGISTRY = "UZ/GOV/CADASTRE/registry"
_GET_PARCEL = "/cadastre.v1.Cadastre/GetParcel"
#: How long to wait for a process to report it is ready (generous: a busy 2-core machine).
_READY_S = 90.0
_ECHO_PROVIDER = Path(__file__).resolve().parent.parent / "tools" / "echo_provider.py"


def _exchange(
    pki: PKIDirectory,
    workdir: Path,
    admin_env: dict[str, str],
    stack: contextlib.ExitStack,
    report: _Report,
) -> list[subprocess.Popen[bytes]]:
    """Step 9; returns the processes it started (``stack`` stops them)."""
    print("\n9. A signed exchange through two gateways")
    if not _ECHO_PROVIDER.is_file():
        raise SeraiError(f"{_ECHO_PROVIDER} not found: run the demo from a source checkout")
    echo_log = workdir / "echo-provider.log"
    echo = stack.enter_context(
        _spawn([sys.executable, str(_ECHO_PROVIDER), "--listen", "127.0.0.1:0"], echo_log)
    )
    echo_at = str(_wait_for_event(echo, echo_log, "echo_listening")["listen"])
    report.note(f"the Cadastre's information system (echo provider) pid {echo.pid} on {echo_at}")
    configs: dict[str, Path] = {}
    registered = True
    for name, gateway_id, role in (
        ("minjust", "UZ/GOV/MINJUST/gw:edge", ["--client", _PROPERTY]),
        ("cadastre", "UZ/GOV/CADASTRE/gw:edge", ["--provider", f"{_REGISTRY}={echo_at}"]),
    ):
        folder = workdir / "gateways" / name
        init = _serai(
            "gateway", "init", "--dir", folder, "--gateway-id", gateway_id,
            "--pki", pki.root, "--anchor", workdir / "anchor",
            "--peer-listen", f"127.0.0.1:{free_port()}",
            "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *role,
        )  # fmt: skip
        if init.returncode != 0:
            raise SeraiError(f"serai gateway init failed: {init.stderr.strip()}")
        command = next(
            (line for line in init.stdout.splitlines() if "serai registry gateway add" in line),
            None,
        )
        if command is None:
            raise SeraiError(f"serai gateway init printed no registry command: {init.stdout}")
        added = _serai(*shlex.split(command)[1:], env=admin_env)  # what `gateway init` says
        report.check(
            added.returncode == 0,
            f"{gateway_id}: set up in gateways/{name}, registered with the certificate "
            "it issued" + ("" if added.returncode == 0 else f": {added.stderr.strip()}"),
        )
        configs[name] = folder / "gateway.toml"
        registered = registered and added.returncode == 0
    report.note("gw:edge sorts before gw:main (step 7's stand-ins), so gw:edge is called first")
    serial = asyncio.run(
        _wait_until_published(workdir, {"UZ/GOV/MINJUST/gw:edge", "UZ/GOV/CADASTRE/gw:edge"})
    )
    report.check(serial is not None, f"configuration serial {serial} lists both gw:edge gateways")
    if not registered or serial is None:
        return [echo]  # the gateways could not start
    serve = [sys.executable, "-m", "serai.cli", "gateway", "serve", "--config"]
    running = [echo]
    for name in ("minjust", "cadastre"):  # both start at once; each is waited for below
        log = workdir / f"gateway-{name}.log"
        running.append(stack.enter_context(_spawn([*serve, str(configs[name])], log)))
    # On the way out, SIGTERM all of them first, so that they stop side by side.
    stack.callback(_terminate_all, running)
    listening: dict[str, dict[str, object]] = {}
    for name, proc in zip(("minjust", "cadastre"), running[1:], strict=True):
        log = workdir / f"gateway-{name}.log"
        listening[name] = event = _wait_for_event(proc, log, "gateway_listening")
        report.note(
            f"{event['gateway_id']} pid {proc.pid}: IS port {event['is']}, "
            f"peer port {event['peer']}, admin API {event['admin']}"
        )

    admin_token = workdir / "gateways" / "cadastre-admin.token"
    issued = _serai(
        "gateway", "token", "issue", "--config", configs["cadastre"],
        "--role", "gateway-admin", "--subject", "demo-operator", "--out", admin_token,
    )  # fmt: skip
    if issued.returncode != 0:
        raise SeraiError(f"serai gateway token issue failed: {issued.stderr.strip()}")
    granted = _serai(
        "acl", "grant", _REGISTRY, _GET_PARCEL, _PROPERTY,
        "--gateway", str(listening["cadastre"]["admin"]), "--token-file", admin_token,
    )  # fmt: skip
    report.check(
        granted.returncode == 0,
        f"the Cadastre grants {_GET_PARCEL} to {_PROPERTY}"
        + ("" if granted.returncode == 0 else f": {granted.stderr.strip()}"),
    )

    is_port = str(listening["minjust"]["is"])
    request = json.dumps({"parcel": "10:01:02:03:0004"}).encode()
    message_id = f"minjust-{os.urandom(8).hex()}"
    code, answer, found = _is_call(is_port, _GET_PARCEL, request, message_id)
    report.check(
        code is grpc.StatusCode.OK and answer == request,
        f"the property-registration IS calls {_GET_PARCEL} on {is_port}: {code.name}, "
        f"answer {answer.decode(errors='replace') if answer is not None else '-'}",
    )
    report.check(
        found.get("x-road-id") == message_id,
        f"x-road-id {found.get('x-road-id', 'missing')}",
    )
    digest = found.get("x-road-request-hash", "")
    report.check(
        len(digest) == 64,
        f"x-road-request-hash {digest[:16] or 'missing'}... (SHA-256 of the signed request)",
    )
    method = "/cadastre.v1.Cadastre/DeleteParcel"
    code, _, found = _is_call(is_port, method, request, f"minjust-{os.urandom(8).hex()}")
    refusal = _origin_code(found)
    report.check(
        code is grpc.StatusCode.PERMISSION_DENIED and refusal == "client:access_denied",
        f"{method}, not granted: {code.name}, x-road-error {refusal}",
    )
    code, _, found = _is_call(is_port, _GET_PARCEL, request, message_id)
    refusal = _origin_code(found)
    report.check(
        code is not grpc.StatusCode.OK and refusal.endswith(":replay_detected"),
        f"x-road-id {message_id} sent again: {code.name}, x-road-error {refusal}",
    )
    return running


def _terminate_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()


async def _wait_until_published(workdir: Path, gateways: set[str]) -> int | None:
    """The serial of the first configuration listing ``gateways``; ``None`` on timeout."""
    anchor = decode_anchor((workdir / "anchor").read_bytes())
    async with GlobalConfigurationClient(anchor=anchor, cache_dir=workdir / "gw-cache") as client:
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            with contextlib.suppress(ConfigurationError):
                await client.refresh()
                snapshot = client.current()
                if gateways <= {str(g.id) for g in snapshot.configuration.federation.gateways}:
                    return snapshot.serial
            await asyncio.sleep(0.2)
    return None


def _is_call(
    address: str, method: str, body: bytes, message_id: str
) -> tuple[grpc.StatusCode, bytes | None, dict[str, str]]:
    """Call ``method`` as the property-registration IS: status, body, text metadata."""
    metadata = (
        ("x-road-client", _PROPERTY),
        ("x-road-service", _REGISTRY),
        ("x-road-id", message_id),
        ("x-road-user-id", "UZ:notary-0142"),
        ("x-road-issue", "UZ-2026-000001"),
    )
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(method, None, None)
        try:
            answer, state = stub.with_call(body, metadata=metadata, timeout=60)
        except grpc.RpcError as exc:
            failed: grpc.Call = exc  # type: ignore[assignment]  # a RpcError is also a Call
            found = _text_metadata(failed.initial_metadata(), failed.trailing_metadata())
            return failed.code(), None, found
        found = _text_metadata(state.initial_metadata(), state.trailing_metadata())
        return grpc.StatusCode.OK, answer, found


def _text_metadata(*groups: object) -> dict[str, str]:
    found: dict[str, str] = {}
    for group in groups:
        for key, value in group or ():  # type: ignore[attr-defined]  # a metadata sequence
            if isinstance(value, str):
                found[key] = value
    return found


def _origin_code(metadata: dict[str, str]) -> str:
    """``origin:code`` of an ``x-road-error`` value (``origin:code: message``)."""
    return ":".join(metadata.get("x-road-error", "none").split(":")[:2])


def _openssl_ts_verify(data: Path, token: Path, pki: PKIDirectory) -> tuple[bool, str]:
    result = subprocess.run(  # noqa: S603  (fixed argument list)
        [  # noqa: S607  (openssl from PATH is the independent verifier)
            "openssl",
            "ts",
            "-verify",
            "-data",
            str(data),
            "-in",
            str(token),
            "-token_in",
            "-CAfile",
            str(pki.root_cert),
            "-untrusted",
            str(pki.tsa_cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode == 0, (lines[0] if lines else f"exit {result.returncode}")


@contextlib.contextmanager
def _service(
    kind: str, pki: PKIDirectory, port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    argv = ["pki", kind, "serve", "--dir", str(pki.root), "--listen", f"127.0.0.1:{port}"]
    with _process(argv, port, log) as proc:
        yield proc


@contextlib.contextmanager
def _process(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``serai ARGV`` as a child process, once it accepts connections on ``port``."""
    with _spawn([sys.executable, "-m", "serai.cli", *argv], log) as proc:
        _wait_for_port(port, proc, log)
        yield proc


@contextlib.contextmanager
def _spawn(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` as a child process writing to ``log``; stopped (SIGTERM) on exit."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: S603  (our own programs)
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_event(proc: subprocess.Popen[bytes], log: Path, event: str) -> dict[str, object]:
    """The first JSON line of ``log`` whose ``event`` is ``event``, waiting up to 90 s."""
    deadline = time.monotonic() + _READY_S
    while True:
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict) and found.get("event") == event:
                    return found
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.returncode is not None else "90 s"
            raise SeraiError(
                f"no {event} from {log.name} ({state}): "
                f"{log.read_text(errors='replace').strip()[-500:]}"
            )
        time.sleep(0.1)


def _serai(
    *argv: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``serai ARGV`` to completion, as an operator would type it."""
    return subprocess.run(  # noqa: S603  (our own console entry point)
        [sys.executable, "-m", "serai.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SeraiError(
                f"service on port {port} exited with {proc.returncode}: "
                f"{log.read_text(errors='replace').strip()[-500:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SeraiError(f"service on port {port} did not start within 30 s")
