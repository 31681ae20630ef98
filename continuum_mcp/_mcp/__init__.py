"""The MCP adapter's parts; :mod:`continuum_mcp.server` is their public face."""
