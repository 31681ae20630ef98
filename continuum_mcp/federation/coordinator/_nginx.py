"""The nginx configuration in front of N coordinator processes, generated from the coordinator's settings.

Why generated: the proxy's limits must match the coordinator's or they contradict each other. The
body limit is ``protocol.MAX_BODY_BYTES`` (nginx answers a larger body itself, as the same JSON
``ErrorBody`` the coordinator would send), the client header and keep-alive timeouts are the
coordinator's own, and the upstream keep-alive is shorter than the coordinator's so nginx never
reuses a connection the coordinator is closing. ``X-Forwarded-For`` is *replaced* by the TCP peer
(never appended to what a client sent), and the coordinators trust it only from the proxy's
address (``trusted_proxies``), so the per-address rate limits see the real client.

Members are routed by a consistent hash of their instance id: each identity's token bucket lives in
one process (the per-identity rate limit holds across N processes), and when a process is down its
members move to the next one and come back after it restarts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from continuum_mcp.crypto.signing import HEADER_INSTANCE
from continuum_mcp.federation.coordinator.config import CoordinatorConfig
from continuum_mcp.federation.protocol import MAX_BODY_BYTES

#: seconds nginx waits for a coordinator's answer (a release or a large contribution takes seconds)
PROXY_READ_TIMEOUT = 120


def _error_body(code: str, message: str) -> str:
    """An ``ErrorBody`` as an nginx string literal (single-quoted; JSON never needs a quote escaped here)."""
    text = json.dumps({"code": code, "message": message})
    if "'" in text:
        raise ValueError("error message must not contain a single quote")
    return text


def nginx_config(config: CoordinatorConfig, upstreams: Sequence[tuple[str, int]], *, listen: str,
                 run_dir: Path | None = None, user: str | None = None) -> str:
    """The whole ``nginx.conf``: ``listen`` (``host:port``) proxies to ``upstreams``.

    ``run_dir`` holds the pid file, temp directories and error log of a private nginx (the
    launcher's); without it the paths are Debian's (the operator's own nginx)."""
    if not upstreams:
        raise ValueError("at least one upstream coordinator is needed")
    keepalive_upstream = max(1, int(config.keep_alive_timeout_seconds) - 1)
    header_var = "$http_" + HEADER_INSTANCE.lower().replace("-", "_")
    servers = "\n".join(f"        server {h}:{p} max_fails=1 fail_timeout=2s;" for h, p in upstreams)
    paths = ""
    if run_dir is not None:
        r = Path(run_dir)
        paths = "\n".join(f"    {d}_temp_path {r / (d + '_temp')};" for d in ("client_body", "proxy", "fastcgi",
                                                                              "uwsgi", "scgi")) + "\n"
    too_large = _error_body("too_large", f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
    unavailable = _error_body("coordinator_unavailable", "no coordinator process answered; retry shortly")
    head = [f"user {user};" if user else "", "worker_processes auto;",
            f"pid {Path(run_dir) / 'nginx.pid'};" if run_dir else "",
            f"error_log {Path(run_dir) / 'nginx-error.log'} warn;" if run_dir else "error_log /var/log/nginx/error.log warn;"]
    return "\n".join(x for x in head if x) + f"""
events {{
    worker_connections 4096;
}}
http {{
{paths}    access_log off;
    server_tokens off;
    upstream continuum_coordinators {{
        hash {header_var} consistent;
{servers}
        keepalive 64;
        keepalive_timeout {keepalive_upstream}s;
    }}
    server {{
        listen {listen};
        client_max_body_size {MAX_BODY_BYTES};
        client_body_buffer_size 1m;
        client_header_timeout {int(config.header_timeout_seconds)}s;
        client_body_timeout {int(config.header_timeout_seconds)}s;
        keepalive_timeout {int(config.keep_alive_timeout_seconds)}s;
        error_page 413 = @too_large;
        error_page 502 504 = @unavailable;
        location / {{
            proxy_pass http://continuum_coordinators;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 2s;
            proxy_send_timeout {PROXY_READ_TIMEOUT}s;
            proxy_read_timeout {PROXY_READ_TIMEOUT}s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_buffering on;
            proxy_request_buffering on;
        }}
        location @too_large {{
            default_type application/json;
            return 413 '{too_large}';
        }}
        location @unavailable {{
            default_type application/json;
            return 503 '{unavailable}';
        }}
    }}
}}
"""


__all__ = ["PROXY_READ_TIMEOUT", "nginx_config"]
