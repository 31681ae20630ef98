"""Who masks with whom: the complete graph (Bonawitz) or a permuted Harary graph (SecAgg+).

The sparse graph is fixed only after the key advertisements: the server commits to the sorted
list of signed advertisements with a Merkle root, the *round digest* hashes the parameter digest
with that root, and a keyed pseudo-random permutation of the leaf indices (seeded by the round
digest) places the members on a cycle, each joined to its k/2 nearest members on either side
(the Harary graph H(N, k), as in Bell et al. 2020). A client learns its neighbours from its own
leaf index, the root and the leaf count alone, and checks each neighbour's advertisement with a
Merkle proof, so it needs O(k log N) bytes, not the whole roster; every party computes the same
graph, and a server that changes any advertisement, their order or their number changes the
round digest, which is bound into every later key derivation and message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from continuum_mcp.errors import CryptoError

_LEAF, _NODE, _ROOT = b"\x00", b"\x01", b"\x02"
_EMPTY = hashlib.sha256(b"continuum-mcp/secagg/merkle/empty/v1").digest()
_PRP_ROUNDS = 6


# --------------------------------------------------------------------------- Merkle commitment


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


class MerkleTree:
    """A perfect binary tree over the leaves (padded with a constant); the root binds the count."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise CryptoError("a Merkle tree needs at least one leaf")
        self.size = len(leaves)
        width = 1 << max(0, (self.size - 1).bit_length())
        level = list(leaves) + [_EMPTY] * (width - self.size)
        self._levels = [level]
        while len(level) > 1:
            level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            self._levels.append(level)
        self.root = _root(self.size, level[0])

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes from the leaf up (one per level)."""
        out = []
        for level in self._levels[:-1]:
            out.append(level[index ^ 1])
            index >>= 1
        return out


def _root(size: int, top: bytes) -> bytes:
    return hashlib.sha256(_ROOT + size.to_bytes(8, "big") + top).digest()


def verify_proof(root: bytes, size: int, index: int, leaf: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``CryptoError`` unless ``leaf`` sits at ``index`` of the tree with this root and size."""
    if not 0 <= index < size or len(proof) != max(0, (size - 1).bit_length()):
        raise CryptoError("Merkle proof has the wrong shape for this roster")
    node = leaf
    for sibling in proof:
        node = _node(sibling, node) if index & 1 else _node(node, sibling)
        index >>= 1
    if _root(size, node) != root:
        raise CryptoError("advertisement is not in the committed key roster (Merkle proof fails)")


def round_digest(params_digest: str, root: bytes) -> str:
    """Digest of the parameters extended by the key-roster commitment (binds the graph)."""
    return hashlib.sha256(b"continuum-mcp/secagg/round/v1\x00" + bytes.fromhex(params_digest)
                          + root).hexdigest()


# --------------------------------------------------------------------------- permutation


class _Permutation:
    """A keyed pseudo-random permutation of [0, size): an unbalanced Feistel network with a
    BLAKE2b round function and cycle walking; evaluated pointwise, so a client needs only its own
    and its neighbours' positions."""

    def __init__(self, seed: bytes, size: int) -> None:
        self.size = size
        bits = max(2, (size - 1).bit_length())
        self._hi, self._lo = bits - bits // 2, bits // 2
        self._base = hashlib.blake2b(key=seed[:32], digest_size=8, person=b"secagg-prp-v1")

    def _f(self, r: int, x: int, bits: int) -> int:
        h = self._base.copy()
        h.update(bytes((r,)) + x.to_bytes(8, "big"))
        return int.from_bytes(h.digest(), "big") & ((1 << bits) - 1)

    def _feistel(self, x: int, rounds: range) -> int:
        """The network forward (rounds in order) or backward (reversed): each round is an
        involution given the other half, so the same loop inverts it."""
        a, b = x >> self._lo, x & ((1 << self._lo) - 1)  # a: hi bits, b: lo bits
        for r in rounds:
            if r % 2 == 0:
                a ^= self._f(r, b, self._hi)
            else:
                b ^= self._f(r, a, self._lo)
        return (a << self._lo) | b

    def _walk(self, x: int, rounds: range) -> int:
        x = self._feistel(x, rounds)
        while x >= self.size:  # cycle walking stays inside [0, size)
            x = self._feistel(x, rounds)
        return x

    def __call__(self, x: int) -> int:
        return self._walk(x, range(_PRP_ROUNDS))

    def inverse(self, y: int) -> int:
        return self._walk(y, range(_PRP_ROUNDS - 1, -1, -1))


# --------------------------------------------------------------------------- the mask graph


class MaskGraph:
    """The neighbour relation over the N advertised members, by Merkle leaf index (sorted ids).

    ``degree=None`` (or a degree >= N - 1) is the complete graph, Bonawitz's special case; the
    sparse graph needs the ``seed`` (the round digest), so it exists only after advertisement.
    """

    def __init__(self, size: int, degree: int | None, seed: bytes = b"") -> None:
        self.size = size
        self.complete = degree is None or degree >= size - 1
        self.degree = size - 1 if self.complete else int(degree)  # type: ignore[arg-type]
        self._perm = None if self.complete else _Permutation(seed, size)

    @property
    def holder_count(self) -> int:
        """How many holders each member's secrets are shared among (its closed neighbourhood)."""
        return self.degree + 1

    def closed(self, index: int) -> dict[int, int]:
        """Closed neighbourhood of the member at leaf ``index``: holder leaf index -> the Shamir
        point it holds. Complete graph: leaf index + 1 for everyone. Sparse: the holder's offset
        on the cycle, shifted into 1..k+1, so holder v of u's secrets holds point
        ``k + 2 - (point of u among v's holders)``: each side knows the other's point in O(1)."""
        if self._perm is None:
            return {j: j + 1 for j in range(self.size)}
        p, half, n = self._perm(index), self.degree // 2, self.size
        return {self._perm.inverse((p + off) % n): off + half + 1 for off in range(-half, half + 1)}

    def mirror_point(self, point: int, owner_index: int) -> int:
        """The point the *owner* holds of a neighbour's secrets, given the neighbour's point in
        the owner's closed neighbourhood."""
        return owner_index + 1 if self._perm is None else self.degree + 2 - point

    def all_closed(self) -> list[dict[int, int]]:
        """Every member's :meth:`closed` map from one pass over the cycle (the server's view);
        for the complete graph the one map is shared by all."""
        if self._perm is None:
            shared = self.closed(0)
            return [shared] * self.size
        positions = [self._perm(i) for i in range(self.size)]
        at = [0] * self.size
        for leaf, pos in enumerate(positions):
            at[pos] = leaf
        half, n = self.degree // 2, self.size
        return [{at[(pos + off) % n]: off + half + 1 for off in range(-half, half + 1)}
                for pos in positions]

    def neighbour_indices(self, index: int) -> list[int]:
        """Leaf indices of the open neighbourhood of the member at ``index`` (sorted)."""
        return sorted(j for j in self.closed(index) if j != index)
