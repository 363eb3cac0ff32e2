"""The RFC 9162 tree against the Certificate Transparency reference vectors, against
the RFC's recursive definitions written out naively, and by properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.store import merkle
from engine.store.merkle import Tree, verify_consistency, verify_inclusion

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
