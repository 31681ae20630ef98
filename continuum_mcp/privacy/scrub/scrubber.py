"""The scrubber: runs the pattern detectors, then the word pass, until the text stops changing."""

from __future__ import annotations

from continuum_mcp.privacy.scrub._spans import Cand, compose
from continuum_mcp.privacy.scrub.detectors import pattern_pass
from continuum_mcp.privacy.scrub.gazetteers import Gazetteers, default_gazetteers
from continuum_mcp.privacy.scrub.lexicon import Lexicon
from continuum_mcp.privacy.scrub.models import PLACEHOLDER_RE, PLACEHOLDERS, ScrubberConfig, ScrubResult, ScrubSpan
from continuum_mcp.privacy.scrub.wordpass import word_pass

_MAX_PASSES = 6


class Scrubber:
    """Replace PII in text by typed placeholders. Stateless after construction; thread-safe."""

    def __init__(self, config: ScrubberConfig | None = None, *,
                 gazetteers: Gazetteers | None = None) -> None:
        self.config = config or ScrubberConfig()
        self.gaz = gazetteers if gazetteers is not None else default_gazetteers()
        self._lex = Lexicon(self.config, self.gaz)

    def scrub(self, text: str) -> ScrubResult:
        """Scrub ``text``. Never raises on a ``str``; anything else is coerced with ``str()``."""
        if not isinstance(text, str):
            text = str(text)
        text = text[: self.config.max_input_chars]
        if not text:
            return ScrubResult(text="", spans=[])
        # Replacing a word can change what its neighbours look like (a sentence start, a path
        # after ">"), so scrub again until nothing changes: the result is then a fixpoint, which
        # makes scrub() idempotent by construction. Passes are capped, so time stays linear.
        current, spans = self._scrub_once(text)
        for _ in range(_MAX_PASSES - 1):
            nxt, new = self._scrub_once(current)
            if not new:
                break
            spans = compose(spans, new, current)
            current = nxt
        return ScrubResult(text=current, spans=spans)

    def _scrub_once(self, text: str) -> tuple[str, list[ScrubSpan]]:
        mask = bytearray(len(text))  # 1 = already taken by an accepted span or a placeholder
        for m in PLACEHOLDER_RE.finditer(text):
            mask[m.start():m.end()] = b"\x01" * (m.end() - m.start())
        accepted: list[Cand] = []
        pattern_pass(self._lex, text, mask, accepted)
        word_pass(self._lex, text, mask, accepted)
        accepted.sort(key=lambda c: c.start)
        out: list[str] = []
        spans: list[ScrubSpan] = []
        pos = 0
        for c in accepted:
            if c.start < pos:  # defensive: spans are disjoint by construction
                continue
            ph = PLACEHOLDERS.get(c.type, f"<{c.type}>")
            out.append(text[pos:c.start])
            out.append(ph)
            spans.append(ScrubSpan(type=c.type, start=c.start, end=c.end, placeholder=ph))
            pos = c.end
        out.append(text[pos:])
        return "".join(out), spans
