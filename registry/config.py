"""``registry.toml``: the registry's configuration, typed and validated.

Example (what ``serai registry init`` writes; relative paths are relative to the
directory holding the file)::

    instance = "UZ"
    grpc_listen = "127.0.0.1:4400"        # management API (gRPC)
    http_listen = "127.0.0.1:4401"        # publication of the global configuration
    metrics_listen = "127.0.0.1:9400"     # /metrics, /healthz, /readyz (HTTP, no auth)
    database = "registry.db"              # SQLite file; or instead:
    # database_url = "postgresql://user@host/db"
    publish_dir = "publish"
    # public_url = "https://conf.example.org/globalconf/v1/current"
    token_signing_key = "keys/token.key"
    token_public_keys = ["keys/token.pub.pem"]
    # token_audience = "serai-registry:UZ"
    # key_passphrase_file = "passphrase"
    configuration_validity_s = 600
    regeneration_interval_s = 60
    history_keep = 100
    # conflog_keep_envelopes_days = 400   # absent: keep every envelope of the conflog

    [[configuration_signing]]             # the first signs; all go in the trust anchor
    key = "keys/confsign-1.key"
    certificate = "keys/confsign-1.pem"

Every refusal is a :class:`~serai.errors.ConfigError` naming the file, the key and what
was expected. Loading reads only this file; key files are read by the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from serai.cliutil import format_address, parse_listen
from serai.identifiers import parse_instance
from serai.tomlconf import TomlReader, parse_toml, read_config_text, toml_string

__all__ = [
    "CONFIG_FILE_NAME",
    "CURRENT_PATH",
    "DEFAULT_GRPC_LISTEN",
    "DEFAULT_HISTORY_KEEP",
    "DEFAULT_HTTP_LISTEN",
    "DEFAULT_METRICS_LISTEN",
    "DEFAULT_REGENERATION_INTERVAL_S",
    "DEFAULT_VALIDITY_S",
    "RegistryConfig",
    "SigningKeyPaths",
    "load_config",
    "render_config",
]

CONFIG_FILE_NAME: Final = "registry.toml"
DEFAULT_GRPC_LISTEN: Final = "127.0.0.1:4400"
DEFAULT_HTTP_LISTEN: Final = "127.0.0.1:4401"
#: The operations HTTP port: Prometheus metrics and the health endpoints (loopback).
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9400"
#: Seconds a published configuration is valid after generation (X-Road's 10 minutes).
DEFAULT_VALIDITY_S: Final = 600
#: Seconds between regenerations when nothing changes.
DEFAULT_REGENERATION_INTERVAL_S: Final = 60
#: Number of past configurations kept in ``globalconf/v1/<serial>``.
DEFAULT_HISTORY_KEEP: Final = 100
#: Path of the current configuration below the publish directory (and the URL path).
CURRENT_PATH: Final = "globalconf/v1/current"

_KNOWN_KEYS: Final = frozenset(
    {
        "instance",
        "grpc_listen",
        "http_listen",
        "metrics_listen",
        "database",
        "database_url",
        "publish_dir",
        "public_url",
        "token_signing_key",
        "token_public_keys",
        "token_audience",
        "key_passphrase_file",
        "configuration_validity_s",
        "regeneration_interval_s",
        "history_keep",
        "conflog_keep_envelopes_days",
        "configuration_signing",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyPaths:
    """One configuration signing certificate and, when it may sign, its key."""

    certificate: Path
    key: Path | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """A validated ``registry.toml`` (paths absolute)."""

    path: Path
    instance: str
    grpc_listen: tuple[str, int]
    http_listen: tuple[str, int]
    database: Path
    database_url: str | None
    publish_dir: Path
    public_url: str | None
    configuration_signing: tuple[SigningKeyPaths, ...]
    token_signing_key: Path | None
    token_public_keys: tuple[Path, ...]
    token_audience: str
    key_passphrase_file: Path | None
    configuration_validity_s: int
    regeneration_interval_s: float
    history_keep: int
    #: The operations HTTP port (``/metrics``, ``/healthz``, ``/readyz``).
    metrics_listen: tuple[str, int] = ("127.0.0.1", 9400)
    #: Days the configuration log keeps whole envelopes before the registry prunes them
    #: (:meth:`registry.store.RegistryStore.conflog_prune`); ``None`` (the default)
    #: never prunes by itself: dropping evidence is the operator's decision.
    conflog_keep_envelopes_days: int | None = None

    @property
    def download_url(self) -> str:
        """Where gateways fetch the current configuration (the anchor's URL)."""
        if self.public_url:
            return self.public_url
        return f"http://{format_address(*self.http_listen)}/{CURRENT_PATH}"


def load_config(path: Path) -> RegistryConfig:
    """Read and validate ``path``; raises :class:`ConfigError`."""
    text = read_config_text(path, created_by="serai registry init")
    return _Reader(path, parse_toml(path, text)).config()


def render_config(
    *,
    instance: str,
    signing: list[tuple[str, str]],
    token_signing_key: str,
    token_public_key: str,
    database_url: str | None = None,
    grpc_listen: str = DEFAULT_GRPC_LISTEN,
    http_listen: str = DEFAULT_HTTP_LISTEN,
    metrics_listen: str = DEFAULT_METRICS_LISTEN,
) -> str:
    """The text of a new ``registry.toml`` (paths as given, relative to its directory)."""
    lines = [
        "# Serai registry configuration (written by `serai registry init`; see docs/registry.md)",
        f"instance = {toml_string(instance)}",
        f"grpc_listen = {toml_string(grpc_listen)}",
        f"http_listen = {toml_string(http_listen)}",
        f"metrics_listen = {toml_string(metrics_listen)}",
    ]
    if database_url:
        lines.append(f"database_url = {toml_string(database_url)}")
    else:
        lines.append('database = "registry.db"')
    lines += [
        'publish_dir = "publish"',
        '# public_url = "https://conf.example.org/globalconf/v1/current"',
        f"token_signing_key = {toml_string(token_signing_key)}",
        f"token_public_keys = [{toml_string(token_public_key)}]",
        f"token_audience = {toml_string(f'serai-registry:{instance}')}",
        f"configuration_validity_s = {DEFAULT_VALIDITY_S}",
        f"regeneration_interval_s = {DEFAULT_REGENERATION_INTERVAL_S}",
        f"history_keep = {DEFAULT_HISTORY_KEEP}",
        "# drop the envelopes of configuration-log entries older than this many days",
        "# (hashes, heads and time-stamps stay; default: keep all; see docs/registry.md)",
        "# conflog_keep_envelopes_days = 400",
    ]
    for key, cert in signing:
        lines += [
            "",
            "# configuration signing: the first entry signs; every certificate goes in the anchor",
            "[[configuration_signing]]",
            f"key = {toml_string(key)}",
            f"certificate = {toml_string(cert)}",
        ]
    return "\n".join(lines) + "\n"


class _Reader(TomlReader):
    """Reads ``registry.toml``'s typed values, each refusal naming file and key."""

    def config(self) -> RegistryConfig:
        self.refuse_unknown(_KNOWN_KEYS, docs="docs/registry.md")
        instance = self.checked("instance", parse_instance, self.string("instance"))
        database_url = self.optional_string("database_url")
        if database_url is not None and not database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise self.fail("database_url", "expected a postgresql:// URL")
        if database_url is not None and "database" in self.data:
            raise self.fail("database", "give either 'database' (SQLite) or 'database_url'")
        public_url = self.optional_string("public_url")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise self.fail("public_url", "expected an http(s) URL")
        token_key = self.optional_string("token_signing_key")
        public_keys = self.string_list("token_public_keys")
        passphrase = self.optional_string("key_passphrase_file")
        return RegistryConfig(
            path=self.path,
            instance=instance,
            grpc_listen=self.listen("grpc_listen", DEFAULT_GRPC_LISTEN),
            http_listen=self.listen("http_listen", DEFAULT_HTTP_LISTEN),
            database=self.file(self.optional_string("database") or "registry.db"),
            database_url=database_url,
            publish_dir=self.file(self.optional_string("publish_dir") or "publish"),
            public_url=public_url,
            configuration_signing=self.signing(),
            token_signing_key=None if token_key is None else self.file(token_key),
            token_public_keys=tuple(self.file(p) for p in public_keys),
            token_audience=self.optional_string("token_audience") or f"serai-registry:{instance}",
            key_passphrase_file=None if passphrase is None else self.file(passphrase),
            configuration_validity_s=self.integer("configuration_validity_s", DEFAULT_VALIDITY_S),
            regeneration_interval_s=self.number(
                "regeneration_interval_s", DEFAULT_REGENERATION_INTERVAL_S
            ),
            history_keep=self.integer("history_keep", DEFAULT_HISTORY_KEEP),
            metrics_listen=self.listen("metrics_listen", DEFAULT_METRICS_LISTEN),
            conflog_keep_envelopes_days=(
                self.integer("conflog_keep_envelopes_days", 1)
                if "conflog_keep_envelopes_days" in self.data
                else None
            ),
        )

    def listen(self, key: str, default: str) -> tuple[str, int]:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, "expected HOST:PORT")
        return self.checked(key, parse_listen, value)

    def signing(self) -> tuple[SigningKeyPaths, ...]:
        key = "configuration_signing"
        entries = self.data.get(key)
        if not isinstance(entries, list) or not entries:
            raise self.fail(key, "expected at least one [[configuration_signing]] table")
        result = []
        for index, entry in enumerate(entries):
            where = f"{key}[{index}]"
            if not isinstance(entry, dict) or set(entry) - {"key", "certificate"}:
                raise self.fail(where, "expected a table with 'certificate' and 'key'")
            cert, key_path = entry.get("certificate"), entry.get("key")
            if not isinstance(cert, str) or not cert:
                raise self.fail(f"{where}.certificate", "expected a non-empty string")
            if key_path is None and index == 0:
                raise self.fail(f"{where}.key", "the first entry signs, so it needs a key")
            if key_path is not None and (not isinstance(key_path, str) or not key_path):
                raise self.fail(f"{where}.key", "expected a non-empty string")
            result.append(
                SigningKeyPaths(
                    certificate=self.file(cert),
                    key=None if key_path is None else self.file(key_path),
                )
            )
        return tuple(result)
