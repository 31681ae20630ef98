"""Founder commands: ``federation create`` (the federation key, kept here) and ``federation invite``.

The key is made and kept on the founder's machine (``<data dir>/founder/<id>.json``, 0600); the
coordinator only ever mints admission tokens. ``invite`` fetches tokens with the coordinator's
admin token (or takes tokens minted with ``continuum-mcp coordinator invite``) and prints one
full invite per line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from continuum_mcp.cli._common import add_command
from continuum_mcp.config import Settings
from continuum_mcp.errors import InvalidInput

ENV_ADMIN_TOKEN = "CONTINUUM_ADMIN_TOKEN"


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from continuum_mcp.federation.api import CoordinatorAPI
    from continuum_mcp.federation.founding import found_federation

    with CoordinatorAPI(args.coordinator, None, max_retries=1) as api:
        served = api.health().federation_id  # the id the coordinator serves; nothing is sent to it
    if args.federation_id is not None and args.federation_id != served:
        raise InvalidInput(f"the coordinator at {args.coordinator} serves federation {served!r}, not "
                           f"{args.federation_id!r}")
    record, path = found_federation(settings.data_dir, args.coordinator, served)
    print(f"founded federation {record.federation_id} at {record.coordinator_url}\n"
          f"its key is in {path} (mode 0600): it never goes to the coordinator; keep a backup, every invite "
          "carries it\nnext: `continuum-mcp federation invite --count N` (admin token in "
          f"${ENV_ADMIN_TOKEN}) prints one invite per member")
    return 0


def cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    from continuum_mcp.federation.founding import founded, mint_invites

    federation = founded(settings.data_dir, args.federation_id)
    tokens = list(args.token or [])
    if not tokens:
        admin = args.admin_token or os.environ.get(ENV_ADMIN_TOKEN)
        if not admin:
            raise InvalidInput(f"give admission tokens with --token, or the coordinator's admin token in "
                               f"${ENV_ADMIN_TOKEN} (or --admin-token) to fetch {args.count}")
        from continuum_mcp.federation.api import CoordinatorAPI

        with CoordinatorAPI(federation.coordinator_url, None, admin_token=admin) as api:
            tokens = api.admin_invites(args.count).admission_tokens
    for invite in mint_invites(federation, tokens):
        print(invite)
    print(f"{len(tokens)} invite(s) for {federation.federation_id}: each admits one instance once; send each "
          "privately (it carries the federation key)", file=sys.stderr)
    return 0


def add_parsers(fs: Any, store: argparse.ArgumentParser) -> None:
    s = add_command(fs, "create", "found a federation on a running coordinator: make its key and keep it here",
                    [store])
    s.add_argument("--coordinator", required=True, metavar="URL", help="the coordinator's base URL, e.g. "
                                                                       "https://coordinator.example:8080")
    s.add_argument("--federation-id", help="check that the coordinator serves this federation (default: take "
                                           "the id it serves)")
    s.set_defaults(func=cmd_create, raw_settings=True)

    s = add_command(fs, "invite", "mint full invites (continuum-invite:v1:...#key) for a federation founded here",
                    [store])
    s.add_argument("--count", type=int, default=1, help="how many invites to fetch with the admin token (1-1000)")
    s.add_argument("--token", action="append", help="an admission token from `continuum-mcp coordinator invite` "
                                                    "(repeatable; then no admin token is needed)")
    s.add_argument("--admin-token", help=f"the coordinator's admin token (default: ${ENV_ADMIN_TOKEN}; the "
                                         "variable keeps it out of the process list)")
    s.add_argument("--federation-id", help="which federation founded here (default: the only one)")
    s.set_defaults(func=cmd_invite, raw_settings=True)
