"""The Merkle tree of the transparency log, exactly as RFC 9162 §2.1 defines it.

    leaf hash      HASH(0x00 ‖ entry)                         (§2.1.1)
    interior node  HASH(0x01 ‖ left ‖ right)
    MTH({})        HASH()                                     (the empty string)
    MTH(D[n])      HASH(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n])), k the largest power of 2 < n

The hash function is a parameter (`HashFn`); the log uses `SM3`, and `SHA256` gives the tree of
RFC 9162 / RFC 6962 (the tests check it against an independent implementation).

Storage model. A store keeps only *perfect* subtrees: ``node(level, index)`` is the hash of the
perfect subtree over leaves ``[index·2^level, (index+1)·2^level)``; level 0 holds the leaf
hashes. A node is written once, when its last leaf is appended, and never changes. Every hash
the RFC needs (a root, a path element over a ragged right edge) folds from a few of these
nodes, so each operation here is planned first, then assembled:

    plan = inclusion_plan(index, size)                 # pure arithmetic on the sizes
    rows = SELECT ... WHERE (level, idx) IN plan.nodes # one batched lookup
    proof = plan.assemble(rows, h)                     # the RFC 9162 §2.1.3.1 path

Appending works the same way: `append_plan` / `append_many_plan` name the existing nodes an
append needs (at most one per level), `nodes_added` / `nodes_added_many` compute what to
insert. `MemoryTree` is a list-backed store built from these functions, for tests and benches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from trustspace.crypto import sm3

from .errors import ProofInvalid

HashFn = Callable[[bytes], bytes]
Coord = tuple[int, int]
"""(level, index) of a perfect subtree: leaves [index·2^level, (index+1)·2^level)."""
NewNode = tuple[int, int, bytes]
"""(level, index, hash) of a node an append creates."""

_LEAF = b"\x00"
_NODE = b"\x01"


def _openssl_sm3() -> HashFn | None:
    """SM3 through hashlib's OpenSSL, copying a ready context: ~1.3 M hashes/s of 65 bytes
    here against ~0.9 M/s for `trustspace.crypto.sm3`, and proof checks are nothing but short
    hashes. Used only if it agrees with `trustspace.crypto.sm3`."""
    try:
        empty = hashlib.new("sm3")
    except ValueError:  # an OpenSSL without SM3 (or in FIPS mode)
        return None
    copy = empty.copy

    def openssl_sm3(data: bytes) -> bytes:
        h = copy()
        h.update(data)
        return h.digest()

    probe = b"abc" * 30
    return openssl_sm3 if openssl_sm3(probe) == sm3(probe) else None


SM3: HashFn = _openssl_sm3() or sm3
"""SM3 (GB/T 32905-2016) as a `HashFn`: the log's hash."""


def SHA256(data: bytes) -> bytes:  # upper case like SM3: both are HashFn constants
    """SHA-256 as a `HashFn`: the hash of RFC 6962 / RFC 9162 trees."""
    return hashlib.sha256(data).digest()


def leaf_hash(data: bytes, h: HashFn = SM3) -> bytes:
    """HASH(0x00 ‖ data), RFC 9162 §2.1.1."""
    return h(_LEAF + data)


def node_hash(left: bytes, right: bytes, h: HashFn = SM3) -> bytes:
    """HASH(0x01 ‖ left ‖ right), RFC 9162 §2.1.1."""
    return h(_NODE + left + right)


def empty_root(h: HashFn = SM3) -> bytes:
    """MTH({}) = HASH(), the root of the empty tree (RFC 9162 §2.1.1)."""
    return h(b"")


# ---- plans ---------------------------------------------------------------------------------

def _split(width: int) -> int:
    """k, the largest power of two smaller than `width` (≥ 2), RFC 9162 §2.1.1."""
    return 1 << ((width - 1).bit_length() - 1)


def _cover(start: int, end: int) -> tuple[Coord, ...]:
    """The perfect subtrees covering [start, end), left to right, largest first.

    Every range the RFC recursion visits starts at a multiple of the power of two at or above
    its width, so this greedy split is exactly the recursion's: MTH of the range is these
    nodes folded from the right.
    """
    out = []
    while start < end:
        level = (end - start).bit_length() - 1
        out.append((level, start >> level))
        start += 1 << level
    return tuple(out)


def _fold(part: Sequence[Coord], nodes: Mapping[Coord, bytes], h: HashFn) -> bytes:
    acc = nodes[part[-1]]
    for coord in reversed(part[:-1]):
        acc = h(_NODE + nodes[coord] + acc)
    return acc


def _check_present(needed: frozenset[Coord], nodes: Mapping[Coord, bytes]) -> None:
    missing = needed - nodes.keys()
    if missing:
        raise LookupError(f"nodes missing from the lookup: {sorted(missing)}")


@dataclass(frozen=True)
class RootPlan:
    """Which perfect nodes make MTH(D[size]), and how to fold them."""

    size: int
    peaks: tuple[Coord, ...]  # the perfect subtrees of [0, size), left to right

    @property
    def nodes(self) -> frozenset[Coord]:
        return frozenset(self.peaks)

    def assemble(self, nodes: Mapping[Coord, bytes], h: HashFn = SM3) -> bytes:
        if not self.peaks:
            return h(b"")
        _check_present(self.nodes, nodes)
        return _fold(self.peaks, nodes, h)


@dataclass(frozen=True)
class PathPlan:
    """Which perfect nodes make an inclusion or consistency proof, and how.

    `parts[i]` lists the perfect subtrees whose right fold is the i-th proof hash (one node for
    a perfect subtree, several for a subtree on the ragged right edge of the tree).
    """

    parts: tuple[tuple[Coord, ...], ...]
    nodes: frozenset[Coord]

    def assemble(self, nodes: Mapping[Coord, bytes], h: HashFn = SM3) -> list[bytes]:
        """The proof, in RFC 9162 order (from the leaf's or old root's side upwards)."""
        _check_present(self.nodes, nodes)
        return [_fold(part, nodes, h) for part in self.parts]


def _path_plan(parts: list[tuple[Coord, ...]]) -> PathPlan:
    return PathPlan(tuple(parts), frozenset(c for part in parts for c in part))


def root_plan(size: int) -> RootPlan:
    """The nodes of MTH(D[size]): one per set bit of `size` (none for the empty tree)."""
    if size < 0:
        raise ValueError("tree size must be non-negative")
    return RootPlan(size, _cover(0, size))


def inclusion_plan(index: int, size: int) -> PathPlan:
    """PATH(index, D[size]), RFC 9162 §2.1.3.1; `index` counts from 0."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} not in a tree of size {size}")
    siblings: list[tuple[Coord, ...]] = []  # from the root down
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            siblings.append(_cover(start + k, end))
            end = start + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            level = k.bit_length() - 1
            siblings.append(((level, start >> level),))
            start += k
    siblings.reverse()
    return _path_plan(siblings)


def consistency_plan(old_size: int, new_size: int) -> PathPlan:
    """PROOF(old_size, D[new_size]), RFC 9162 §2.1.4.1.

    The RFC defines it for 0 < old_size < new_size; for old_size == new_size, and from the
    empty tree, there is nothing to prove and the proof is empty (see `verify_consistency`).
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return _path_plan([])
    parts: list[tuple[Coord, ...]] = []  # from the root down; reversed at the end
    start, end, m, whole = 0, new_size, old_size, True  # `whole` is the RFC's flag b
    while True:
        width = end - start
        if m == width:  # SUBPROOF(m, D[m], b) = {} if b, else {MTH(D[m])}
            if not whole:
                parts.append(_cover(start, end))
            break
        k = _split(width)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            parts.append(_cover(start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            level = k.bit_length() - 1
            parts.append(((level, start >> level),))
            start += k
            m -= k
            whole = False
    parts.reverse()
    return _path_plan(parts)


# ---- appending -----------------------------------------------------------------------------

def append_plan(size: int) -> tuple[Coord, ...]:
    """The existing nodes needed to append leaf number `size` (0-based): the left siblings
    of the nodes that the new leaf completes, lowest first."""
    if size < 0:
        raise ValueError("tree size must be non-negative")
    needed = []
    level, i = 0, size
    while i & 1:
        needed.append((level, i - 1))
        i >>= 1
        level += 1
    return tuple(needed)


def nodes_added(
    size: int, leaf: bytes, nodes: Mapping[Coord, bytes], h: HashFn = SM3
) -> list[NewNode]:
    """The nodes that appending leaf hash `leaf` as leaf number `size` creates: (0, size) and
    every parent it completes. `nodes` holds (at least) the coordinates of `append_plan(size)`."""
    out = [(0, size, leaf)]
    acc, level, i = leaf, 0, size
    while i & 1:
        acc = h(_NODE + nodes[(level, i - 1)] + acc)
        i >>= 1
        level += 1
        out.append((level, i, acc))
    return out


def append_many_plan(size: int, count: int) -> frozenset[Coord]:
    """The existing nodes needed to append `count` leaves to a tree of `size`: at most one per
    level, each a perfect subtree of the old tree that a new node takes as its left child."""
    if size < 0 or count < 0:
        raise ValueError("size and count must be non-negative")
    needed = set()
    end = size + count
    level = 0
    while (size >> (level + 1)) < (end >> (level + 1)):  # a new node on the level above
        lo = size >> level  # first new node on this level
        if lo & 1:
            needed.add((level, lo - 1))
        level += 1
    return frozenset(needed)


def nodes_added_many(
    size: int, leaves: Sequence[bytes], nodes: Mapping[Coord, bytes], h: HashFn = SM3
) -> list[NewNode]:
    """The nodes that appending leaf hashes `leaves` to a tree of `size` creates, level by
    level. `nodes` holds (at least) `append_many_plan(size, len(leaves))`."""
    out: list[NewNode] = [(0, size + j, leaf) for j, leaf in enumerate(leaves)]
    row, lo, level = list(leaves), size, 0  # the new nodes of this level start at index lo
    while True:
        hi = lo + len(row)
        parent_lo, parent_hi = lo >> 1, hi >> 1
        if parent_lo >= parent_hi:
            return out
        if lo & 1:  # the first new parent's left child is an existing node
            row.insert(0, nodes[(level, lo - 1)])
        parents = [h(_NODE + row[j] + row[j + 1]) for j in range(0, 2 * (parent_hi - parent_lo), 2)]
        level += 1
        out.extend((level, parent_lo + j, value) for j, value in enumerate(parents))
        row, lo = parents, parent_lo


# ---- verification --------------------------------------------------------------------------

def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes,
    h: HashFn = SM3,
) -> None:
    """Raise ProofInvalid unless `proof` shows leaf hash `leaf_hash` at `index` (from 0) in
    the tree of `size` with `root`. RFC 9162 §2.1.3.2, step for step."""
    if not 0 <= index < size:  # step 1
        raise ProofInvalid("bad-index", f"leaf index {index} not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf_hash  # steps 2-3
    node = _NODE
    for p in proof:  # step 4
        if sn == 0:  # 4a
            raise ProofInvalid("bad-length", "more proof hashes than the path has")
        if fn & 1 or fn == sn:  # 4b
            r = h(node + p + r)
            if not fn & 1 and fn:  # shift until LSB(fn) is set or fn is 0
                shift = (fn & -fn).bit_length() - 1
                fn >>= shift
                sn >>= shift
        else:
            r = h(node + r + p)
        fn >>= 1  # 4c
        sn >>= 1
    if sn != 0:  # step 5
        raise ProofInvalid("bad-length", "fewer proof hashes than the path has")
    if r != root:
        raise ProofInvalid("root-mismatch", "the proof leads to another root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes],
    h: HashFn = SM3,
) -> None:
    """Raise ProofInvalid unless `proof` shows the tree (new_size, new_root) extends the tree
    (old_size, old_root). RFC 9162 §2.1.4.2, step for step, for 0 < old_size < new_size.

    Outside that range there is nothing to prove and the proof must be empty: a tree is
    consistent with itself (equal roots), and every tree extends the empty one (whose root
    must be MTH({}) = HASH()).
    """
    if not 0 <= old_size <= new_size:
        raise ProofInvalid("bad-size", f"sizes {old_size} -> {new_size}")
    if old_size in (0, new_size):
        if proof:
            raise ProofInvalid("bad-length", "a proof where there is nothing to prove")
        if old_size == 0 and old_root != h(b""):
            raise ProofInvalid("old-root-mismatch", "not the root of the empty tree")
        if old_size == new_size and old_root != new_root:
            raise ProofInvalid("new-root-mismatch", "equal sizes, different roots")
        return
    if not proof:  # step 1
        raise ProofInvalid("bad-length", "empty proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2: old tree is the leftmost perfect subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    node = _NODE
    for c in path[1:]:  # step 6
        if sn == 0:  # 6a
            raise ProofInvalid("bad-length", "more proof hashes than the path has")
        if fn & 1 or fn == sn:  # 6b
            fr = h(node + c + fr)
            sr = h(node + c + sr)
            if not fn & 1 and fn:  # shift until LSB(fn) is set or fn is 0
                shift = (fn & -fn).bit_length() - 1
                fn >>= shift
                sn >>= shift
        else:
            sr = h(node + sr + c)
        fn >>= 1  # 6c
        sn >>= 1
    if sn != 0:  # step 7
        raise ProofInvalid("bad-length", "fewer proof hashes than the path has")
    if fr != old_root:
        raise ProofInvalid("old-root-mismatch", "the proof does not lead to the old root")
    if sr != new_root:
        raise ProofInvalid("new-root-mismatch", "the proof does not lead to the new root")


# ---- an in-memory store --------------------------------------------------------------------

class MemoryTree:
    """A Merkle log held in lists, one per level, built only from the functions above (the
    same plans a SQL store runs). For tests and benchmarks."""

    def __init__(self, h: HashFn = SM3) -> None:
        self.h = h
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def lookup(self, coords: Iterable[Coord]) -> dict[Coord, bytes]:
        """The stored nodes at `coords`: the one batched query a SQL store runs per plan."""
        levels = self._levels
        return {c: levels[c[0]][c[1]] for c in coords}

    def _store(self, new: Iterable[NewNode]) -> None:
        levels = self._levels
        for level, index, value in new:
            if level == len(levels):
                levels.append([])
            row = levels[level]
            if index != len(row):
                raise RuntimeError(f"node ({level}, {index}) out of order")
            row.append(value)

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} beyond the tree ({self.size} leaves)")
        return size

    def append_leaf_hash(self, leaf: bytes) -> int:
        """Append an already hashed leaf; return its index."""
        size = self.size
        self._store(nodes_added(size, leaf, self.lookup(append_plan(size)), self.h))
        return size

    def append(self, data: bytes) -> int:
        """Append an entry (hashed as an RFC 9162 leaf); return its index."""
        return self.append_leaf_hash(leaf_hash(data, self.h))

    def append_many(self, entries: Iterable[bytes]) -> int:
        """Append entries in order; return the new tree size."""
        h = self.h
        leaves = [h(_LEAF + data) for data in entries]
        size = self.size
        needed = self.lookup(append_many_plan(size, len(leaves)))
        self._store(nodes_added_many(size, leaves, needed, h))
        return self.size

    def leaf_hash(self, index: int) -> bytes:
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[size]), by default of the whole tree."""
        plan = root_plan(self._check_size(size))
        return plan.assemble(self.lookup(plan.nodes), self.h)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        plan = inclusion_plan(index, self._check_size(size))
        return plan.assemble(self.lookup(plan.nodes), self.h)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        plan = consistency_plan(old_size, self._check_size(new_size))
        return plan.assemble(self.lookup(plan.nodes), self.h)
