"""serai.merkle: known answers, a reference written from the RFC's recursive definitions,
properties under Hypothesis, and one test per rule of the module docstring."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import serai.merkle as merkle
from serai.errors import ErrorCode, SeraiError
from serai.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_SIZE,
    Frontier,
    MemoryNodes,
    MemoryTree,
    NodeKey,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- known answers ---------------------------------------------------------------------------
#
# The test vectors of the Certificate Transparency reference implementations
# (certificate-transparency's merkle_tree_test.cc, carried on by transparency-dev/merkle's
# testonly package): eight leaves, the root at every size, the hash of every perfect
# subtree of the 8-leaf tree, and a few proofs.

CT_LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

CT_ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# Every perfect subtree of the 8-leaf tree, by level then index.
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

# (index, size, proof), index from 0.
CT_INCLUSION = [
    (0, 1, []),
    (0, 2, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
    (1, 2, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# (old_size, new_size, proof).
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def ct_tree() -> MemoryTree:
    tree = MemoryTree()
    for data in CT_LEAVES:
        tree.append(data)
    return tree


def test_public_surface() -> None:
    assert set(merkle.__all__) == {
        "EMPTY_ROOT",
        "HASH_SIZE",
        "MAX_SIZE",
        "Frontier",
        "MemoryNodes",
        "MemoryTree",
        "NodeGetter",
        "NodeKey",
        "ProofError",
        "consistency_proof",
        "consistency_proof_length",
        "inclusion_proof",
        "inclusion_proof_length",
        "leaf_hash",
        "node_hash",
        "root_at",
        "root_hash",
        "verify_consistency",
        "verify_inclusion",
    }


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("empty root", EMPTY_ROOT, CT_ROOTS[0]),
        ("empty leaf", leaf_hash(b""), CT_ROOTS[1]),
        (
            "leaf L123456",
            leaf_hash(b"L123456"),
            h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"),
        ),
        (
            "node N123 N456",
            node_hash(b"N123", b"N456"),
            h("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"),
        ),
    ],
)
def test_hasher_known_answers(name: str, value: bytes, expected: bytes) -> None:
    assert value == expected, name


@pytest.mark.parametrize("size", range(9))
def test_ct_roots(size: int) -> None:
    hashes = [leaf_hash(data) for data in CT_LEAVES[:size]]
    assert root_hash(hashes) == CT_ROOTS[size]
    tree = ct_tree()
    assert tree.root(size) == CT_ROOTS[size]
    assert root_at(size, tree.nodes) == CT_ROOTS[size]


def test_ct_every_perfect_node_is_stored() -> None:
    tree = ct_tree()
    for level, row in enumerate(CT_NODES):
        found = tree.nodes([(level, index) for index in range(len(row))])
        assert [found[(level, index)].hex() for index in range(len(row))] == row


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_inclusion(index: int, size: int, proof: list[str]) -> None:
    tree = ct_tree()
    got = tree.inclusion_proof(index, size)
    assert [p.hex() for p in got] == proof
    verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, got, CT_ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_consistency(old: int, new: int, proof: list[str]) -> None:
    tree = ct_tree()
    got = tree.consistency_proof(old, new)
    assert [p.hex() for p in got] == proof
    verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], got)


# --- a reference straight from the RFC's recursive definitions -------------------------------


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def rfc_verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def rfc_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second."""
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_hash and sr == second_hash and sn == 0


def accepts(verify: Callable[..., None], *args: object) -> bool:
    try:
        verify(*args)
    except ProofError:
        return False
    return True


REF_SIZE = 33
REF_LEAVES = [b"entry %d" % i for i in range(REF_SIZE)]


@pytest.fixture(scope="module")
def ref_tree() -> MemoryTree:
    tree = MemoryTree()
    for data in REF_LEAVES:
        tree.append(data)
    return tree


@pytest.mark.parametrize("size", range(REF_SIZE + 1))
def test_reference_every_proof(ref_tree: MemoryTree, size: int) -> None:
    leaves = REF_LEAVES[:size]
    root = ref_mth(leaves)
    assert ref_tree.root(size) == root
    for index in range(size):
        proof = ref_tree.inclusion_proof(index, size)
        assert proof == ref_path(index, leaves)
        assert len(proof) == merkle.inclusion_proof_length(index, size)
        verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
        assert rfc_verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
    for old in range(1, size):
        proof = ref_tree.consistency_proof(old, size)
        assert proof == ref_subproof(old, leaves, True)
        assert len(proof) == merkle.consistency_proof_length(old, size)
        verify_consistency(old, size, ref_mth(leaves[:old]), root, proof)
        assert rfc_verify_consistency(old, size, ref_mth(leaves[:old]), root, proof)


# --- properties ------------------------------------------------------------------------------

BIG = 300


@pytest.fixture(scope="module")
def big() -> tuple[MemoryTree, list[bytes]]:
    tree = MemoryTree()
    hashes = []
    for i in range(BIG):
        tree.append(b"record %d" % i)
        hashes.append(leaf_hash(b"record %d" % i))
    return tree, hashes


def flip(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, BIG))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, BIG))
    return draw(st.integers(1, new)), new


@given(index_and_size(), st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_inclusion_holds_and_every_bit_matters(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], bit: int
) -> None:
    tree, hashes = big
    index, size = case
    proof = tree.inclusion_proof(index, size)
    root = tree.root(size)
    leaf = hashes[index]
    verify_inclusion(leaf, index, size, proof, root)

    with pytest.raises(ProofError):
        verify_inclusion(flip(leaf, bit), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, flip(root, bit))
    for position in range(len(proof)):
        bad = list(proof)
        bad[position] = flip(bad[position], bit)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, bad, root)


@given(index_and_size(), st.integers(-3, 3))
@settings(max_examples=300, deadline=None)
def test_inclusion_fails_at_another_index(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], d_index: int
) -> None:
    tree, hashes = big
    index, size = case
    assume(d_index and 0 <= index + d_index < size)
    proof = tree.inclusion_proof(index, size)
    with pytest.raises(ProofError):
        verify_inclusion(hashes[index], index + d_index, size, proof, tree.root(size))
    assert not rfc_verify_inclusion(hashes[index], index + d_index, size, proof, tree.root(size))


@given(index_and_size(), st.integers(-2, 2), st.integers(-40, 40))
@settings(max_examples=400, deadline=None)
def test_inclusion_at_another_size_decides_as_the_rfc_algorithm(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], d_index: int, d_size: int
) -> None:
    # A proof does not bind the size (see the module docstring): what matters is that
    # every (index, size) is accepted or refused exactly as RFC 9162 §2.1.3.2 does.
    tree, hashes = big
    index, size = case
    other_index, other_size = index + d_index, size + d_size
    assume(0 <= other_index < other_size)
    proof = tree.inclusion_proof(index, size)
    expected = rfc_verify_inclusion(hashes[index], other_index, other_size, proof, tree.root(size))
    assert (
        accepts(verify_inclusion, hashes[index], other_index, other_size, proof, tree.root(size))
        is expected
    )


def test_a_size_not_from_the_tree_head_can_move_the_index() -> None:
    # The docstring's example: leaf 2 of 3 "verifies" as leaf 1 of 2 against the root of 3.
    tree = ct_tree()
    proof = tree.inclusion_proof(2, 3)
    verify_inclusion(leaf_hash(CT_LEAVES[2]), 1, 2, proof, CT_ROOTS[3])


@given(index_and_size(), st.integers(1, 3), st.booleans())
@settings(max_examples=200, deadline=None)
def test_inclusion_of_the_wrong_length_fails(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], extra: int, longer: bool
) -> None:
    tree, hashes = big
    index, size = case
    proof = tree.inclusion_proof(index, size)
    if longer:
        bad = proof + [tree.root(size)] * extra
    else:
        assume(len(proof) >= extra)
        bad = proof[: len(proof) - extra]
    with pytest.raises(ProofError, match="hashes, this one has"):
        verify_inclusion(hashes[index], index, size, bad, tree.root(size))


@given(two_sizes(), st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_consistency_holds_and_every_bit_matters(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], bit: int
) -> None:
    tree, _ = big
    old, new = case
    proof = tree.consistency_proof(old, new)
    old_root, new_root = tree.root(old), tree.root(new)
    verify_consistency(old, new, old_root, new_root, proof)

    with pytest.raises(ProofError):
        verify_consistency(old, new, flip(old_root, bit), new_root, proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, flip(new_root, bit), proof)
    for position in range(len(proof)):
        bad = list(proof)
        bad[position] = flip(bad[position], bit)
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, bad)


@given(two_sizes(), st.integers(-40, 40), st.integers(-40, 40))
@settings(max_examples=400, deadline=None)
def test_consistency_for_other_sizes_decides_as_the_rfc_algorithm(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], d_old: int, d_new: int
) -> None:
    tree, _ = big
    old, new = case
    other_old, other_new = old + d_old, new + d_new
    assume(0 < other_old < other_new)
    proof = tree.consistency_proof(old, new)
    roots = (tree.root(old), tree.root(new))
    expected = rfc_verify_consistency(other_old, other_new, *roots, proof)
    assert accepts(verify_consistency, other_old, other_new, *roots, proof) is expected


@given(two_sizes(), st.integers(1, 3), st.booleans())
@settings(max_examples=200, deadline=None)
def test_consistency_of_the_wrong_length_fails(
    big: tuple[MemoryTree, list[bytes]], case: tuple[int, int], extra: int, longer: bool
) -> None:
    tree, _ = big
    old, new = case
    proof = tree.consistency_proof(old, new)
    if longer:
        bad = proof + [tree.root(new)] * extra
    else:
        assume(len(proof) >= extra)
        bad = proof[: len(proof) - extra]
    with pytest.raises(ProofError, match="hashes, this one has"):
        verify_consistency(old, new, tree.root(old), tree.root(new), bad)


@given(st.lists(st.binary(max_size=8), max_size=80), st.data())
@settings(max_examples=100, deadline=None)
def test_load_and_root_at_agree_with_the_live_tree(
    entries: list[bytes], data: st.DataObject
) -> None:
    frontier = Frontier()
    nodes = MemoryNodes()
    hashes = []
    for entry in entries:
        value = leaf_hash(entry)
        hashes.append(value)
        completed = frontier.append(value)
        assert completed[0] == ((0, len(hashes) - 1), value)
        assert [key[0] for key, _ in completed] == list(range(len(completed)))
        nodes.put(completed)
        assert Frontier.load(frontier.size, nodes) == frontier
    assert frontier.root() == root_hash(hashes)
    assert len(nodes) == 2 * len(entries) - len(entries).bit_count()
    k = data.draw(st.integers(0, len(entries)))
    assert root_at(k, nodes) == root_hash(hashes[:k])


def test_append_returns_the_nodes_it_completes() -> None:
    frontier = Frontier(size=0)
    leaves = [leaf_hash(bytes([i])) for i in range(8)]
    seen: list[list[NodeKey]] = []
    for value in leaves:
        seen.append([key for key, _ in frontier.append(value)])
    assert seen == [
        [(0, 0)],
        [(0, 1), (1, 0)],
        [(0, 2)],
        [(0, 3), (1, 1), (2, 0)],
        [(0, 4)],
        [(0, 5), (1, 2)],
        [(0, 6)],
        [(0, 7), (1, 3), (2, 1), (3, 0)],
    ]
    assert Frontier.keys_for(13) == [(3, 0), (2, 2), (0, 12)]
    assert Frontier.keys_for(0) == []


def test_frontier_copy_is_independent() -> None:
    frontier = Frontier()
    frontier.append(leaf_hash(b"a"))
    clone = frontier.copy()
    clone.append(leaf_hash(b"b"))
    assert (frontier.size, clone.size) == (1, 2)
    assert frontier.nodes == (leaf_hash(b"a"),)


# --- one test per rule of the module docstring -----------------------------------------------


def test_rule_leaves_and_nodes_are_domain_separated() -> None:
    # A leaf whose data is two hashes side by side is not the node over them, so a one-leaf
    # tree cannot pass for the two-leaf tree it "contains", and an interior node cannot be
    # proven as a leaf.
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(a + b) != node_hash(a, b)
    tree = MemoryTree()
    tree.append(b"a")
    tree.append(b"b")
    tree.append(b"c")
    tree.append(b"d")
    # The node over leaves 0 and 1, with the node over 2 and 3 as its sibling, leads to
    # the root; data that looks like that node, hashed as a leaf, does not.
    sibling = tree.inclusion_proof(0, 4)[1]
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(a + b), 0, 2, [sibling], tree.root(4))
    assert hashlib.sha256(b"\x00a").digest() == leaf_hash(b"a")
    assert hashlib.sha256(b"\x01" + a + b).digest() == node_hash(a, b)


def test_rule_empty_tree_root() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root_hash([]) == EMPTY_ROOT
    assert Frontier().root() == EMPTY_ROOT
    assert root_at(0, MemoryNodes()) == EMPTY_ROOT
    assert HASH_SIZE == len(EMPTY_ROOT) == 32


def test_rule_perfect_nodes_never_change() -> None:
    tree = MemoryTree()
    for i in range(5):
        tree.append(b"%d" % i)
    before = dict(tree.nodes([(0, 0), (1, 0), (2, 0), (0, 4)]))
    for i in range(5, 100):
        tree.append(b"%d" % i)
    assert tree.nodes([(0, 0), (1, 0), (2, 0), (0, 4)]) == before
    with pytest.raises(ProofError, match="already stored with another hash"):
        tree.nodes.put([((1, 0), leaf_hash(b"other"))])
    tree.nodes.put([((1, 0), before[(1, 0)])])  # the same hash again is harmless


class CountingGetter:
    def __init__(self, nodes: MemoryNodes) -> None:
        self.nodes = nodes
        self.calls: list[int] = []

    def __call__(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        self.calls.append(len(keys))
        return self.nodes(keys)


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 299), (137, 299), (298, 299), (5, 256)])
def test_rule_one_fetch_of_log_n_nodes_per_proof(
    big: tuple[MemoryTree, list[bytes]], index: int, size: int
) -> None:
    getter = CountingGetter(big[0].nodes)
    inclusion_proof(index, size, getter)
    consistency_proof(index + 1, size, getter)
    root_at(size, getter)
    Frontier.load(size, getter)
    assert len(getter.calls) <= 4
    assert all(count <= 2 * size.bit_length() for count in getter.calls)


def test_rule_verification_raises_proof_error_with_a_precise_message(
    big: tuple[MemoryTree, list[bytes]],
) -> None:
    tree, hashes = big
    proof = tree.inclusion_proof(3, 10)
    with pytest.raises(ProofError, match="does not lead to the root") as caught:
        verify_inclusion(hashes[4], 3, 10, proof, tree.root(10))
    assert isinstance(caught.value, SeraiError)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    cons = tree.consistency_proof(3, 10)
    with pytest.raises(ProofError, match="does not lead to the old root"):
        verify_consistency(3, 10, tree.root(4), tree.root(10), cons)
    with pytest.raises(ProofError, match="does not lead to the new root"):
        verify_consistency(3, 10, tree.root(3), tree.root(11), cons)
    assert verify_inclusion(hashes[3], 3, 10, proof, tree.root(10)) is None  # type: ignore[func-returns-value]


def test_rule_proof_shape_is_checked_before_hashing(big: tuple[MemoryTree, list[bytes]]) -> None:
    tree, hashes = big
    proof = tree.inclusion_proof(3, 10)
    with pytest.raises(ProofError, match="proof hash 1 is 31 bytes, not 32"):
        verify_inclusion(hashes[3], 3, 10, [proof[0], proof[1][:31], *proof[2:]], tree.root(10))
    with pytest.raises(ProofError, match="proof hash 0 must be bytes"):
        verify_inclusion(hashes[3], 3, 10, [bytearray(proof[0]), *proof[1:]], tree.root(10))  # type: ignore[list-item]
    with pytest.raises(ProofError, match="leaf hash is 33 bytes"):
        verify_inclusion(hashes[3] + b"\x00", 3, 10, proof, tree.root(10))
    with pytest.raises(ProofError, match="root is 0 bytes"):
        verify_inclusion(hashes[3], 3, 10, proof, b"")
    with pytest.raises(ProofError, match="new root is 31 bytes"):
        verify_consistency(3, 10, tree.root(3), tree.root(10)[:31], tree.consistency_proof(3, 10))


def test_rule_consistency_with_the_empty_tree_and_with_itself() -> None:
    tree = ct_tree()
    for size in range(9):
        assert tree.consistency_proof(0, size) == []
        assert tree.consistency_proof(size, size) == []
        verify_consistency(0, size, EMPTY_ROOT, CT_ROOTS[size], [])
        verify_consistency(size, size, CT_ROOTS[size], CT_ROOTS[size], [])
    with pytest.raises(ProofError, match="not the empty root"):
        verify_consistency(0, 5, CT_ROOTS[1], CT_ROOTS[5], [])
    with pytest.raises(ProofError, match="two different roots for size 5"):
        verify_consistency(5, 5, CT_ROOTS[5], CT_ROOTS[6], [])
    with pytest.raises(ProofError, match="has 0 hashes, this one has 1"):
        verify_consistency(5, 5, CT_ROOTS[5], CT_ROOTS[5], [CT_ROOTS[5]])
    with pytest.raises(ProofError, match="has 0 hashes, this one has 1"):
        verify_consistency(0, 5, EMPTY_ROOT, CT_ROOTS[5], [CT_ROOTS[5]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: verify_inclusion(EMPTY_ROOT, 0, 0, [], EMPTY_ROOT), "index 0 is outside"),
        (lambda: verify_inclusion(EMPTY_ROOT, 5, 5, [], EMPTY_ROOT), "index 5 is outside"),
        (lambda: verify_inclusion(EMPTY_ROOT, -1, 5, [], EMPTY_ROOT), "index -1 is outside"),
        (lambda: verify_inclusion(EMPTY_ROOT, 0, -1, [], EMPTY_ROOT), r"size -1 is outside"),
        (lambda: verify_inclusion(EMPTY_ROOT, 0, 2**63, [], EMPTY_ROOT), r"outside \[0, 2\*\*63\)"),
        (lambda: verify_inclusion(EMPTY_ROOT, True, 2, [], EMPTY_ROOT), "index must be an int"),
        (lambda: verify_inclusion(EMPTY_ROOT, 0, 2.0, [], EMPTY_ROOT), "size must be an int"),  # type: ignore[arg-type]
        (lambda: verify_consistency(6, 5, EMPTY_ROOT, EMPTY_ROOT, []), "old_size 6 is larger"),
        (lambda: verify_consistency(1, 2**63, EMPTY_ROOT, EMPTY_ROOT, []), "new_size"),
        (lambda: inclusion_proof(3, 3, MemoryNodes()), "index 3 is outside a tree of size 3"),
        (lambda: consistency_proof(4, 3, MemoryNodes()), "old_size 4 is larger"),
        (lambda: root_at(-1, MemoryNodes()), "size -1"),
        (lambda: Frontier(size=3, nodes=[EMPTY_ROOT]), "has 2 nodes, 1 were given"),
        (lambda: Frontier(size=1, nodes=[b"short"]), "frontier node 0 is 5 bytes"),
        (lambda: Frontier(size=False), "size must be an int"),
        (lambda: Frontier().append(b"x" * 31), "leaf hash is 31 bytes"),
        (lambda: root_hash([EMPTY_ROOT, b""]), "leaf hash 1 is 0 bytes"),
        (lambda: MemoryTree().inclusion_proof(0, 1), "size 1 is beyond the tree's 0 leaves"),
        (lambda: MemoryNodes().put([((0, -1), EMPTY_ROOT)]), "negative coordinate"),
    ],
)
def test_rule_parameters_out_of_range_raise_proof_error(call: object, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        call()  # type: ignore[operator]


def test_rule_a_full_tree_refuses_more_leaves() -> None:
    frontier = Frontier(size=MAX_SIZE, nodes=[EMPTY_ROOT] * MAX_SIZE.bit_count())
    with pytest.raises(ProofError, match="the tree is full"):
        frontier.append(EMPTY_ROOT)


def test_rule_a_getter_that_omits_a_key_raises_key_error() -> None:
    nodes = MemoryNodes()
    nodes.put([((0, 0), EMPTY_ROOT)])
    with pytest.raises(KeyError):
        inclusion_proof(0, 2, nodes)
    with pytest.raises(KeyError):
        root_at(3, lambda keys: {})
    with pytest.raises(KeyError):
        nodes([(-1, 0)])  # not the last level, as a negative list index would give
    with pytest.raises(KeyError):
        nodes([(0, 1)])


class UniformNodes:
    """Every leaf has the same hash, so a node's hash depends on its level alone: a store
    that is consistent at any size, up to the largest the module allows."""

    def __init__(self) -> None:
        self.by_level = [leaf_hash(b"same")]
        for _ in range(63):
            self.by_level.append(node_hash(self.by_level[-1], self.by_level[-1]))

    def __call__(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        return {key: self.by_level[key[0]] for key in keys}


@pytest.mark.parametrize(
    ("index", "old", "size"),
    [
        (0, 1, MAX_SIZE),
        (MAX_SIZE - 1, MAX_SIZE - 1, MAX_SIZE),
        (2**62 + 12345, 2**62, 2**62 + 2**40 + 7),
        (2**40, 2**40 + 1, 2**41),
    ],
)
def test_rule_sizes_up_to_2_to_the_63(index: int, old: int, size: int) -> None:
    nodes = UniformNodes()
    root = root_at(size, nodes)
    proof = inclusion_proof(index, size, nodes)
    verify_inclusion(leaf_hash(b"same"), index, size, proof, root)
    cons = consistency_proof(old, size, nodes)
    verify_consistency(old, size, root_at(old, nodes), root, cons)
    assert len(proof) <= 2 * 63
    assert Frontier.load(size, nodes).root() == root
