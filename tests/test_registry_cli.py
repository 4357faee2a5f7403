"""``serai registry`` as an operator runs it: real processes, real ports, real files."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import registry.cli
import registry.config
from registry.codec import decode_anchor, decode_configuration
from registry.config import load_config
from registry.signing import verify_signed_configuration
from serai.errors import ErrorCode, SeraiError
from serai.localprocs import free_port

SERAI = [sys.executable, "-m", "serai.cli"]


def serai(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SERAI, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"serai {args} failed: {result.stderr}")
    return result


class Serving:
    """A ``serai registry serve`` process and the JSON events it writes to stderr."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [*SERAI, "registry", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, object]] = queue.Queue()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def wait_for(self, event: str) -> dict[str, object]:
        while True:
            try:
                item = self.events.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"no {event} event; stderr: {''.join(self.lines)}") from None
            if item.get("event") == event:
                return item

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    serai("pki", "init", "--dir", tmp_path / "pki", "--instance", "UZ")
    grpc_listen, http_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    out = serai(
        "registry",
        "init",
        "--dir",
        tmp_path / "reg",
        "--instance",
        "UZ",
        "--pki",
        tmp_path / "pki",
        "--grpc-listen",
        grpc_listen,
        "--http-listen",
        http_listen,
    )
    assert "created registry for instance UZ" in out.stdout
    text = (tmp_path / "reg" / "registry.toml").read_text()
    assert f'grpc_listen = "{grpc_listen}"' in text
    assert f'http_listen = "{http_listen}"' in text
    return tmp_path / "reg"


@pytest.fixture
def serving(registry_dir: Path) -> Iterator[Serving]:
    server = Serving(registry_dir / "registry.toml")
    try:
        yield server
    finally:
        server.kill()


def test_init_refuses_to_overwrite_and_checks_instance(registry_dir: Path, tmp_path: Path) -> None:
    again = serai(
        "registry",
        "init",
        "--dir",
        registry_dir,
        "--instance",
        "UZ",
        "--pki",
        tmp_path / "pki",
        check=False,
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    other = serai(
        "registry",
        "init",
        "--dir",
        tmp_path / "kg",
        "--instance",
        "KG",
        "--pki",
        tmp_path / "pki",
        check=False,
    )
    assert other.returncode == 2
    assert "instance UZ, not KG" in other.stderr
    config = load_config(registry_dir / "registry.toml")
    assert config.token_audience == "serai-registry:UZ"
    assert (registry_dir / "keys" / "token.key").stat().st_mode & 0o077 == 0


def test_operator_session(registry_dir: Path, serving: Serving, tmp_path: Path) -> None:
    listening = serving.wait_for("registry_listening")
    serving.wait_for("globalconf_published")
    config = str(registry_dir / "registry.toml")
    token = tmp_path / "admin.jwt"
    serai(
        "registry",
        "token",
        "issue",
        "--config",
        config,
        "--role",
        "registry-admin",
        "--subject",
        "alice",
        "--out",
        token,
    )
    observer = serai(
        "registry", "token", "issue", "--config", config, "--role", "observer", "--subject", "bob"
    ).stdout.strip()
    env = {**os.environ, "SERAI_REGISTRY": str(listening["grpc"])}
    admin = ("--token-file", str(token))

    out = serai(
        "registry", "member", "add", "UZ/GOV/STC", "--name", "State Tax Committee", *admin, env=env
    )
    assert "added member UZ/GOV/STC" in out.stdout
    serai("registry", "subsystem", "add", "UZ/GOV/STC/tax", "--name", "Tax", *admin, env=env)
    serai(
        "pki",
        "issue",
        "--dir",
        tmp_path / "pki",
        "--profile",
        "auth",
        "--subject",
        "UZ/GOV/STC/gw:main",
        "--out",
        tmp_path / "gw",
    )
    serai(
        "registry",
        "gateway",
        "add",
        "UZ/GOV/STC/gw:main",
        "--address",
        "127.0.0.1:5500",
        "--cert",
        tmp_path / "gw.pem",
        "--subsystem",
        "UZ/GOV/STC/tax",
        *admin,
        env=env,
    )
    serai("registry", "group", "add", "UZ/group:tax", "--description", "Tax", *admin, env=env)
    serai("registry", "group", "add-member", "UZ/group:tax", "UZ/GOV/STC/tax", *admin, env=env)

    listed = serai(
        "registry", "member", "list", "--json", env={**env, "SERAI_REGISTRY_TOKEN": observer}
    )
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows[0]["id"] == "UZ/GOV/STC"
    assert rows[0]["subsystems"][0]["id"] == "UZ/GOV/STC/tax"
    human = serai("registry", "gateway", "list", *admin, env=env).stdout
    assert "UZ/GOV/STC/gw:main  127.0.0.1:5500" in human
    assert "dev-ca" in serai("registry", "ca", "list", *admin, env=env).stdout
    assert "dev-tsa" in serai("registry", "tsa", "list", *admin, env=env).stdout
    assert "UZ/group:tax" in serai("registry", "group", "list", *admin, env=env).stdout

    duplicate = serai(
        "registry", "member", "add", "UZ/GOV/STC", "--name", "x", *admin, env=env, check=False
    )
    assert duplicate.returncode == 2
    assert duplicate.stderr.startswith("serai: error: already_exists: ")
    assert len(duplicate.stderr.strip().splitlines()) == 1
    denied = serai(
        "registry",
        "member",
        "add",
        "UZ/GOV/X",
        "--name",
        "x",
        env={**env, "SERAI_REGISTRY_TOKEN": observer},
        check=False,
    )
    assert denied.returncode == 2
    assert denied.stderr.startswith("serai: error: permission_denied: ")
    anonymous = serai(
        "registry", "member", "list", "--token-file", tmp_path / "missing", env=env, check=False
    )
    assert anonymous.returncode == 2

    audit = serai("registry", "audit", "--json", *admin, env=env).stdout.splitlines()
    entries = [json.loads(line) for line in audit]
    assert [e["actor"] for e in entries[:2]] == ["local", "local"]
    assert {e["actor"] for e in entries[2:]} == {"alice"}
    status = json.loads(serai("registry", "status", "--json", *admin, env=env).stdout)
    assert status["instance_id"] == "UZ"

    anchor_path = tmp_path / "anchor.bin"
    serai("registry", "anchor", "--config", config, "--out", anchor_path)
    anchor = decode_anchor(anchor_path.read_bytes())
    assert anchor.instance == "UZ"
    assert anchor.download_url == f"http://{listening['http']}/globalconf/v1/current"
    # Publication follows the changes; wait until the group is in what is served.
    while True:
        with urllib.request.urlopen(anchor.download_url, timeout=30) as response:
            envelope = response.read()
        data = verify_signed_configuration(
            envelope, signing_certificates=anchor.signing_certificates
        )
        conf = decode_configuration(data)
        if conf.federation.global_groups:
            break
        serving.wait_for("globalconf_published")
    assert [str(g.id) for g in conf.federation.gateways] == ["UZ/GOV/STC/gw:main"]
    assert {c.name for c in conf.federation.certificate_authorities} == {"dev-ca"}

    serving.process.send_signal(signal.SIGTERM)
    assert serving.process.wait(timeout=60) == 0
    serving.wait_for("registry_stopped")


def test_init_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    serai("pki", "init", "--dir", tmp_path / "pki", "--instance", "UZ")
    result = serai(
        "registry",
        "init",
        "--dir",
        tmp_path / "reg",
        "--instance",
        "UZ",
        "--pki",
        tmp_path / "pki",
        "--grpc-listen",
        "nowhere",
        check=False,
    )
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "reg").exists()


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('instance = "U Z"\n')
    result = serai("registry", "serve", "--config", config, check=False)
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "key 'instance'" in result.stderr


def test_public_surface() -> None:
    assert set(registry.cli.__all__) == {"open_store", "register"}


_SIGNING = '[[configuration_signing]]\nkey = "k"\ncertificate = "c"\n'
_BASE = 'instance = "UZ"\ntoken_public_keys = ["t.pem"]\n'
BAD_CONFIGS = {
    "unknown key": (_BASE + "colour = 1\n" + _SIGNING, "'colour'"),
    "listen not text": (_BASE + "http_listen = 4401\n" + _SIGNING, "'http_listen'"),
    "listen without port": (_BASE + 'grpc_listen = "localhost"\n' + _SIGNING, "'grpc_listen'"),
    "not postgres": (_BASE + 'database_url = "mysql://x"\n' + _SIGNING, "'database_url'"),
    "both databases": (
        _BASE + 'database = "a.db"\ndatabase_url = "postgresql://x"\n' + _SIGNING,
        "'database'",
    ),
    "no signing": (_BASE, "'configuration_signing'"),
    "first entry keyless": (
        _BASE + '[[configuration_signing]]\ncertificate = "c"\n',
        "'configuration_signing[0].key'",
    ),
    "zero validity": (_BASE + "configuration_validity_s = 0\n" + _SIGNING, "positive"),
    "no token keys": ('instance = "UZ"\n' + _SIGNING, "'token_public_keys'"),
    "not toml": ("instance = \n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_refusals_name_file_and_key(case: str, tmp_path: Path) -> None:
    text, fragment = BAD_CONFIGS[case]
    path = tmp_path / "registry.toml"
    path.write_text(text)
    with pytest.raises(SeraiError) as info:
        load_config(path)
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert str(path) in info.value.message
    assert fragment in info.value.message


def test_config_defaults(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(_BASE + _SIGNING)
    config = load_config(path)
    assert config.grpc_listen == ("127.0.0.1", 4400)
    assert config.http_listen == ("127.0.0.1", 4401)
    assert config.database == tmp_path.resolve() / "registry.db"
    assert config.database_url is None
    assert config.token_audience == "serai-registry:UZ"
    assert config.configuration_validity_s == 600
    assert config.regeneration_interval_s == 60
    assert config.download_url == "http://127.0.0.1:4401/globalconf/v1/current"


def test_config_public_surface() -> None:
    assert set(registry.config.__all__) == {
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
    }
