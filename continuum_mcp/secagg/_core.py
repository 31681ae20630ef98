"""Old import path of the secure-aggregation package, kept so that existing callers still import.

New code imports from :mod:`continuum_mcp.secagg` (its ``__all__`` is the public face).
"""

from continuum_mcp.privacy.dp import discrete_gaussian
from continuum_mcp.secagg import *  # noqa: F401,F403
from continuum_mcp.secagg import __all__ as _public
from continuum_mcp.secagg._masks import SEED_BYTES, pairwise_mask_seed, prg_uint32, self_mask_seed, self_seed_commitment

__all__ = [*_public, "SEED_BYTES", "discrete_gaussian", "pairwise_mask_seed", "prg_uint32",
           "self_mask_seed", "self_seed_commitment"]
