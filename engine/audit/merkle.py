"""The Merkle tree of RFC 9162 (Certificate Transparency 2.0), §2.1: pure functions.

Leaves are hashed as ``SHA-256(0x00 || leaf)`` and inner nodes as
``SHA-256(0x01 || left || right)`` so a leaf can never pass for a node. The tree over
n leaves splits at the largest power of two below n (MTH, §2.1.1), which makes every
tree a prefix of the next: that is what lets a consistency proof (§2.1.4) show that
the log at size n still holds, unchanged and in order, the m entries a signed head
of size m vouched for, and an inclusion proof (§2.1.3) show one entry is in it.

Nothing here touches the database; ``engine.audit.transparency`` feeds it the log's
leaves. Proof verification follows the RFC's iterative algorithms (§2.1.3.2,
§2.1.4.2) literally, so a third party can check our proofs with any CT library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """The tree over a list of leaf hashes, with its perfect subtrees kept per level.

    Building costs n - 1 node hashes; afterwards a root of any size and any proof take
    O(log² n) lookups and hashes (only the ragged right edges are hashed again).
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        level = list(leaf_hashes)
        self.levels: list[list[bytes]] = [level]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self.levels.append(level)

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append leaves, hashing only the nodes they change (a log only grows)."""
        start = len(self.levels[0])
        self.levels[0].extend(leaf_hashes)
        height = 0
        while len(self.levels[height]) > 1:
            below = self.levels[height]
            if height + 1 == len(self.levels):
                self.levels.append([])
            above = self.levels[height + 1]
            start //= 2  # the first parent that can have changed
            del above[start:]
            above.extend(node_hash(below[i], below[i + 1])
                         for i in range(2 * start, len(below) - 1, 2))
            height += 1

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all of them by default)."""
        n = self.size if size is None else size
        if not 0 <= n <= self.size:
            raise ValueError(f"tree size {n} is outside 0..{self.size}")
        return EMPTY_ROOT if n == 0 else self._hash(0, n)

    def _hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range the RFC's recursion produces (lo aligned)."""
        n = hi - lo
        if n & (n - 1) == 0:  # a perfect subtree: stored at level log2(n)
            height = n.bit_length() - 1
            return self.levels[height][lo >> height]
        k = _split(n)
        return node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]), §2.1.3.1: the audit path, leaf side first."""
        n = self.size if size is None else size
        if not 0 <= index < n <= self.size:
            raise ValueError(f"no leaf {index} in a tree of size {n}")
        path: list[bytes] = []
        lo, hi = 0, n
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._hash(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """PROOF(first, D[0:second]), §2.1.4.1 (SUBPROOF with b = true)."""
        n = self.size if second is None else second
        if not 0 <= first <= n <= self.size:
            raise ValueError(f"no consistency proof from size {first} to {n}")
        if first in (0, n):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, n, first, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._hash(lo, hi))
        proof.reverse()
        return proof


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    return Tree(leaf_hashes).root()


def verify_inclusion(leaf_hash_: bytes, index: int, size: int, path: Sequence[bytes],
                     root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove ``leaf_hash_`` is leaf ``index`` of the
    tree of ``size`` leaves whose root is ``root_hash``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash_
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree of ``first`` leaves rooted at
    ``first_hash`` is a prefix of the one of ``second`` leaves rooted at ``second_hash``?

    The RFC's algorithm is for 0 < first < second; the edge cases are as in Trillian:
    equal sizes need equal roots and an empty proof, and the empty tree is a prefix of
    every tree.
    """
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0:
        return not proof and first_hash == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash
