"""The federation: the wire contract (``protocol``), the coordinator API client (``api``), a pure
round participant (``participant``), what a contribution carries (``submission``), the member's
client (``client``) and the coordinator (``coordinator``).

Submodules are imported explicitly (``from continuum_mcp.federation.api import CoordinatorAPI``):
this package face stays light so the coordinator does not load the client and vice versa.
"""

__all__ = ["api", "client", "coordinator", "participant", "protocol", "submission"]
