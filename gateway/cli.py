"""``serai gateway`` and ``serai acl``: set up a gateway, mint admin tokens, and manage
access rights through the gateway's admin API.

Gateway-host commands (read ``gateway.toml``)::

    serai gateway init --dir D --gateway-id UZ/GOV/STC/gw:main --pki PKIDIR --anchor A \\
        [--peer-address HOST:PORT] [--client SUBSYSTEM]... [--provider SUBSYSTEM=HOST:PORT]...
    serai gateway token issue --config D/gateway.toml --role gateway-admin --subject alice

Access-rights commands (talk gRPC to ``--gateway HOST:PORT``, default
``$SERAI_GATEWAY_ADMIN`` or 127.0.0.1:5502, with the bearer token of ``--token-file`` or
``$SERAI_GATEWAY_TOKEN``)::

    serai acl grant PROVIDER_SUBSYSTEM TARGET SUBJECT
    serai acl revoke PROVIDER_SUBSYSTEM TARGET SUBJECT
    serai acl list [PROVIDER_SUBSYSTEM] [--json]

TARGET is ``/package.Service/Method`` or ``package.Service``; SUBJECT a subsystem
``INSTANCE/CLASS/MEMBER/SUBSYSTEM``, a member ``INSTANCE/CLASS/MEMBER`` or a global group
``INSTANCE/group:CODE``. A refusal prints ``serai: error: <code>: <message>`` and exits 2.

``serai gateway serve`` arrives with the exchange core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message

from certs.keys import load_private_key, write_certificate_chain, write_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway.acl import AccessRule, AccessTarget
from gateway.aclstore import SqlAclStore
from gateway.admin import ROLE_ADMIN, ROLE_OBSERVER, rule_from_proto, rule_to_proto
from gateway.config import (
    CONFIG_FILE_NAME,
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_IS_LISTEN,
    DEFAULT_METRICS_LISTEN,
    DEFAULT_PEER_LISTEN,
    GatewayConfig,
    load_config,
    parse_config,
    render_config,
)
from registry.codec import decode_anchor
from serai.cliutil import (
    format_address,
    issue_token,
    load_token_public_key,
    parse_listen,
    read_bearer_token,
    read_passphrase,
)
from serai.errors import ConfigError, SeraiError
from serai.httpops import metrics_listen_for
from serai.identifiers import GatewayId, SubsystemId, parse_subject
from serai.rpcerrors import error_from_rpc
from serai.tokens import DEFAULT_LIFETIME_S, TokenVerifier
from serai_proto.admin.v1 import admin_pb2 as pb
from serai_proto.admin.v1 import admin_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_GATEWAY_ADMIN", "open_acl_store", "register", "token_verifier"]

#: Admin API address the ``acl`` commands use without ``--gateway`` or the environment.
DEFAULT_GATEWAY_ADMIN: Final = DEFAULT_ADMIN_LISTEN
_CALL_TIMEOUT_S: Final = 30.0

_T = TypeVar("_T")


def register(subparsers: Any) -> None:
    """Add ``serai gateway …`` and ``serai acl …`` to the top-level parser."""
    gateway = subparsers.add_parser(
        "gateway",
        help="a security server: set it up, run it, mint admin tokens",
        description="Set up and run a gateway (see docs/gateway.md).",
    )
    sub = gateway.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND", required=True)
    _register_init(sub)
    _register_serve(sub)
    _register_token(sub)
    acl = subparsers.add_parser(
        "acl",
        help="access rights of a gateway's provider subsystems (through its admin API)",
        description="Grant, revoke and list access rights (see docs/gateway.md).",
    )
    _register_acl(acl.add_subparsers(dest="acl_command", metavar="SUBCOMMAND", required=True))


def _register_serve(sub: Any) -> None:
    # gateway.serve builds on this module's helpers, so it is imported when registering.
    from gateway.serve import register_serve  # noqa: PLC0415
    from gateway.workers import add_workers_option  # noqa: PLC0415

    register_serve(sub)
    add_workers_option(sub.choices["serve"])


def open_acl_store(config: GatewayConfig) -> SqlAclStore:
    """The access-rights store ``config`` names: PostgreSQL if ``acl_database_url`` is
    set, else SQLite."""
    if config.acl_database_url:
        return SqlAclStore.open_postgres(config.acl_database_url)
    return SqlAclStore.open_sqlite(config.acl_database)


def token_verifier(config: GatewayConfig) -> TokenVerifier:
    """The verifier of admin tokens: ``token_public_keys`` for ``token_audience``."""
    return TokenVerifier(
        public_keys=[load_token_public_key(p) for p in config.token_public_keys],
        audience=config.token_audience,
    )


# -- serai gateway init --------------------------------------------------------------------


def _register_init(sub: Any) -> None:
    init = sub.add_parser(
        "init",
        help="create a gateway directory: gateway.toml, keys and certificates, anchor",
    )
    init.add_argument("--dir", required=True, type=Path, help="directory to create")
    init.add_argument("--gateway-id", required=True, help="INSTANCE/CLASS/MEMBER/gw:CODE")
    init.add_argument("--pki", required=True, type=Path, help="PKI directory (serai pki init)")
    init.add_argument("--anchor", required=True, type=Path, help="anchor (serai registry anchor)")
    init.add_argument(
        "--peer-address",
        metavar="HOST:PORT",
        help="where other gateways reach this one (default: --peer-listen)",
    )
    for option, default, what in (
        ("--is-listen", DEFAULT_IS_LISTEN, "information systems' port"),
        ("--peer-listen", DEFAULT_PEER_LISTEN, "other gateways' port"),
        ("--admin-listen", DEFAULT_ADMIN_LISTEN, "admin API port"),
    ):
        init.add_argument(
            option, default=default, metavar="HOST:PORT", help=f"{what} (default: %(default)s)"
        )
    init.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help=f"metrics and health HTTP port (default: {DEFAULT_METRICS_LISTEN} when the other "
        "ports are their defaults, else any free loopback port, printed when serving)",
    )
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="SUBSYSTEM",
        help="a subsystem of this member whose IS calls out through the gateway (repeat)",
    )
    init.add_argument(
        "--provider",
        action="append",
        default=[],
        metavar="SUBSYSTEM=HOST:PORT",
        help="a subsystem of this member served by the IS at HOST:PORT (repeat)",
    )
    init.add_argument("--ca-passphrase-file", type=Path, help="passphrase of the PKI's keys")
    init.add_argument(
        "--key-passphrase-file", type=Path, help="encrypt the gateway's keys with this passphrase"
    )
    init.add_argument("--acl-database-url", help="keep access rights in this PostgreSQL database")
    init.add_argument("--message-log-url", help="keep the message log in this PostgreSQL database")
    init.set_defaults(handler=_cmd_init)


def _cmd_init(args: argparse.Namespace) -> int:
    gateway_id = _option("--gateway-id", GatewayId.parse, args.gateway_id)
    member = gateway_id.member
    listens = {
        option: format_address(*_option(option, parse_listen, value))
        for option, value in (
            ("--is-listen", args.is_listen),
            ("--peer-listen", args.peer_listen),
            ("--admin-listen", args.admin_listen),
        )
    }
    metrics_listen = metrics_listen_for(
        args.metrics_listen,
        default=DEFAULT_METRICS_LISTEN,
        others_default=(
            listens["--is-listen"] == DEFAULT_IS_LISTEN
            and listens["--peer-listen"] == DEFAULT_PEER_LISTEN
            and listens["--admin-listen"] == DEFAULT_ADMIN_LISTEN
        ),
    )
    peer_address = _peer_address(args.peer_address, listens["--peer-listen"])
    clients = [_own_subsystem("--client", text, gateway_id) for text in args.client]
    providers = []
    for text in args.provider:
        subsystem_text, sep, address = text.partition("=")
        if not sep:
            raise ConfigError(f"--provider: expected SUBSYSTEM=HOST:PORT, got {text!r}")
        subsystem = _own_subsystem("--provider", subsystem_text, gateway_id)
        providers.append((subsystem, format_address(*_option("--provider", parse_listen, address))))
    directory: Path = args.dir
    config_path = directory / CONFIG_FILE_NAME
    if config_path.exists():
        raise ConfigError(f"{config_path} already exists; refusing to overwrite it")
    passphrase_file = (
        None if args.key_passphrase_file is None else args.key_passphrase_file.resolve()
    )
    key_passphrase = read_passphrase(passphrase_file)
    text = render_config(
        gateway_id=str(gateway_id),
        peer_address=peer_address,
        clients=[str(c) for c in clients],
        providers=[(str(s), a) for s, a in providers],
        is_listen=listens["--is-listen"],
        peer_listen=listens["--peer-listen"],
        admin_listen=listens["--admin-listen"],
        metrics_listen=metrics_listen,
        acl_database_url=args.acl_database_url,
        message_log_url=args.message_log_url,
        key_passphrase_file=None if passphrase_file is None else str(passphrase_file),
    )
    config = parse_config(config_path, text)  # the last check before anything is written
    anchor_bytes = _read_anchor(args.anchor, gateway_id.instance)
    pki = PKIDirectory(args.pki)
    settings = pki.settings()
    if settings.instance != gateway_id.instance:
        raise ConfigError(
            f"--pki: {args.pki} is a PKI of instance {settings.instance}, not {gateway_id.instance}"
        )
    ca = pki.issuing_ca(passphrase=read_passphrase(args.ca_passphrase_file))

    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    peer_host = config.peer_address[0]
    auth_key = ec.generate_private_key(ec.SECP256R1())
    is_ip = _is_ip(peer_host)
    auth_cert = ca.issue(
        Profile.AUTH,
        str(gateway_id),
        auth_key.public_key(),
        dns_names=() if is_ip else (peer_host,),
        ip_addresses=(peer_host,) if is_ip else (),
    )
    write_private_key(config.auth_key, auth_key, passphrase=key_passphrase)
    write_certificate_chain(config.auth_certificate, ca.chain_for(auth_cert))
    signing_key = ec.generate_private_key(ec.SECP256R1())
    signing_cert = ca.issue(Profile.SIGN, str(member), signing_key.public_key())
    write_private_key(config.signing_key, signing_key, passphrase=key_passphrase)
    write_certificate_chain(config.signing_certificate, ca.chain_for(signing_cert))
    log_key = ec.generate_private_key(ec.SECP256R1())
    log_cert = ca.issue(Profile.LOG_SIGNING, str(gateway_id), log_key.public_key())
    write_private_key(config.log_signing_key, log_key, passphrase=key_passphrase)
    write_certificate_chain(config.log_signing_certificate, ca.chain_for(log_cert))
    token_key = ec.generate_private_key(ec.SECP256R1())
    assert config.token_signing_key is not None  # render_config writes it
    write_private_key(config.token_signing_key, token_key, passphrase=key_passphrase)
    config.token_public_keys[0].write_bytes(
        token_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config.anchor.write_bytes(anchor_bytes)
    config.globalconf_cache_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text, encoding="utf-8")

    served = sorted({str(s) for s in clients} | {str(s) for s, _ in providers})
    print(f"created gateway {gateway_id} in {directory}")
    print(f"  configuration: {config_path}")
    print(f"  TLS authentication certificate: {config.auth_certificate}")
    print(f"  signing certificate of {member}: {config.signing_certificate}")
    print(f"  log-signing certificate (tree heads): {config.log_signing_certificate}")
    print(f"  message log: {config.message_log_url or config.message_log}")
    print(f"  admin token keys: {config.token_signing_key}, {config.token_public_keys[0]}")
    print(f"  trust anchor: {config.anchor}")
    print(f"  access rights: {config.acl_database_url or config.acl_database}")
    print("register it with the registry:")
    command = (
        f"  serai registry gateway add {gateway_id} --address {peer_address}"
        f" --cert {config.auth_certificate}"
    )
    print(command + "".join(f" --subsystem {s}" for s in served))
    return 0


def _peer_address(given: str | None, peer_listen: str) -> str:
    if given is not None:
        host, port = _option("--peer-address", parse_listen, given)
        if port == 0:
            raise ConfigError(f"--peer-address: expected HOST:PORT with a port, got {given!r}")
        return format_address(host, port)
    host, port = parse_listen(peer_listen)
    if port == 0 or _is_unspecified(host):
        raise ConfigError(
            f"--peer-address: needed when --peer-listen is {peer_listen}: the address "
            "other gateways reach this one at"
        )
    return peer_listen


def _own_subsystem(option: str, text: str, gateway_id: GatewayId) -> SubsystemId:
    subsystem = _option(option, SubsystemId.parse, text)
    if subsystem.member != gateway_id.member:
        raise ConfigError(
            f"{option}: {subsystem} is not a subsystem of {gateway_id.member}, the member of "
            f"gateway {gateway_id} (one member per gateway)"
        )
    return subsystem


def _read_anchor(path: Path, instance: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--anchor: cannot read {path}: {exc.strerror}") from exc
    try:
        anchor = decode_anchor(data)
    except SeraiError as exc:
        raise ConfigError(f"--anchor: {path}: {exc.message}") from exc
    if anchor.instance != instance:
        raise ConfigError(
            f"--anchor: {path} is the anchor of instance {anchor.instance}, not {instance}"
        )
    return data


# -- serai gateway token issue ---------------------------------------------------------------


def _register_token(sub: Any) -> None:
    token = sub.add_parser("token", help="bearer tokens for the admin API")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    issue = token_sub.add_parser("issue", help="mint a token with the gateway's token key")
    issue.add_argument("--config", required=True, type=Path, help="gateway.toml")
    issue.add_argument("--role", required=True, choices=[ROLE_ADMIN, ROLE_OBSERVER])
    issue.add_argument("--subject", required=True, help="who the token is for (audit actor)")
    issue.add_argument(
        "--ttl", type=int, default=DEFAULT_LIFETIME_S, help="lifetime in seconds (%(default)s)"
    )
    issue.add_argument("--out", type=Path, help="write the token to this file (mode 0600)")
    issue.set_defaults(handler=_cmd_token_issue)


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
        issuer=f"serai-gateway:{config.gateway_id}",
        audience=config.token_audience,
        subject=args.subject,
        role=args.role,
        lifetime_s=args.ttl,
        out=args.out,
    )
    return 0


# -- serai acl -------------------------------------------------------------------------------


def _register_acl(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--gateway",
        default=os.environ.get("SERAI_GATEWAY_ADMIN", DEFAULT_GATEWAY_ADMIN),
        metavar="HOST:PORT",
        help="the gateway's admin API (default: $SERAI_GATEWAY_ADMIN or %(default)s)",
    )
    common.add_argument(
        "--token-file", type=Path, help="bearer token file (default: $SERAI_GATEWAY_TOKEN)"
    )
    common.add_argument("--json", action="store_true", help="print JSON lines")
    for name, handler, what in (
        ("grant", _acl_grant, "allow SUBJECT to call TARGET of PROVIDER_SUBSYSTEM"),
        ("revoke", _acl_revoke, "withdraw exactly one granted rule"),
    ):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("provider", metavar="PROVIDER_SUBSYSTEM", help="INSTANCE/CLASS/MEMBER/SUB")
        p.add_argument(
            "target", metavar="TARGET", help="/package.Service/Method or package.Service"
        )
        p.add_argument(
            "subject", metavar="SUBJECT", help="a subsystem, a member or INSTANCE/group:CODE"
        )
        p.set_defaults(handler=handler)
    p = sub.add_parser("list", parents=[common], help="the granted rules")
    p.add_argument(
        "provider", metavar="PROVIDER_SUBSYSTEM", nargs="?", default="", help="only this provider"
    )
    p.set_defaults(handler=_acl_list)


def _acl_rule(args: argparse.Namespace) -> pb.AccessRule:
    rule = AccessRule(
        provider=_option("PROVIDER_SUBSYSTEM", SubsystemId.parse, args.provider),
        target=_option("TARGET", AccessTarget.parse, args.target),
        subject=_option("SUBJECT", parse_subject, args.subject),
    )
    return rule_to_proto(rule)


def _acl_grant(args: argparse.Namespace) -> int:
    request = pb.GrantAccessRequest(rule=_acl_rule(args))
    response = _Client(args).call("GrantAccess", request)
    return _changed(args, "granted", request.rule, response.log_leaf_index)


def _acl_revoke(args: argparse.Namespace) -> int:
    request = pb.RevokeAccessRequest(rule=_acl_rule(args))
    response = _Client(args).call("RevokeAccess", request)
    return _changed(args, "revoked", request.rule, response.log_leaf_index)


def _changed(args: argparse.Namespace, done: str, message: pb.AccessRule, index: int) -> int:
    if args.json:
        print(json.dumps({"log_leaf_index": index}))
    else:
        print(f"{done}: {rule_from_proto(message)} (message log record #{index})")
    return 0


def _acl_list(args: argparse.Namespace) -> int:
    if args.provider:
        _option("PROVIDER_SUBSYSTEM", SubsystemId.parse, args.provider)
    response = _Client(args).call(
        "ListAccess", pb.ListAccessRequest(provider_subsystem=args.provider)
    )
    for entry in response.rules:
        rule = rule_from_proto(entry.rule)
        granted_at = (
            entry.granted_at.ToDatetime(tzinfo=dt.UTC).isoformat()
            if entry.HasField("granted_at")
            else None
        )
        if args.json:
            row = {
                "provider": str(rule.provider),
                "target": str(rule.target),
                "subject": str(rule.subject),
                "granted_at": granted_at,
                "granted_by": entry.granted_by or None,
            }
            print(json.dumps(row, sort_keys=True))
        else:
            provenance = f"  granted {granted_at} by {entry.granted_by}" if granted_at else ""
            print(f"{rule.provider}  {rule.target}  {rule.subject}{provenance}")
    return 0


class _Client:
    """One admin API connection for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.address: str = args.gateway
        token = read_bearer_token(args.token_file, env_var="SERAI_GATEWAY_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),)

    def call(self, method: str, request: Message) -> Any:
        with grpc.insecure_channel(self.address) as channel:
            rpc = getattr(pb_grpc.GatewayAdminStub(channel), method)
            try:
                return rpc(request, metadata=self._metadata, timeout=_CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                raise error_from_rpc(exc, what=f"gateway admin API at {self.address}") from None


# -- helpers ---------------------------------------------------------------------------------


def _option(option: str, parse: Callable[[str], _T], value: str) -> _T:
    """``parse(value)``, a refusal naming the option."""
    try:
        return parse(value)
    except SeraiError as exc:
        message = exc.message.removeprefix("--listen: ")
        raise type(exc)(f"{option}: {message}", code=exc.code, origin=exc.origin) from exc


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
