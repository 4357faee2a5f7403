"""Benchmark of global configuration lookups: what a gateway pays per request.

Builds a synthetic federation (by default 1,000 members, 5,000 subsystems, 1,000
gateways, 50 global groups, some nested and one cycle, 3 approved CAs, 2 TSAs), then
times, with ``time.perf_counter_ns``:

* the whole refresh path once per round: verify the signed envelope, decode it, and
  build the :class:`~registry.snapshot.ConfigurationSnapshot` (median of ``--builds``);
* every lookup of the snapshot, each over ``--calls`` calls spread over many keys, in
  ``--rounds`` rounds; the median per-call time of the rounds is reported.

    .venv/bin/python tools/bench_globalconf_lookups.py
    .venv/bin/python tools/bench_globalconf_lookups.py --json

Prints a table (``--json`` for one JSON object). Numbers are for this machine and this
run; compare runs on one machine only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from certs.ca import self_signed_root
from certs.keys import generate_private_key
from registry.client import TrustedConfiguration
from registry.codec import TrustAnchor, decode_configuration, encode_configuration
from registry.model import (
    ApprovedCA,
    ApprovedTSA,
    Federation,
    Gateway,
    GlobalConfiguration,
    GlobalGroup,
    Member,
    Subsystem,
)
from registry.signing import sign_configuration, verify_signed_configuration
from registry.snapshot import ConfigurationSnapshot
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject, SubsystemId

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--subsystems", type=int, default=5000)
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per lookup per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per lookup")
    parser.add_argument("--builds", type=int, default=5, help="snapshot builds timed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.gateways > args.members or args.subsystems < args.members:
        parser.error("need gateways <= members <= subsystems")

    conf, cas = build_configuration(args.members, args.subsystems, args.gateways, args.groups)
    report = run(conf, cas, calls=args.calls, rounds=args.rounds, builds=args.builds)
    report["sizes"] = {
        "members": args.members,
        "subsystems": args.subsystems,
        "gateways": args.gateways,
        "groups": args.groups,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


# -- the synthetic federation -----------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Keys to look up, so each lookup touches many entries rather than one hot one."""

    subsystems: list[SubsystemId]
    unknown_subsystems: list[SubsystemId]
    members: list[MemberId]
    auth_hashes: list[bytes]
    gateway_ids: list[GatewayId]
    groups: list[GlobalGroupId]
    ca_ders: list[bytes]


def build_configuration(
    n_members: int, n_subsystems: int, n_gateways: int, n_groups: int
) -> tuple[GlobalConfiguration, list[bytes]]:
    members = [
        MemberId(instance="UZ", member_class="GOV", member_code=f"M{i:05d}")
        for i in range(n_members)
    ]
    subsystems = [members[i % n_members].subsystem(f"s{i:05d}") for i in range(n_subsystems)]
    by_member: dict[MemberId, list[SubsystemId]] = {}
    for sub in subsystems:
        by_member.setdefault(sub.member, []).append(sub)
    gateways = [
        Gateway(
            id=members[i].gateway("main"),
            address=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:5500",
            auth_certificate_sha256=hashlib.sha256(f"auth-{i}".encode()).digest(),
            subsystems=frozenset(by_member[members[i]]),
        )
        for i in range(n_gateways)
    ]
    group_ids = [GlobalGroupId(instance="UZ", group_code=f"g{i:03d}") for i in range(n_groups)]
    groups = []
    for i, gid in enumerate(group_ids):
        subjects: set[Subject] = set(subsystems[i * 37 % n_subsystems :][:60])
        subjects.update(members[i * 13 % n_members :][:20])
        if i % 5 and i + 1 < n_groups:
            subjects.add(group_ids[i + 1])  # chains of nested groups
        if i == n_groups - 1 and n_groups > 1:
            subjects.add(group_ids[n_groups - 3 if n_groups > 2 else 0])  # one cycle
        groups.append(GlobalGroup(id=gid, members=frozenset(subjects)))
    ca_ders = []
    cas = []
    for i in range(3):
        der = self_signed_root(generate_private_key(), name=f"CA {i}").public_bytes(
            serialization.Encoding.DER
        )
        ca_ders.append(der)
        cas.append(
            ApprovedCA(
                name=f"CA {i}", root_certificate=der, ocsp_urls=(f"http://ocsp{i}.example/",)
            )
        )
    tsas = tuple(
        ApprovedTSA(name=f"TSA {i}", url=f"http://tsa{i}.example/", certificates=(ca_ders[i],))
        for i in range(2)
    )
    federation = Federation(
        instance="UZ",
        members=tuple(Member(id=m, name=f"Member {m.member_code}") for m in members),
        subsystems=tuple(Subsystem(id=s) for s in subsystems),
        gateways=tuple(gateways),
        certificate_authorities=tuple(cas),
        timestamping_authorities=tsas,
        global_groups=tuple(groups),
    )
    conf = GlobalConfiguration(
        federation=federation,
        serial=1,
        generated_at=NOW,
        expires_at=NOW + dt.timedelta(minutes=10),
    )
    return conf, ca_ders


# -- timing -----------------------------------------------------------------------------------


def run(
    conf: GlobalConfiguration, ca_ders: list[bytes], *, calls: int, rounds: int, builds: int
) -> dict[str, object]:
    data = encode_configuration(conf)
    key = generate_private_key()
    cert = self_signed_root(key, name="bench signer")  # verification ignores the profile
    envelope = sign_configuration(data, key=key, certificate=cert)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    anchor = TrustAnchor(
        instance="UZ",
        download_url="http://registry.invalid/",
        signing_certificates=(cert_der,),
        generated_at=NOW,
    )

    refresh: dict[str, float] = {
        "verify_signature_ms": _median_ms(
            lambda: verify_signed_configuration(envelope, signing_certificates=[cert_der]),
            builds,
        ),
        "decode_ms": _median_ms(lambda: decode_configuration(data), builds),
        "snapshot_build_ms": _median_ms(lambda: ConfigurationSnapshot(conf), builds),
        "full_check_ms": _median_ms(
            lambda: TrustedConfiguration(anchor).check(envelope, now=NOW), builds
        ),
    }
    snap = ConfigurationSnapshot(conf)
    fed = conf.federation
    subsystems = [s.id for s in fed.subsystems]
    keys = Keys(
        subsystems=subsystems,
        unknown_subsystems=[s.member.subsystem("nope") for s in subsystems],
        members=[m.id for m in fed.members],
        auth_hashes=[g.auth_certificate_sha256 for g in fed.gateways],
        gateway_ids=[g.id for g in fed.gateways],
        groups=[g.id for g in fed.global_groups],
        ca_ders=ca_ders,
    )
    lookups = _lookups(snap, keys)
    results = {name: _per_call_ns(fn, n, calls, rounds) for name, (fn, n) in lookups.items()}
    return {
        "configuration_bytes": len(data),
        "envelope_bytes": len(envelope),
        "refresh": refresh,
        "lookups_ns": results,
        "calls_per_round": calls,
        "rounds": rounds,
    }


def _lookups(
    snap: ConfigurationSnapshot, k: Keys
) -> dict[str, tuple[Callable[[int], object], int]]:
    """Name -> (call with an index, number of distinct keys)."""
    groups = k.groups
    n_groups = len(groups) or 1
    return {
        "gateways_serving": (lambda i: snap.gateways_serving(k.subsystems[i]), len(k.subsystems)),
        "gateways_serving (unknown)": (
            lambda i: snap.gateways_serving(k.unknown_subsystems[i]),
            len(k.unknown_subsystems),
        ),
        "gateway_by_auth_hash": (
            lambda i: snap.gateway_by_auth_hash(k.auth_hashes[i]),
            len(k.auth_hashes),
        ),
        "gateway": (lambda i: snap.gateway(k.gateway_ids[i]), len(k.gateway_ids)),
        "member_of": (lambda i: snap.member_of(k.subsystems[i]), len(k.subsystems)),
        "member": (lambda i: snap.member(k.members[i]), len(k.members)),
        "subsystem": (lambda i: snap.subsystem(k.subsystems[i]), len(k.subsystems)),
        "has_subsystem": (lambda i: snap.has_subsystem(k.subsystems[i]), len(k.subsystems)),
        "is_member_of_group": (
            lambda i: snap.is_member_of_group(k.subsystems[i], groups[i % n_groups]),
            len(k.subsystems),
        ),
        "groups_of": (lambda i: snap.groups_of(k.subsystems[i]), len(k.subsystems)),
        "ocsp_urls_for (DER)": (lambda i: snap.ocsp_urls_for(k.ca_ders[i]), len(k.ca_ders)),
        "tsa_for (DER)": (lambda i: snap.tsa_for(k.ca_ders[i]), len(k.ca_ders)),
        "service_descriptor": (
            lambda i: snap.service_descriptor(k.subsystems[i]),
            len(k.subsystems),
        ),
        "approved_cas": (lambda _i: snap.approved_cas, 1),
        "trust_store": (lambda _i: snap.trust_store, 1),
    }


def _per_call_ns(fn: Callable[[int], object], n_keys: int, calls: int, rounds: int) -> float:
    """Median over rounds of (round time / calls), minus the empty loop's cost."""
    indices = [i % n_keys for i in range(calls)]
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for i in indices:
            fn(i)
        lookup = time.perf_counter_ns() - start
        start = time.perf_counter_ns()
        for i in indices:
            _noop(i)
        empty = time.perf_counter_ns() - start
        samples.append(max(0, lookup - empty) / calls)
    return statistics.median(samples)


def _noop(i: int) -> object:
    return i


def _median_ms(fn: Callable[[], object], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(samples)


def print_table(report: dict[str, object]) -> None:
    sizes = report["sizes"]
    assert isinstance(sizes, dict)
    print(
        "federation: "
        + ", ".join(f"{v} {k}" for k, v in sizes.items())
        + f"; configuration {report['configuration_bytes']} bytes"
    )
    refresh = report["refresh"]
    assert isinstance(refresh, dict)
    print("\nrefresh path (median)                 ms")
    for name, value in refresh.items():
        print(f"  {name:<34}{value:>9.2f}")
    lookups = report["lookups_ns"]
    assert isinstance(lookups, dict)
    print(
        f"\nlookup (median of {report['rounds']} rounds x {report['calls_per_round']} calls)"
        "   ns/call    us/call"
    )
    for name, value in lookups.items():
        print(f"  {name:<34}{value:>9.0f}  {value / 1000:>9.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
