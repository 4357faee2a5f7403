"""serai.merkle against a Merkle tree no one here wrote: pymerkle (its default sha256 tree
with the 0x00/0x01 "security" prefixes, which is RFC 9162's hashing and shape).

What is compared, and why not more: pymerkle's roots and inclusion paths are RFC 9162's
(its path is the leaf hash followed by the RFC proof, with leaf indices counted from 1).
Its consistency proofs are not: they carry the hashes of the old tree's perfect subtrees
as well, with its own "rule" and "subset" bits, so they are not compared hash by hash;
instead both sides' proofs must agree on the roots they tie together. The hash-by-hash
check of consistency proofs is in tests/test_merkle.py (CT vectors, the RFC's recursion).
"""

from __future__ import annotations

import random

import pytest
from pymerkle import InmemoryTree
from pymerkle import verify_consistency as pymerkle_verify_consistency

from serai.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion

pytestmark = pytest.mark.interop

SIZE = 300


@pytest.fixture(scope="module")
def trees() -> tuple[MemoryTree, InmemoryTree]:
    ours = MemoryTree()
    theirs = InmemoryTree(algorithm="sha256")
    for i in range(SIZE):
        data = b"interop record %d" % i
        ours.append(data)
        theirs.append_entry(data)
    return ours, theirs


def test_pymerkle_hashes_as_rfc_9162() -> None:
    theirs = InmemoryTree(algorithm="sha256")
    assert theirs.hash_buff(b"x") == leaf_hash(b"x")
    theirs.append_entry(b"x")
    assert theirs.get_leaf(1) == leaf_hash(b"x")


def test_roots_at_every_size(trees: tuple[MemoryTree, InmemoryTree]) -> None:
    ours, theirs = trees
    for size in range(SIZE + 1):
        assert ours.root(size) == theirs.get_root(size), size


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 31, 32, 33, 64, 100, 255, 256, 257, SIZE])
def test_inclusion_proofs_of_every_leaf(trees: tuple[MemoryTree, InmemoryTree], size: int) -> None:
    ours, theirs = trees
    root = ours.root(size)
    for index in range(size):
        proof = ours.inclusion_proof(index, size)
        path = theirs.prove_inclusion(index + 1, size).path
        assert path[0] == leaf_hash(b"interop record %d" % index)
        assert path[1:] == proof, (index, size)
        verify_inclusion(path[0], index, size, proof, root)


def test_consistency_for_many_pairs(trees: tuple[MemoryTree, InmemoryTree]) -> None:
    ours, theirs = trees
    rng = random.Random(9162)
    pairs = [(old, new) for new in range(1, 40) for old in range(1, new + 1)]
    pairs += [tuple(sorted(rng.sample(range(1, SIZE + 1), 2))) for _ in range(500)]  # type: ignore[misc]
    for old, new in pairs:
        old_root, new_root = ours.root(old), ours.root(new)
        verify_consistency(old, new, old_root, new_root, ours.consistency_proof(old, new))
        their_proof = theirs.prove_consistency(old, new)
        pymerkle_verify_consistency(old_root, new_root, their_proof, prior_size=old, later_size=new)
