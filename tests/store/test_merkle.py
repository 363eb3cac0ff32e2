"""The RFC 9162 tree against the Certificate Transparency reference vectors, against
the RFC's recursive definitions written out naively, and by properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.audit import merkle
from engine.audit.merkle import Tree, verify_consistency, verify_inclusion

# The test tree of the CT reference implementations (certificate-transparency-go,
# transparency-dev/merkle): eight leaves and the root for each prefix of them.
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {  # (index, size): audit path
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}
CONSISTENCY = {  # (first, second): proof
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (6, 7): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}


def _tree(leaves: list[bytes]) -> Tree:
    return Tree([merkle.leaf_hash(x) for x in leaves])


# The RFC's definitions, recursively and without any cleverness: the oracle.
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + _mth(d[:k]) + _mth(d[k:])).digest()


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    return _path(m, d[:k]) + [_mth(d[k:])] if m < k else _path(m - k, d[k:]) + [_mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = _k(len(d))
    if m <= k:
        return _subproof(m, d[:k], b) + [_mth(d[k:])]
    return _subproof(m - k, d[k:], False) + [_mth(d[:k])]


def test_the_reference_roots() -> None:
    tree = _tree(LEAVES)
    for size, expected in enumerate(ROOTS):
        assert tree.root(size).hex() == expected
    assert merkle.root([]) == merkle.EMPTY_ROOT


def test_the_reference_proofs() -> None:
    tree = _tree(LEAVES)
    for (index, size), path in INCLUSION.items():
        proof = tree.inclusion_proof(index, size)
        assert [p.hex() for p in proof] == path
        assert verify_inclusion(tree.leaf(index), index, size, proof, tree.root(size))
    for (first, second), expected in CONSISTENCY.items():
        proof = tree.consistency_proof(first, second)
        assert [p.hex() for p in proof] == expected
        assert verify_consistency(first, second, tree.root(first), tree.root(second), proof)


def test_domain_separation() -> None:
    left, right = b"a" * 32, b"b" * 32
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@given(leaf_lists)
def test_roots_and_proofs_are_the_rfcs_definitions(leaves: list[bytes]) -> None:
    tree = _tree(leaves)
    for n in range(len(leaves) + 1):
        assert tree.root(n) == _mth(leaves[:n])
    n = len(leaves)
    for m in range(n):
        assert tree.inclusion_proof(m, n) == _path(m, leaves)
    for m in range(1, n):
        assert tree.consistency_proof(m, n) == _subproof(m, leaves, True)


@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies_and_no_other_leaf_does(
        leaves: list[bytes], data: st.DataObject) -> None:
    tree = _tree(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index, size)
    root = tree.root(size)
    assert verify_inclusion(tree.leaf(index), index, size, proof, root)
    assert not verify_inclusion(merkle.leaf_hash(b"forged"), index, size, proof, root)
    for other in range(size):
        if other != index and tree.leaf(other) != tree.leaf(index):
            assert not verify_inclusion(tree.leaf(other), index, size, proof, root)
    if size > 1:
        assert not verify_inclusion(tree.leaf(index), index, size, proof[:-1], root)
        wrong = (index + 1) % size
        if tree.leaf(wrong) != tree.leaf(index):
            assert not verify_inclusion(tree.leaf(index), wrong, size, proof, root)


@given(leaf_lists, st.data())
def test_every_consistency_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    tree = _tree(leaves)
    second = data.draw(st.integers(0, len(leaves)))
    first = data.draw(st.integers(0, second))
    proof = tree.consistency_proof(first, second)
    assert verify_consistency(first, second, tree.root(first), tree.root(second), proof)


@given(leaf_lists, st.data())
def test_a_changed_leaf_or_a_truncation_fails_consistency(
        leaves: list[bytes], data: st.DataObject) -> None:
    """The old head is honest; the log it is checked against was tampered with."""
    leaves = [i.to_bytes(2, "big") + x for i, x in enumerate(leaves)]  # all distinct
    first = data.draw(st.integers(1, len(leaves)))
    old_root = _tree(leaves).root(first)
    kind = data.draw(st.sampled_from(["edit", "truncate", "delete", "reorder", "insert"]))
    tampered = list(leaves)
    at = data.draw(st.integers(0, first - 1))
    if kind == "edit":
        tampered[at] = tampered[at] + b"!"
    elif kind == "truncate":
        tampered = tampered[:at]
    elif kind == "delete":
        del tampered[at]
    elif kind == "insert":
        tampered.insert(at, b"forged!!!")
    else:
        other = data.draw(st.integers(0, len(leaves) - 1))
        tampered[at], tampered[other] = tampered[other], tampered[at]
        if tampered[:first] == leaves[:first]:
            return  # a leaf swapped with itself
    tree = _tree(tampered)
    second = tree.size
    if second < first:
        # A log shorter than a signed head: no proof can be asked for, it is refused.
        with pytest.raises(ValueError):
            tree.consistency_proof(first, second)
        return
    proof = tree.consistency_proof(first, second)
    assert not verify_consistency(first, second, old_root, tree.root(), proof)


@given(st.lists(st.lists(st.binary(max_size=4), max_size=20), max_size=8))
def test_a_tree_extended_piece_by_piece_is_the_tree_built_at_once(
        pieces: list[list[bytes]]) -> None:
    tree = Tree([])
    everything: list[bytes] = []
    for piece in pieces:
        tree.extend([merkle.leaf_hash(x) for x in piece])
        everything += piece
        whole = _tree(everything)
        assert tree.root() == whole.root() == _mth(everything)
        assert tree.levels == whole.levels


def test_bad_sizes_are_refused() -> None:
    tree = _tree(LEAVES)
    with pytest.raises(ValueError):
        tree.inclusion_proof(8, 8)
    with pytest.raises(ValueError):
        tree.consistency_proof(5, 9)
    with pytest.raises(ValueError):
        tree.root(9)
    assert not verify_inclusion(tree.leaf(0), 0, 0, [], tree.root(0))
    assert not verify_consistency(5, 4, tree.root(5), tree.root(4), [])
    assert not verify_consistency(3, 3, tree.root(3), tree.root(4), [])
    assert not verify_consistency(3, 5, tree.root(3), tree.root(5), [])


# Exhaustive over every small tree, without hypothesis: the verifiers' bit-walking loops
# take a different branch for each shape of (index, size) and (first, second), and a
# handful of random examples misses some of them.
SMALL = 33
SMALL_TREE = _tree([i.to_bytes(2, "big") for i in range(SMALL)])
OTHER = merkle.leaf_hash(b"not in the tree")


def test_every_inclusion_proof_of_every_small_tree_verifies_and_only_as_given() -> None:
    tree = SMALL_TREE
    for size in range(1, SMALL + 1):
        root = tree.root(size)
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            leaf = tree.leaf(index)
            assert verify_inclusion(leaf, index, size, proof, root), (index, size)
            assert not verify_inclusion(OTHER, index, size, proof, root)
            assert not verify_inclusion(leaf, index, size, proof, OTHER)
            assert not verify_inclusion(leaf, index, size, [*proof, OTHER], root), (index, size)
            assert not verify_inclusion(leaf, index, size, [*proof, root], root), (index, size)
            if proof:
                assert not verify_inclusion(leaf, index, size, proof[:-1], root)
            for i in range(len(proof)):
                bad = [*proof[:i], OTHER, *proof[i + 1:]]
                assert not verify_inclusion(leaf, index, size, bad, root)
            for other in range(size):
                if other != index:
                    assert not verify_inclusion(leaf, other, size, proof, root), (
                        index, other, size)
            if size + 1 <= SMALL:
                assert not verify_inclusion(leaf, index, size + 1, proof, tree.root(size + 1))
            if size > 1:
                assert not verify_inclusion(leaf, index, size - 1, proof, tree.root(size - 1))


def test_an_index_out_of_range_is_not_included() -> None:
    tree = SMALL_TREE
    for size in range(1, 9):
        # The leaf just past the end: a one-leaf tree's root is its leaf hash, so only
        # the bound check refuses leaf 1 of 1.
        assert not verify_inclusion(tree.leaf(size - 1), size, size,
                                    tree.inclusion_proof(size - 1, size), tree.root(size))
    assert not verify_inclusion(tree.leaf(0), 1, 1, [], tree.root(1))
    assert verify_inclusion(tree.leaf(0), 0, 1, [], tree.root(1))
    assert not verify_inclusion(tree.leaf(0), -1, 1, [], tree.root(1))


def test_every_consistency_proof_of_every_small_tree_verifies_and_only_as_given() -> None:
    tree = SMALL_TREE
    for second in range(1, SMALL + 1):
        new = tree.root(second)
        for first in range(1, second):
            old = tree.root(first)
            proof = tree.consistency_proof(first, second)
            assert verify_consistency(first, second, old, new, proof), (first, second)
            assert not verify_consistency(first, second, OTHER, new, proof)
            assert not verify_consistency(first, second, old, OTHER, proof)
            assert not verify_consistency(first, second, old, new, [*proof, OTHER]), (
                first, second)
            assert not verify_consistency(first, second, old, new, [*proof, new])
            assert not verify_consistency(first, second, old, new, proof[:-1])
            for i in range(len(proof)):
                bad = [*proof[:i], OTHER, *proof[i + 1:]]
                assert not verify_consistency(first, second, old, new, bad), (first, second, i)
            if second + 1 <= SMALL:
                assert not verify_consistency(first, second + 1, old, tree.root(second + 1),
                                              proof)
            if first + 1 < second:
                assert not verify_consistency(first + 1, second, tree.root(first + 1), new,
                                              proof), (first, second)


def test_the_consistency_edge_cases() -> None:
    tree = SMALL_TREE
    for size in range(SMALL + 1):
        root = tree.root(size)
        assert verify_consistency(0, size, merkle.EMPTY_ROOT, root, [])
        assert verify_consistency(size, size, root, root, [])
        assert not verify_consistency(size, size, root, root, [root])
        if size:
            # The empty tree is a prefix of every tree, but only as the empty root.
            assert not verify_consistency(0, size, root, root, [])
            assert not verify_consistency(0, size, OTHER, root, [])
            assert not verify_consistency(0, size, merkle.EMPTY_ROOT, root, [root])
            assert not verify_consistency(size, size, root, OTHER, [])
            assert not verify_consistency(size, size - 1, root, tree.root(size - 1), [])
    assert not verify_consistency(-1, 3, merkle.EMPTY_ROOT, tree.root(3), [])


def test_the_default_size_is_the_whole_tree() -> None:
    tree = _tree(LEAVES)
    assert tree.root() == tree.root(8)
    for index in range(8):
        assert tree.inclusion_proof(index) == tree.inclusion_proof(index, 8)
    for first in range(9):
        assert tree.consistency_proof(first) == tree.consistency_proof(first, 8)


def test_the_refusal_sentences() -> None:
    tree = _tree(LEAVES)
    with pytest.raises(ValueError) as err:
        tree.root(9)
    assert str(err.value) == "tree size 9 is outside 0..8"
    with pytest.raises(ValueError) as err:
        tree.root(-1)
    assert str(err.value) == "tree size -1 is outside 0..8"
    with pytest.raises(ValueError) as err:
        tree.inclusion_proof(8)
    assert str(err.value) == "no leaf 8 in a tree of size 8"
    with pytest.raises(ValueError) as err:
        tree.inclusion_proof(0, 9)
    assert str(err.value) == "no leaf 0 in a tree of size 9"
    with pytest.raises(ValueError) as err:
        tree.consistency_proof(9)
    assert str(err.value) == "no consistency proof from size 9 to 8"
    with pytest.raises(ValueError) as err:
        tree.consistency_proof(5, 4)
    assert str(err.value) == "no consistency proof from size 5 to 4"
