"""End-to-end demo: private memories, a federation, and proof of what left each machine.

    ./dev.sh demo            (or: python examples/demo.py [--instances 12] [--mode high] [--keep DIR])

What happens, all on 127.0.0.1:
1. A coordinator starts (`continuum-mcp coordinator`, open mode, at least 3 contributors).
2. The founder makes a federation key (it never goes to the coordinator) and one invite per member.
3. N instances start, each its own `continuum-mcp serve` process with its own data directory,
   driven through the `mcp` client over stdio exactly as Claude drives it. Each remembers
   realistic memories full of personal data; some facts are shared by several users, in their own
   words.
4. Every instance joins; one previews (dry run) exactly what it would send; all contribute.
5. The round is closed; the instances run secure aggregation; the coordinator releases what
   enough members share.
6. One instance asks the federation a question and gets useful patterns back.
7. The demo prints the privacy spent and credits, then searches every byte the coordinator stored
   for each personal value, each raw memory text and each instance's embeddings: none is there.

Every figure it explains (noisy counts, the release floor, epsilon and the budget) is read from the
run or computed from the privacy policy in code. The federation runs in `open` mode by default
(DP selection of phrases; statements under a k-anonymity floor, not DP: it says so); `--mode high
--instances 22` runs the same story under the default mode, which needs about 20 members.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client, StdioServerParameters

from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.federation.protocol import ADMIN_TOKEN_HEADER
from continuum_mcp.privacy.modes import default_policy

FEDERATION_ID = "demo-federation"
MIN_CONTRIBUTORS = 3
ATTACH = "claude mcp add continuum -- continuum-mcp serve"

# Facts several users share, each in their own words (with their own personal details around them).
SHARED = {
    "uv": ["I use uv instead of pip for python dependencies because it is much faster",
           "Switched our python dependencies from pip to uv, installs are way faster",
           "uv replaced pip for python dependencies in my projects, it is so much faster",
           "For my projects I manage python dependencies with uv rather than pip since it's faster",
           "python dependencies: use uv, not pip, it resolves and installs much faster"],
    "migrations": ["Always run the database migrations before deploying the backend service",
                   "Run the database migrations first, then deploy the backend, otherwise the service crashes",
                   "Deploy checklist: database migrations must run before the backend deploy",
                   "Never deploy the backend before the database migrations have run"],
    "standup": ["The daily standup works best when kept under fifteen minutes",
                "Keep the daily standup short, fifteen minutes at most",
                "Our team limits the daily standup to fifteen minutes"],
}

PERSONAL = [
    ("Call Dana Whitfield at +44 20 7946 0958 about the Acme Corp renewal on 3 March", ["work"]),
    ("My email is priya.natarajan@example.org and my manager is Tom Becker", ["work"]),
    ("The staging API key is sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", ["work"]),
    ("We live at 42 Elm Street, Springfield; the alarm code is 7731", ["home"]),
    ("My IBAN is GB82 WEST 1234 5698 7654 32 for the freelance invoices", ["finance"]),
    ("Therapy sessions with Dr. Alvarez are on Thursdays", ["health", "private"]),
    ("Project notes are in /home/jsmith/notes/acme-renewal.md", ["work"]),
    ("Server 10.20.30.40 is the old build box, MAC 00:1A:2B:3C:4D:5E", ["infra"]),
]
PII_VALUES = ["Dana Whitfield", "+44 20 7946 0958", "Acme Corp", "priya.natarajan@example.org", "Tom Becker",
              "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "42 Elm Street", "Springfield", "7731",
              "GB82 WEST 1234 5698 7654 32", "Dr. Alvarez", "/home/jsmith", "10.20.30.40", "00:1A:2B:3C:4D:5E"]


PRIVATE = PERSONAL[5]  # tagged 'private': instance 0 holds it, and it must never take part


def memories_for(i: int) -> list[tuple[str, list[str]]]:
    """Instance i's memories: some shared facts in its own words, plus personal ones."""
    mine: list[tuple[str, list[str]]] = []
    for topic, variants in SHARED.items():
        mine.append((variants[i % len(variants)], ["work"]))
    mine += [PERSONAL[(i + k) % len(PERSONAL)] for k in range(3)]
    if i == 0:
        mine.append(PRIVATE)
    return mine


def noisy_count(value: float, n: int) -> str:
    """A released contributor count, labelled for what it is."""
    return (f"about {round(value)} contributors (a noisy DP count, not a census: the true number is at least "
            f"the release floor of {MIN_CONTRIBUTORS} and at most the {n} instances here)")


def explain_budget(status: dict[str, Any]) -> str:
    """What the epsilon figures of a status mean, with the mode's own parameters."""
    mode = default_policy().mode(status["federation_mode"])
    spent, budget = status["privacy_spent_epsilon"], status["privacy_budget_epsilon"]
    return (f"epsilon {spent:.2f} of {budget:g}: {budget:g} is the budget of one {mode.window_days}-day release "
            f"window in '{mode.name}' mode, spent once, in one release, by the round you just took part in; the "
            f"next contribution waits for the next window. Over 365 days at most {mode.lifetime_budget().epsilon:.1f} "
            f"(the lifetime bound) can be spent. Lower is more private: epsilon bounds by e^epsilon how much more "
            f"likely any release becomes because one member took part.")


def explain_mode(name: str) -> str:
    need = default_policy().release_requirement(name, "minimal")
    text = (f"'{name}' mode: a phrase is released when its noisy count of distinct contributors (integer "
            f"discrete-Gaussian noise, sigma {need.sigma:.2f}) passes {need.tau} and at least {MIN_CONTRIBUTORS} "
            f"members really sent it: about {need.contributors_50} members for an even chance, "
            f"{need.contributors_95} for 95 %; epsilon {need.epsilon:g} per {need.window_days}-day window. ")
    if name == "open":
        text += ("Statements are released only when the same statement has at least "
                 f"{MIN_CONTRIBUTORS} contributors: a floor (k-anonymity), NOT differential privacy for text.")
    else:
        text += f"Statements: {default_policy().mode(name).statements_released}."
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def start_coordinator(work: Path, admin_token: str, mode: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--host", "127.0.0.1", "--port", str(port),
         "--storage", str(work / "coordinator"), "--min-contributors", str(MIN_CONTRIBUTORS), "--privacy-mode", mode,
         "--federation-id", FEDERATION_ID, "--admin-token", admin_token, "--phase-timeout", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"coordinator exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("coordinator did not start")


async def tool(c: Client, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await c.call_tool(name, args or {})
    if r.is_error:
        raise SystemExit(f"{name} failed: {r.content[0].text}")  # type: ignore[union-attr]
    return r.structured_content  # type: ignore[return-value]


def scan_storage(storage: Path, needles: dict[str, bytes]) -> list[str]:
    """Names of the needles found anywhere in the coordinator's files (database, WAL, everything)."""
    blobs = [p.read_bytes() for p in storage.rglob("*") if p.is_file()]
    return [name for name, needle in needles.items() if any(needle in b for b in blobs)]


async def run_demo(work: Path, n: int, mode: str) -> int:
    admin_token = secrets.token_urlsafe(24)
    banner(f"1. coordinator ({mode} mode)")
    coord, url = start_coordinator(work, admin_token, mode)
    print(f"coordinator on {url}, at least {MIN_CONTRIBUTORS} contributors per release; storage "
          f"{work / 'coordinator'}")
    print(explain_mode(mode) + ("" if mode != "open" else " (`--mode high` runs this demo under DP selection.)"))
    try:
        banner("2. invites (the federation key stays with the members)")
        key = generate_federation_key()
        r = httpx.post(f"{url}/v1/admin/invites", json={"count": n}, headers={ADMIN_TOKEN_HEADER: admin_token})
        r.raise_for_status()
        invites = [Invite.build(url, FEDERATION_ID, t, key).format() for t in r.json()["admission_tokens"]]
        print(f"{len(invites)} invites, e.g. {invites[0][:48]}...#<key> (the part after '#' is the federation key; "
              "a member never sends it to the coordinator)")

        banner(f"3. {n} instances, each its own MCP server process")
        async with AsyncExitStack() as stack:
            clients: list[Client] = []
            for i in range(n):
                params = StdioServerParameters(command=sys.executable, env={**os.environ},
                                               args=["-m", "continuum_mcp.cli.main", "serve", "--data-dir",
                                                     str(work / f"instance-{i}")])
                clients.append(await stack.enter_async_context(Client(params, read_timeout_seconds=600)))
            raw: dict[int, str] = {}  # instance 0's memories by id, for the raw-vs-scrubbed comparison
            for i, c in enumerate(clients):
                for text, tags in memories_for(i):
                    r = await tool(c, "remember", {"text": text, "tags": tags})
                    if i == 0:
                        raw[r["memory"]["id"]] = text
                stats = await tool(c, "memory_stats")
                print(f"instance {i}: {stats['count']} memories")

            banner("4. join, preview, contribute")
            ids = []
            for c, invite in zip(clients, invites):
                joined = await tool(c, "federation_join", {"invite": invite, "contribution_level": "minimal",
                                                           "privacy_mode": mode})
                ids.append(joined["instance_id"])
            print("members:", ", ".join(ids))
            banner("4b. what instance 0 would share: raw memory vs what leaves (local preview, nothing sent)")
            pv = await tool(clients[0], "preview_patterns", {"min_confidence": 0.5})
            held = pv["private_memory_ids"]
            print(f"held back as 'private': {len(held)} memory: " + "; ".join(repr(raw[i]) for i in held))
            for p in pv["patterns"]:
                source = raw.get(p["source_memory_ids"][0], "?") if p.get("source_memory_ids") else "?"
                if source != "?" and "<" in (p.get("statement") or ""):  # personal data was replaced
                    print(f"  raw:      {source}\n  scrubbed: {p['statement']}  "
                          + ("(sent encrypted for members)" if mode != "high" else "(high mode sends no statements: "
                             "only the slot and phrases)"))

            preview = await tool(clients[0], "federation_contribute", {"dry_run": True, "min_confidence": 0.5})
            print(f"instance 0 would send (dry run, nothing sent): {preview['patterns']} patterns")
            for p in preview["preview"]:
                said = repr(p["statement"]) if p.get("statement") is not None else "(none: not sent in this mode)"
                print(f"  slot {p['slot']:>3}  confidence {p['confidence']:.2f}  statement {said}")
                print(f"           phrases {p['phrases']}")
            print("  " + preview["what_leaves"])
            for i, c in enumerate(clients):
                res = await tool(c, "federation_contribute", {"min_confidence": 0.5, "dry_run": False})
                print(f"instance {i}: contributed {res.get('patterns', res)} patterns to round {res.get('round_id')}")

            banner("5. round: close, secure aggregation, release")
            r = httpx.post(f"{url}/v1/admin/rounds/close", headers={ADMIN_TOKEN_HEADER: admin_token})
            r.raise_for_status()
            print("round", r.json()["round_id"], "->", r.json()["phase"])
            results: list[dict[str, Any]] = [{}] * n

            async def sync(i: int) -> None:
                results[i] = await tool(clients[i], "federation_sync", {"timeout_seconds": 240})
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(sync, i)
            for i, res in enumerate(results):
                print(f"instance {i}: round {res.get('round_id')} phase {res.get('phase')} "
                      f"released={res.get('released')} steps={res.get('steps_posted')}")

            banner("6. query the federation")
            asker = clients[n - 1]
            q = "how should I manage python dependencies"
            answer = await tool(asker, "federation_query", {"query": q, "min_confidence": 0.3})
            print(f"instance {n - 1} asks: {q!r}")
            for p in answer["patterns"]:
                print(f"  - {p.get('summary')!r}\n    confidence {p['confidence']:.2f}; {noisy_count(p['contributor_count'], n)}")
                if p.get("phrases"):
                    print(f"    phrases: {', '.join(p['phrases'])}")
                else:
                    print(f"    no phrases: a phrase is released only when at least {MIN_CONTRIBUTORS} members sent "
                          "the very same phrase for this slot; none did, as each wrote the fact in their own words")
            if not answer["patterns"]:
                need = default_policy().release_requirement(mode, "minimal")
                print(f"  nothing came back: no released pattern matches with confidence >= 0.3, because nothing "
                      f"was released: in '{mode}' mode a phrase needs about {need.contributors_50} distinct members "
                      f"for an even chance ({need.contributors_95} for 95 %), and this demo has {n}"
                      + (f"; run it with --instances {need.contributors_95 + 2} to see a release." if n < need.contributors_95
                         else ": the noise kept this run's counts below the threshold (it is random by design)."))
            useful = bool(answer["patterns"]) or n < default_policy().release_requirement(mode, "minimal").contributors_95

            banner("7. privacy spent and credits")
            for i, c in enumerate(clients):
                st = await tool(c, "federation_status")
                cr = st.get("credits") or {}
                print(f"instance {i}: epsilon {st['privacy_spent_epsilon']:.2f} of {st['privacy_budget_epsilon']:g} "
                      f"spent; credits {cr.get('available'):g} (+1 per accepted pattern)")
            print(explain_budget(st))

        banner("8. what reached the coordinator")
        storage = work / "coordinator"
        needles: dict[str, bytes] = {}
        # Values of 6+ characters: a 4-digit code turns up by chance in megabytes of ciphertext.
        for v in (v for v in PII_VALUES if len(v) >= 6):
            needles[f"PII {v!r}"] = v.encode()
            needles[f"PII {v!r} (lower case)"] = v.lower().encode()
        for i in range(n):
            for text, _ in memories_for(i):
                needles[f"memory text of instance {i}: {text[:40]!r}"] = text.encode()
            db = sqlite3.connect(work / f"instance-{i}" / "memory.db")
            for (blob,) in db.execute("SELECT embedding FROM memories"):
                needles[f"an embedding of instance {i} ({len(needles)})"] = bytes(blob[:32])
            db.close()
        found = scan_storage(storage, needles)
        total = sum(p.stat().st_size for p in storage.rglob("*") if p.is_file())
        print(f"searched {total} bytes of coordinator storage for {len(needles)} values "
              f"(PII, raw memory texts, embeddings): {len(found)} found")
        for f in found:
            print("  FOUND:", f)
        print(f"\nYour own memory, attached to Claude Code in one line:  {ATTACH}")
        return 0 if (useful and not found) else 1
    finally:
        coord.terminate()
        coord.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=12, help="how many instances (each its own MCP server process)")
    p.add_argument("--mode", choices=["open", "high"], default="open",
                   help="the federation's privacy mode; 'high' (DP selection) needs more members per release than "
                        "a 6-instance demo has, so its query may come back empty, saying why")
    p.add_argument("--keep", type=Path, help="keep all data in this directory (default: a temp dir, removed)")
    args = p.parse_args()
    if args.instances < 3:
        p.error("a federation needs at least 3 instances")
    work = args.keep or Path(tempfile.mkdtemp(prefix="continuum-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return anyio.run(run_demo, work, args.instances, args.mode)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
