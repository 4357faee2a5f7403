"""Benchmark: generating and signing the global configuration of a large federation.

Builds a SQLite registry store in a temporary directory with ``--members`` members
(default 1,000), ``--subsystems-per-member`` subsystems each (default 5, so 5,000) and
one gateway per member (1,000, each with its own authentication certificate issued by a
development PKI), loaded through the store's bulk path (``import_federation``). Then it
times what the registry does on every publication -- ``store.federation()``, the next
serial, ``encode_configuration``, ``sign_configuration`` (:meth:`Publisher.generate`) --
over ``--runs`` runs, and prints the median, the spread and the envelope size.

Target: median under 1 s.

    .venv/bin/python tools/bench_globalconf_generate.py [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from certs.keys import generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry.model import ApprovedCA, Federation, Gateway, Member, Subsystem
from registry.publisher import Publisher
from registry.sqlstore import SqlRegistryStore
from registry.store import Change
from serai.identifiers import MemberId

TARGET_S = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--subsystems-per-member", type=int, default=5)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="serai-bench-globalconf-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        store, publisher = _build(root, args.members, args.subsystems_per_member)
        setup_s = time.perf_counter() - started
        try:
            timings = []
            size = 0
            for _ in range(args.runs):
                t0 = time.perf_counter()
                published = publisher.generate()
                timings.append(time.perf_counter() - t0)
                size = len(published.envelope)
        finally:
            store.close()

    result = {
        "members": args.members,
        "subsystems": args.members * args.subsystems_per_member,
        "gateways": args.members,
        "runs": args.runs,
        "median_s": round(statistics.median(timings), 4),
        "min_s": round(min(timings), 4),
        "max_s": round(max(timings), 4),
        "envelope_bytes": size,
        "setup_s": round(setup_s, 1),
        "target_s": TARGET_S,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"generate+sign of {result['members']} members, {result['subsystems']} subsystems, "
            f"{result['gateways']} gateways ({args.runs} runs, SQLite)"
        )
        print(
            f"  median {result['median_s']:.3f} s  (min {result['min_s']:.3f}, "
            f"max {result['max_s']:.3f}; target < {TARGET_S:.1f} s)"
        )
        print(f"  envelope {size:,} bytes; store set-up took {result['setup_s']} s")
    return 0 if result["median_s"] < TARGET_S else 1


def _build(root: Path, members: int, per_member: int) -> tuple[SqlRegistryStore, Publisher]:
    pki = PKIDirectory.init(root / "pki", instance="UZ")
    ca = pki.issuing_ca()
    der = serialization.Encoding.DER
    approved = ApprovedCA(
        name="dev-ca",
        root_certificate=pki.root_certificate().public_bytes(der),
        intermediate_certificates=(ca.certificate.public_bytes(der),),
        ocsp_urls=("http://127.0.0.1:8890/",),
    )
    gateway_key = generate_private_key().public_key()  # one key, many certificates: fast
    member_list, subsystems, gateways = [], [], []
    for n in range(members):
        member_id = MemberId(instance="UZ", member_class="GOV", member_code=f"M{n:05d}")
        member_list.append(Member(id=member_id, name=f"Agency {n}"))
        subs = [member_id.subsystem(f"sub{k}") for k in range(per_member)]
        subsystems += [Subsystem(id=s, name=f"System {s.subsystem_code}") for s in subs]
        gateway_id = member_id.gateway("main")
        cert = ca.issue(Profile.AUTH, str(gateway_id), gateway_key)
        gateways.append(
            Gateway.with_certificate(
                id=gateway_id,
                address=f"gw{n}.example:5500",
                auth_certificate=cert.public_bytes(der),
                subsystems=subs,
            )
        )
    federation = Federation(
        instance="UZ",
        members=tuple(member_list),
        subsystems=tuple(subsystems),
        gateways=tuple(gateways),
        certificate_authorities=(approved,),
    )
    store = SqlRegistryStore.open_sqlite(root / "registry.db", instance="UZ")
    store.import_federation(federation, Change(actor="bench", action="ImportFederation"))
    signing_key = generate_private_key()
    signing_cert = ca.issue(
        Profile.CONFIGURATION_SIGNING, "UZ bench configuration signing", signing_key.public_key()
    )
    publisher = Publisher(
        store=store,
        signing_key=signing_key,
        signing_certificate=signing_cert,
        publish_dir=root / "publish",
    )
    return store, publisher


if __name__ == "__main__":
    sys.exit(main())
