"""Secure aggregation (Bonawitz et al., CCS 2017), semi-honest server, signed client messages.

Pure state machines: :class:`SecAggClient` and :class:`SecAggServer` consume and produce pydantic
messages with JSON-safe fields (bytes as base64) and contain no network code, so the federation
service only carries their messages. ``docs/secagg.md`` describes protocol, parameters and threat
model; the short version:

0. *Advertise keys*: each client makes two X25519 key pairs (``c`` to encrypt shares, ``s`` to agree
   mask seeds) and sends both public keys, signed with its Ed25519 identity. U1 = senders.
1. *Share keys*: each client Shamir-shares its ``s`` private key and a fresh 32-byte self-mask seed
   ``b`` (threshold t = ceil(2n/3) over the roster of n) and sends every peer in U1 its two shares,
   encrypted with XChaCha20-Poly1305 under a key derived from the pairwise ``c`` agreement, with
   session, round, sender and recipient bound into key and associated data. It also commits to
   ``b``. U2 = senders.
2. *Masked input*: the clipped float vector is quantised to fixed point with stochastic rounding,
   the client adds its share of distributed discrete Gaussian noise, then the self-mask PRG(b) and,
   for every peer v in U2, +PRG(s_uv) if u < v else -PRG(s_uv), all modulo 2^32. Seeds are 256-bit
   keyed-BLAKE2b outputs of the X25519 agreement bound to session/round/parameters/parties;
   PRG = SHAKE-256. U3 = senders.
3. *Unmask*: given U3, each survivor sends its share of ``b_u`` for u in U3 and of ``s_u`` for u in
   U2 \\ U3 (never both for one u). The server reconstructs, checks each result against the
   commitment or advertised public key, removes the masks, aborts below t at every step, and
   refuses a sum whose norm exceeds what |U3| clipped inputs plus the noise can produce.

Noise: each client adds N_Z(0, sigma_c^2) with sigma_c = noise_sigma * scale / sqrt(t). Every
aggregate that is released sums at least t clients' noise (the server aborts below t), so its noise
variance is |U3| sigma_c^2 >= (noise_sigma * scale)^2: the target sigma holds with any tolerated
dropouts, and is exceeded by a factor sqrt(|U3| / t) <= sqrt(n / t) ~ 1.22 without dropouts.

SecAgg+ (Bell et al., CCS 2020) is the same code on a sparse graph: with
``SecAggParams.create(..., sparse=SparseDesign())`` a large roster gets k = O(log n) neighbours per
member on a Harary graph whose permutation is seeded by the Merkle root of the advertised keys, so
the graph exists only after advertisement; each member shares keys, masks and Shamir shares (t of
its k + 1 holders) with its neighbours only, and gets a per-member key roster with Merkle proofs
(``close_key_rosters``), inbox and survivor list (``close_survivor_lists``). ``guarantees`` computes
k, t and their failure and privacy-loss bounds. ``docs/secagg.md`` has the details.

Modules: :mod:`.params` (parameters, quantisation, the ring), :mod:`.messages` (payloads and the
server's broadcasts, ``PHASES``), :mod:`.client` and :mod:`.server` (the two state machines),
:mod:`._graph` (roster commitment, permutation, graph), :mod:`.guarantees` (SecAgg+ design and
bounds), :mod:`.testing` (an in-process run of both, for tests and benchmarks).
"""

from continuum_mcp.secagg.client import SecAggClient
from continuum_mcp.secagg.guarantees import GraphGuarantee, SparseDesign, choose_graph, guarantee
from continuum_mcp.secagg.messages import (
    PHASES, SECAGG_METHOD, AdvertiseKeys, AggregateResult, KeyRoster, Kind, MaskedInput,
    ShareInbox, ShareKeys, SignedMessage, SurvivorList, Unmasking,
)
from continuum_mcp.secagg.params import MODULUS, MODULUS_BITS, SecAggParams, quantise, threshold_for
from continuum_mcp.secagg.server import SecAggServer
from continuum_mcp.secagg.testing import DropPoint, SimulationReport, simulate

__all__ = [
    "MODULUS", "MODULUS_BITS", "PHASES", "SECAGG_METHOD", "AdvertiseKeys", "AggregateResult",
    "DropPoint", "GraphGuarantee", "KeyRoster", "Kind", "MaskedInput", "SecAggClient", "SecAggParams",
    "SecAggServer", "ShareInbox", "ShareKeys", "SignedMessage", "SimulationReport", "SparseDesign",
    "SurvivorList", "Unmasking", "choose_graph", "guarantee", "quantise", "simulate", "threshold_for",
]
