"""The privacy-utility figure: recall@10 of a federation query per privacy mode and federation size.

A federation of simulated instances shares a known set of 20 facts (assistant-memory style, each in
6-8 paraphrases). Every instance holds a random subset of the facts (fact f with its own popularity
p_f, from 0.08 to 0.65), each as one to three memories in randomly chosen paraphrases, plus three
personal memories full of PII from templates (names, places, phone numbers, e-mails, dates,
money). For each privacy mode (high, balanced, open) and size (10, 100, 500 instances) one
federation is built and ONE release window is run (release v2: one round = one window); then a
separate member asks one question per fact and we count how many of the 20 facts the answer
contains.

What is REAL (the project's own code, public APIs only):
- the pattern pipeline of each instance: ``federation.submission.plan_contribution`` with the
  client's ``Generalizer`` (select -> scrub -> normalise -> embed the scrubbed text with the
  bundled all-MiniLM-L6-v2 -> cluster -> confidence -> key phrases), slotting with the bundled
  codebook v0, one pattern per slot, the level's slot cap L, and at most C = 20 phrases per window
  chosen by the instance's own phrase frequency, then each pattern's shortest and most central
  phrases (``generalize.key_phrases``). Instances contribute with ``min_confidence`` 0.5
  by default (``--min-confidence``).
- the wire: ``submission.build_contribution`` (phrase tokens of the phrase itself plus AEAD
  ciphertexts, statements where the mode sends them), POSTed signed by ``CoordinatorAPI`` to a real
  ``FederationCoordinator`` on 127.0.0.1; every instance joins with an admission token.
- the release: the coordinator's own ``RoundEngine.release_aggregate`` (DP centroids from the
  secure sum, one integer discrete-Gaussian draw per new phrase token, the threshold tau of the
  mode, the hard floor ``min_contributors`` = 3, ledger charges, credits).
- secure aggregation at sizes up to ``--real-secagg-max`` (default 100): every instance is a real
  ``RoundParticipant`` driven by ``federation.client.step`` over HTTP (the four SecAgg phases).
- the query: a real ``FederationClient`` with its own data dir joins with an invite and calls
  ``query(question, min_confidence=0.0, max_results=10)`` over HTTP.

What is SIMULATED, and where (labelled in the output):
- secure aggregation above ``--real-secagg-max`` (the 500-instance column): the script computes the
  sum the protocol would produce, each member's ``submission.secagg_input`` quantised with
  ``secagg.quantise`` plus its share of discrete Gaussian noise, masks cancelled, no dropouts, and
  hands it to ``FederationCoordinator(...).engine.release_aggregate`` with the round's real
  parameters (``engine.current_params()``).
- the instances are in-process identities, not separate MCP servers; their memories are generated.

Recall@10 (the metric): a fact counts as found when at least one of the at most 10 patterns
returned for its question contains one of the fact's answer keywords (case-insensitive, at a word
start) in its decrypted summary, phrases or statements. Recall@10 = facts found / 20.

Non-private baseline: all patterns that the instances would contribute (the same scrubbed,
generalised patterns, statement plus phrases), pooled with no threshold, no noise and no slot
routing, ranked by cosine to the question; recall@10 as above.

Usage:
    python benchmarks/bench_privacy_utility.py                       # sizes 10,100,500; all modes
    python benchmarks/bench_privacy_utility.py --sizes 10,100 --modes open,balanced --json
    python benchmarks/bench_privacy_utility.py --quick               # size 10 only (smoke test)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx
import numpy as np

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import FederationCipher, Invite, generate_federation_key
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import FederationClient, step
from continuum_mcp.federation.coordinator import FederationCoordinator
from continuum_mcp.federation.participant import Done, RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import JoinRequest
from continuum_mcp.federation.submission import (
    PlannedPattern, build_contribution, pattern_text, plan_contribution, secagg_input)
from continuum_mcp.memory.models import Memory
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy
from continuum_mcp.privacy.scrub import Scrubber
from continuum_mcp.privacy.noise import discrete_gaussian
from continuum_mcp.secagg import AggregateResult, quantise
from embeddings import SentenceTransformerEmbedder
from machine import machine  # benchmarks/machine.py (the script's folder is on sys.path)

FED = "fed-privacy-utility"
ADMIN = "bench-admin-token"
MIN_CONTRIBUTORS = 3
MODES = ("high", "balanced", "open")


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Fact:
    canonical: str
    question: str
    keywords: tuple[str, ...]
    paraphrases: tuple[str, ...]


FACTS: tuple[Fact, ...] = (
    Fact("The user prefers a dark theme in the code editor", "Which colour theme do people like in their code editor?",
         ("dark",), (
             "I prefer a dark theme in my code editor",
             "My code editor always has a dark theme on",
             "Switched VS Code to a dark theme again, light themes hurt my eyes",
             "User likes dark colour schemes when coding",
             "I can't stand light themes, my editor is set to dark",
             "Remember that I use a dark theme for programming",
             "Dark mode everywhere in my IDE please",
         )),
    Fact("The user indents Python with four spaces, never tabs", "Tabs or spaces for indenting Python code?",
         ("spaces",), (
             "I indent Python with four spaces, never tabs",
             "Always use 4 spaces for indentation in my Python files",
             "User insists on spaces instead of tabs when indenting",
             "My formatter is configured for four spaces per indent level",
             "Never put tabs in my code, spaces only",
             "I like indentation of four spaces in Python",
         )),
    Fact("The user drinks an oat milk flat white every morning", "What coffee do people drink in the morning?",
         ("oat",), (
             "I drink an oat milk flat white every morning",
             "My morning coffee is a flat white with oat milk",
             "User orders oat flat whites before work",
             "Every morning I have coffee with oat milk",
             "I switched to oat milk in my coffee",
             "Oat milk latte is my usual morning drink",
             "Get me an oat flat white when you order coffee",
         )),
    Fact("The user works at a standing desk", "What kind of desk do people work at?",
         ("standing",), (
             "I work at a standing desk",
             "My desk is a standing desk, I stand most of the afternoon",
             "User switched to a standing desk for back pain",
             "I do most of my work standing up at an adjustable desk",
             "Standing desk all day, sitting makes my back hurt",
             "I bought a standing desk last year and love it",
         )),
    Fact("The user works in 25-minute pomodoro sessions", "How do people structure focused work time?",
         ("pomodoro",), (
             "I work in 25 minute pomodoro sessions",
             "I use the pomodoro technique to stay focused",
             "User plans the day in pomodoro blocks",
             "Pomodoro timer on, 25 minutes of focus then a break",
             "I get more done with pomodoro sprints",
             "Set a pomodoro timer whenever I start deep work",
         )),
    Fact("The user uses vim keybindings everywhere", "Which keyboard shortcuts do people use in their editor?",
         ("vim",), (
             "I use vim keybindings everywhere",
             "My editor has vim mode enabled",
             "User can't work without vim key bindings",
             "Please suggest vim shortcuts, I use vim motions in every editor",
             "I installed the vim plugin in my IDE again",
             "Vim bindings in the browser and the editor for me",
         )),
    Fact("The user rebases feature branches instead of merging", "Do people merge or rebase their git branches?",
         ("rebas",), (
             "I rebase my feature branches instead of merging",
             "Always rebase onto main before opening a pull request",
             "User prefers git rebase over merge commits",
             "I keep history linear with rebase",
             "Rebase, don't merge, when updating my branches",
             "I do an interactive rebase to clean up commits before review",
         )),
    Fact("The user is vegetarian", "What diet do people follow?",
         ("vegetarian",), (
             "I am vegetarian",
             "User is a vegetarian, no meat in recipes",
             "Please only suggest vegetarian dishes for me",
             "I've been vegetarian for ten years",
             "Vegetarian food only when you plan my meals",
             "I stopped eating meat and went vegetarian",
         )),
    Fact("The user goes jogging before work", "When do people go jogging?",
         ("jog",), (
             "I go jogging before work",
             "I jog every morning before the office",
             "User jogs five kilometres at dawn",
             "Morning jog is part of my routine",
             "I like to jog along the river before starting work",
             "Jogging before breakfast keeps me sane",
         )),
    Fact("The user bakes sourdough bread at weekends", "What do people bake at the weekend?",
         ("sourdough",), (
             "I bake sourdough bread at weekends",
             "My sourdough starter needs feeding on Saturday",
             "User bakes a sourdough loaf every Sunday",
             "Weekend project: sourdough baking",
             "I love making sourdough at the weekend",
             "Baked another sourdough loaf, the crumb was great",
         )),
    Fact("The user wears noise-cancelling headphones to focus", "What helps people concentrate in a noisy office?",
         ("headphones",), (
             "I wear noise cancelling headphones to focus",
             "My headphones with noise cancelling are essential in the open office",
             "User puts on headphones when concentrating",
             "I can't concentrate without my headphones",
             "Noise cancelling headphones make the office bearable",
             "I always have headphones on during deep work",
         )),
    Fact("The user avoids meetings before 10 am", "When do people not want meetings scheduled?",
         ("meeting",), (
             "I avoid meetings before 10 am",
             "Don't schedule meetings for me before ten in the morning",
             "User keeps mornings free of meetings",
             "No meetings before 10, that's my focus time",
             "I decline early meetings, mornings are for coding",
             "Please put my meetings in the afternoon",
         )),
    Fact("The user writes type hints and runs mypy", "Do people use type annotations in Python?",
         ("type hints", "type annotations", "mypy", "typed"), (
             "I write type hints everywhere and run mypy",
             "My Python code is fully typed and checked with mypy",
             "User adds type annotations to every function",
             "I always run mypy in CI",
             "Type hints on all public functions, please",
             "I like strictly typed Python with mypy strict mode",
         )),
    Fact("The user prefers pytest over unittest", "Which test framework do people use for Python?",
         ("pytest",), (
             "I prefer pytest over unittest",
             "Write my tests with pytest fixtures, not unittest classes",
             "User uses pytest for all test suites",
             "I always run pytest before committing",
             "pytest is my test runner of choice",
             "Please generate pytest tests for my code",
         )),
    Fact("The user is learning Spanish", "Which language are people learning?",
         ("spanish",), (
             "I am learning Spanish",
             "I practise Spanish on my phone every day",
             "User takes Spanish lessons twice a week",
             "My Spanish is getting better with daily practice",
             "I'm studying Spanish for a trip next year",
             "Help me practise Spanish vocabulary",
         )),
    Fact("The user is allergic to peanuts", "What food allergies do people have?",
         ("peanut",), (
             "I am allergic to peanuts",
             "Peanut allergy, no peanuts in any recipe",
             "User has a severe peanut allergy",
             "Never suggest food with peanuts, I'm allergic",
             "I carry an epipen because of my peanut allergy",
             "Peanuts make me very ill",
         )),
    Fact("The user wants answers as short bullet points", "How do people like their answers formatted?",
         ("bullet",), (
             "I want answers as short bullet points",
             "Please reply in bullet points, not long paragraphs",
             "User prefers concise bullet lists",
             "Keep summaries short and in bullets",
             "Bullet points are easier for me to read",
             "Format your answers as bullet points",
         )),
    Fact("The user cycles to work", "How do people commute to work?",
         ("bike", "cycl", "bicycle"), (
             "I cycle to work",
             "I commute by bike every day",
             "User rides a bicycle to the office",
             "Cycling to work is my exercise",
             "My bike commute takes twenty minutes",
             "I go to work by bicycle, even in winter",
         )),
    Fact("The user walks the dog at lunchtime", "What do people do with their dog at lunch?",
         ("dog",), (
             "I walk my dog at lunchtime",
             "My dog needs a walk around noon",
             "User takes the dog out during the lunch break",
             "Lunch break is for walking the dog",
             "I block my calendar at noon to walk my dog",
             "The dog gets a long walk every lunchtime",
         )),
    Fact("The user uses Linux on the desktop", "Which operating system do people use on their computer?",
         ("linux", "ubuntu"), (
             "I use Linux on my desktop",
             "My laptop runs Ubuntu",
             "User works on Linux, not Windows or Mac",
             "Give me Linux commands, I'm on Ubuntu",
             "I switched my computer to Linux years ago",
             "Linux is my daily driver",
         )),
)

FIRST = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Isabel", "James", "Karen",
         "Liam", "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rachel", "Samuel", "Teresa"]
LAST = ["Johnson", "Smith", "Garcia", "Miller", "Brown", "Davis", "Wilson", "Moore", "Taylor", "Anderson",
        "Thomas", "Martin", "Clark", "Lewis", "Walker", "Hall", "Young", "King"]
CITIES = ["Boston", "Chicago", "Denver", "Seattle", "Austin", "Portland", "Madrid", "Berlin", "Paris", "Dublin",
          "Lisbon", "Toronto"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September", "October", "November"]
PERSONAL_TEMPLATES = (
    "My sister {name} lives in {city}",
    "Call {name} on {phone} about the insurance claim",
    "My email address is {email}",
    "Dentist appointment with Dr. {last} on {month} {day}",
    "My flight to {city} leaves on {month} {day}",
    "{name}'s birthday is on {month} {day}",
    "I owe {name} {money} dollars for the concert tickets",
    "My landlord {name} raised the rent to {money} dollars",
    "My son {first} has a piano recital in {city} on {month} {day}",
    "The alarm code for the house is {digits}",
    "My manager {name} wants the quarterly report by {month} {day}",
    "My neighbour {name} has the spare key",
    "Send the invoice to {email} before {month} {day}",
    "My mother {name} is in hospital in {city}",
    "Pick up {first} from school at 3 pm on {month} {day}",
)


def _fill(template: str, rng: np.random.Generator) -> str:
    first, last = str(rng.choice(FIRST)), str(rng.choice(LAST))
    return template.format(
        name=f"{first} {last}", first=first, last=last, city=str(rng.choice(CITIES)),
        phone=f"+1 {rng.integers(200, 999)} {rng.integers(200, 999)} {rng.integers(1000, 9999)}",
        email=f"{first.lower()}.{last.lower()}{rng.integers(1, 99)}@example.com",
        month=str(rng.choice(MONTHS)), day=int(rng.integers(1, 28)), money=int(rng.integers(20, 3000)),
        digits=int(rng.integers(1000, 99999)),
    )


def popularity(k: int) -> float:
    """Share of instances holding fact k: spread evenly from 0.08 to 0.65 (fixed, documented)."""
    return 0.08 + (0.65 - 0.08) * k / max(1, len(FACTS) - 1)


def _kw_regex(keywords: Sequence[str]) -> re.Pattern[str]:
    return re.compile(r"(?<![a-z])(?:" + "|".join(re.escape(k.lower()) for k in keywords) + ")")


KW = [_kw_regex(f.keywords) for f in FACTS]


def check_keywords() -> None:
    """The metric is sound only if each fact's keywords are in all its paraphrases and nowhere else."""
    for k, f in enumerate(FACTS):
        for p in f.paraphrases:
            if not KW[k].search(p.lower()):
                raise SystemExit(f"fact {k}: paraphrase {p!r} lacks its keywords {f.keywords}")
        for j, g in enumerate(FACTS):
            if j != k:
                for p in g.paraphrases:
                    if KW[k].search(p.lower()):
                        raise SystemExit(f"fact {k} keyword found in fact {j}'s paraphrase {p!r}")
        for t in PERSONAL_TEMPLATES:
            if KW[k].search(t.lower()):
                raise SystemExit(f"fact {k} keyword found in personal template {t!r}")


def instance_memories(i: int, seed: int) -> tuple[list[str], set[int]]:
    """Memories of instance i (deterministic in (seed, i)) and the facts it holds."""
    rng = np.random.default_rng([seed, i])
    texts: list[str] = []
    held: set[int] = set()
    for k, f in enumerate(FACTS):
        if rng.random() < popularity(k):
            held.add(k)
            mentions = int(rng.integers(1, 4))  # said once, twice or three times, in different words
            for j in rng.choice(len(f.paraphrases), size=min(mentions, len(f.paraphrases)), replace=False):
                texts.append(f.paraphrases[int(j)])
    for j in rng.choice(len(PERSONAL_TEMPLATES), size=3, replace=False):
        texts.append(_fill(PERSONAL_TEMPLATES[int(j)], rng))
    order = rng.permutation(len(texts))
    return [texts[int(o)] for o in order], held


# ------------------------------------------------------------------------------------------ pipeline


class CachingEmbedder:
    """The real embedder, memoised per text: many instances hold the same paraphrase, and the
    model would compute the same vector for it every time (identical output, much less time)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for t, v in zip(missing, self.inner.encode(missing)):
                self._cache[t] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def start(self) -> None:  # the Embedder protocol of MemoryStore may call these
        self.inner.start()

    def wait(self) -> None:
        self.inner.wait()


def plan(texts: Sequence[str], generalizer: Generalizer, codebook: Codebook, policy: PrivacyPolicy, level: str,
         min_confidence: float) -> list[PlannedPattern]:
    """What ``FederationClient.plan`` contributes for these memories (the same function)."""
    now = "2025-01-01T00:00:00+00:00"
    memories = [Memory(id=n + 1, text=t, tags=[], metadata={}, source="bench", created_at=now, updated_at=now,
                       content_hash=str(n)) for n, t in enumerate(texts)]
    return plan_contribution(memories, generalizer, codebook, policy, level, "high",
                             min_confidence=min_confidence).planned


def load() -> str:
    """The 1/5/15-minute load averages: timings on a shared machine mean little without them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


# ------------------------------------------------------------------------------------------ members


@dataclass
class Member:
    identity: Identity
    patterns: list[PlannedPattern]

    @property
    def id(self) -> str:
        return self.identity.instance_id


def real_secagg(members: Sequence[Member], coord: FederationCoordinator, http: httpx.Client,
                policy: PrivacyPolicy, mode: str) -> None:
    """The four secure-aggregation phases over HTTP: one real ``RoundParticipant`` per member, all
    driven round-robin by ``federation.client.step`` (the I/O step of ``run_round``)."""
    cfg = coord.config
    expect = RoundExpectations.for_mode(FED, cfg.slots, cfg.dim, policy.mode(mode))
    parts = []
    for m in members:
        api = CoordinatorAPI(coord.url, m.identity, http=http, max_retries=2, backoff_seconds=0.05)
        inputs = (lambda p, pats=m.patterns: secagg_input(pats, cfg.slots, cfg.dim, p.clip_norm))
        parts.append((api, RoundParticipant(m.identity, expect, inputs)))
    deadline = time.monotonic() + 1800
    while parts:
        waiting = 0
        for api, part in list(parts):
            nxt = step(api, part)
            if isinstance(nxt, Done):
                parts.remove((api, part))
                if not nxt.outcome.released:
                    raise RuntimeError(f"a member's round ended without release: {nxt.outcome.message}")
            elif nxt.step == "wait":
                waiting += 1
        if waiting == len(parts) and parts:
            time.sleep(0.05)
        if time.monotonic() > deadline:
            raise RuntimeError("secure aggregation did not finish")


def simulated_secagg(members: Sequence[Member], coord: FederationCoordinator) -> None:
    """The sum secure aggregation would hand the server (masks cancelled, no dropouts), computed
    with the protocol's own quantiser and per-client discrete Gaussian noise, then released by
    the coordinator's own release code with the round's real parameters."""
    params = coord.engine.current_params()
    if params is None:
        raise RuntimeError("the round has no roster (too few submitters?)")
    by_id = {m.id: m for m in members}
    total = np.zeros(params.dim, dtype=np.int64)
    for mid in params.roster:
        vec = secagg_input(by_id[mid].patterns, coord.config.slots, coord.config.dim, params.clip_norm)
        total += quantise(vec, params)
        total += discrete_gaussian(params.client_sigma_scaled, params.dim)
    noise_sigma = math.sqrt(params.n) * params.client_sigma_scaled / params.scale
    norm = float(np.linalg.norm(total.astype(np.float64)))
    result = AggregateResult(
        int_sum=total, float_sum=total.astype(np.float64) / params.scale, contributors=list(params.roster),
        recovered_dropouts=[], noise_sigma=noise_sigma, norm=norm, norm_bound=params.sum_l2_bound(params.n))
    if norm > result.norm_bound:
        raise RuntimeError("simulated sum exceeds the protocol's norm bound")
    coord.engine.release_aggregate(result)


# ------------------------------------------------------------------------------------------ one cell


@dataclass
class Cell:
    mode: str
    n: int
    recall: float
    found: list[int]
    aggregation: str
    released_slots: int
    released_phrases: int
    released_statements: int
    contributors: int
    seconds: float
    epsilon: float | None


def evaluate(results: Sequence[Sequence[str]]) -> list[int]:
    """Indexes of the facts whose question got a matching pattern among its results."""
    found = []
    for k, texts in enumerate(results):
        if any(KW[k].search(t.lower()) for t in texts):
            found.append(k)
    return found


def run_cell(mode: str, members: Sequence[Member], embedder: CachingEmbedder, codebook: Codebook, level: str,
             real: bool, workdir: Path, policy: PrivacyPolicy) -> Cell:
    t0 = time.perf_counter()
    key = generate_federation_key()
    cipher = FederationCipher(key, FED)
    coord = FederationCoordinator(
        port=0, storage_path=workdir / "coord", require_contribution=False, min_contributors=MIN_CONTRIBUTORS,
        privacy_mode=mode, federation_id=FED, private=True, admin_token=ADMIN, phase_timeout_seconds=1800,
        rate_limit_per_minute=10**9, address_rate_limit_per_minute=10**9, slots=codebook.slots, dim=codebook.dim,
        policy=policy)
    coord.start()
    http = httpx.Client(timeout=300)
    asker_store: MemoryStore | None = None
    asker: FederationClient | None = None
    try:
        tokens = coord.create_admission_tokens(len(members) + 1)
        contributing = [m for m in members if m.patterns]
        for m, tok in zip(members, tokens):
            api = CoordinatorAPI(coord.url, m.identity, http=http, max_retries=2, backoff_seconds=0.05)
            api.join(JoinRequest(admission_token=tok, contribution_level=level, privacy_mode=mode))  # type: ignore[arg-type]
            if m.patterns:
                api.contribute(build_contribution(m.patterns, 0, cipher, mode))
        st = coord.engine.close_round()
        if st.phase != "advertise":
            raise RuntimeError(f"round not closed ({st.phase}): only {len(contributing)} submitters")
        if real:
            real_secagg(contributing, coord, http, policy, mode)
        else:
            simulated_secagg(contributing, coord)
        final = coord.engine.state(None, 0)
        if final.phase != "released":
            raise RuntimeError(f"round ended {final.phase}")
        with coord.store.reading() as conn:
            rs = int(conn.execute("SELECT COUNT(*) FROM released_slots").fetchone()[0])
            rp = int(conn.execute("SELECT COUNT(*) FROM released_phrases").fetchone()[0])
            rst = int(conn.execute("SELECT COUNT(*) FROM released_statements").fetchone()[0])

        # the asker: a real FederationClient with its own data dir, joined with an invite
        settings = Settings(data_dir=workdir / "asker")
        asker_store = MemoryStore(settings, embedder)  # type: ignore[arg-type]
        asker = FederationClient(asker_store, settings, codebook=codebook, max_retries=1, backoff_seconds=0.05,
                                 policy=policy)
        asker.join(Invite.build(coord.url, FED, tokens[-1], key).format(), contribution_level=level,  # type: ignore[arg-type]
                   privacy_mode=mode)  # type: ignore[arg-type]
        answers: list[list[str]] = []
        for f in FACTS:
            found = asker.query(f.question, min_confidence=0.0, max_results=10)
            answers.append([" ".join([p.summary, *p.phrases, *p.statements]) for p in found])
        hits = evaluate(answers)
        return Cell(mode=mode, n=len(members), recall=len(hits) / len(FACTS), found=hits,
                    aggregation="real secagg over HTTP" if real else "secagg sum simulated",
                    released_slots=rs, released_phrases=rp, released_statements=rst, contributors=len(contributing),
                    seconds=time.perf_counter() - t0, epsilon=final.epsilon_spent)
    finally:
        if asker is not None:
            asker.close()
        if asker_store is not None:
            asker_store.close()
        http.close()
        coord.stop()
        coord.store.close()


def baseline(members: Sequence[Member], embedder: CachingEmbedder) -> float:
    """Non-private: every contributed pattern pooled, no threshold, no noise, no slot routing."""
    texts = [pattern_text(p.statement, p.phrases) for m in members for p in m.patterns]
    if not texts:
        return 0.0
    vecs = embedder.encode(texts)
    answers = []
    for f in FACTS:
        q = embedder.encode([f.question])[0]
        top = np.argsort(-(vecs @ q))[:10]
        answers.append([texts[int(i)] for i in top])
    return len(evaluate(answers)) / len(FACTS)


# ------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,500", help="federation sizes (instances), comma-separated")
    ap.add_argument("--modes", default=",".join(MODES), help="privacy modes, comma-separated")
    ap.add_argument("--level", default="minimal", choices=["minimal", "standard", "extensive"],
                    help="contribution level of every instance (the slot cap L; the phrase cap C is the mode's)")
    ap.add_argument("--min-confidence", type=float, default=0.5,
                    help="contribution filter of every instance (default 0.5: every pattern, including facts "
                         "mentioned once; the client's own default is 0.7)")
    ap.add_argument("--real-secagg-max", type=int, default=100,
                    help="sizes up to this run the real 4-phase secure aggregation over HTTP; larger are simulated")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="size 10 only (the smoke test)")
    ap.add_argument("--json", action="store_true", help="print the cells as one JSON document at the end")
    args = ap.parse_args(argv)
    sizes = [10] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}")
    check_keywords()
    logging.basicConfig(level=logging.WARNING)
    t_all = time.perf_counter()
    policy = default_policy()
    print(f"Machine: {machine()}; {load()} at start", flush=True)

    inner = SentenceTransformerEmbedder()
    inner.start()
    embedder = CachingEmbedder(inner)
    codebook = Codebook.load("v0")
    generalizer = Generalizer(embedder, Scrubber(), max_phrases=policy.max_phrases_per_pattern)  # type: ignore[arg-type]
    cap = policy.level(args.level).max_slots

    n_max = max(sizes)
    t0 = time.perf_counter()
    members: list[Member] = []
    held_all: list[set[int]] = []
    for i in range(n_max):
        texts, held = instance_memories(i, args.seed)
        members.append(Member(Identity.generate(), plan(texts, generalizer, codebook, policy, args.level,
                                                        args.min_confidence)))
        held_all.append(held)
    n_pat = sum(len(m.patterns) for m in members)
    print(f"Pattern pipeline for {n_max} instances: {time.perf_counter() - t0:.1f} s; {n_pat} patterns pass "
          f"min_confidence {args.min_confidence}", flush=True)

    cells: dict[tuple[str, int], Cell] = {}
    base: dict[int, float] = {}
    for n in sizes:
        group = members[:n]
        base[n] = baseline(group, embedder)
        for mode in modes:
            work = Path(tempfile.mkdtemp(prefix=f"pu-{mode}-{n}-"))
            try:
                cell = run_cell(mode, group, embedder, codebook, args.level, n <= args.real_secagg_max, work, policy)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            cells[(mode, n)] = cell
            print(f"  {mode:8s} n={n:4d}: recall@10 {cell.recall:.2f} ({cell.aggregation}); released "
                  f"{cell.released_slots} slots, {cell.released_phrases} phrases, {cell.released_statements} statements; "
                  f"{cell.seconds:.1f} s", flush=True)

    # ---- the report
    print()
    print(f"Privacy-utility: recall@10 of `FederationClient.query` for {len(FACTS)} shared facts, one release window, "
          f"min_contributors {MIN_CONTRIBUTORS}, contribution level {args.level} (L = {cap}), "
          f"contribution min_confidence {args.min_confidence}, query min_confidence 0.0, seed {args.seed}.")
    print()
    print("| mode | " + " | ".join(f"n = {n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for mode in modes:
        print(f"| {mode} | " + " | ".join(f"{cells[(mode, n)].recall:.2f}" for n in sizes) + " |")
    print("| baseline: pooled, no threshold, no noise | " + " | ".join(f"{base[n]:.2f}" for n in sizes) + " |")
    print()
    print("What each cell released and how its round was aggregated:")
    print()
    print("| mode | n | contributors | released slots / phrases / statements | window epsilon | secure aggregation |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        for mode in modes:
            c = cells[(mode, n)]
            eps = f"{c.epsilon:.2f}" if c.epsilon is not None else "-"
            print(f"| {mode} | {n} | {c.contributors} | {c.released_slots} / {c.released_phrases} / "
                  f"{c.released_statements} | {eps} | {c.aggregation} |")
    print()
    print("Instances holding each fact, and how many contributed a pattern naming it:")
    print()
    print("| fact | popularity | " + " | ".join(f"held / contributed, n = {n}" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for k, f in enumerate(FACTS):
        row = []
        for n in sizes:
            held = sum(1 for h in held_all[:n] if k in h)
            contrib = sum(1 for m in members[:n]
                          if any(KW[k].search(pattern_text(p.statement, p.phrases).lower()) for p in m.patterns))
            row.append(f"{held} / {contrib}")
        print(f"| {f.canonical} | {popularity(k):.2f} | " + " | ".join(row) + " |")
    print()
    req = [policy.release_requirement(m, args.level) for m in modes]
    print("Distinct contributors a phrase needs for a 50 % / 95 % release chance in one window (computed by "
          "privacy.modes): " + ", ".join(f"{r.mode} {r.contributors_50} / {r.contributors_95}" for r in req) + ".")
    print("REAL: pattern pipeline, HTTP coordinator, admission, signed and encrypted contributions, the coordinator's "
          "release code, the querying FederationClient, and (cells marked 'real secagg over HTTP') every member's "
          "RoundParticipant. SIMULATED (cells marked 'secagg sum simulated'): the secure aggregation's four phases "
          "are replaced by the sum they produce (secagg.quantise + per-client secagg.discrete_gaussian noise, masks "
          "cancelled, no dropouts), fed to RoundEngine.release_aggregate.")
    print(f"Total time {time.perf_counter() - t_all:.0f} s; {load()} at the end.")
    if args.json:
        print(json.dumps({"machine": machine(), "load_at_end": os.getloadavg(),
                          "cells": [asdict(c) for c in cells.values()],
                          "baseline": {str(n): b for n, b in base.items()},
                          "requirements": [r.model_dump(mode="json") for r in req]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
