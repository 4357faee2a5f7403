"""The registry's SQL schema: its tables, its version, and the one-time set-up.

:func:`_create_or_check` runs inside the store's opening transaction: it creates what is
absent, upgrades an older schema, and refuses a database of a newer schema version or
another federation instance.

Versions: 1, the federation, audit log and counters; 2 adds the configuration log
(``conflog_entries``, ``conflog_nodes``, ``conflog_heads`` and the ``conflog`` counter,
:mod:`registry._sqlconflog`); 3 adds ``conflog_timestamps``, the RFC 3161 token of a head
(at most one per head, referencing it). Upgrading creates whatever the older version
lacks (empty: the log starts with the next publication, and heads signed before version
3 stay without a token, covered by the first token on a later head) and records the
current version, in the same transaction, so a database is either still at its old
version or wholly at the current one. Every upgrade only adds tables, so
``CREATE TABLE IF NOT EXISTS`` is the whole migration, the same from any older version.
"""

from __future__ import annotations

from typing import Final

from registry._sqldialect import _Connection, _Dialect
from registry.errors import RegistryError
from serai.errors import ErrorCode, Origin

#: Version of the schema this code creates and understands.
SCHEMA_VERSION: Final = 3
#: Older versions this code upgrades when it opens them.
_UPGRADABLE: Final = frozenset({1, 2})


def _create_or_check(db: _Connection, dialect: _Dialect, instance: str, where: str) -> None:
    """Create the schema if absent; refuse another schema version or instance."""
    if dialect.schema_lock:
        db.execute(dialect.schema_lock)
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    versions = db.rows("SELECT version FROM schema_version")
    if versions and versions[0][0] != SCHEMA_VERSION and versions[0][0] not in _UPGRADABLE:
        raise RegistryError(
            f"{where} has registry schema version {versions[0][0]}; this Serai "
            f"understands version {SCHEMA_VERSION}",
            code=ErrorCode.INVALID_CONFIG,
            origin=Origin.GATEWAY,
        )
    for statement in _schema(dialect):
        db.execute(statement)
    if not versions:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif versions[0][0] != SCHEMA_VERSION:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    for counter in ("audit", "serial", "conflog"):
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
            (counter,),
        )
    stored = db.rows("SELECT value FROM store_meta WHERE key = 'instance'")
    if not stored:
        db.execute(
            "INSERT INTO store_meta (key, value) VALUES ('instance', ?)",
            (instance,),
        )
    elif stored[0][0] != instance:
        raise RegistryError(
            f"{where} holds the registry of instance {stored[0][0]!r}, not "
            f"{instance!r}; refusing to open it",
            code=ErrorCode.INVALID_CONFIG,
            origin=Origin.GATEWAY,
        )


def _schema(dialect: _Dialect) -> list[str]:
    blob, timestamp = dialect.blob, dialect.timestamp
    return [
        "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS subsystems (id TEXT PRIMARY KEY,"
        " member_id TEXT NOT NULL REFERENCES members (id), name TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS subsystems_member ON subsystems (member_id)",
        "CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY,"
        " member_id TEXT NOT NULL REFERENCES members (id), address TEXT NOT NULL,"
        f" auth_certificate_sha256 {blob} NOT NULL UNIQUE, auth_certificate {blob} NOT NULL,"
        f" registered_at {timestamp} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS gateways_member ON gateways (member_id)",
        "CREATE TABLE IF NOT EXISTS gateway_subsystems ("
        " gateway_id TEXT NOT NULL REFERENCES gateways (id),"
        " subsystem_id TEXT NOT NULL REFERENCES subsystems (id),"
        " PRIMARY KEY (gateway_id, subsystem_id))",
        "CREATE INDEX IF NOT EXISTS gateway_subsystems_subsystem"
        " ON gateway_subsystems (subsystem_id)",
        "CREATE TABLE IF NOT EXISTS global_groups (id TEXT PRIMARY KEY, description TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS global_group_members ("
        " group_id TEXT NOT NULL REFERENCES global_groups (id), subject TEXT NOT NULL,"
        " subject_kind TEXT NOT NULL, PRIMARY KEY (group_id, subject))",
        "CREATE INDEX IF NOT EXISTS global_group_members_subject ON global_group_members (subject)",
        "CREATE TABLE IF NOT EXISTS certificate_authorities (name TEXT PRIMARY KEY,"
        f" root_certificate {blob} NOT NULL, root_sha256 {blob} NOT NULL UNIQUE,"
        " ocsp_urls TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ca_intermediates ("
        " ca_name TEXT NOT NULL REFERENCES certificate_authorities (name),"
        f" position INTEGER NOT NULL, certificate {blob} NOT NULL,"
        " PRIMARY KEY (ca_name, position))",
        "CREATE TABLE IF NOT EXISTS timestamping_authorities (name TEXT PRIMARY KEY,"
        " url TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS tsa_certificates ("
        " tsa_name TEXT NOT NULL REFERENCES timestamping_authorities (name),"
        f" position INTEGER NOT NULL, certificate {blob} NOT NULL,"
        " PRIMARY KEY (tsa_name, position))",
        "CREATE TABLE IF NOT EXISTS service_descriptors ("
        " provider TEXT PRIMARY KEY REFERENCES subsystems (id),"
        f" file_descriptor_set {blob} NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_log (sequence BIGINT PRIMARY KEY,"
        f" at {timestamp} NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
        " target TEXT NOT NULL, details TEXT NOT NULL)",
        # version 2: the configuration log
        "CREATE TABLE IF NOT EXISTS conflog_entries (leaf_index BIGINT PRIMARY KEY,"
        f" serial BIGINT NOT NULL UNIQUE, envelope {blob} NOT NULL,"
        f" appended_at {timestamp} NOT NULL)",
        "CREATE TABLE IF NOT EXISTS conflog_nodes (level INTEGER NOT NULL,"
        f" node_index BIGINT NOT NULL, hash {blob} NOT NULL, PRIMARY KEY (level, node_index))",
        f"CREATE TABLE IF NOT EXISTS conflog_heads (tree_size BIGINT PRIMARY KEY, sth {blob}"
        " NOT NULL)",
        # version 3: time-stamps of the configuration log's heads
        "CREATE TABLE IF NOT EXISTS conflog_timestamps ("
        " tree_size BIGINT PRIMARY KEY REFERENCES conflog_heads (tree_size),"
        f" token {blob} NOT NULL, obtained_at {timestamp} NOT NULL)",
    ]
