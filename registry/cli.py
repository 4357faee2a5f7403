"""``serai registry``: set up and run the registry, export its trust anchor, mint tokens,
and manage the federation through the management API.

Registry-host commands (read ``registry.toml``)::

    serai registry init --dir D --instance UZ --pki PKIDIR
    serai registry serve --config D/registry.toml
    serai registry anchor --config D/registry.toml --out anchor.bin
    serai registry token issue --config D/registry.toml --role registry-admin --subject alice
    serai registry conflog prune --config D/registry.toml --before 2026-01-01|400d

Client commands (talk gRPC to ``--registry HOST:PORT``, default ``$SERAI_REGISTRY`` or
127.0.0.1:4400, with the bearer token of ``--token-file`` or ``$SERAI_REGISTRY_TOKEN``):
``member``, ``subsystem``, ``gateway``, ``group``, ``ca``, ``tsa``, ``descriptor``,
``audit``, ``status``. A refusal prints ``serai: error: <code>: <message>`` and exits 2.

``serve`` writes JSON lines to stderr: ``registry_listening`` (addresses, download URL),
``globalconf_published`` (serial) after each publication, ``registry_stopped``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from google.protobuf.message import Message

from certs.keys import (
    PrivateKey,
    generate_private_key,
    load_certificate_chain,
    load_private_key,
    write_private_key,
)
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry._conflogprune import PRUNE_ACTION
from registry.codec import TrustAnchor, ca_to_proto, encode_anchor, tsa_to_proto
from registry.config import (
    CONFIG_FILE_NAME,
    CURRENT_PATH,
    DEFAULT_GRPC_LISTEN,
    DEFAULT_HTTP_LISTEN,
    DEFAULT_METRICS_LISTEN,
    RegistryConfig,
    load_config,
    render_config,
)
from registry.conflog import log_id_for
from registry.model import ApprovedCA, ApprovedTSA
from registry.publisher import Publisher
from registry.server import ROLE_ADMIN, ROLE_OBSERVER, RegistryServer
from registry.store import Change, RegistryStore
from serai.cliutil import (
    format_address,
    issue_token,
    load_token_public_key,
    log_event,
    parse_listen,
    read_bearer_token,
    read_passphrase,
    termination_event,
)
from serai.errors import ConfigError, SeraiError
from serai.httpops import metrics_listen_for
from serai.identifiers import parse_instance
from serai.rpcerrors import error_from_rpc
from serai.tokens import DEFAULT_LIFETIME_S, TokenVerifier
from serai_proto.registry.v1 import registry_pb2 as pb
from serai_proto.registry.v1 import registry_pb2_grpc as pb_grpc

__all__ = ["open_store", "register"]

DEFAULT_REGISTRY: Final = "127.0.0.1:4400"
_CALL_TIMEOUT_S: Final = 30.0
_STOP_GRACE_S: Final = 5.0
#: Largest ``--before`` in days (a cut-off before year 1 would not be a date).
_MAX_DAYS: Final = 100_000


def register(subparsers: Any) -> None:
    """Add ``serai registry …`` to the top-level parser."""
    registry = subparsers.add_parser(
        "registry",
        help="the central registry: run it, manage members, gateways and trust services",
        description="Set up, run and manage the registry (see docs/registry.md).",
    )
    sub = registry.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)
    _register_host_commands(sub)
    _register_client_commands(sub)


# -- registry-host commands ----------------------------------------------------------------


def _register_host_commands(sub: Any) -> None:
    init = sub.add_parser(
        "init",
        help="create a registry directory: registry.toml, keys, store with the PKI approved",
    )
    init.add_argument("--dir", required=True, type=Path, help="directory to create")
    init.add_argument("--instance", required=True, help="federation instance id, e.g. UZ")
    init.add_argument("--pki", required=True, type=Path, help="PKI directory (serai pki init)")
    init.add_argument("--ca-passphrase-file", type=Path, help="passphrase of the PKI's keys")
    init.add_argument("--database-url", help="use this PostgreSQL database instead of SQLite")
    init.add_argument(
        "--grpc-listen",
        default=DEFAULT_GRPC_LISTEN,
        metavar="HOST:PORT",
        help="management API address (default: %(default)s)",
    )
    init.add_argument(
        "--http-listen",
        default=DEFAULT_HTTP_LISTEN,
        metavar="HOST:PORT",
        help="address publishing the global configuration (default: %(default)s)",
    )
    init.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help=f"metrics and health HTTP port (default: {DEFAULT_METRICS_LISTEN} when the other "
        "ports are their defaults, else any free loopback port, printed when serving)",
    )
    init.add_argument("--ca-name", default="dev-ca", help="name of the approved CA")
    init.add_argument("--tsa-name", default="dev-tsa", help="name of the approved TSA")
    init.set_defaults(handler=_cmd_init)

    serve = sub.add_parser("serve", help="run the registry until SIGINT or SIGTERM")
    serve.add_argument("--config", required=True, type=Path, help="registry.toml")
    serve.set_defaults(handler=_cmd_serve)

    anchor = sub.add_parser("anchor", help="export the trust anchor for gateways")
    anchor.add_argument("--config", required=True, type=Path, help="registry.toml")
    anchor.add_argument("--out", required=True, type=Path, help="anchor file to write")
    anchor.set_defaults(handler=_cmd_anchor)

    token = sub.add_parser("token", help="bearer tokens for the management API")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    issue = token_sub.add_parser("issue", help="mint a token with the registry's token key")
    issue.add_argument("--config", required=True, type=Path, help="registry.toml")
    issue.add_argument("--role", required=True, choices=[ROLE_ADMIN, ROLE_OBSERVER])
    issue.add_argument("--subject", required=True, help="who the token is for (audit actor)")
    issue.add_argument(
        "--ttl", type=int, default=DEFAULT_LIFETIME_S, help="lifetime in seconds (%(default)s)"
    )
    issue.add_argument("--out", type=Path, help="write the token to this file (mode 0600)")
    issue.set_defaults(handler=_cmd_token_issue)

    conflog = sub.add_parser("conflog", help="the configuration log: retention")
    conflog_sub = conflog.add_subparsers(dest="conflog_command", metavar="COMMAND", required=True)
    prune = conflog_sub.add_parser(
        "prune",
        help="drop the envelopes of old configuration-log entries (hashes, heads and "
        "time-stamps stay, so every proof still verifies)",
        description="Drop the envelope bytes of the configuration log's entries appended "
        "before the cut-off, keeping every leaf hash, node, signed head and time-stamp. "
        "The newest entry, unexpired configurations and entries no time-stamped head "
        "covers are never pruned. Safe while the registry runs; pruning twice is "
        "harmless. See docs/registry.md.",
    )
    prune.add_argument("--config", required=True, type=Path, help="registry.toml")
    prune.add_argument(
        "--before",
        required=True,
        type=_cutoff,
        metavar="DATE|DAYS",
        help="entries appended before DATE (ISO 8601 date or time; UTC unless it has an "
        "offset), or more than DAYS days ago (400 or 400d)",
    )
    prune.add_argument("--json", action="store_true", help="print the result as JSON")
    prune.set_defaults(handler=_cmd_conflog_prune)


def _cmd_init(args: argparse.Namespace) -> int:
    instance = parse_instance(args.instance)
    grpc_listen = format_address(*parse_listen(args.grpc_listen))
    http_listen = format_address(*parse_listen(args.http_listen))
    metrics_listen = metrics_listen_for(
        args.metrics_listen,
        default=DEFAULT_METRICS_LISTEN,
        others_default=grpc_listen == DEFAULT_GRPC_LISTEN and http_listen == DEFAULT_HTTP_LISTEN,
    )
    directory: Path = args.dir
    config_path = directory / CONFIG_FILE_NAME
    if config_path.exists():
        raise ConfigError(f"{config_path} already exists; refusing to overwrite it")
    pki = PKIDirectory(args.pki)
    settings = pki.settings()
    if settings.instance != instance:
        raise ConfigError(
            f"--pki: {args.pki} is a PKI of instance {settings.instance}, not {instance}"
        )
    ca = pki.issuing_ca(passphrase=read_passphrase(args.ca_passphrase_file))
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)

    signing_key = generate_private_key()
    signing_cert = ca.issue(
        Profile.CONFIGURATION_SIGNING,
        f"{instance} Serai Configuration Signing 1",
        signing_key.public_key(),
    )
    write_private_key(keys / "confsign-1.key", signing_key)
    _write_pem(keys / "confsign-1.pem", ca.chain_for(signing_cert))
    token_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(keys / "token.key", token_key)
    (keys / "token.pub.pem").write_bytes(
        token_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config_path.write_text(
        render_config(
            instance=instance,
            signing=[("keys/confsign-1.key", "keys/confsign-1.pem")],
            token_signing_key="keys/token.key",  # noqa: S106  (a path, not a secret)
            token_public_key="keys/token.pub.pem",  # noqa: S106  (a path)
            database_url=args.database_url,
            grpc_listen=grpc_listen,
            http_listen=http_listen,
            metrics_listen=metrics_listen,
        ),
        encoding="utf-8",
    )
    config = load_config(config_path)
    approved_ca = ApprovedCA(
        name=args.ca_name,
        root_certificate=_der(pki.root_certificate()),
        intermediate_certificates=(_der(ca.certificate),),
        ocsp_urls=(settings.ocsp_url,),
    )
    approved_tsa = ApprovedTSA(
        name=args.tsa_name,
        url=settings.tsa_url,
        certificates=tuple(_der(c) for c in load_certificate_chain(pki.tsa_cert)),
    )
    store = open_store(config)
    try:
        store.add_certificate_authority(
            approved_ca,
            _local_change(pb.AddCertificateAuthorityRequest(authority=ca_to_proto(approved_ca))),
        )
        store.add_timestamping_authority(
            approved_tsa,
            _local_change(pb.AddTimestampingAuthorityRequest(authority=tsa_to_proto(approved_tsa))),
        )
    finally:
        store.close()
    print(f"created registry for instance {instance} in {directory}")
    print(f"  configuration: {config_path}")
    print(f"  store: {config.database_url or config.database}")
    print(f"  approved CA {approved_ca.name!r} and TSA {approved_tsa.name!r} from {args.pki}")
    print(f"  download URL: {config.download_url}")
    return 0


def open_store(config: RegistryConfig) -> RegistryStore:
    """The store ``config`` names: PostgreSQL if ``database_url`` is set, else SQLite."""
    from registry.sqlstore import SqlRegistryStore  # noqa: PLC0415  (keeps --help light)

    if config.database_url:
        return SqlRegistryStore.open_postgres(config.database_url, instance=config.instance)
    return SqlRegistryStore.open_sqlite(config.database, instance=config.instance)


def _cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    key, certificate = _signing_key(config)
    verifier = TokenVerifier(
        public_keys=[load_token_public_key(p) for p in config.token_public_keys],
        audience=config.token_audience,
    )
    asyncio.run(_serve(config, key, certificate, verifier))
    return 0


async def _serve(
    config: RegistryConfig,
    key: PrivateKey,
    certificate: x509.Certificate,
    verifier: TokenVerifier,
) -> None:
    loop = asyncio.get_running_loop()
    # One thread owns the store: every store call, and publication, runs in it.
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry-store")
    try:
        store = await loop.run_in_executor(executor, open_store, config)
        try:
            publisher = Publisher(
                store=store,
                signing_key=key,
                signing_certificate=certificate,
                publish_dir=config.publish_dir,
                validity_s=config.configuration_validity_s,
                history_keep=config.history_keep,
            )
            server = RegistryServer(
                store=store,
                publisher=publisher,
                verifier=verifier,
                executor=executor,
                grpc_listen=config.grpc_listen,
                http_listen=config.http_listen,
                regeneration_interval_s=config.regeneration_interval_s,
                metrics_listen=config.metrics_listen,
                conflog_keep_envelopes_days=config.conflog_keep_envelopes_days,
            )
            with termination_event() as stop:
                await server.start()
                try:
                    grpc_address = format_address(config.grpc_listen[0], server.grpc_port)
                    http_address = format_address(config.http_listen[0], server.http_port)
                    log_event(
                        "registry_listening",
                        instance=config.instance,
                        grpc=grpc_address,
                        http=http_address,
                        metrics=format_address(config.metrics_listen[0], server.metrics_port),
                        download_url=config.public_url or f"http://{http_address}/{CURRENT_PATH}",
                    )
                    await stop.wait()
                finally:
                    await server.stop(_STOP_GRACE_S)
        finally:
            await loop.run_in_executor(executor, store.close)
    finally:
        executor.shutdown(wait=True)
    log_event("registry_stopped")


def _cmd_anchor(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    certificates = tuple(
        _der(load_certificate_chain(entry.certificate)[0]) for entry in config.configuration_signing
    )
    anchor = TrustAnchor(
        instance=config.instance,
        download_url=config.download_url,
        signing_certificates=certificates,
        generated_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        configuration_log_id=log_id_for(config.instance),
    )
    data = encode_anchor(anchor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote trust anchor of instance {config.instance} to {args.out}")
    print(f"  download URL: {anchor.download_url}")
    print(f"  signing certificates: {len(certificates)}")
    print(f"  configuration log: {anchor.configuration_log_id}")
    return 0


def _cmd_token_issue(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.token_signing_key is None:
        raise ConfigError(f"{config.path}: key 'token_signing_key' is needed to issue tokens")
    key = load_private_key(
        config.token_signing_key, passphrase=read_passphrase(config.key_passphrase_file)
    )
    issue_token(
        key,
        key_path=config.token_signing_key,
        issuer=f"serai-registry:{config.instance}",
        audience=config.token_audience,
        subject=args.subject,
        role=args.role,
        lifetime_s=args.ttl,
        out=args.out,
    )
    return 0


def _cmd_conflog_prune(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = open_store(config)
    try:
        result = store.conflog_prune(
            before=args.before,
            change=Change(actor="local", action=PRUNE_ACTION),
        )
    finally:
        store.close()
    if args.json:
        fields = dataclasses.asdict(result)
        fields["before"] = result.before.isoformat()
        print(json.dumps(fields, sort_keys=True))
        return 0
    before = result.before.isoformat()
    if result.pruned:
        print(
            f"pruned {result.pruned} envelopes of the configuration log appended before "
            f"{before} (entries {result.first_index} to {result.last_index})"
        )
    else:
        print(f"pruned nothing: no envelope appended before {before} may be pruned")
    total = result.kept_total + result.pruned_total
    print(f"  entries: {total}, kept whole: {result.kept_total}, pruned: {result.pruned_total}")
    if result.protected:
        print(
            f"  kept although before the cut-off: {result.protected} (the newest entry, "
            "unexpired configurations, and entries beyond the newest time-stamped head, "
            f"size {result.timestamped_size})"
        )
    if not result.timestamped_size:
        print("  no head of the log has a time-stamp yet: nothing can be pruned before one has")
    return 0


def _cutoff(text: str) -> dt.datetime:
    """``--before``: a number of days ago (``400``, ``400d``) or an ISO 8601 date or time
    (UTC unless it carries an offset)."""
    days = text.removesuffix("d")
    if days.isdecimal():
        if not 0 < int(days) <= _MAX_DAYS:
            raise argparse.ArgumentTypeError(f"expected 1 to {_MAX_DAYS} days, got {text!r}")
        return dt.datetime.now(dt.UTC) - dt.timedelta(days=int(days))
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date or time, or a number of days, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _signing_key(config: RegistryConfig) -> tuple[PrivateKey, x509.Certificate]:
    first = config.configuration_signing[0]
    assert first.key is not None  # load_config requires it
    key = load_private_key(first.key, passphrase=read_passphrase(config.key_passphrase_file))
    certificate = load_certificate_chain(first.certificate)[0]
    if certificate.public_key() != key.public_key():
        raise ConfigError(
            f"{config.path}: key 'configuration_signing[0]': {first.key} is not the key of "
            f"{first.certificate}"
        )
    return key, certificate


def _local_change(request: Message) -> Change:
    return Change(
        actor="local",
        action=type(request).__name__.removesuffix("Request"),
        details=_canonical_json(request),
    )


def _canonical_json(message: Message) -> str:
    return json.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _write_pem(path: Path, chain: Sequence[x509.Certificate]) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))


# -- client commands -----------------------------------------------------------------------


def _register_client_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        default=os.environ.get("SERAI_REGISTRY", DEFAULT_REGISTRY),
        help="management API HOST:PORT (default $SERAI_REGISTRY or %(default)s)",
    )
    common.add_argument(
        "--token-file", type=Path, help="bearer token file (default $SERAI_REGISTRY_TOKEN)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")

    def group(name: str, help_text: str) -> Any:
        parser = sub.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)

    def command(parent: Any, name: str, handler: Callable[[argparse.Namespace], int]) -> Any:
        parser = parent.add_parser(name, parents=[common])
        parser.set_defaults(handler=handler)
        return parser

    members = group("member", "members (agencies)")
    p = command(members, "add", _member_add)
    p.add_argument("member_id", help="INSTANCE/CLASS/MEMBER")
    p.add_argument("--name", required=True, help="official name of the organisation")
    p = command(members, "remove", _member_remove)
    p.add_argument("member_id")
    p = command(members, "list", _member_list)
    p.add_argument("--class", dest="member_class", default="", help="only this member class")

    subsystems = group("subsystem", "subsystems (information systems of members)")
    p = command(subsystems, "add", _subsystem_add)
    p.add_argument("subsystem_id", help="INSTANCE/CLASS/MEMBER/SUBSYSTEM")
    p.add_argument("--name", default="", help="display name")
    p = command(subsystems, "remove", _subsystem_remove)
    p.add_argument("subsystem_id")

    gateways = group("gateway", "gateways (security servers)")
    p = command(gateways, "add", _gateway_add)
    p.add_argument("gateway_id", help="INSTANCE/CLASS/MEMBER/gw:CODE")
    p.add_argument("--address", required=True, help="peer address HOST:PORT")
    p.add_argument("--cert", required=True, type=Path, help="authentication certificate PEM")
    p.add_argument("--subsystem", action="append", default=[], help="served subsystem (repeat)")
    p = command(gateways, "remove", _gateway_remove)
    p.add_argument("gateway_id")
    p = command(gateways, "list", _gateway_list)
    p.add_argument("--member", default="", help="only gateways of this member")
    p = command(gateways, "set-subsystems", _gateway_set_subsystems)
    p.add_argument("gateway_id")
    p.add_argument("--subsystem", action="append", default=[], help="served subsystem (repeat)")

    groups = group("group", "global groups")
    p = command(groups, "add", _group_add)
    p.add_argument("group_id", help="INSTANCE/group:CODE")
    p.add_argument("--description", default="")
    p = command(groups, "remove", _group_remove)
    p.add_argument("group_id")
    command(groups, "list", _group_list)
    p = command(groups, "add-member", _group_add_member)
    p.add_argument("group_id")
    p.add_argument("subject_id", help="member or subsystem id")
    p = command(groups, "remove-member", _group_remove_member)
    p.add_argument("group_id")
    p.add_argument("subject_id")

    cas = group("ca", "approved certificate authorities")
    p = command(cas, "add", _ca_add)
    p.add_argument("--name", required=True)
    p.add_argument("--root", required=True, type=Path, help="root certificate PEM")
    p.add_argument("--intermediate", action="append", default=[], type=Path, help="PEM (repeat)")
    p.add_argument("--ocsp-url", action="append", default=[], help="OCSP responder URL (repeat)")
    p = command(cas, "remove", _ca_remove)
    p.add_argument("name")
    command(cas, "list", _ca_list)

    tsas = group("tsa", "approved time-stamping authorities")
    p = command(tsas, "add", _tsa_add)
    p.add_argument("--name", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--cert", required=True, type=Path, help="TSA certificate (and chain) PEM")
    p = command(tsas, "remove", _tsa_remove)
    p.add_argument("name")
    command(tsas, "list", _tsa_list)

    descriptors = group("descriptor", "service descriptors of provider subsystems")
    p = command(descriptors, "set", _descriptor_set)
    p.add_argument("subsystem_id")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--file", type=Path, help="serialized FileDescriptorSet")
    how.add_argument("--clear", action="store_true", help="withdraw the descriptors")

    p = sub.add_parser("audit", parents=[common], help="read the audit log")
    p.add_argument("--after", type=int, default=0, help="entries after this sequence number")
    p.add_argument("--limit", type=int, default=100, help="at most this many entries")
    p.set_defaults(handler=_audit)
    p = sub.add_parser("status", parents=[common], help="the configuration currently published")
    p.set_defaults(handler=_status)


class _Client:
    """One management API connection for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.address: str = args.registry
        self.json: bool = args.json
        token = read_bearer_token(args.token_file, env_var="SERAI_REGISTRY_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.RegistryManagementStub(self._channel)

    def call(self, method: str, request: Message) -> Any:
        rpc = getattr(self.stub, method)
        try:
            return rpc(request, metadata=self._metadata, timeout=_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, what=f"registry at {self.address}") from None
        finally:
            self._channel.close()

    def change(self, method: str, request: Message, done: str) -> int:
        response = self.call(method, request)
        sequence = response.receipt.audit_sequence
        if self.json:
            print(json.dumps({"audit_sequence": sequence}))
        else:
            print(f"{done} (audit #{sequence})")
        return 0

    def rows(self, items: Sequence[Message], human: Callable[[Any], str]) -> int:
        for item in items:
            if self.json:
                print(_canonical_json(item))
            else:
                print(human(item))
        return 0


def _member_add(args: argparse.Namespace) -> int:
    request = pb.AddMemberRequest(member_id=args.member_id, name=args.name)
    return _Client(args).change("AddMember", request, f"added member {args.member_id}")


def _member_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveMemberRequest(member_id=args.member_id)
    return _Client(args).change("RemoveMember", request, f"removed member {args.member_id}")


def _member_list(args: argparse.Namespace) -> int:
    client = _Client(args)
    response = client.call("ListMembers", pb.ListMembersRequest(member_class=args.member_class))

    def human(m: Any) -> str:
        lines = [f"{m.id}  {m.name}"]
        lines += [f"  {s.id}  {s.name}".rstrip() for s in m.subsystems]
        return "\n".join(lines)

    return client.rows(response.members, human)


def _subsystem_add(args: argparse.Namespace) -> int:
    request = pb.AddSubsystemRequest(subsystem_id=args.subsystem_id, name=args.name)
    return _Client(args).change("AddSubsystem", request, f"added subsystem {args.subsystem_id}")


def _subsystem_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveSubsystemRequest(subsystem_id=args.subsystem_id)
    done = f"removed subsystem {args.subsystem_id}"
    return _Client(args).change("RemoveSubsystem", request, done)


def _gateway_add(args: argparse.Namespace) -> int:
    request = pb.AddGatewayRequest(
        gateway_id=args.gateway_id,
        address=args.address,
        authentication_certificate=_der(_certificates(args.cert, "--cert")[0]),
        subsystems=args.subsystem,
    )
    return _Client(args).change("AddGateway", request, f"added gateway {args.gateway_id}")


def _gateway_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveGatewayRequest(gateway_id=args.gateway_id)
    return _Client(args).change("RemoveGateway", request, f"removed gateway {args.gateway_id}")


def _gateway_list(args: argparse.Namespace) -> int:
    client = _Client(args)
    response = client.call("ListGateways", pb.ListGatewaysRequest(member_id=args.member))

    def human(g: Any) -> str:
        subject = x509.load_der_x509_certificate(g.authentication_certificate).subject
        served = ", ".join(g.subsystems) or "(no subsystems)"
        return f"{g.gateway_id}  {g.address}  {subject.rfc4514_string()}\n  serves {served}"

    return client.rows(response.gateways, human)


def _gateway_set_subsystems(args: argparse.Namespace) -> int:
    request = pb.SetGatewaySubsystemsRequest(gateway_id=args.gateway_id, subsystems=args.subsystem)
    done = f"gateway {args.gateway_id} serves {len(args.subsystem)} subsystem(s)"
    return _Client(args).change("SetGatewaySubsystems", request, done)


def _group_add(args: argparse.Namespace) -> int:
    request = pb.AddGlobalGroupRequest(group_id=args.group_id, description=args.description)
    return _Client(args).change("AddGlobalGroup", request, f"added group {args.group_id}")


def _group_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveGlobalGroupRequest(group_id=args.group_id)
    return _Client(args).change("RemoveGlobalGroup", request, f"removed group {args.group_id}")


def _group_list(args: argparse.Namespace) -> int:
    client = _Client(args)
    response = client.call("ListGlobalGroups", pb.ListGlobalGroupsRequest())

    def human(g: Any) -> str:
        return "\n".join([f"{g.id}  {g.description}".rstrip(), *(f"  {m}" for m in g.members)])

    return client.rows(response.groups, human)


def _group_add_member(args: argparse.Namespace) -> int:
    request = pb.AddGlobalGroupMemberRequest(group_id=args.group_id, subject_id=args.subject_id)
    done = f"added {args.subject_id} to {args.group_id}"
    return _Client(args).change("AddGlobalGroupMember", request, done)


def _group_remove_member(args: argparse.Namespace) -> int:
    request = pb.RemoveGlobalGroupMemberRequest(group_id=args.group_id, subject_id=args.subject_id)
    done = f"removed {args.subject_id} from {args.group_id}"
    return _Client(args).change("RemoveGlobalGroupMember", request, done)


def _ca_add(args: argparse.Namespace) -> int:
    intermediates = [
        _der(c) for path in args.intermediate for c in _certificates(path, "--intermediate")
    ]
    ca = ApprovedCA(
        name=args.name,
        root_certificate=_der(_certificates(args.root, "--root")[0]),
        intermediate_certificates=tuple(intermediates),
        ocsp_urls=tuple(args.ocsp_url),
    )
    request = pb.AddCertificateAuthorityRequest(authority=ca_to_proto(ca))
    return _Client(args).change("AddCertificateAuthority", request, f"approved CA {args.name!r}")


def _ca_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveCertificateAuthorityRequest(name=args.name)
    done = f"withdrew CA {args.name!r}"
    return _Client(args).change("RemoveCertificateAuthority", request, done)


def _ca_list(args: argparse.Namespace) -> int:
    client = _Client(args)
    response = client.call("ListCertificateAuthorities", pb.ListCertificateAuthoritiesRequest())

    def human(c: Any) -> str:
        subject = x509.load_der_x509_certificate(c.root_certificate).subject.rfc4514_string()
        ocsp = ", ".join(c.ocsp_responder_urls) or "(no OCSP URL)"
        return (
            f"{c.name}  root {subject}  intermediates {len(c.intermediate_certificates)}"
            f"\n  OCSP {ocsp}"
        )

    return client.rows(response.authorities, human)


def _tsa_add(args: argparse.Namespace) -> int:
    tsa = ApprovedTSA(
        name=args.name,
        url=args.url,
        certificates=tuple(_der(c) for c in _certificates(args.cert, "--cert")),
    )
    request = pb.AddTimestampingAuthorityRequest(authority=tsa_to_proto(tsa))
    return _Client(args).change("AddTimestampingAuthority", request, f"approved TSA {args.name!r}")


def _tsa_remove(args: argparse.Namespace) -> int:
    request = pb.RemoveTimestampingAuthorityRequest(name=args.name)
    done = f"withdrew TSA {args.name!r}"
    return _Client(args).change("RemoveTimestampingAuthority", request, done)


def _tsa_list(args: argparse.Namespace) -> int:
    client = _Client(args)
    response = client.call("ListTimestampingAuthorities", pb.ListTimestampingAuthoritiesRequest())

    def human(t: Any) -> str:
        return f"{t.name}  {t.url}  certificates {len(t.certificates)}"

    return client.rows(response.authorities, human)


def _descriptor_set(args: argparse.Namespace) -> int:
    data = b""
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--file: cannot read {args.file}: {exc.strerror}") from exc
    request = pb.SetServiceDescriptorRequest(
        provider_subsystem=args.subsystem_id, file_descriptor_set=data
    )
    done = f"{'withdrew' if not data else 'published'} descriptors of {args.subsystem_id}"
    return _Client(args).change("SetServiceDescriptor", request, done)


def _audit(args: argparse.Namespace) -> int:
    if args.after < 0 or args.limit <= 0:
        raise ConfigError("--after must be >= 0 and --limit > 0")
    client = _Client(args)
    response = client.call(
        "GetAuditLog", pb.GetAuditLogRequest(after_sequence=args.after, limit=args.limit)
    )

    def human(e: Any) -> str:
        at = e.at.ToDatetime(tzinfo=dt.UTC).isoformat()
        return f"#{e.sequence}  {at}  {e.actor}  {e.action}  {e.target}"

    return client.rows(response.entries, human)


def _status(args: argparse.Namespace) -> int:
    client = _Client(args)
    current = client.call("GetCurrentConfiguration", pb.GetCurrentConfigurationRequest())
    if client.json:
        print(_canonical_json(current))
        return 0
    print(f"instance {current.instance_id}  serial {current.serial}")
    print(f"  generated {current.generated_at.ToDatetime(tzinfo=dt.UTC).isoformat()}")
    print(f"  expires   {current.expires_at.ToDatetime(tzinfo=dt.UTC).isoformat()}")
    print(f"  sha256    {current.configuration_sha256.hex()}")
    return 0


def _certificates(path: Path, option: str) -> list[x509.Certificate]:
    try:
        certificates = load_certificate_chain(path)
    except SeraiError as exc:
        raise ConfigError(f"{option}: {exc.message}") from exc
    if not certificates:
        raise ConfigError(f"{option}: {path} holds no certificate")
    return certificates
