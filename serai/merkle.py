"""The RFC 9162 §2.1 Merkle tree shared by the gateway message log and the registry's
configuration log: hashing, a growing right edge, proofs from stored nodes, and their
verification.

Hashing (RFC 9162 §2.1.1). A leaf hash is ``SHA-256(0x00 || data)`` and an interior node
``SHA-256(0x01 || left || right)``. The two prefixes separate the domains: no leaf can be
passed off as an interior node or the reverse, so a tree head commits to one sequence
of leaves and to its length. The root of ``n`` leaves splits them at ``k``, the largest
power of two smaller than ``n``, and hashes the two halves; the empty tree's root is
``SHA-256(b"")`` (:data:`EMPTY_ROOT`).

Stored nodes. A store keeps the hash of every *perfect* subtree once it is complete: the
node ``(level, index)`` covers the ``2**level`` leaves ``[index << level,
(index + 1) << level)``; level 0 holds the leaf hashes. Such a node never changes once
written, whatever the log grows to, so a tree of ``n`` leaves stores fewer than ``2n``
nodes and the root of any earlier size, and any proof against it, combines O(log n) of
them, fetched in one call to a :data:`NodeGetter` (one query in an SQL store).
:class:`Frontier` is the right edge of the growing tree: it says which nodes each new leaf
completes, which is exactly what a store persists.

Verification. :func:`verify_inclusion` (RFC 9162 §2.1.3.2) and :func:`verify_consistency`
(§2.1.4.2) return ``None`` when the proof holds and raise :class:`ProofError` otherwise,
with a message that says which check failed. They are constant-shape: the proof's length
is fixed by the sizes (and index), and every hash is exactly :data:`HASH_SIZE` bytes; both
are checked before any hashing, so a proof that is too short, too long or malformed is
refused as such, never half-used. What success guarantees, assuming SHA-256 is collision
resistant:

- inclusion: the tree of ``size`` leaves whose root is ``root`` has ``leaf_hash`` at
  position ``index``;
- consistency: the tree of ``old_size`` leaves with root ``old_root`` is a prefix of the
  tree of ``new_size`` leaves with root ``new_root`` — the log only grew. Every tree is
  consistent with the empty one (``old_size == 0``, empty proof, ``old_root`` must be
  :data:`EMPTY_ROOT`) and with itself (``old_size == new_size``, empty proof, equal roots).

What verification does not say: that a root is the log's (that is the signed, timestamped
tree head's job), nor anything about the data behind a leaf hash (the caller hashes it
with :func:`leaf_hash`). Nor does a proof bind the size on its own: a verifier replays a
fixed sequence of left and right steps, and many sizes share it, so the proof of leaf 2
of 3 also "verifies" as leaf 1 of 2 against the same root. That is harmless only because,
with SHA-256 collision resistant and leaves and nodes domain-separated, a root fixes its
whole tree, size included: **a size and a root must come together from one tree head**,
never the size from the party that supplies the proof.

Parameters. Sizes and indices are ``int`` (never ``bool``) with ``0 <= size < 2**63`` and
``0 <= index < size``; ``old_size <= new_size``; hashes are :data:`HASH_SIZE` bytes. Any
other value raises :class:`ProofError`, in proof generation as in verification. A
:data:`NodeGetter` must return every key it is asked for; one that omits a key makes
the caller raise ``KeyError`` (a broken store is not a bad proof).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from serai.errors import ErrorCode, Origin, SeraiError

__all__ = [
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
]

#: Size in bytes of every hash in the tree (SHA-256).
HASH_SIZE: Final = 32
#: The root of the empty tree: ``SHA-256(b"")``.
EMPTY_ROOT: Final[bytes] = hashlib.sha256(b"").digest()
#: Largest tree size (and so index + 1) accepted anywhere: ``2**63 - 1``.
MAX_SIZE: Final = 2**63 - 1

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

#: ``(level, index)``: the perfect subtree of ``2**level`` leaves starting at leaf
#: ``index << level``. Level 0 is a leaf hash.
NodeKey = tuple[int, int]
#: Fetches stored perfect-subtree hashes in one batch; must return every key asked for.
NodeGetter = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]


class ProofError(SeraiError):
    """A proof, root or leaf hash does not verify, or proof parameters are out of range."""

    default_code = ErrorCode.INVALID_REQUEST
    default_origin = Origin.CLIENT


# --- hashing ----------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root (RFC 9162 MTH) of a tree whose leaves have these hashes, in order."""
    for position, value in enumerate(leaf_hashes):
        _check_hash(value, f"leaf hash {position}")
    if not leaf_hashes:
        return EMPTY_ROOT
    frontier = Frontier()
    for value in leaf_hashes:
        frontier.append(value)
    return frontier.root()


# --- the growing right edge ---------------------------------------------------------------


class Frontier:
    """The right edge of a growing tree: the roots of the perfect subtrees that make up a
    tree of :attr:`size` leaves, largest (leftmost) first — one per set bit of the size.

    It is all a log needs in memory to append leaves and compute its current root.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self, *, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        _check_size(size, "size")
        expected = size.bit_count()
        if len(nodes) != expected:
            raise ProofError(
                f"a frontier of size {size} has {expected} nodes, {len(nodes)} were given"
            )
        for position, value in enumerate(nodes):
            _check_hash(value, f"frontier node {position}")
        self._size = size
        self._nodes = list(nodes)

    @property
    def size(self) -> int:
        """Number of leaves in the tree."""
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        """Hashes of the nodes :meth:`keys_for` names for :attr:`size`, in that order."""
        return tuple(self._nodes)

    def append(self, leaf_hash: bytes) -> list[tuple[NodeKey, bytes]]:
        """Add one leaf; return every perfect subtree it completes, level 0 first.

        The first entry is always ``((0, old_size), leaf_hash)``; a store persists exactly
        the returned nodes.
        """
        _check_hash(leaf_hash, "leaf hash")
        if self._size >= MAX_SIZE:
            raise ProofError(f"the tree is full at {MAX_SIZE} leaves")
        index = self._size
        value = leaf_hash
        completed: list[tuple[NodeKey, bytes]] = [((0, index), value)]
        level = 0
        # Each trailing 1 bit of the old size is a perfect subtree this leaf now pairs with.
        while index & 1:
            value = node_hash(self._nodes.pop(), value)
            level += 1
            index >>= 1
            completed.append(((level, index), value))
        self._nodes.append(value)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The root of the current tree (:data:`EMPTY_ROOT` when it is empty)."""
        return _fold(self._nodes)

    def copy(self) -> Frontier:
        """An independent frontier of the same tree."""
        clone = Frontier.__new__(Frontier)
        clone._size = self._size
        clone._nodes = list(self._nodes)
        return clone

    @staticmethod
    def keys_for(size: int) -> list[NodeKey]:
        """The perfect subtrees that make up a tree of ``size`` leaves, largest first."""
        _check_size(size, "size")
        return _range_keys(0, size)

    @classmethod
    def load(cls, size: int, get_nodes: NodeGetter) -> Frontier:
        """Rebuild the frontier of a tree of ``size`` leaves from stored nodes (one fetch)."""
        keys = cls.keys_for(size)
        if not keys:
            return cls()
        found = get_nodes(keys)
        return cls(size=size, nodes=[found[key] for key in keys])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


# --- roots and proofs from stored nodes -----------------------------------------------------


def root_at(size: int, get_nodes: NodeGetter) -> bytes:
    """The root of the tree of the first ``size`` leaves, from ``popcount(size)`` nodes."""
    _check_size(size, "size")
    keys = _range_keys(0, size)
    if not keys:
        return EMPTY_ROOT
    found = get_nodes(keys)
    return _fold([found[key] for key in keys])


def inclusion_proof(index: int, size: int, get_nodes: NodeGetter) -> list[bytes]:
    """The RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size``
    leaves, nearest the leaf first, from stored nodes fetched in one call."""
    _check_size(size, "size")
    _check_index(index, size)
    # The siblings along the path from the root down, as leaf ranges [lo, hi).
    siblings: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    siblings.reverse()
    return _range_hashes(siblings, get_nodes)


def consistency_proof(old_size: int, new_size: int, get_nodes: NodeGetter) -> list[bytes]:
    """The RFC 9162 §2.1.4.1 consistency proof from the tree of ``old_size`` leaves to the
    tree of ``new_size`` leaves, from stored nodes fetched in one call.

    Empty when ``old_size`` is 0 or equals ``new_size``.
    """
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if old_size > new_size:
        raise ProofError(f"old_size {old_size} is larger than new_size {new_size}")
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[lo:hi], whole) unrolled; each step adds one subtree hash, found from the
    # root down, and the proof lists them from the deepest up.
    ranges: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return _range_hashes(ranges, get_nodes)


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes the inclusion proof of leaf ``index`` in a tree of ``size`` has."""
    _check_size(size, "size")
    _check_index(index, size)
    inner, border = _decompose(index, size)
    return inner + border


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes the consistency proof from ``old_size`` to ``new_size`` has."""
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if old_size > new_size:
        raise ProofError(f"old_size {old_size} is larger than new_size {new_size}")
    if old_size in (0, new_size):
        return 0
    shift = _trailing_zeros(old_size)
    inner, border = _decompose(old_size - 1, new_size)
    # When the old tree is a perfect subtree its root is not repeated in the proof.
    seeded = 0 if old_size == 1 << shift else 1
    return seeded + inner - shift + border


# --- verification ---------------------------------------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check (RFC 9162 §2.1.3.2) that ``leaf_hash`` is leaf ``index`` of the tree of ``size``
    leaves whose root is ``root``; raise :class:`ProofError` saying why not."""
    _check_size(size, "size")
    _check_index(index, size)
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    expected = inclusion_proof_length(index, size)
    _check_proof(proof, expected, f"an inclusion proof of index {index} in size {size}")
    inner, _ = _decompose(index, size)
    computed = leaf_hash
    # Below `inner` the path runs inside a perfect subtree: the index bits say which side
    # each sibling is on. Above it, the leaf's subtree is the rightmost, so every remaining
    # sibling is a left one (the border).
    for level, sibling in enumerate(proof):
        if level < inner and not (index >> level) & 1:
            computed = node_hash(computed, sibling)
        else:
            computed = node_hash(sibling, computed)
    if not hmac.compare_digest(computed, root):
        raise ProofError(
            f"inclusion proof of index {index} in size {size} does not lead to the root: "
            f"computed {computed.hex()}, expected {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check (RFC 9162 §2.1.4.2) that the tree of ``old_size`` leaves with root ``old_root``
    is a prefix of the tree of ``new_size`` leaves with root ``new_root``; raise
    :class:`ProofError` saying why not."""
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if old_size > new_size:
        raise ProofError(f"old_size {old_size} is larger than new_size {new_size}")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    expected = consistency_proof_length(old_size, new_size)
    _check_proof(proof, expected, f"a consistency proof from size {old_size} to {new_size}")
    if old_size == 0:
        if not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise ProofError(f"the old root of size 0 is {old_root.hex()}, not the empty root")
        return
    if old_size == new_size:
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError(
                f"two different roots for size {old_size}: {old_root.hex()} and {new_root.hex()}"
            )
        return

    shift = _trailing_zeros(old_size)
    inner, _ = _decompose(old_size - 1, new_size)
    inner -= shift
    # Work from the root of the largest perfect subtree the two trees share on their right
    # edge: it is the old root itself when the old tree is perfect, else the proof's first
    # hash. From there the path of leaf old_size - 1 rebuilds both roots at once.
    if old_size == 1 << shift:
        seed, rest = old_root, proof
    else:
        seed, rest = proof[0], proof[1:]
    path_index = (old_size - 1) >> shift
    old_computed = new_computed = seed
    for level, sibling in enumerate(rest):
        if level < inner and not (path_index >> level) & 1:
            # A right sibling: only in the new tree.
            new_computed = node_hash(new_computed, sibling)
        else:
            # A left sibling: in both trees.
            old_computed = node_hash(sibling, old_computed)
            new_computed = node_hash(sibling, new_computed)
    if not hmac.compare_digest(old_computed, old_root):
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} does not lead to the old "
            f"root: computed {old_computed.hex()}, expected {old_root.hex()}"
        )
    if not hmac.compare_digest(new_computed, new_root):
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} does not lead to the new "
            f"root: computed {new_computed.hex()}, expected {new_root.hex()}"
        )


# --- in-memory store --------------------------------------------------------------------


class MemoryNodes:
    """A store of perfect-subtree hashes in memory: one list per level, indexed by node.

    Calling it is a :data:`NodeGetter`; a key never stored raises ``KeyError``. A node is
    written once: storing a different hash under a key already held raises
    :class:`ProofError`.
    """

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        self._levels: list[list[bytes | None]] = []

    def put(self, nodes: Iterable[tuple[NodeKey, bytes]]) -> None:
        """Store nodes, e.g. the list :meth:`Frontier.append` returns."""
        for (level, index), value in nodes:
            _check_hash(value, f"node ({level}, {index})")
            if level < 0 or index < 0:
                raise ProofError(f"node ({level}, {index}) has a negative coordinate")
            while len(self._levels) <= level:
                self._levels.append([])
            row = self._levels[level]
            if index == len(row):
                row.append(value)
                continue
            if index > len(row):
                row.extend([None] * (index - len(row)))
                row.append(value)
                continue
            held = row[index]
            if held is None:
                row[index] = value
            elif held != value:
                raise ProofError(f"node ({level}, {index}) is already stored with another hash")

    def __call__(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        levels = self._levels
        found: dict[NodeKey, bytes] = {}
        for key in keys:
            level, index = key
            try:
                value = levels[level][index] if level >= 0 and index >= 0 else None
            except IndexError:
                value = None
            if value is None:
                raise KeyError(key)
            found[key] = value
        return found

    def __len__(self) -> int:
        return sum(1 for row in self._levels for value in row if value is not None)


class MemoryTree:
    """A whole log in memory: a :class:`Frontier` plus the :class:`MemoryNodes` it fills.

    For tests, demos and small logs that need no durability.
    """

    __slots__ = ("_frontier", "nodes")

    def __init__(self) -> None:
        self._frontier = Frontier()
        self.nodes = MemoryNodes()

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._frontier.size

    @property
    def frontier(self) -> Frontier:
        """A copy of the current right edge."""
        return self._frontier.copy()

    def append(self, data: bytes) -> int:
        """Add a leaf holding ``data`` (hashed with :func:`leaf_hash`); return its index."""
        index = self._frontier.size
        self.nodes.put(self._frontier.append(leaf_hash(data)))
        return index

    def append_hash(self, value: bytes) -> int:
        """Add a leaf whose hash is already computed; return its index."""
        index = self._frontier.size
        self.nodes.put(self._frontier.append(value))
        return index

    def root(self, size: int | None = None) -> bytes:
        """The root of the current tree, or of its first ``size`` leaves."""
        if size is None:
            return self._frontier.root()
        self._check_known(size, "size")
        return root_at(size, self.nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the current tree or one of ``size``."""
        size = self._frontier.size if size is None else size
        self._check_known(size, "size")
        return inclusion_proof(index, size, self.nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The consistency proof from ``old_size`` to the current size or ``new_size``."""
        new_size = self._frontier.size if new_size is None else new_size
        self._check_known(new_size, "new_size")
        return consistency_proof(old_size, new_size, self.nodes)

    def _check_known(self, size: int, name: str) -> None:
        _check_size(size, name)
        if size > self._frontier.size:
            raise ProofError(f"{name} {size} is beyond the tree's {self._frontier.size} leaves")


# --- helpers --------------------------------------------------------------------------------


def _check_size(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_SIZE:
        raise ProofError(f"{name} {value} is outside [0, 2**63)")


def _check_index(index: int, size: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int):
        raise ProofError(f"index must be an int, not {type(index).__name__}")
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")


def _check_hash(value: bytes, name: str) -> None:
    if not isinstance(value, bytes):
        raise ProofError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], expected: int, what: str) -> None:
    if len(proof) != expected:
        raise ProofError(f"{what} has {expected} hashes, this one has {len(proof)}")
    for position, value in enumerate(proof):
        _check_hash(value, f"proof hash {position}")


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split the proof of leaf ``index`` in a tree of ``size`` in two: the inner part, the
    levels below the node where the paths of ``index`` and ``size - 1`` meet, where siblings
    sit on either side; and the border part above it, along the tree's right edge, where
    every sibling is a left one (one per set bit of ``index`` above the inner levels)."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _range_keys(lo: int, hi: int) -> list[NodeKey]:
    """The perfect subtrees that tile leaves ``[lo, hi)``, largest first.

    Every range the RFC's recursion produces starts at a multiple of a power of two at
    least as large as its own largest part, so the tiles are aligned stored nodes.
    """
    keys: list[NodeKey] = []
    count = hi - lo
    position = lo
    for level in range(count.bit_length() - 1, -1, -1):
        if (count >> level) & 1:
            keys.append((level, position >> level))
            position += 1 << level
    return keys


def _fold(hashes: Sequence[bytes]) -> bytes:
    """The root over perfect subtrees given largest first: they combine right to left."""
    if not hashes:
        return EMPTY_ROOT
    value = hashes[-1]
    for left in reversed(hashes[:-1]):
        value = node_hash(left, value)
    return value


def _range_hashes(ranges: Sequence[tuple[int, int]], get_nodes: NodeGetter) -> list[bytes]:
    """The root of each leaf range, from the stored nodes tiling them, fetched in one call."""
    tiles = [_range_keys(lo, hi) for lo, hi in ranges]
    if not tiles:
        return []
    found = get_nodes([key for keys in tiles for key in keys])
    return [_fold([found[key] for key in keys]) for keys in tiles]
