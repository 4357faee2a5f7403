"""``gateway.toml``: defaults, what init renders, and every refusal naming file and key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import gateway.config
from gateway.config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GatewayConfig,
    LogMode,
    LogSynchronous,
    load_config,
    parse_config,
    render_config,
)
from serai.errors import ConfigError
from serai.identifiers import GatewayId, SubsystemId

MINIMAL = """
gateway_id = "UZ/GOV/STC/gw:main"
anchor = "anchor.bin"
auth_key = "keys/auth.key"
auth_certificate = "keys/auth.pem"
signing_key = "keys/sign.key"
signing_certificate = "keys/sign.pem"
log_signing_key = "keys/logsign.key"
log_signing_certificate = "keys/logsign.pem"
token_public_keys = ["keys/token.pub.pem"]
"""


def _load(tmp_path: Path, text: str) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = _load(tmp_path, MINIMAL)
    base = tmp_path.resolve()
    assert config.gateway_id == GatewayId.parse("UZ/GOV/STC/gw:main")
    assert config.instance == "UZ"
    assert config.anchor == base / "anchor.bin"
    assert config.globalconf_cache_dir == base / "globalconf"
    assert config.globalconf_refresh_interval_s == 60.0
    assert config.is_listen == ("127.0.0.1", 5500)
    assert config.is_tls is False
    assert config.peer_listen == ("127.0.0.1", 5501)
    assert config.admin_listen == ("127.0.0.1", 5502)
    assert config.peer_address == ("127.0.0.1", 5501)
    assert config.auth_key == base / "keys/auth.key"
    assert config.signing_certificate == base / "keys/sign.pem"
    assert config.key_passphrase_file is None
    assert config.acl_database == base / "acl.db"
    assert config.acl_database_url is None
    assert config.message_log == base / "messagelog.db"
    assert config.message_log_url is None
    assert config.message_log_synchronous is LogSynchronous.FULL
    assert config.log_signing_key == base / "keys/logsign.key"
    assert config.log_signing_certificate == base / "keys/logsign.pem"
    assert config.tree_head_interval_s == 1.0
    assert config.tree_head_max_records == 10_000
    assert config.timestamping_overdue_s == 4 * 3600
    assert config.token_signing_key is None
    assert config.token_public_keys == (base / "keys/token.pub.pem",)
    assert config.token_audience == "serai-gateway:UZ/GOV/STC/gw:main"
    assert config.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert config.replay_window_s == 600
    assert config.max_skew_s == 60
    assert config.default_timeout_s == 30.0
    assert config.clients == ()
    assert config.providers == ()


def test_rendered_config_loads(tmp_path: Path) -> None:
    text = render_config(
        gateway_id="UZ/GOV/STC/gw:main",
        peer_address="gw.stc.example:5501",
        clients=["UZ/GOV/STC/tax"],
        providers=[("UZ/GOV/STC/tax", "127.0.0.1:7000")],
        acl_database_url="postgresql://u@h/db",
        key_passphrase_file="/etc/serai/passphrase",
    )
    config = parse_config(tmp_path / "gateway.toml", text)
    tax = SubsystemId.parse("UZ/GOV/STC/tax")
    assert config.peer_address == ("gw.stc.example", 5501)
    assert config.acl_database_url == "postgresql://u@h/db"
    assert config.key_passphrase_file == Path("/etc/serai/passphrase")
    assert config.token_signing_key == tmp_path.resolve() / "keys/token.key"
    client = config.client(tax)
    assert client is not None
    assert client.allows_address("127.0.0.1")
    assert client.allows_address("::1")
    assert not client.allows_address("10.0.0.1")
    assert not client.allows_address("not an ip")
    provider = config.provider(tax)
    assert provider is not None
    assert provider.address == ("127.0.0.1", 7000)
    assert provider.log_mode is LogMode.FULL
    assert config.provider(SubsystemId.parse("UZ/GOV/STC/other")) is None


def test_tables(tmp_path: Path) -> None:
    fingerprint = "AB:" + "cd" * 31
    config = _load(
        tmp_path,
        MINIMAL
        + """
is_tls = true
is_client_ca = "keys/is-ca.pem"
is_listen = "0.0.0.0:5500"
peer_listen = "[::]:5501"
peer_address = "[2001:db8::1]:443"

[[client]]
subsystem = "UZ/GOV/STC/tax"
allow = ["10.1.0.0/16", "192.0.2.7"]
client_cert_sha256 = "{fingerprint}"

[[client]]
subsystem = "UZ/GOV/STC/audit"
client_cert_sha256 = "{zeros}"
log_mode = "metadata"

[[provider]]
subsystem = "UZ/GOV/STC/tax"
address = "tax.internal:7000"
log_mode = "metadata"
""".format(fingerprint=fingerprint, zeros="0" * 64),
    )
    tax, audit = config.clients
    assert tax.allow == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert tax.allows_address("10.1.200.3")
    assert tax.client_cert_sha256 == fingerprint.replace(":", "").lower()
    assert audit.allow == ()
    assert config.peer_listen == ("::", 5501)
    assert config.peer_address == ("2001:db8::1", 443)
    assert config.providers[0].log_mode is LogMode.METADATA
    assert config.providers[0].address == ("tax.internal", 7000)
    assert tax.log_mode is LogMode.FULL
    assert audit.log_mode is LogMode.METADATA
    tax_id, audit_id = SubsystemId.parse("UZ/GOV/STC/tax"), SubsystemId.parse("UZ/GOV/STC/audit")
    # A subsystem both calls out and serves: "metadata" on either side wins.
    assert config.log_modes() == {tax_id: LogMode.METADATA, audit_id: LogMode.METADATA}


REFUSALS: list[tuple[str, str, str, str]] = [
    # (case, toml appended to or replacing MINIMAL, key named, words of the message)
    ("unknown key", "colour = 1", "colour", "unknown key"),
    ("gateway_id missing", "-gateway_id", "gateway_id", "non-empty string"),
    ("gateway_id bad", 'gateway_id = "UZ/GOV/STC/main"', "gateway_id", "gw:"),
    ("anchor missing", "-anchor", "anchor", "non-empty string"),
    ("anchor not a string", "anchor = 3", "anchor", "non-empty string"),
    ("auth_key missing", "-auth_key", "auth_key", "non-empty string"),
    ("auth_certificate missing", "-auth_certificate", "auth_certificate", "string"),
    ("signing_key missing", "-signing_key", "signing_key", "non-empty string"),
    ("signing_certificate missing", "-signing_certificate", "signing_certificate", "string"),
    ("log_signing_key missing", "-log_signing_key", "log_signing_key", "non-empty string"),
    (
        "log_signing_certificate missing",
        "-log_signing_certificate",
        "log_signing_certificate",
        "string",
    ),
    ("log url scheme", 'message_log_url = "mysql://x"', "message_log_url", "postgresql://"),
    (
        "log both",
        'message_log_url = "postgresql://x/y"\nmessage_log = "m.db"',
        "message_log",
        "either",
    ),
    ("log synchronous", 'message_log_synchronous = "off"', "message_log_synchronous", "full"),
    ("tree head interval", "tree_head_interval_s = 0", "tree_head_interval_s", "positive"),
    ("tree head records", "tree_head_max_records = 0.5", "tree_head_max_records", "integer"),
    ("overdue", "timestamping_overdue_s = -1", "timestamping_overdue_s", "positive"),
    (
        "client log_mode",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nallow = ["127.0.0.1"]\nlog_mode = "none"',
        "client[0].log_mode",
        "metadata",
    ),
    ("token_public_keys missing", "-token_public_keys", "token_public_keys", "list"),
    ("token_public_keys empty", "token_public_keys = []", "token_public_keys", "non-empty list"),
    ("token_audience empty", 'token_audience = ""', "token_audience", "non-empty"),
    ("token_signing_key", "token_signing_key = 1", "token_signing_key", "string"),
    ("passphrase", "key_passphrase_file = true", "key_passphrase_file", "string"),
    ("globalconf_cache_dir", "globalconf_cache_dir = 1", "globalconf_cache_dir", "string"),
    (
        "refresh interval",
        "globalconf_refresh_interval_s = 0",
        "globalconf_refresh_interval_s",
        "positive number",
    ),
    ("is_listen", 'is_listen = "localhost"', "is_listen", "HOST:PORT"),
    ("is_listen port", 'is_listen = "h:70000"', "is_listen", "HOST:PORT"),
    ("is_tls", 'is_tls = "yes"', "is_tls", "true or false"),
    ("is_client_ca needed", "is_tls = true", "is_client_ca", "needed when is_tls = true"),
    ("is_client_ca without tls", 'is_client_ca = "ca.pem"', "is_client_ca", "is_tls = true"),
    ("is_client_ca empty", 'is_tls = true\nis_client_ca = ""', "is_client_ca", "non-empty"),
    ("peer_listen", "peer_listen = 5501", "peer_listen", "HOST:PORT"),
    ("admin_listen", 'admin_listen = ":5502"', "admin_listen", "HOST:PORT"),
    ("peer_address port 0", 'peer_address = "gw:0"', "peer_address", "port from 1"),
    ("peer_address needed", 'peer_listen = "0.0.0.0:5501"', "peer_address", "needed"),
    ("peer_address needed any port", 'peer_listen = "h:0"', "peer_address", "needed"),
    ("acl url scheme", 'acl_database_url = "mysql://x"', "acl_database_url", "postgresql://"),
    (
        "acl both",
        'acl_database_url = "postgresql://x/y"\nacl_database = "a.db"',
        "acl_database",
        "either",
    ),
    ("max_message_bytes", "max_message_bytes = 0", "max_message_bytes", "positive integer"),
    ("max_message_bytes bool", "max_message_bytes = true", "max_message_bytes", "integer"),
    ("max_message_bytes float", "max_message_bytes = 1.5", "max_message_bytes", "integer"),
    ("replay_window_s", "replay_window_s = -1", "replay_window_s", "positive integer"),
    ("max_skew_s", 'max_skew_s = "60"', "max_skew_s", "positive integer"),
    ("default_timeout_s", "default_timeout_s = 0", "default_timeout_s", "positive number"),
    ("default_timeout_s nan", "default_timeout_s = nan", "default_timeout_s", "positive"),
    ("client not tables", 'client = "x"', "client", "[[client]]"),
    (
        "client unknown key",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nport = 1',
        "client[0].port",
        "unknown",
    ),
    ("client no subsystem", '[[client]]\nallow = ["127.0.0.1"]', "client[0].subsystem", "string"),
    (
        "client bad subsystem",
        '[[client]]\nsubsystem = "UZ/GOV/STC"\nallow = ["127.0.0.1"]',
        "client[0].subsystem",
        "subsystem id",
    ),
    (
        "client of another member",
        '[[client]]\nsubsystem = "UZ/GOV/TAX/a"\nallow = ["127.0.0.1"]',
        "client[0].subsystem",
        "not a subsystem of this gateway's member UZ/GOV/STC",
    ),
    (
        "client twice",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nallow = ["127.0.0.1"]\n'
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nallow = ["127.0.0.1"]',
        "client[1].subsystem",
        "twice",
    ),
    (
        "client no way in",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"',
        "client[0].allow",
        "client_cert_sha256",
    ),
    (
        "client allow not list",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nallow = "127.0.0.1"',
        "client[0].allow",
        "list of IP",
    ),
    (
        "client allow bad ip",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nallow = ["127.0.0.1", "host.example"]',
        "client[0].allow[1]",
        "CIDR",
    ),
    (
        "client allow host bits",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nallow = ["10.0.0.1/8"]',
        "client[0].allow[0]",
        "host bits",
    ),
    (
        "client fingerprint short",
        'is_tls = true\nis_client_ca = "ca.pem"\n'
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nclient_cert_sha256 = "abcd"',
        "client[0].client_cert_sha256",
        "64 hex",
    ),
    (
        "client fingerprint without tls",
        '[[client]]\nsubsystem = "UZ/GOV/STC/a"\nclient_cert_sha256 = "' + "a" * 64 + '"',
        "client[0].client_cert_sha256",
        "is_tls = true",
    ),
    (
        "provider of another member",
        '[[provider]]\nsubsystem = "UZ/GOV/TAX/a"\naddress = "h:1"',
        "provider[0].subsystem",
        "one member per gateway",
    ),
    (
        "provider twice",
        '[[provider]]\nsubsystem = "UZ/GOV/STC/a"\naddress = "h:1"\n'
        '[[provider]]\nsubsystem = "UZ/GOV/STC/a"\naddress = "h:2"',
        "provider[1].subsystem",
        "twice",
    ),
    (
        "provider no address",
        '[[provider]]\nsubsystem = "UZ/GOV/STC/a"',
        "provider[0].address",
        "HOST:PORT",
    ),
    (
        "provider address port 0",
        '[[provider]]\nsubsystem = "UZ/GOV/STC/a"\naddress = "h:0"',
        "provider[0].address",
        "port from 1",
    ),
    (
        "provider log mode",
        '[[provider]]\nsubsystem = "UZ/GOV/STC/a"\naddress = "h:1"\nlog_mode = "none"',
        "provider[0].log_mode",
        '"full" or "metadata"',
    ),
    (
        "provider unknown key",
        '[[provider]]\nsubsystem = "UZ/GOV/STC/a"\naddress = "h:1"\ntls = true',
        "provider[0].tls",
        "unknown",
    ),
    ("provider not a table", "provider = [1]", "provider[0]", "[[provider]] table"),
]


def _variant(change: str) -> str:
    if change.startswith("-"):
        key = change[1:]
        return "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(f"{key} "))
    keys = {line.split(" =")[0] for line in change.splitlines() if " = " in line}
    kept = [line for line in MINIMAL.splitlines() if line.split(" =")[0] not in keys]
    # Top-level keys before any table.
    top, _, tables = change.partition("[[")
    return "\n".join([*kept, top]) + ("\n[[" + tables if tables else "")


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [pytest.param(change, key, words, id=case) for case, change, key, words in REFUSALS],
)
def test_refusals_name_file_and_key(tmp_path: Path, change: str, key: str, words: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(_variant(change), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"key {key!r}" in message
    assert words in message


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file.*serai gateway init"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("gateway_id = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(binary)


def test_public_surface() -> None:
    assert set(gateway.config.__all__) == {
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
        "LogSynchronous",
        "ClientConfig",
        "GatewayConfig",
        "LogMode",
        "ProviderConfig",
        "load_config",
        "parse_config",
        "render_config",
    }
