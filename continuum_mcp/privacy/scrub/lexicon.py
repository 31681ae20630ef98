"""One scrubber's vocabulary: the gazetteers with its configuration applied.

Built once per :class:`~continuum_mcp.privacy.scrub.Scrubber` and only read afterwards, so the
pattern and word passes can share it across threads.
"""

from __future__ import annotations

from continuum_mcp.privacy.scrub.gazetteers import Gazetteers
from continuum_mcp.privacy.scrub.models import ScrubberConfig
from continuum_mcp.privacy.scrub.words import STOP_WORDS, _stem_candidates


class Lexicon:
    """Which words are names, ordinary words or technical terms for one configuration."""

    def __init__(self, config: ScrubberConfig, gazetteers: Gazetteers) -> None:
        self.config = config
        self.gaz = g = gazetteers
        self.names = g.first_names | g.last_names
        self.allow = frozenset(w.lower() for w in config.allow_words)
        self.deny = frozenset(w.lower() for w in config.deny_words)
        self.ordinary = g.common | STOP_WORDS | self.allow
        self.tech = g.tech_terms
        # lower-case words that are a name only in a name context ("call pip at", "mode said")
        self.ambiguous = g.name_collisions | (g.tech_terms & self.names)

    def variant_known(self, lw: str, inflection_only: bool = False) -> bool:
        """An inflected or prefixed form of an ordinary word or technical term (``configs``,
        ``refactoring``, ``linters``, ``dependencies``, ``unpinned``): not a name.
        ``inflection_only`` (for capitalised words, where made-up company names such as
        "Estately" or "Recargo" are common): plural, -ed and -ing endings only."""
        if len(lw) < 5 or not lw.isalpha():
            return False
        return any(self.base_known(c) for c in _stem_candidates(lw, inflection_only))

    def base_known(self, w: str) -> bool:
        g = self.gaz
        return len(w) >= 3 and w not in STOP_WORDS and w not in g.demonyms and (
            w in self.ordinary or w in self.tech or w in g.name_collisions)
