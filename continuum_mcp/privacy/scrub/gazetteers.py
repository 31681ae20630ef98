"""The packaged gazetteers (names, places, nationalities, common and technical words).

Loaded from ``continuum_mcp/data`` through :func:`importlib.resources.files`, so they are found in
a wheel, a zip or a source tree alike; ``benchmarks/build_gazetteers.py`` builds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

@dataclass(frozen=True)
class Gazetteers:
    """Immutable word lists the word pass consults (all lower case).

    ``tech_terms``: technical vocabulary (config, kubectl, pytest...) that is never an unknown
    word; ``name_collisions``: dictionary words that name lists also contain (file, mode, pip).
    Both only change how LOWER-CASE words (and capitalised tech terms that are no name) are read.
    """

    first_names: frozenset[str]
    last_names: frozenset[str]
    places: frozenset[str]
    demonyms: frozenset[str]
    common: frozenset[str]
    tech_terms: frozenset[str] = frozenset()
    name_collisions: frozenset[str] = frozenset()

    @property
    def max_place_words(self) -> int:
        return 4

    @classmethod
    def from_words(cls, *, first_names: Iterable[str] = (), last_names: Iterable[str] = (),
                   places: Iterable[str] = (), demonyms: Iterable[str] = (),
                   common: Iterable[str] = (), tech_terms: Iterable[str] = (),
                   name_collisions: Iterable[str] = ()) -> Gazetteers:
        def norm(items: Iterable[str]) -> frozenset[str]:
            return frozenset(" ".join(i.lower().split()) for i in items
                             if i.strip() and not i.lstrip().startswith("#"))

        return cls(norm(first_names), norm(last_names), norm(places), norm(demonyms), norm(common),
                   norm(tech_terms), norm(name_collisions))


@lru_cache(maxsize=1)
def default_gazetteers() -> Gazetteers:
    """Load the packaged lists once per process (read-only, so caching them is safe)."""

    def load(name: str) -> list[str]:
        text = (resources.files("continuum_mcp") / "data" / name).read_text(encoding="utf-8")
        return text.splitlines()

    return Gazetteers.from_words(
        first_names=load("first_names.txt"), last_names=load("last_names.txt"),
        places=load("places.txt"), demonyms=load("demonyms.txt"), common=load("common_words.txt"),
        tech_terms=load("tech_terms.txt"), name_collisions=load("name_collisions.txt"),
    )
