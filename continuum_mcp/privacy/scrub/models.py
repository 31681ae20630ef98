"""What the scrubber returns and how it is configured; the placeholder names, defined once."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z_]{1,19}>")

PLACEHOLDERS: dict[str, str] = {
    t: f"<{t}>"
    for t in (
        "PERSON", "ORG", "LOCATION", "NRP", "NAME", "EMAIL", "PHONE", "URL", "IP", "MAC",
        "CREDIT_CARD", "IBAN", "ID", "DATE", "TIME", "NUMBER", "MONEY", "SECRET", "PATH",
        "ADDRESS", "TITLE", "VEHICLE_PLATE",
    )
}


class ScrubSpan(BaseModel):
    """One removed piece of the original text (offsets into the ORIGINAL string)."""

    model_config = ConfigDict(frozen=True)

    type: str
    start: int
    end: int
    placeholder: str


class ScrubResult(BaseModel):
    """Scrubbed text plus what was removed from where."""

    text: str
    spans: list[ScrubSpan] = Field(default_factory=list)


class ScrubberConfig(BaseModel):
    """Knobs of the scrubber. Defaults favour recall (privacy) over keeping words."""

    model_config = ConfigDict(frozen=True)

    allow_words: frozenset[str] = Field(
        default_factory=frozenset,
        description="Lower-case words never scrubbed by the word pass (public product names...).",
    )
    deny_words: frozenset[str] = Field(
        default_factory=frozenset, description="Lower-case words always scrubbed as <NAME>."
    )
    scrub_unknown_words: bool = Field(
        True, description="Replace lower-case words (4+ letters) found in no dictionary: they are "
        "most often names, handles or made-up company names.")
    keep_single_digits: bool = Field(True, description="Keep numbers 0-9 (not identifying).")
    secret_min_length: int = Field(20, ge=8)
    secret_min_entropy: float = Field(3.0, ge=0.0, description="Shannon bits per character.")
    max_input_chars: int = Field(2_000_000, ge=1, description="Longer input is truncated.")
