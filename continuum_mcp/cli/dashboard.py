"""``continuum-mcp dashboard``: the local web dashboard (loopback only, a token in the URL)."""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from typing import Any

from continuum_mcp.app import Continuum
from continuum_mcp.cli._common import add_command
from continuum_mcp.errors import InvalidInput


def loopback_host(value: str) -> str:
    """argparse type: refuse a non-loopback --host before the store and the model are loaded."""
    from continuum_mcp.dashboard import check_loopback

    try:
        return check_loopback(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def cmd_dashboard(args: argparse.Namespace, app: Continuum) -> int:
    from continuum_mcp.dashboard import Dashboard

    dash = Dashboard(app, args.host, args.port)
    if args.json:
        print(json.dumps({"url": dash.url, "host": dash.host, "port": dash.port}), flush=True)
    else:
        print(f"continuum-mcp dashboard: {dash.url}\n(the token in this address is the only key to the page; "
              "Ctrl-C stops the dashboard)", flush=True)
    if args.open:
        webbrowser.open(dash.url)
    dash.serve_forever()
    print("dashboard stopped", file=sys.stderr)
    return 0


def add_parser(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    s = add_command(sub, "dashboard", "open a local web dashboard: browse, search, edit and delete memories; see "
                                      "what each contribution sent, the privacy budget over time, credits and "
                                      "released patterns", common)
    s.add_argument("--host", type=loopback_host, default="127.0.0.1",
                   help="loopback address to listen on (127.0.0.1, ::1 or localhost; anything else is refused)")
    s.add_argument("--port", type=int, default=8766, help="port to listen on (0 picks a free one)")
    s.add_argument("--open", action="store_true", help="also open the page in the default web browser")
    s.set_defaults(func=cmd_dashboard)
