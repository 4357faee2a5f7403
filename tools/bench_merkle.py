"""Benchmark of serai.merkle: proofs from stored perfect nodes at a million leaves.

Builds a :class:`serai.merkle.MemoryTree` of ``--leaves`` entries (every perfect subtree
stored, as a real store keeps them), then times ``--queries`` random inclusion and
consistency proofs, generated against random earlier tree sizes and verified, and prints
the median and p99 of each in microseconds, with the proofs' mean length.

    .venv/bin/python tools/bench_merkle.py
    .venv/bin/python tools/bench_merkle.py --leaves 100000 --queries 1000 --json

The getter is the in-memory store, so the figures are the module's own cost: a SQL store
adds one query per proof on top.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from serai.merkle import (
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_at,
    verify_consistency,
    verify_inclusion,
)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=9162)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    tree = MemoryTree()
    start = time.perf_counter()
    for i in range(args.leaves):
        tree.append(i.to_bytes(8, "big"))
    build_s = time.perf_counter() - start
    nodes = tree.nodes

    rng = random.Random(args.seed)  # noqa: S311  (query positions, not secrets)
    rows: dict[str, list[float]] = {
        "inclusion proof": [],
        "inclusion verify": [],
        "consistency proof": [],
        "consistency verify": [],
    }
    lengths = {"inclusion": 0, "consistency": 0}
    for _ in range(args.queries):
        size = rng.randint(1, args.leaves)
        index = rng.randrange(size)
        old = rng.randint(1, size)
        root = root_at(size, nodes)
        old_root = root_at(old, nodes)
        leaf = leaf_hash(index.to_bytes(8, "big"))

        t0 = time.perf_counter_ns()
        proof = inclusion_proof(index, size, nodes)
        t1 = time.perf_counter_ns()
        verify_inclusion(leaf, index, size, proof, root)
        t2 = time.perf_counter_ns()
        cons = consistency_proof(old, size, nodes)
        t3 = time.perf_counter_ns()
        verify_consistency(old, size, old_root, root, cons)
        t4 = time.perf_counter_ns()
        rows["inclusion proof"].append((t1 - t0) / 1000)
        rows["inclusion verify"].append((t2 - t1) / 1000)
        rows["consistency proof"].append((t3 - t2) / 1000)
        rows["consistency verify"].append((t4 - t3) / 1000)
        lengths["inclusion"] += len(proof)
        lengths["consistency"] += len(cons)

    summary = {
        name: {
            "median_us": round(statistics.median(samples), 1),
            "p99_us": round(_percentile(samples, 0.99), 1),
        }
        for name, samples in rows.items()
    }
    mean_lengths = {kind: round(total / args.queries, 1) for kind, total in lengths.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "leaves": args.leaves,
                    "queries": args.queries,
                    "build_s": round(build_s, 1),
                    "stored_nodes": len(nodes),
                    "timings": summary,
                    "mean_proof_hashes": mean_lengths,
                }
            )
        )
        return
    print(
        f"{args.leaves:,} leaves, {len(nodes):,} stored nodes, built in {build_s:.1f} s; "
        f"{args.queries:,} random queries"
    )
    print(f"{'operation':<20} {'median µs':>10} {'p99 µs':>10}")
    for name, figures in summary.items():
        print(f"{name:<20} {figures['median_us']:>10} {figures['p99_us']:>10}")
    print(
        f"mean proof length: inclusion {mean_lengths['inclusion']} hashes, "
        f"consistency {mean_lengths['consistency']} hashes"
    )


if __name__ == "__main__":
    main()
