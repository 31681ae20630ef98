"""Candidate spans, tokens and the mask that keeps accepted spans disjoint (shared by the passes)."""

from __future__ import annotations

from dataclasses import dataclass

from continuum_mcp.privacy.scrub.models import ScrubSpan
from continuum_mcp.privacy.scrub.words import HONORIFICS

@dataclass
class Cand:
    type: str
    start: int
    end: int
    prio: int


@dataclass
class Tok:
    start: int
    end: int
    text: str
    lw: str
    cap: bool
    upper: bool
    initial: bool  # sentence-initial (case says nothing about proper-noun-ness)
    kind: str = ""  # "" keep, else entity hint: PERSON/LOCATION/ORG/NRP/NAME/DATE/HON/CAP
    tech: bool = False  # a technical term that is no name (joins no entity on its own)


def take(mask: bytearray, accepted: list[Cand], typ: str, start: int, end: int, prio: int) -> bool:
    """Accept a span unless it overlaps one already taken (the first, strongest rule wins)."""
    if end <= start or any(mask[start:end]):
        return False
    mask[start:end] = b"\x01" * (end - start)
    accepted.append(Cand(typ, start, end, prio))
    return True


def compose(first: list[ScrubSpan], second: list[ScrubSpan], mid_text: str) -> list[ScrubSpan]:
    """Map spans found in the output of a pass (``mid_text``) back to original offsets and merge
    them with the spans of that pass. Later spans never overlap earlier placeholders."""
    # offsets: position in mid_text -> position in the original, walking both in order
    out = list(first)
    starts: list[tuple[int, int, int]] = []  # (mid_start, mid_end, shift after) per placeholder
    shift = 0
    for sp in first:
        mid_start = sp.start - shift
        mid_end = mid_start + len(sp.placeholder)
        shift += (sp.end - sp.start) - len(sp.placeholder)
        starts.append((mid_start, mid_end, shift))

    def to_orig(pos: int) -> int:
        sh = 0
        lo, hi = 0, len(starts)
        while lo < hi:  # last placeholder ending at or before pos
            mid = (lo + hi) // 2
            if starts[mid][1] <= pos:
                lo = mid + 1
            else:
                hi = mid
        if lo:
            sh = starts[lo - 1][2]
        return pos + sh

    for sp in second:
        out.append(ScrubSpan(type=sp.type, start=to_orig(sp.start), end=to_orig(sp.end),
                             placeholder=sp.placeholder))
    out.sort(key=lambda s: s.start)
    return out


def joinable_gap(gap: str, prev: Tok | None = None) -> bool:
    """Words of one name are separated by a space, hyphen or apostrophe; ". " only after an
    initial or honorific ("J. Smith", "Dr. Smith")."""
    if gap in (" ", "-", "'", "’", "  ", " - "):
        return True
    if gap in (". ", ".", ".  ") and prev is not None and (len(prev.text) == 1 or prev.lw in HONORIFICS):
        return True
    return False
