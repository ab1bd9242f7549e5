"""The RFC 9162 Merkle tree: reference vectors, a literal RFC recursion, pymerkle, and failures.

Three independent checks of the tree and its proofs:

* the certificate-transparency reference vectors (SHA-256, 8 leaves), from
  google/certificate-transparency `merkle_tree_test.cc`, as also carried by
  transparency-dev/merkle `testonly/constants.go`;
* `Reference`, the recursive definitions of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 written out
  literally over a list of leaves (no perfect-node storage, no plans);
* pymerkle 7.0.0 (`interop` marker): roots and inclusion paths element for element. Its
  consistency proofs are shaped differently from RFC 9162's (where the RFC descends left at
  m == k, pymerkle descends right and proves from the first new leaf), so those are compared
  through verification only: its proofs must verify against our roots.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustspace.crypto import sm3
from trustspace.ledger.errors import ProofInvalid
from trustspace.ledger.merkle import (
    SHA256,
    SM3,
    HashFn,
    MemoryTree,
    PathPlan,
    append_many_plan,
    append_plan,
    consistency_plan,
    empty_root,
    inclusion_plan,
    leaf_hash,
    node_hash,
    nodes_added,
    nodes_added_many,
    root_plan,
    verify_consistency,
    verify_inclusion,
)

# ---- certificate-transparency reference vectors (SHA-256) ----------------------------------

CT_LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [bytes.fromhex(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
_H = {
    "96a2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f08": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca85": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37e": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "fac5": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "6e34": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "0ebc": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
}
CT_INCLUSION = [  # (index, size, path)
    (0, 1, []),
    (0, 8, ["96a2", "5f08", "6b47"]),
    (5, 8, ["bc1a", "ca85", "d37e"]),
    (2, 3, ["fac5"]),
    (1, 5, ["6e34", "5f08", "bc1a"]),
]
CT_CONSISTENCY = [  # (old size, new size, path)
    (1, 1, []),
    (1, 8, ["96a2", "5f08", "6b47"]),
    (6, 8, ["0ebc", "ca85", "d37e"]),
    (2, 5, ["5f08", "bc1a"]),
]


def _hex_path(names: list[str]) -> list[bytes]:
    return [bytes.fromhex(_H[n]) for n in names]


@pytest.fixture(scope="module")
def ct_tree() -> MemoryTree:
    tree = MemoryTree(SHA256)
    tree.append_many(CT_LEAVES)
    return tree


def test_ct_roots(ct_tree: MemoryTree) -> None:
    assert [ct_tree.root(n) for n in range(9)] == CT_ROOTS


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_ct_inclusion(ct_tree: MemoryTree, index: int, size: int, path: list[str]) -> None:
    proof = ct_tree.inclusion_proof(index, size)
    assert proof == _hex_path(path)
    verify_inclusion(leaf_hash(CT_LEAVES[index], SHA256), index, size, proof, CT_ROOTS[size],
                     SHA256)


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_ct_consistency(ct_tree: MemoryTree, old: int, new: int, path: list[str]) -> None:
    proof = ct_tree.consistency_proof(old, new)
    assert proof == _hex_path(path)
    verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof, SHA256)


def test_hash_functions() -> None:
    assert empty_root(SHA256) == CT_ROOTS[0]
    assert empty_root() == sm3(b"")
    assert leaf_hash(b"", SHA256) == CT_ROOTS[1]
    assert node_hash(CT_ROOTS[1], leaf_hash(b"\x00", SHA256), SHA256) == CT_ROOTS[2]
    assert leaf_hash(b"abc") == sm3(b"\x00abc")
    assert node_hash(b"l", b"r") == sm3(b"\x01lr")


@given(st.binary(max_size=300))
def test_fast_sm3_is_sm3(data: bytes) -> None:
    assert SM3(data) == sm3(data)


# ---- a literal RFC 9162 recursion ----------------------------------------------------------

class Reference:
    """RFC 9162 §2.1 written out as defined, over the leaf list (MTH memoised by range)."""

    def __init__(self, leaves: list[bytes], h: HashFn) -> None:
        self.leaves, self.h = leaves, h
        self.mth = functools.cache(self._mth)

    @staticmethod
    def k(n: int) -> int:  # the largest power of two smaller than n
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def _mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return self.h(b"")
        if n == 1:
            return self.h(b"\x00" + self.leaves[start])
        k = self.k(n)
        return self.h(b"\x01" + self.mth(start, start + k) + self.mth(start + k, end))

    def path(self, m: int, start: int, end: int) -> list[bytes]:  # PATH(m, D[start:end])
        n = end - start
        if n == 1:
            return []
        k = self.k(n)
        if m < k:
            return self.path(m, start, start + k) + [self.mth(start + k, end)]
        return self.path(m - k, start + k, end) + [self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = self.k(n)
        if m <= k:
            return self.subproof(m, start, start + k, b) + [self.mth(start + k, end)]
        return self.subproof(m - k, start + k, end, False) + [self.mth(start, start + k)]

    def proof(self, m: int, n: int) -> list[bytes]:  # PROOF(m, D[n])
        return self.subproof(m, 0, n, True)


def _entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() * (i % 3 + 1) for i in range(n)]


@pytest.mark.parametrize("h", [SHA256, SM3], ids=["sha256", "sm3"])
def test_against_rfc_recursion(h: HashFn) -> None:
    """Every root, inclusion path and consistency path of every tree of 1..70 leaves."""
    entries = _entries(70)
    ref = Reference(entries, h)
    tree = MemoryTree(h)
    assert tree.root() == h(b"")
    for n in range(1, 71):
        tree.append(entries[n - 1])
        assert tree.root() == ref.mth(0, n)
        for i in range(n):
            proof = tree.inclusion_proof(i)
            assert proof == ref.path(i, 0, n), (i, n)
            verify_inclusion(tree.leaf_hash(i), i, n, proof, tree.root(), h)
        for m in range(1, n):
            proof = tree.consistency_proof(m)
            assert proof == ref.proof(m, n), (m, n)
            verify_consistency(m, n, tree.root(m), tree.root(), proof, h)


def test_large_sizes_against_rfc_recursion() -> None:
    entries = _entries(4200)
    ref = Reference(entries, SHA256)
    tree = MemoryTree(SHA256)
    tree.append_many(entries)
    rng = random.Random(9162)
    for n in (511, 512, 513, 1000, 1023, 1024, 1025, 4095, 4096, 4097, 4200):
        assert tree.root(n) == ref.mth(0, n)
        for i in [0, n - 1, *rng.sample(range(n), 5)]:
            assert tree.inclusion_proof(i, n) == ref.path(i, 0, n)
        for m in [1, n - 1, *rng.sample(range(1, n), 5)]:
            assert tree.consistency_proof(m, n) == ref.proof(m, n)


# ---- pymerkle ------------------------------------------------------------------------------

@pytest.mark.interop
def test_pymerkle_roots_and_paths() -> None:
    from pymerkle import InmemoryTree
    from pymerkle import verify_consistency as pm_verify_consistency

    entries = _entries(70)
    ours, theirs = MemoryTree(SHA256), InmemoryTree(algorithm="sha256")
    for data in entries:
        ours.append(data)
        theirs.append_entry(data)
    for n in range(0, 71):
        assert ours.root(n) == theirs.get_root(n)
    for n in range(1, 71):
        for i in range(n):
            # pymerkle counts leaves from 1 and puts the leaf hash itself first in its path
            assert ours.inclusion_proof(i, n) == theirs.prove_inclusion(i + 1, n).path[1:]
        for m in range(1, n + 1):
            pm_verify_consistency(ours.root(m), ours.root(n), theirs.prove_consistency(m, n))


@pytest.mark.interop
def test_pymerkle_large_sizes() -> None:
    from pymerkle import InmemoryTree

    entries = _entries(3000)
    ours, theirs = MemoryTree(SHA256), InmemoryTree(algorithm="sha256")
    ours.append_many(entries)
    theirs.append_entries(entries)
    rng = random.Random(6962)
    for n in (1000, 1024, 1025, 2047, 3000):
        assert ours.root(n) == theirs.get_root(n)
        for i in [0, n - 1, *rng.sample(range(n), 8)]:
            assert ours.inclusion_proof(i, n) == theirs.prove_inclusion(i + 1, n).path[1:]


# ---- storage: plans and appends ------------------------------------------------------------

def _exists(coord: tuple[int, int], size: int) -> bool:
    level, index = coord
    return (index + 1) << level <= size


@given(size=st.integers(1, 5000), data=st.data())
def test_plans_name_only_perfect_nodes_of_the_tree(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    for plan in (root_plan(size), inclusion_plan(index, size), consistency_plan(old, size)):
        assert all(_exists(c, size) for c in plan.nodes)
    assert len(inclusion_plan(index, size).nodes) <= 2 * size.bit_length()


def test_assemble_needs_every_planned_node() -> None:
    tree = MemoryTree(SHA256)
    tree.append_many(_entries(13))
    plan = inclusion_plan(5, 13)
    nodes = tree.lookup(plan.nodes)
    assert plan.assemble(nodes, SHA256) == tree.inclusion_proof(5)
    del nodes[min(plan.nodes)]
    with pytest.raises(LookupError):
        plan.assemble(nodes, SHA256)
    assert root_plan(0).nodes == frozenset()
    assert root_plan(0).assemble({}, SHA256) == CT_ROOTS[0]
    assert consistency_plan(0, 13) == consistency_plan(13, 13) == PathPlan((), frozenset())


def test_plan_arguments_are_checked() -> None:
    for bad in (lambda: inclusion_plan(3, 3), lambda: inclusion_plan(-1, 3),
                lambda: inclusion_plan(0, 0), lambda: consistency_plan(4, 3),
                lambda: consistency_plan(-1, 3), lambda: root_plan(-1),
                lambda: append_plan(-1), lambda: append_many_plan(0, -1)):
        with pytest.raises(ValueError):
            bad()
    tree = MemoryTree()
    tree.append(b"x")
    with pytest.raises(ValueError):
        tree.root(2)


@given(chunks=st.lists(st.integers(0, 40), max_size=12))
def test_batched_appends_equal_single_appends(chunks: list[int]) -> None:
    """Appending in batches creates exactly the nodes that one-by-one appends create, using
    only the pre-existing nodes its plan names."""
    h = SHA256
    single: list[tuple[int, int, bytes]] = []
    store: dict[tuple[int, int], bytes] = {}
    batched: list[tuple[int, int, bytes]] = []
    size = 0
    leaves = [leaf_hash(e, h) for e in _entries(sum(chunks))]
    for chunk in chunks:
        part = leaves[size : size + chunk]
        plan = append_many_plan(size, chunk)
        assert all(_exists(c, size) for c in plan)
        assert len(plan) <= max(1, (size + chunk).bit_length())
        new = nodes_added_many(size, part, {c: store[c] for c in plan}, h)
        batched += new
        for level, index, value in new:
            store[(level, index)] = value
        size += chunk
    ones: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(leaves):
        new = nodes_added(i, leaf, {c: ones[c] for c in append_plan(i)}, h)
        single += new
        for level, index, value in new:
            ones[(level, index)] = value
    assert sorted(batched) == sorted(single)
    assert store == ones
    assert len(batched) == len(store)  # every node is created once


def test_memory_tree_batches_match() -> None:
    entries = _entries(300)
    one, many = MemoryTree(), MemoryTree()
    for e in entries:
        one.append(e)
    for lo, hi in ((0, 1), (1, 1), (1, 7), (7, 64), (64, 300)):
        assert many.append_many(entries[lo:hi]) == hi
    assert [one.root(n) for n in range(301)] == [many.root(n) for n in range(301)]


# ---- failures ------------------------------------------------------------------------------

def _flip(data: bytes, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _reason(call: Callable[..., None], *args: object) -> str:
    with pytest.raises(ProofInvalid) as caught:
        call(*args)
    return caught.value.reason


def _turns(index: int, size: int) -> tuple[bool, ...]:
    """Which side each sibling on the leaf's path lies (True: right), from the leaf up."""
    return tuple((part[0][1] << part[0][0]) > index for part in inclusion_plan(index, size).parts)


@pytest.fixture(scope="module")
def sm3_tree() -> MemoryTree:
    tree = MemoryTree()
    tree.append_many(_entries(100))
    return tree


def test_inclusion_failures(sm3_tree: MemoryTree) -> None:
    for n in (1, 2, 3, 8, 57, 100):
        root = sm3_tree.root(n)
        for i in range(n):
            leaf, proof = sm3_tree.leaf_hash(i), sm3_tree.inclusion_proof(i, n)
            verify_inclusion(leaf, i, n, proof, root)
            assert _reason(verify_inclusion, _flip(leaf), i, n, proof, root) == "root-mismatch"
            assert _reason(verify_inclusion, leaf, i, n, proof, _flip(root)) == "root-mismatch"
            for j in range(len(proof)):
                bad = [*proof[:j], _flip(proof[j], 77), *proof[j + 1 :]]
                assert _reason(verify_inclusion, leaf, i, n, bad, root) == "root-mismatch"
            assert _reason(verify_inclusion, leaf, i, n, [*proof, root], root) == "bad-length"
            if proof:
                assert _reason(verify_inclusion, leaf, i, n, proof[:-1], root) == "bad-length"
            assert _reason(verify_inclusion, leaf, n, n, proof, root) == "bad-index"
            assert _reason(verify_inclusion, leaf, -1, n, proof, root) == "bad-index"
            if n > 1:  # another leaf's position in the same tree: another turn sequence
                assert _reason(verify_inclusion, leaf, (i + 1) % n, n, proof, root) in {
                    "root-mismatch", "bad-length"}
            # The root does not commit to the tree size (the signed checkpoint does): a proof
            # passes for another size exactly when the leaf's path has the same turns there.
            for other in range(i + 1, 2 * n + 2):
                if other == n:
                    continue
                if _turns(i, other) == _turns(i, n):
                    verify_inclusion(leaf, i, other, proof, root)
                else:
                    assert _reason(verify_inclusion, leaf, i, other, proof, root) in {
                        "root-mismatch", "bad-length"}


def test_consistency_failures(sm3_tree: MemoryTree) -> None:
    for n in (2, 3, 8, 9, 57, 100):
        new_root = sm3_tree.root(n)
        for m in range(1, n):
            old_root, proof = sm3_tree.root(m), sm3_tree.consistency_proof(m, n)
            verify_consistency(m, n, old_root, new_root, proof)
            args = (m, n, old_root, new_root)
            assert _reason(verify_consistency, m, n, old_root, _flip(new_root), proof) == \
                "new-root-mismatch"
            old_reason = _reason(verify_consistency, m, n, _flip(old_root), new_root, proof)
            # a power-of-two old tree is the proof's own first hash, so only the new root fails
            assert old_reason == ("new-root-mismatch" if m & (m - 1) == 0 else
                                  "old-root-mismatch")
            for j in range(len(proof)):
                bad = [*proof[:j], _flip(proof[j], 5), *proof[j + 1 :]]
                assert _reason(verify_consistency, *args, bad) in {
                    "old-root-mismatch", "new-root-mismatch"}
            assert _reason(verify_consistency, *args, [*proof, new_root]) == "bad-length"
            assert _reason(verify_consistency, *args, proof[:-1]) == "bad-length"
            if len(consistency_plan(m, n + 1).parts) != len(proof):
                assert _reason(verify_consistency, m, n + 1, old_root, new_root, proof) == \
                    "bad-length"
            assert _reason(verify_consistency, n, m, old_root, new_root, proof) == "bad-size"


def test_consistency_edge_cases(sm3_tree: MemoryTree) -> None:
    root5, root0 = sm3_tree.root(5), sm3_tree.root(0)
    verify_consistency(5, 5, root5, root5, [])
    verify_consistency(0, 5, root0, root5, [])
    verify_consistency(0, 0, root0, root0, [])
    assert _reason(verify_consistency, 5, 5, root5, _flip(root5), []) == "new-root-mismatch"
    assert _reason(verify_consistency, 5, 5, root5, root5, [root5]) == "bad-length"
    assert _reason(verify_consistency, 0, 5, root5, root5, []) == "old-root-mismatch"
    assert _reason(verify_consistency, 0, 5, root0, root5, [root5]) == "bad-length"
    assert _reason(verify_consistency, -1, 5, root0, root5, []) == "bad-size"


@pytest.fixture(scope="module")
def sm3_big() -> MemoryTree:
    tree = MemoryTree()
    tree.append_many(_entries(3000))
    return tree


@given(size=st.integers(1, 3000), data=st.data())
def test_any_flipped_bit_fails(sm3_big: MemoryTree, size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    proof = sm3_big.inclusion_proof(index, size)
    root = sm3_big.root(size)
    leaf = sm3_big.leaf_hash(index)
    verify_inclusion(leaf, index, size, proof, root)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        proof[j] = _flip(proof[j], bit)
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaf, index, size, proof, root)
    old = data.draw(st.integers(1, size))
    cproof = sm3_big.consistency_proof(old, size)
    verify_consistency(old, size, sm3_big.root(old), root, cproof)
    if cproof:
        j = data.draw(st.integers(0, len(cproof) - 1))
        cproof[j] = _flip(cproof[j], data.draw(st.integers(0, 255)))
        with pytest.raises(ProofInvalid):
            verify_consistency(old, size, sm3_big.root(old), root, cproof)
