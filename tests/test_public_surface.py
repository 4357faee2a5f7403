"""Pins the public surface of every module not pinned by its own tests: a name added to
or dropped from an ``__all__`` is a decision, made here on purpose."""

from __future__ import annotations

import importlib

import pytest

SURFACE: dict[str, set[str]] = {
    "certs.ca": {
        "CertStatus",
        "CertificateAuthority",
        "CertificateRecord",
        "CertificateRecords",
        "issuer_key_sha1",
        "self_signed_root",
        "subject_name",
    },
    "certs.keys": {
        "KeyAlgorithm",
        "PrivateKey",
        "PublicKey",
        "generate_private_key",
        "load_certificate_chain",
        "load_private_key",
        "signature_hash_for",
        "write_certificate_chain",
        "write_private_key",
    },
    "certs.profiles": {
        "EKU_CONFIGURATION_SIGNING",
        "EKU_LOG_SIGNING",
        "Profile",
        "ProfileSpec",
        "SERAI_OID_ARC",
        "key_usage_extension",
        "spec_for",
    },
    "certs.pkidir": {"DEFAULT_OCSP_URL", "DEFAULT_TSA_URL", "PKIDirectory", "PKISettings"},
    "certs.revocation": {"OCSPResponsesChecker", "fetch_for_chain"},
    "certs.errors": {"CertificateError", "KeyFileError", "OCSPError", "PKIError", "TimestampError"},
    "certs.timestamp": {
        "IMPRINT_HASHES",
        "TIMESTAMP_QUERY",
        "TIMESTAMP_REPLY",
        "TimeStampRespStructure",
        "TimestampClient",
        "TimestampToken",
        "build_query",
        "new_nonce",
        "verify_reply",
        "verify_token",
    },
    "certs.tsa": {
        "DEFAULT_ACCURACY",
        "DEFAULT_MAX_BODY_BYTES",
        "DEFAULT_POLICY",
        "TimeStampAuthority",
        "create_app",
    },
    "certs.cli": {"register"},
    "certs.cli_tsa": {"DEFAULT_LISTEN", "register_tsa", "run_tsa_serve"},
    "serai.cliutil": {
        "format_address",
        "issue_token",
        "load_token_public_key",
        "log_event",
        "parse_listen",
        "read_bearer_token",
        "read_passphrase",
        "termination_event",
    },
    "serai.tomlconf": {"TomlReader", "parse_toml", "read_config_text", "toml_string"},
    "serai.tlspolicy": {"CIPHER_SUITES_VARIABLE", "TLS12_CIPHER_SUITES", "apply", "tls12_accepted"},
    "serai.rpcserver": {"management_server", "mark_serving"},
    "serai.localprocs": {
        "SERAI",
        "Process",
        "free_port",
        "serai_command",
        "start",
        "wait_until_published",
    },
    "serai.rpcerrors": {
        "MAX_TRAILER_CHARS",
        "abort_with",
        "error_from_rpc",
        "error_trailer",
        "internal_error",
    },
    "serai.cli": {"main"},
    "registry.model": {
        "ApprovedCA",
        "ApprovedTSA",
        "Federation",
        "Gateway",
        "GlobalConfiguration",
        "GlobalGroup",
        "Member",
        "ServiceDescriptor",
        "Subsystem",
        "check_address",
        "check_name",
    },
    "registry.codec": {
        "TrustAnchor",
        "ca_from_proto",
        "ca_to_proto",
        "decode_anchor",
        "decode_configuration",
        "encode_anchor",
        "encode_configuration",
        "tsa_from_proto",
        "tsa_to_proto",
    },
    "registry.store": {"AuditEntry", "Change", "RegistryStore"},
    "registry.errors": {"ConfigurationError", "RegistryError"},
    "serai.demo": {"register"},
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_public_surface(module: str) -> None:
    imported = importlib.import_module(module)
    assert set(imported.__all__) == SURFACE[module]
    for name in imported.__all__:
        assert hasattr(imported, name), f"{module}.__all__ names missing {name}"
