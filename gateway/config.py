"""``gateway.toml``: one gateway's configuration, typed and validated.

Example (what ``serai gateway init`` writes; relative paths are relative to the
directory holding the file)::

    gateway_id = "UZ/GOV/STC/gw:main"
    anchor = "anchor.bin"                 # trust anchor from `serai registry anchor`
    globalconf_cache_dir = "globalconf"
    globalconf_refresh_interval_s = 60
    is_listen = "127.0.0.1:5500"          # information systems (plaintext unless is_tls)
    # is_tls = false                      # true: TLS with the auth certificate on the IS port,
    # is_client_ca = "keys/is-ca.pem"     #   IS client certificates required, issued by this CA
    peer_listen = "127.0.0.1:5501"        # other gateways (TLS 1.3, client certificates)
    admin_listen = "127.0.0.1:5502"       # admin API (JWT bearer tokens)
    metrics_listen = "127.0.0.1:9500"     # /metrics, /healthz, /readyz (HTTP, no auth)
    # exchange_log_lines = true           # one JSON line per exchange on stderr
    peer_address = "127.0.0.1:5501"       # what the registry lists for this gateway
    auth_key = "keys/auth.key"            # TLS authentication key and certificate
    auth_certificate = "keys/auth.pem"
    signing_key = "keys/sign.key"         # the member's signing key and certificate
    signing_certificate = "keys/sign.pem"
    # key_passphrase_file = "passphrase"
    acl_database = "acl.db"               # SQLite file; or instead:
    # acl_database_url = "postgresql://user@host/db"
    message_log = "messagelog.db"         # the message log, a SQLite file; or instead:
    # message_log_url = "postgresql://user@host/db"
    message_log_synchronous = "full"      # SQLite durability: "full", "extra" or "normal"
    message_log_stuck_after_s = 10        # a log request waiting longer: not ready, refuse
    log_signing_key = "keys/logsign.key"  # signs the log's tree heads
    log_signing_certificate = "keys/logsign.pem"
    tree_head_interval_s = 1              # a signed, timestamped tree head this often,
    tree_head_max_records = 10000         #   and at least every this many records
    timestamping_overdue_s = 14400        # refuse exchanges past this without a timestamp
    token_signing_key = "keys/token.key"
    token_public_keys = ["keys/token.pub.pem"]
    # token_audience = "serai-gateway:UZ/GOV/STC/gw:main"
    max_message_bytes = 4194304
    replay_window_s = 600
    max_skew_s = 60
    default_timeout_s = 30

    [[client]]                            # a subsystem whose IS calls out through us
    subsystem = "UZ/GOV/STC/tax"
    allow = ["127.0.0.1", "::1"]          # IS addresses (IPs or CIDRs)
    # client_cert_sha256 = "ab12..."      # the IS's client certificate (needs is_tls = true)
    log_mode = "full"                     # or "metadata": log only body digests

    [[provider]]                          # a subsystem whose IS we serve to others
    subsystem = "UZ/GOV/STC/tax"
    address = "127.0.0.1:7000"            # the provider IS
    log_mode = "full"                     # or "metadata": log only body digests

One gateway belongs to one member: every ``[[client]]`` and ``[[provider]]`` subsystem
must be a subsystem of the gateway's member, and a subsystem appears at most once per
kind of table.

Every refusal is a :class:`~serai.errors.ConfigError` naming the file, the key and what
was expected. Loading reads only this file; key, certificate and anchor files are read by
the command line.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from serai.cliutil import format_address, parse_listen
from serai.errors import ConfigError
from serai.identifiers import GatewayId, SubsystemId
from serai.tomlconf import TomlReader, parse_toml, read_config_text, toml_string

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_CLIENT_ALLOW",
    "DEFAULT_GLOBALCONF_REFRESH_INTERVAL_S",
    "DEFAULT_IS_LISTEN",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_SKEW_S",
    "DEFAULT_METRICS_LISTEN",
    "DEFAULT_PEER_LISTEN",
    "DEFAULT_REPLAY_WINDOW_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TIMESTAMPING_OVERDUE_S",
    "DEFAULT_TREE_HEAD_INTERVAL_S",
    "DEFAULT_TREE_HEAD_MAX_RECORDS",
    "ClientConfig",
    "GatewayConfig",
    "LogMode",
    "LogSynchronous",
    "ProviderConfig",
    "load_config",
    "parse_config",
    "render_config",
]

CONFIG_FILE_NAME: Final = "gateway.toml"
DEFAULT_IS_LISTEN: Final = "127.0.0.1:5500"
DEFAULT_PEER_LISTEN: Final = "127.0.0.1:5501"
DEFAULT_ADMIN_LISTEN: Final = "127.0.0.1:5502"
#: The operations HTTP port: Prometheus metrics and the health endpoints (loopback).
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9500"
#: Seconds between fetches of the global configuration.
DEFAULT_GLOBALCONF_REFRESH_INTERVAL_S: Final = 60.0
#: Largest request or response body accepted, in bytes (4 MiB).
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Seconds a message id is remembered per client (X-Road's 10 minutes).
DEFAULT_REPLAY_WINDOW_S: Final = 600
#: Largest allowed difference between a header's created time and our clock, in seconds.
DEFAULT_MAX_SKEW_S: Final = 60
#: Deadline of an exchange whose caller sets none, in seconds.
DEFAULT_TIMEOUT_S: Final = 30.0
#: IS addresses a ``[[client]]`` written by ``serai gateway init`` allows.
DEFAULT_CLIENT_ALLOW: Final = ("127.0.0.1", "::1")
#: Seconds between signed tree heads of the message log (DESIGN §6).
DEFAULT_TREE_HEAD_INTERVAL_S: Final = 1.0
#: Records after which a tree head is made even before the interval is over.
DEFAULT_TREE_HEAD_MAX_RECORDS: Final = 10_000
#: Seconds without a timestamp after which exchanges are refused (X-Road's default, 4 h).
DEFAULT_TIMESTAMPING_OVERDUE_S: Final = 4 * 3600
#: Seconds a message-log request may stay in flight before the store counts as stuck (not
#: ready, new exchanges refused with ``log_unavailable``): well above a healthy commit
#: (milliseconds), and above the waits that end by themselves with a failure (the
#: PostgreSQL connect timeout and the SQLite busy timeout, 5 s each), so only a store
#: that neither answers nor fails trips it; well below the default exchange deadline.
DEFAULT_MESSAGE_LOG_STUCK_AFTER_S: Final = 10.0

_KNOWN_KEYS: Final = frozenset(
    {
        "gateway_id",
        "anchor",
        "globalconf_cache_dir",
        "globalconf_refresh_interval_s",
        "is_listen",
        "is_tls",
        "is_client_ca",
        "peer_listen",
        "admin_listen",
        "metrics_listen",
        "exchange_log_lines",
        "peer_address",
        "auth_key",
        "auth_certificate",
        "signing_key",
        "signing_certificate",
        "key_passphrase_file",
        "acl_database",
        "acl_database_url",
        "message_log",
        "message_log_url",
        "message_log_synchronous",
        "message_log_stuck_after_s",
        "log_signing_key",
        "log_signing_certificate",
        "tree_head_interval_s",
        "tree_head_max_records",
        "timestamping_overdue_s",
        "token_signing_key",
        "token_public_keys",
        "token_audience",
        "max_message_bytes",
        "replay_window_s",
        "max_skew_s",
        "default_timeout_s",
        "client",
        "provider",
    }
)
_CLIENT_KEYS: Final = frozenset({"subsystem", "allow", "client_cert_sha256", "log_mode"})
_PROVIDER_KEYS: Final = frozenset({"subsystem", "address", "log_mode"})
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class LogMode(enum.StrEnum):
    """What the message log keeps of a subsystem's bodies (its digest always)."""

    FULL = "full"
    METADATA = "metadata"


class LogSynchronous(enum.StrEnum):
    """SQLite's ``synchronous`` setting for the message log (DESIGN §6: FULL by default)."""

    NORMAL = "normal"
    FULL = "full"
    EXTRA = "extra"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """A consumer subsystem whose information system calls out through this gateway.

    The IS is let in when its address is in ``allow`` (if given) and, on a TLS IS port,
    its client certificate's SHA-256 is ``client_cert_sha256`` (lowercase hex; if given).
    """

    subsystem: SubsystemId
    allow: tuple[IPNetwork, ...]
    client_cert_sha256: str | None
    log_mode: LogMode = LogMode.FULL

    def allows_address(self, address: str) -> bool:
        """Whether the IS at IP ``address`` is in the allow-list."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allow)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """A provider subsystem this gateway serves, and where its IS listens."""

    subsystem: SubsystemId
    address: tuple[str, int]
    log_mode: LogMode


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """A validated ``gateway.toml`` (paths absolute, addresses as (host, port))."""

    path: Path
    gateway_id: GatewayId
    anchor: Path
    globalconf_cache_dir: Path
    globalconf_refresh_interval_s: float
    is_listen: tuple[str, int]
    is_tls: bool
    is_client_ca: Path | None
    peer_listen: tuple[str, int]
    admin_listen: tuple[str, int]
    peer_address: tuple[str, int]
    auth_key: Path
    auth_certificate: Path
    signing_key: Path
    signing_certificate: Path
    key_passphrase_file: Path | None
    acl_database: Path
    acl_database_url: str | None
    message_log: Path
    message_log_url: str | None
    message_log_synchronous: LogSynchronous
    log_signing_key: Path
    log_signing_certificate: Path
    tree_head_interval_s: float
    tree_head_max_records: int
    timestamping_overdue_s: float
    token_signing_key: Path | None
    token_public_keys: tuple[Path, ...]
    token_audience: str
    max_message_bytes: int
    replay_window_s: int
    max_skew_s: int
    default_timeout_s: float
    clients: tuple[ClientConfig, ...]
    providers: tuple[ProviderConfig, ...]
    #: The operations HTTP port (``/metrics``, ``/healthz``, ``/readyz``).
    metrics_listen: tuple[str, int] = ("127.0.0.1", 9500)
    #: Whether each exchange writes a JSON line on stderr.
    exchange_log_lines: bool = True
    #: Seconds a message-log request may stay in flight before the store counts as stuck.
    message_log_stuck_after_s: float = DEFAULT_MESSAGE_LOG_STUCK_AFTER_S

    @property
    def instance(self) -> str:
        """The federation instance of this gateway."""
        return self.gateway_id.instance

    def client(self, subsystem: SubsystemId) -> ClientConfig | None:
        """The ``[[client]]`` entry of ``subsystem``, if this gateway serves it."""
        return next((c for c in self.clients if c.subsystem == subsystem), None)

    def provider(self, subsystem: SubsystemId) -> ProviderConfig | None:
        """The ``[[provider]]`` entry of ``subsystem``, if this gateway serves it."""
        return next((p for p in self.providers if p.subsystem == subsystem), None)

    def log_modes(self) -> dict[SubsystemId, LogMode]:
        """What the message log keeps of each of our subsystems' bodies, as a client
        (``[[client]]``) and as a provider (``[[provider]]``)."""
        modes = {c.subsystem: c.log_mode for c in self.clients}
        for provider in self.providers:
            if provider.log_mode is LogMode.METADATA:
                modes[provider.subsystem] = LogMode.METADATA
            else:
                modes.setdefault(provider.subsystem, LogMode.FULL)
        return modes


def load_config(path: Path) -> GatewayConfig:
    """Read and validate ``path``; raises :class:`ConfigError`."""
    return parse_config(path, read_config_text(path, created_by="serai gateway init"))


def parse_config(path: Path, text: str) -> GatewayConfig:
    """Validate ``text`` as if it were the file ``path`` (which need not exist yet)."""
    return _Reader(path, parse_toml(path, text)).config()


def render_config(
    *,
    gateway_id: str,
    peer_address: str,
    clients: Sequence[str] = (),
    providers: Sequence[tuple[str, str]] = (),
    is_listen: str = DEFAULT_IS_LISTEN,
    peer_listen: str = DEFAULT_PEER_LISTEN,
    admin_listen: str = DEFAULT_ADMIN_LISTEN,
    metrics_listen: str = DEFAULT_METRICS_LISTEN,
    acl_database_url: str | None = None,
    message_log_url: str | None = None,
    key_passphrase_file: str | None = None,
) -> str:
    """The text of a new ``gateway.toml`` with the file layout ``serai gateway init``
    writes (``anchor.bin``, ``keys/…``; paths relative to its directory)."""
    lines = [
        "# Serai gateway configuration (written by `serai gateway init`; see docs/gateway.md)",
        f"gateway_id = {toml_string(gateway_id)}",
        'anchor = "anchor.bin"',
        'globalconf_cache_dir = "globalconf"',
        f"globalconf_refresh_interval_s = {int(DEFAULT_GLOBALCONF_REFRESH_INTERVAL_S)}",
        f"is_listen = {toml_string(is_listen)}",
        "is_tls = false",
        f"peer_listen = {toml_string(peer_listen)}",
        f"admin_listen = {toml_string(admin_listen)}",
        f"metrics_listen = {toml_string(metrics_listen)}",
        "exchange_log_lines = true",
        f"peer_address = {toml_string(peer_address)}",
        'auth_key = "keys/auth.key"',
        'auth_certificate = "keys/auth.pem"',
        'signing_key = "keys/sign.key"',
        'signing_certificate = "keys/sign.pem"',
    ]
    if key_passphrase_file:
        lines.append(f"key_passphrase_file = {toml_string(key_passphrase_file)}")
    if acl_database_url:
        lines.append(f"acl_database_url = {toml_string(acl_database_url)}")
    else:
        lines.append('acl_database = "acl.db"')
    if message_log_url:
        lines.append(f"message_log_url = {toml_string(message_log_url)}")
    else:
        lines += ['message_log = "messagelog.db"', 'message_log_synchronous = "full"']
    lines += [
        f"message_log_stuck_after_s = {int(DEFAULT_MESSAGE_LOG_STUCK_AFTER_S)}",
        'log_signing_key = "keys/logsign.key"',
        'log_signing_certificate = "keys/logsign.pem"',
        f"tree_head_interval_s = {int(DEFAULT_TREE_HEAD_INTERVAL_S)}",
        f"tree_head_max_records = {DEFAULT_TREE_HEAD_MAX_RECORDS}",
        f"timestamping_overdue_s = {DEFAULT_TIMESTAMPING_OVERDUE_S}",
        'token_signing_key = "keys/token.key"',
        'token_public_keys = ["keys/token.pub.pem"]',
        f"token_audience = {toml_string(f'serai-gateway:{gateway_id}')}",
        f"max_message_bytes = {DEFAULT_MAX_MESSAGE_BYTES}",
        f"replay_window_s = {DEFAULT_REPLAY_WINDOW_S}",
        f"max_skew_s = {DEFAULT_MAX_SKEW_S}",
        f"default_timeout_s = {int(DEFAULT_TIMEOUT_S)}",
    ]
    allow = ", ".join(toml_string(a) for a in DEFAULT_CLIENT_ALLOW)
    for subsystem in clients:
        lines += [
            "",
            "[[client]]",
            f"subsystem = {toml_string(subsystem)}",
            f"allow = [{allow}]",
            'log_mode = "full"',
        ]
    for subsystem, address in providers:
        lines += [
            "",
            "[[provider]]",
            f"subsystem = {toml_string(subsystem)}",
            f"address = {toml_string(address)}",
            'log_mode = "full"',
        ]
    return "\n".join(lines) + "\n"


class _Reader(TomlReader):
    """Reads ``gateway.toml``'s typed values, each refusal naming file and key."""

    def config(self) -> GatewayConfig:
        self.refuse_unknown(_KNOWN_KEYS, docs="docs/gateway.md")
        gateway_id = self.checked("gateway_id", GatewayId.parse, self.string("gateway_id"))
        log_url = self.optional_string("message_log_url")
        if log_url is not None and not log_url.startswith(("postgresql://", "postgres://")):
            raise self.fail("message_log_url", "expected a postgresql:// URL")
        if log_url is not None and "message_log" in self.data:
            raise self.fail(
                "message_log", "give either 'message_log' (SQLite) or 'message_log_url'"
            )
        synchronous = self.optional_string("message_log_synchronous") or "full"
        if synchronous not in {s.value for s in LogSynchronous}:
            raise self.fail("message_log_synchronous", 'expected "full", "extra" or "normal"')
        acl_url = self.optional_string("acl_database_url")
        if acl_url is not None and not acl_url.startswith(("postgresql://", "postgres://")):
            raise self.fail("acl_database_url", "expected a postgresql:// URL")
        if acl_url is not None and "acl_database" in self.data:
            raise self.fail(
                "acl_database", "give either 'acl_database' (SQLite) or 'acl_database_url'"
            )
        peer_listen = self.address("peer_listen", DEFAULT_PEER_LISTEN, any_port=True)
        token_key = self.optional_string("token_signing_key")
        passphrase = self.optional_string("key_passphrase_file")
        is_tls = self.boolean("is_tls", default=False)
        is_client_ca = self.is_client_ca(is_tls=is_tls)
        return GatewayConfig(
            path=self.path,
            gateway_id=gateway_id,
            anchor=self.file(self.string("anchor")),
            globalconf_cache_dir=self.file(
                self.optional_string("globalconf_cache_dir") or "globalconf"
            ),
            globalconf_refresh_interval_s=self.number(
                "globalconf_refresh_interval_s", DEFAULT_GLOBALCONF_REFRESH_INTERVAL_S
            ),
            is_listen=self.address("is_listen", DEFAULT_IS_LISTEN, any_port=True),
            is_tls=is_tls,
            is_client_ca=is_client_ca,
            peer_listen=peer_listen,
            admin_listen=self.address("admin_listen", DEFAULT_ADMIN_LISTEN, any_port=True),
            peer_address=self.peer_address(peer_listen),
            auth_key=self.file(self.string("auth_key")),
            auth_certificate=self.file(self.string("auth_certificate")),
            signing_key=self.file(self.string("signing_key")),
            signing_certificate=self.file(self.string("signing_certificate")),
            key_passphrase_file=None if passphrase is None else self.file(passphrase),
            acl_database=self.file(self.optional_string("acl_database") or "acl.db"),
            acl_database_url=acl_url,
            message_log=self.file(self.optional_string("message_log") or "messagelog.db"),
            message_log_url=log_url,
            message_log_synchronous=LogSynchronous(synchronous),
            log_signing_key=self.file(self.string("log_signing_key")),
            log_signing_certificate=self.file(self.string("log_signing_certificate")),
            tree_head_interval_s=self.number("tree_head_interval_s", DEFAULT_TREE_HEAD_INTERVAL_S),
            tree_head_max_records=self.integer(
                "tree_head_max_records", DEFAULT_TREE_HEAD_MAX_RECORDS
            ),
            timestamping_overdue_s=self.number(
                "timestamping_overdue_s", DEFAULT_TIMESTAMPING_OVERDUE_S
            ),
            token_signing_key=None if token_key is None else self.file(token_key),
            token_public_keys=tuple(self.file(p) for p in self.string_list("token_public_keys")),
            token_audience=self.optional_string("token_audience") or f"serai-gateway:{gateway_id}",
            max_message_bytes=self.integer("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
            replay_window_s=self.integer("replay_window_s", DEFAULT_REPLAY_WINDOW_S),
            max_skew_s=self.integer("max_skew_s", DEFAULT_MAX_SKEW_S),
            default_timeout_s=self.number("default_timeout_s", DEFAULT_TIMEOUT_S),
            clients=self.clients(gateway_id, is_tls=is_tls),
            providers=self.providers(gateway_id),
            metrics_listen=self.address("metrics_listen", DEFAULT_METRICS_LISTEN, any_port=True),
            exchange_log_lines=self.boolean("exchange_log_lines", default=True),
            message_log_stuck_after_s=self.number(
                "message_log_stuck_after_s", DEFAULT_MESSAGE_LOG_STUCK_AFTER_S
            ),
        )

    # -- values only gateway.toml has ------------------------------------------------------

    def address(
        self,
        key: str,
        default: str | None,
        *,
        any_port: bool,
        data: dict[str, Any] | None = None,
        where: str = "",
    ) -> tuple[str, int]:
        value = (self.data if data is None else data).get(key, default)
        name = where or key
        expected = "expected HOST:PORT" + ("" if any_port else " with a port from 1 to 65535")
        if not isinstance(value, str):
            raise self.fail(name, expected)
        try:
            host, port = parse_listen(value)
        except ConfigError:
            raise self.fail(name, f"{expected}, got {value!r}") from None
        if port == 0 and not any_port:
            raise self.fail(name, f"{expected}, got {value!r}")
        return host, port

    def is_client_ca(self, *, is_tls: bool) -> Path | None:
        value = self.optional_string("is_client_ca")
        if is_tls and value is None:
            raise self.fail(
                "is_client_ca",
                "needed when is_tls = true: a PEM file of the CA(s) that issue the "
                "information systems' client certificates",
            )
        if not is_tls and value is not None:
            raise self.fail("is_client_ca", "IS client certificates need is_tls = true")
        return None if value is None else self.file(value)

    def peer_address(self, peer_listen: tuple[str, int]) -> tuple[str, int]:
        if "peer_address" in self.data:
            return self.address("peer_address", None, any_port=False)
        host, port = peer_listen
        if port == 0 or _is_unspecified(host):
            raise self.fail(
                "peer_address",
                f"needed when peer_listen is {format_address(host, port)!r}: the address "
                "other gateways reach this one at, HOST:PORT",
            )
        return peer_listen

    # -- tables -------------------------------------------------------------------------

    def tables(self, key: str, known: frozenset[str]) -> list[tuple[str, dict[str, Any]]]:
        entries = self.data.get(key, [])
        if not isinstance(entries, list):
            raise self.fail(key, f"expected [[{key}]] tables")
        result = []
        for index, entry in enumerate(entries):
            where = f"{key}[{index}]"
            if not isinstance(entry, dict):
                raise self.fail(where, f"expected a [[{key}]] table")
            unknown = sorted(set(entry) - known)
            if unknown:
                raise self.fail(f"{where}.{unknown[0]}", "unknown key (see docs/gateway.md)")
            result.append((where, entry))
        return result

    def own_subsystem(
        self, gateway_id: GatewayId, entry: dict[str, Any], where: str, seen: set[SubsystemId]
    ) -> SubsystemId:
        key = f"{where}.subsystem"
        subsystem = self.checked(key, SubsystemId.parse, self.string("subsystem", entry, key))
        if subsystem.member != gateway_id.member:
            raise self.fail(
                key,
                f"{subsystem} is not a subsystem of this gateway's member {gateway_id.member}"
                " (one member per gateway)",
            )
        if subsystem in seen:
            raise self.fail(key, f"{subsystem} appears twice")
        seen.add(subsystem)
        return subsystem

    def clients(self, gateway_id: GatewayId, *, is_tls: bool) -> tuple[ClientConfig, ...]:
        seen: set[SubsystemId] = set()
        result = []
        for where, entry in self.tables("client", _CLIENT_KEYS):
            subsystem = self.own_subsystem(gateway_id, entry, where, seen)
            allow = self.networks(entry, f"{where}.allow")
            fingerprint = self.fingerprint(entry, f"{where}.client_cert_sha256", is_tls=is_tls)
            if not allow and fingerprint is None:
                raise self.fail(
                    f"{where}.allow",
                    "expected a non-empty list of IS addresses, or a client_cert_sha256",
                )
            result.append(
                ClientConfig(
                    subsystem=subsystem,
                    allow=allow,
                    client_cert_sha256=fingerprint,
                    log_mode=self.log_mode(entry, f"{where}.log_mode"),
                )
            )
        return tuple(result)

    def networks(self, entry: dict[str, Any], where: str) -> tuple[IPNetwork, ...]:
        value = entry.get("allow", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "expected a list of IP addresses or CIDR networks")
        networks = []
        for index, text in enumerate(value):
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError:
                raise self.fail(
                    f"{where}[{index}]",
                    f"expected an IP address or CIDR network without host bits, got {text!r}",
                ) from None
        return tuple(networks)

    def fingerprint(self, entry: dict[str, Any], where: str, *, is_tls: bool) -> str | None:
        if "client_cert_sha256" not in entry:
            return None
        value = entry["client_cert_sha256"]
        text = value.replace(":", "").lower() if isinstance(value, str) else ""
        if not _SHA256_HEX.fullmatch(text):
            raise self.fail(where, "expected the SHA-256 of a certificate, 64 hex digits")
        if not is_tls:
            raise self.fail(where, "client certificates need is_tls = true")
        return text

    def providers(self, gateway_id: GatewayId) -> tuple[ProviderConfig, ...]:
        seen: set[SubsystemId] = set()
        result = []
        for where, entry in self.tables("provider", _PROVIDER_KEYS):
            subsystem = self.own_subsystem(gateway_id, entry, where, seen)
            address = self.address(
                "address", None, any_port=False, data=entry, where=f"{where}.address"
            )
            result.append(
                ProviderConfig(
                    subsystem=subsystem,
                    address=address,
                    log_mode=self.log_mode(entry, f"{where}.log_mode"),
                )
            )
        return tuple(result)

    def log_mode(self, entry: dict[str, Any], where: str) -> LogMode:
        mode = entry.get("log_mode", LogMode.FULL.value)
        if mode not in {m.value for m in LogMode}:
            raise self.fail(where, 'expected "full" or "metadata"')
        return LogMode(mode)


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
