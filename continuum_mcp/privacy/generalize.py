"""From one instance's memories to anonymised patterns (DESIGN section 2, steps 1-3 and 5).

Pipeline: select (drop ``private``-tagged and excluded memories) -> scrub -> normalise (case,
placeholders, first/second person, filler) -> embed the *scrubbed, normalised* text -> greedy
centroid clustering on cosine -> per cluster: medoid statement, support, cohesion, confidence,
key phrases, and the medoid's embedding. Raw text is never embedded and never leaves this module
inside a pattern.

Confidence (documented in ``docs/patterns.md``)::

    support_score = 1 - 2 ** (-support)          # 1 -> 0.5, 2 -> 0.75, 3 -> 0.875, ...
    confidence    = support_score * (0.5 + 0.5 * cohesion)

where ``cohesion`` is the mean cosine of the members to the medoid (1.0 for a single statement),
clipped to [0, 1]. A lone statement therefore scores 0.5; agreement between several differently
worded memories raises it towards 1.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.memory.models import Memory
from continuum_mcp.privacy.scrub import PLACEHOLDER_RE, STOP_WORDS, Scrubber
from embeddings.base import Embedder

PRIVATE_TAG = "private"

# First/second person -> neutral "user" (longest forms first; matched on word boundaries).
_PERSON_MAP: list[tuple[str, str]] = [
    (r"i am|i'm|im|you are|you're|we are|we're", "user is"),
    (r"i was|you were|we were", "user was"),
    (r"i have|i've|you have|you've|we have|we've", "user has"),
    (r"i do|you do|we do", "user does"),
    (r"i'll|you'll|we'll", "user will"),
    (r"i'd|you'd|we'd", "user would"),
    (r"myself|yourself|ourselves|yourselves", "user"),
    (r"my|mine|your|yours|our|ours", "user's"),
    (r"i|me|you|we|us", "user"),
]
_PERSON_RES = [(re.compile(rf"(?<![\w<])(?:{pat})(?![\w>])"), rep) for pat, rep in _PERSON_MAP]

FILLER = (
    r"um+|uh+|erm|hmm+|oh|wow|lol|haha|btw|anyway|anyways|basically|actually|literally|honestly|"
    r"really|just|totally|kind of|sort of|you know|i mean|i think|i guess|i believe|please|okay|ok|"
    r"well|so yeah|yeah|hey|hi|hello"
)
_FILLER_RE = re.compile(rf"(?<![\w<])(?:{FILLER})(?![\w>])[,!]?")
_WORD_RE = re.compile(r"<[A-Z_]+>|[^\W_]+(?:['’-][^\W_]+)*")
PHRASE_STOP = STOP_WORDS | {"user", "user's", "users", "also", "get", "got", "one", "thing", "things"}


class Pattern(BaseModel):
    """A cluster of similar scrubbed statements of one instance."""

    model_config = ConfigDict(frozen=True)

    pattern_id: str = Field(description="Stable hash of the statement and phrases.")
    statement: str = Field(description="Scrubbed, normalised medoid statement.")
    phrases: list[str] = Field(description="Key phrases: 1-4 word n-grams without stop words.")
    confidence: float = Field(ge=0.0, le=1.0)
    support: int = Field(ge=1, description="Number of memories in the cluster.")
    cohesion: float = Field(ge=0.0, le=1.0, description="Mean cosine of members to the medoid.")
    embedding: list[float] = Field(default_factory=list, exclude=True, repr=False,
                                   description="Unit embedding of the scrubbed statement (not dumped).")
    source_memory_ids: list[int]


def confidence_score(support: int, cohesion: float) -> float:
    """Confidence in [0, 1] from support (how many memories) and cohesion (how alike they are)."""
    support_score = 1.0 - 2.0 ** (-max(1, support))
    c = min(1.0, max(0.0, cohesion))
    return round(support_score * (0.5 + 0.5 * c), 4)


def is_private(memory: Memory) -> bool:
    return any(t.strip().lower() == PRIVATE_TAG for t in memory.tags)


class Selection(BaseModel):
    """Which memories may take part, and which were held back and why."""

    included: list[Memory]
    private_ids: list[int]
    excluded_ids: list[int]


def select_memories(memories: Sequence[Memory], exclude: Collection[int] = ()) -> Selection:
    """Step 1: memories tagged ``private`` (any case) or listed in ``exclude`` never take part."""
    excl = set(exclude)
    inc: list[Memory] = []
    priv: list[int] = []
    ex: list[int] = []
    for m in memories:
        if is_private(m):
            priv.append(m.id)
        elif m.id in excl:
            ex.append(m.id)
        else:
            inc.append(m)
    return Selection(included=inc, private_ids=sorted(priv), excluded_ids=sorted(ex))


def normalize_statement(scrubbed: str) -> str:
    """Lower-case (placeholders kept), neutral person, filler removed, whitespace collapsed."""
    parts: list[str] = []
    pos = 0
    for m in PLACEHOLDER_RE.finditer(scrubbed):
        parts.append(scrubbed[pos:m.start()].lower())
        parts.append(m.group())
        pos = m.end()
    parts.append(scrubbed[pos:].lower())
    text = "".join(parts).replace("’", "'")
    text = _FILLER_RE.sub(" ", text)
    for rx, rep in _PERSON_RES:
        text = rx.sub(rep, text)
    text = re.sub(r"\s+", " ", text).strip(" ,;-")
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"([!?.])[!?.]+", r"\1", text)
    text = re.sub(r"[,;]+\s*([.!?])", r"\1", text)
    text = re.sub(r"([,;])[,;]+", r"\1", text)
    return text


#: scores candidate phrases by how close each is in meaning to the pattern (higher is closer)
Centrality = Callable[[Sequence[str]], Sequence[float]]


def key_phrases(statements: Sequence[str], max_phrases: int, centrality: Centrality | None = None) -> list[str]:
    """The pattern's key phrases (1-4 word n-grams without stop words or placeholders), ranked
    for a federation where each member may send only a few (release v2's per-user cap C):

    1. shared by more of the pattern's statements first (the user's own frequency, the best local
       guess of what other users share; Carvalho et al. 2022);
    2. then shorter first: every user who holds a longer n-gram also holds each of its words (the
       Apriori property), so across a federation a shorter phrase has at least as many distinct
       contributors as any phrase containing it, and paraphrases of one fact share words far more
       often than word sequences;
    3. then closest in meaning to the pattern (``centrality``: cosine of the phrase's embedding to
       the pattern's mean embedding; Grootendorst's KeyBERT): paraphrases of the same meaning, by
       different users, then agree on the same word, where an arbitrary order (alphabetical) would
       split them over different words;
    4. then alphabetically, for determinism.

    ``centrality`` is called once, for the candidates that can reach the first ``max_phrases``
    (:func:`phrase_candidates`)."""
    df = _phrase_frequencies(statements)
    head = phrase_candidates(statements, max_phrases, df)
    if centrality is None or len(head) <= 1:
        return head[:max_phrases]
    score = dict(zip(head, (float(c) for c in centrality(head))))
    return sorted(head, key=lambda g: (_group(df, g), -score[g], g))[:max_phrases]


def _phrase_frequencies(statements: Sequence[str]) -> dict[str, int]:
    """How many of the statements contain each candidate n-gram."""
    df: dict[str, int] = {}
    for st in statements:
        seen: set[str] = set()
        for chunk in re.split(r"[,.;:!?()\[\]\"]", st):
            words = _WORD_RE.findall(chunk)
            for n in range(1, 5):
                for i in range(len(words) - n + 1):
                    gram = words[i:i + n]
                    if any(w in PHRASE_STOP or w.startswith("<") or len(w) < 2 or w.isdigit()
                           for w in gram):
                        continue
                    seen.add(" ".join(gram))
        for g in seen:
            df[g] = df.get(g, 0) + 1
    return df


def _group(df: dict[str, int], g: str) -> tuple[int, int]:
    return -df[g], g.count(" ")


def phrase_candidates(statements: Sequence[str], max_phrases: int, df: dict[str, int] | None = None) -> list[str]:
    """The candidates of :func:`key_phrases` that can reach its first ``max_phrases`` (every
    phrase of each (frequency, length) group up to the one the cut falls in), in rank order
    without centrality: the only ones a centrality must score."""
    df = _phrase_frequencies(statements) if df is None else df
    ranked = sorted(df, key=lambda g: (_group(df, g), g))
    if len(ranked) <= max_phrases:
        return ranked
    cut = _group(df, ranked[max_phrases - 1])
    return [g for g in ranked if _group(df, g) <= cut]


class Generalizer:
    """Turns one instance's memories into :class:`Pattern` objects."""

    def __init__(self, embedder: Embedder, scrubber: Scrubber, *, similarity_threshold: float = 0.6,
                 max_phrases: int = 8) -> None:
        if not 0.0 < similarity_threshold <= 1.0:
            raise InvalidInput("similarity_threshold must be in (0, 1]")
        if max_phrases < 1:
            raise InvalidInput("max_phrases must be at least 1")
        self.embedder = embedder
        self.scrubber = scrubber
        self.similarity_threshold = similarity_threshold
        self.max_phrases = max_phrases

    def statement(self, text: str) -> str:
        """Scrubbed and normalised form of one memory text."""
        return normalize_statement(self.scrubber.scrub(text).text)

    def generalize(self, memories: Sequence[Memory], *, exclude: Collection[int] = ()) -> list[Pattern]:
        """Patterns of the selected memories, strongest first (confidence, then support)."""
        selected = select_memories(memories, exclude).included
        ids: list[int] = []
        stmts: list[str] = []
        for m in sorted(selected, key=lambda m: m.id):
            st = self.statement(m.text)
            if _WORD_RE.search(PLACEHOLDER_RE.sub(" ", st)) is None:
                continue  # nothing but PII or punctuation: no knowledge to share
            ids.append(m.id)
            stmts.append(st)
        if not stmts:
            return []
        vecs = np.asarray(self.embedder.encode(stmts), dtype=np.float32)
        clusters = self._cluster(vecs)
        # one embedding call for every cluster's candidate phrases (the centrality of key_phrases)
        cands = sorted({g for members in clusters
                        for g in phrase_candidates([stmts[i] for i in members], self.max_phrases)})
        phrase_vecs = dict(zip(cands, np.asarray(self.embedder.encode(cands), dtype=np.float32))) if cands else {}
        patterns = [self._pattern(members, ids, stmts, vecs, phrase_vecs) for members in clusters]
        patterns.sort(key=lambda p: (-p.confidence, -p.support, p.source_memory_ids[0]))
        return patterns

    def _cluster(self, vecs: np.ndarray) -> list[list[int]]:
        """Greedy centroid clustering, then one reassignment pass. Deterministic (input order =
        memory id order); O(n * clusters * dim)."""
        thr = self.similarity_threshold
        sums: list[np.ndarray] = []
        centroids = np.zeros((0, vecs.shape[1]), dtype=np.float32)
        assign: list[int] = []
        for v in vecs:
            if len(sums):
                sims = centroids @ v
                best = int(np.argmax(sims))
                if sims[best] >= thr:
                    sums[best] = sums[best] + v
                    centroids[best] = sums[best] / max(np.linalg.norm(sums[best]), 1e-12)
                    assign.append(best)
                    continue
            sums.append(v.copy())
            centroids = np.vstack([centroids, v[None, :]])
            assign.append(len(sums) - 1)
        # reassignment: each statement to its closest centroid if that one passes the threshold
        sims = vecs @ centroids.T
        final: dict[int, list[int]] = {}
        for i, a in enumerate(assign):
            best = int(np.argmax(sims[i]))
            tgt = best if sims[i, best] >= thr and sims[i, best] > sims[i, a] else a
            final.setdefault(tgt, []).append(i)
        return [sorted(m) for _, m in sorted(final.items(), key=lambda kv: min(kv[1]))]

    @staticmethod
    def _centrality(mean: np.ndarray, phrase_vecs: dict[str, np.ndarray]) -> Centrality:
        """Cosine of each phrase's embedding to the pattern's mean direction ``mean``."""
        def score(phrases: Sequence[str]) -> list[float]:
            out = []
            for p in phrases:
                v = phrase_vecs[p]
                out.append(float(v @ mean) / max(float(np.linalg.norm(v)), 1e-12))
            return out
        return score

    def _pattern(self, members: list[int], ids: list[int], stmts: list[str], vecs: np.ndarray,
                 phrase_vecs: dict[str, np.ndarray]) -> Pattern:
        sub = vecs[members]
        sim = sub @ sub.T
        if len(members) == 1:
            medoid_local, cohesion = 0, 1.0
        else:
            medoid_local = int(np.argmax(sim.sum(axis=1)))  # first max = smallest id on ties
            others = np.delete(sim[medoid_local], medoid_local)
            cohesion = float(np.clip(others.mean(), 0.0, 1.0))
        medoid = members[medoid_local]
        statement = stmts[medoid]
        mean = sub.sum(axis=0)
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        phrases = key_phrases([stmts[i] for i in members], self.max_phrases,
                              centrality=self._centrality(mean, phrase_vecs))
        pid = hashlib.sha256(("\x1f".join([statement, *phrases])).encode("utf-8")).hexdigest()[:24]
        return Pattern(
            pattern_id=pid, statement=statement, phrases=phrases,
            confidence=confidence_score(len(members), cohesion), support=len(members),
            cohesion=round(cohesion, 4), embedding=[float(x) for x in vecs[medoid]],
            source_memory_ids=sorted(ids[i] for i in members),
        )
