from continuum_mcp.secagg._core import *  # noqa: F401,F403
