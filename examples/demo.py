"""End-to-end demo: private memories, a federation of realistic size, and proof of what left each machine.

    ./dev.sh demo            (or: python examples/demo.py [--members 40] [--instances 4] [--mode high] [--keep DIR])

What happens, all on 127.0.0.1:
1. A coordinator starts (`continuum-mcp coordinator`, `high` mode by default: the project's default,
   differentially private phrase selection; at least 3 contributors).
2. The founder makes a federation key (it never goes to the coordinator) and one invite per member.
3. The federation has `--members` members (40 by default: `high` needs about 20 members who share a
   phrase to release it, see `continuum-mcp privacy table`). `--instances` of them (4) are each
   their own `continuum-mcp serve` process with its own data directory, driven through the `mcp`
   client over stdio exactly as Claude drives it; the others run in this process with the same
   client code (`FederationClient`: own data directory, identity, ledger, secure aggregation over
   HTTP), sharing one embedding model, because 40 model-loading server processes do not fit a
   laptop. Each remembers realistic memories full of personal data; some facts are shared by every
   member in their own words, one only by a few.
4. Every member joins; one previews (dry run) exactly what it would send; all contribute.
5. The round is closed; all members run secure aggregation; the coordinator releases, once, the
   phrases enough members share.
6. One instance asks the federation two questions: one about a widely shared fact (an answer comes
   back) and one about the fact only a few members hold (nothing comes back), and the demo explains
   both with the release probabilities the calibration computes.
7. The demo prints the privacy spent and credits, then searches every byte the coordinator stored
   for each personal value, each raw memory text and each member's embeddings: none is there.

Every figure it explains (noisy counts, tau, the release floor, epsilon and the budget) is read from
the run or computed from the privacy policy in code. `--mode open` runs the same story with
statements released under a k-anonymity floor (not DP: it says so).
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
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
from mcp import Client, StdioServerParameters

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from continuum_mcp.config import Settings

from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.federation.protocol import ADMIN_TOKEN_HEADER
from continuum_mcp.memory.store import MemoryStore, make_input
from continuum_mcp.privacy.modes import default_policy
from embeddings import SentenceTransformerEmbedder

FEDERATION_ID = "demo-federation"
MIN_CONTRIBUTORS = 3
ATTACH = "claude mcp add continuum -- continuum-mcp serve"
ADMIN_TIMEOUT = 120.0  # closing a round of 40 members' submissions on a busy laptop takes more than httpx's 5 s

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

# A fact only RARE_HOLDERS members hold: too few for a release, whatever the noise draws.
RARE = ["I keep my sourdough starter in the fridge and feed it on Fridays",
        "My sourdough starter lives in the fridge, fed every Friday",
        "Sourdough starter: fridge during the week, feed it Friday"]
RARE_HOLDERS = 4
QUESTIONS = {"uv": "how should I manage python dependencies", "rare": "how do people look after a sourdough starter"}

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
    if i < RARE_HOLDERS:
        mine.append((RARE[i % len(RARE)], ["home"]))
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


_T0 = time.monotonic()


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 62 - len(text)) + f" {time.monotonic() - _T0:5.0f} s")


def start_coordinator(work: Path, admin_token: str, mode: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--host", "127.0.0.1", "--port", str(port),
         "--storage", str(work / "coordinator"), "--min-contributors", str(MIN_CONTRIBUTORS), "--privacy-mode", mode,
         "--federation-id", FEDERATION_ID, f"--admin-token={admin_token}", "--phase-timeout", "120"],
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


class MemoEmbedder:
    """The embedding model, memoised per text: the demo's members share fact wordings, and the model
    gives the same vector for the same text every time (identical output, far less CPU)."""

    def __init__(self) -> None:
        self.inner = SentenceTransformerEmbedder()
        self.inner.start()
        self._memo: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # dim, model_id, start, wait: the model's own
        return getattr(self.inner, name)

    def encode(self, texts: Any) -> Any:
        texts = list(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
            if missing:
                self._memo.update(zip(missing, self.inner.encode(missing)))
            return np.stack([self._memo[t] for t in texts]) if texts else self.inner.encode([])


class Members:
    """The members that run in this process: each a real ``FederationClient`` with its own data
    directory, identity and ledger (one shared embedding model)."""

    def __init__(self, work: Path, first: int, invites: list[str], mode: str) -> None:
        self.embedder = MemoEmbedder()
        self.stores: list[MemoryStore] = []
        self.clients: list[FederationClient] = []
        for k, invite in enumerate(invites):
            settings = Settings(data_dir=work / f"instance-{first + k}")
            store = MemoryStore(settings, self.embedder)  # type: ignore[arg-type]
            store.remember_many([make_input(text=t, tags=tags) for t, tags in memories_for(first + k)])
            client = FederationClient(store, settings, policy=default_policy())
            client.join(invite, contribution_level="minimal", privacy_mode=mode)  # type: ignore[arg-type]
            self.stores.append(store)
            self.clients.append(client)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for st in self.stores:
            st.close()


def explain_release(mode: str, holders: dict[str, int]) -> str:
    """Why each question got what it got, with the calibration's own release probabilities."""
    need = default_policy().release_requirement(mode, "minimal")
    cal = default_policy().mode(mode).calibration
    lines = [f"Why: the coordinator drew integer discrete-Gaussian noise (sigma {need.sigma:.2f}) once for each "
             f"phrase's count of distinct members and released it when the noisy count passed tau = {need.tau}."]
    for topic, n in holders.items():
        p = cal.release_probability(n) if n >= MIN_CONTRIBUTORS else 0.0
        lines.append(f"  '{QUESTIONS[topic]}': {n} members hold this fact, so a phrase all of them send is released "
                     f"with probability {p:.6f}" + (" (and the true count must reach the floor of "
                                                     f"{MIN_CONTRIBUTORS})" if n < need.contributors_50 else ""))
    lines.append(f"Phrases that only one member sent (at most C = {need.C} per member) are released with probability "
                 f"at most {need.delta_threshold:.1e} in all: part of the window's delta {need.delta:g}.")
    return "\n".join(lines)


async def run_demo(work: Path, n_mcp: int, n: int, mode: str) -> int:
    admin_token = secrets.token_urlsafe(24)
    t_start = time.monotonic()
    banner(f"1. coordinator ({mode} mode)")
    coord, url = start_coordinator(work, admin_token, mode)
    print(f"coordinator on {url}, at least {MIN_CONTRIBUTORS} contributors per release; storage "
          f"{work / 'coordinator'}")
    print(explain_mode(mode))
    members: Members | None = None
    try:
        banner("2. invites (the federation key stays with the members)")
        key = generate_federation_key()
        r = httpx.post(f"{url}/v1/admin/invites", json={"count": n}, headers={ADMIN_TOKEN_HEADER: admin_token},
                       timeout=ADMIN_TIMEOUT)
        r.raise_for_status()
        invites = [Invite.build(url, FEDERATION_ID, t, key).format() for t in r.json()["admission_tokens"]]
        print(f"{len(invites)} invites, e.g. {invites[0][:48]}...#<key> (the part after '#' is the federation key; "
              "a member never sends it to the coordinator)")

        banner(f"3. {n} members: {n_mcp} MCP server processes, {n - n_mcp} in-process clients")
        async with AsyncExitStack() as stack:
            clients: list[Client] = []
            for i in range(n_mcp):
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
                print(f"instance {i} (MCP server): {stats['count']} memories")
            members = Members(work, n_mcp, invites[n_mcp:], mode)
            print(f"instances {n_mcp}-{n - 1} (in-process FederationClient): "
                  f"{sum(len(memories_for(i)) for i in range(n_mcp, n))} memories, joined")

            banner("4. join, preview, contribute")
            ids = []
            for c, invite in zip(clients, invites):
                joined = await tool(c, "federation_join", {"invite": invite, "contribution_level": "minimal",
                                                           "privacy_mode": mode})
                ids.append(joined["instance_id"])
            print("MCP members:", ", ".join(ids))
            banner("4b. what instance 0 would share: raw memory vs what leaves (local preview, nothing sent)")
            pv = await tool(clients[0], "preview_patterns", {"min_confidence": 0.5})
            held = pv["private_memory_ids"]
            print(f"held back as 'private': {len(held)} memory: " + "; ".join(repr(raw[i]) for i in held))
            for p in pv["patterns"]:
                source = raw.get(p["source_memory_ids"][0], "?") if p.get("source_memory_ids") else "?"
                if source != "?" and "<" in (p.get("statement") or ""):  # personal data was replaced
                    print(f"  raw:      {source}\n  scrubbed: {p['statement']}  "
                          + ("(sent encrypted for members)" if mode == "open" else f"({mode} mode sends no "
                             "statements: only the slot and phrases)"))

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
            sent = [m.contribute(min_confidence=0.5) for m in members.clients]
            print(f"instances {n_mcp}-{n - 1}: contributed {sum(s.patterns for s in sent)} patterns")

            banner("5. round: close, secure aggregation, release")
            r = httpx.post(f"{url}/v1/admin/rounds/close", headers={ADMIN_TOKEN_HEADER: admin_token},
                           timeout=ADMIN_TIMEOUT)
            r.raise_for_status()
            print("round", r.json()["round_id"], "->", r.json()["phase"], f"({n} members run secure aggregation)")
            results: list[dict[str, Any]] = [{}] * n_mcp
            synced: list[Any] = [None] * (n - n_mcp)
            t_round = time.monotonic()

            async def sync(i: int) -> None:
                results[i] = await tool(clients[i], "federation_sync", {"timeout_seconds": 600})

            async def sync_member(k: int) -> None:
                synced[k] = await anyio.to_thread.run_sync(lambda: members.clients[k].sync(timeout_seconds=600),
                                                           limiter=limiter)
            limiter = anyio.CapacityLimiter(max(1, n - n_mcp))
            async with anyio.create_task_group() as tg:
                for i in range(n_mcp):
                    tg.start_soon(sync, i)
                for k in range(n - n_mcp):
                    tg.start_soon(sync_member, k)
            for i, res in enumerate(results):
                print(f"instance {i}: round {res.get('round_id')} phase {res.get('phase')} "
                      f"released={res.get('released')} steps={res.get('steps_posted')}")
            ok = sum(1 for s in synced if s is not None and s.released)
            print(f"instances {n_mcp}-{n - 1}: {ok} of {n - n_mcp} took part in the released round; "
                  f"secure aggregation and release took {time.monotonic() - t_round:.0f} s")

            banner("6. query the federation")
            asker = clients[n_mcp - 1]
            holders = {"uv": n, "rare": min(RARE_HOLDERS, n)}
            got: dict[str, int] = {}
            for topic, q in QUESTIONS.items():
                answer = await tool(asker, "federation_query", {"query": q, "min_confidence": 0.3})
                print(f"instance {n_mcp - 1} asks: {q!r}")
                hits = [p for p in answer["patterns"]
                        if topic != "rare" or "sourdough" in " ".join([p.get("summary") or "", *p.get("phrases", [])])]
                got[topic] = len(hits)
                for p in answer["patterns"][:3]:
                    print(f"  - {p.get('summary')!r}\n    confidence {p['confidence']:.2f}; "
                          f"{noisy_count(p['contributor_count'], n)}")
                if topic == "rare":
                    print(f"  -> about the fact only {holders['rare']} members hold: "
                          + ("nothing released, as designed" if not hits else f"{len(hits)} pattern(s) (unexpected)"))
                elif not hits:
                    print("  -> nothing came back for the widely shared fact")
            print(explain_release(mode, holders))
            need = default_policy().release_requirement(mode, "minimal")
            useful = (got["uv"] > 0 or n < need.contributors_95) and got["rare"] == 0

            banner("7. privacy spent and credits")
            for i, c in enumerate(clients):
                st = await tool(c, "federation_status")
                cr = st.get("credits") or {}
                print(f"instance {i}: epsilon {st['privacy_spent_epsilon']:.2f} of {st['privacy_budget_epsilon']:g} "
                      f"spent; credits {cr.get('available'):g} (+1 per accepted pattern)")
            spent = sorted({round(m.status().privacy_spent_epsilon or 0.0, 2) for m in members.clients})
            print(f"instances {n_mcp}-{n - 1}: epsilon spent {', '.join(f'{e:.2f}' for e in spent)}")
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
        print(f"\nDemo took {time.monotonic() - t_start:.0f} s. Your own memory, attached to Claude Code in one line:  "
              f"{ATTACH}")
        return 0 if (useful and not found) else 1
    finally:
        if members is not None:
            members.close()
        coord.terminate()
        coord.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=40, help="federation size: members in all")
    p.add_argument("--instances", type=int, default=4,
                   help="how many of the members are their own MCP server process (the rest run in this process)")
    p.add_argument("--mode", choices=["high", "balanced", "open"], default="high",
                   help="the federation's privacy mode (default: high, the project's default)")
    p.add_argument("--keep", type=Path, help="keep all data in this directory (default: a temp dir, removed)")
    args = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows when piped too
    if args.instances < 1 or args.members < max(3, args.instances):
        p.error("a federation needs at least 3 members and at least one MCP instance among them")
    work = args.keep or Path(tempfile.mkdtemp(prefix="continuum-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return anyio.run(run_demo, work, args.instances, args.members, args.mode)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
