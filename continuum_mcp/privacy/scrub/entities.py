"""Group the words the word pass marked into entities (people, places, organisations, street
addresses) and accept them; multi-word place names are looked up whole first."""

from __future__ import annotations

from continuum_mcp.privacy.scrub._spans import Cand, Tok, joinable_gap, take
from continuum_mcp.privacy.scrub.lexicon import Lexicon
from continuum_mcp.privacy.scrub.words import (
    _ABBREVIATIONS, _LOCATION_PREPOSITIONS, _NAME_BEFORE, _ORDINAL_WORDS, CONNECTORS,
    ORG_SUFFIXES, STREET_WORDS,
)


def places(lex: Lexicon, text: str, toks: list[Tok], mask: bytearray, accepted: list[Cand]) -> None:
    """Multi-word capitalised place names ("United Kingdom", "New York")."""
    places = lex.gaz.places
    n = len(toks)
    i = 0
    while i < n:
        if not toks[i].cap:
            i += 1
            continue
        done = False
        for width in range(min(lex.gaz.max_place_words, n - i), 1, -1):
            seq = toks[i:i + width]
            if not seq[-1].cap or any(not joinable_gap(text[a.end:b.start], a)
                                      for a, b in zip(seq, seq[1:])):
                continue
            if " ".join(t.lw for t in seq) in places:
                if take(mask, accepted, "LOCATION", seq[0].start, seq[-1].end, 8):
                    for t in seq:
                        t.kind = ""
                    i += width
                    done = True
                break
        if not done:
            i += 1


def street_words(text: str, toks: list[Tok], mask: bytearray, accepted: list[Cand]) -> None:
    """Street and unit words left next to scrubbed text are part of an address."""
    n = len(text)
    for t in toks:
        if t.lw.rstrip(".") not in STREET_WORDS or any(mask[t.start:t.end]):
            continue
        s, e = t.start, t.end
        if e < n and text[e] == "." and not mask[e]:
            e += 1
        left = s >= 2 and text[s - 1] == " " and mask[s - 2]
        right = e + 1 < n and text[e] == " " and mask[e + 1]
        if left or right:
            if s >= 2 and text[s - 1] == " " and not mask[s - 2]:
                # "fourth avenue", "North Street": a direction or ordinal before it
                k = s - 2
                while k >= 0 and text[k].isalpha():
                    k -= 1
                if text[k + 1:s - 1].lower() in _ORDINAL_WORDS and not any(mask[k + 1:s - 1]):
                    s = k + 1
            take(mask, accepted, "ADDRESS", s, e, 9)


def chains(lex: Lexicon, text: str, toks: list[Tok], mask: bytearray, accepted: list[Cand]) -> None:
    """Group adjacent tokens into entities and accept them."""
    strong = {"PERSON", "LOCATION", "NAME", "NRP", "HON"}
    n = len(toks)
    i = 0
    while i < n:
        t = toks[i]
        if t.kind in ("NUMBER", "ID", "DATE"):
            take(mask, accepted, t.kind, t.start, t.end, 7)
            i += 1
            continue
        chainable = t.kind in strong or t.kind in ("MAYBE", "CAPWORD", "SUFFIX", "LNAME")
        if not chainable:
            i += 1
            continue
        # extend to the right over tokens joined by a single space, hyphen or apostrophe,
        # through connectors ("de", "van") and initials ("J.")
        j = i
        members = [i]
        while j + 1 < n:
            gap = text[toks[j].end:toks[j + 1].start]
            nxt = toks[j + 1]
            if not joinable_gap(gap, toks[j]):
                break
            if nxt.kind in strong or nxt.kind in ("MAYBE", "CAPWORD", "SUFFIX") or (
                    nxt.kind == "LNAME" and toks[j].kind in ("PERSON", "LNAME", "HON")):
                if nxt.initial and nxt.kind not in strong:
                    break
                j += 1
                members.append(j)
                continue
            if (nxt.lw in CONNECTORS or (len(nxt.text) == 1 and nxt.cap)) and j + 2 < n:
                gap2 = text[nxt.end:toks[j + 2].start]
                after = toks[j + 2]
                if joinable_gap(gap2, nxt) and (after.kind in strong or after.kind in ("CAPWORD", "SUFFIX", "MAYBE")) \
                        and (after.cap or after.kind in strong):
                    j += 2
                    members.extend([j - 1, j])
                    continue
            break
        if all(toks[k].tech or toks[k].lw in CONNECTORS for k in members):
            i = j + 1  # "Docker Compose", "GitHub Actions": product names, not PII
            continue
        kinds = [toks[k].kind for k in members if toks[k].kind]
        caps = sum(1 for k in members if toks[k].kind in strong or toks[k].kind in ("MAYBE", "CAPWORD", "SUFFIX"))
        entity = any(k in strong for k in kinds) or toks[members[-1]].kind == "SUFFIX" and caps >= 2
        if not entity and caps >= 2 and not all(toks[k].kind == "MAYBE" for k in members):
            entity = True
        if not entity:
            if all(k == "LNAME" for k in kinds) or t.kind in ("MAYBE", "CAPWORD", "SUFFIX", "LNAME"):
                i += 1
                continue
        # trim leading sentence-initial ordinary words ("Call Dana" -> "Dana")
        while len(members) > 1 and toks[members[0]].initial and (
                toks[members[0]].kind in ("CAPWORD", "SUFFIX", "LNAME") or (
                    toks[members[0]].kind == "MAYBE" and toks[members[0]].lw in _NAME_BEFORE)):
            members.pop(0)
        while len(members) > 1 and toks[members[-1]].lw in CONNECTORS:
            members.pop()
        typ = chain_type(lex, [toks[k] for k in members], toks, members[0])
        s = toks[members[0]].start
        e = toks[members[-1]].end
        if e < len(text) and text[e] == "." and toks[members[-1]].lw in _ABBREVIATIONS:
            e += 1
        take(mask, accepted, typ, s, e, 8)
        i = j + 1


def chain_type(lex: Lexicon, chain: list[Tok], toks: list[Tok], first: int) -> str:
    g = lex.gaz
    kinds = [t.kind for t in chain]
    lws = [t.lw for t in chain]
    if "HON" in kinds:
        return "PERSON"
    if chain[-1].lw in ORG_SUFFIXES and len(chain) >= 2:
        return "ORG"
    if len(chain) == 1 and kinds[0] in ("PERSON", "LOCATION", "NRP", "NAME"):
        return kinds[0]  # decided with its context in the word pass
    phrase = " ".join(lws)
    prev = toks[first - 1].lw if first > 0 else ""
    if phrase in g.places and (prev in _LOCATION_PREPOSITIONS or prev == "of" or
                               not (lws[0] in g.first_names and len(chain) >= 2)):
        return "LOCATION"
    if len(chain) == 1:
        k = kinds[0]
        if k in ("PERSON", "LOCATION", "NRP", "NAME"):
            return k
        return "NAME"
    if lws[0] in g.first_names or all(lw in lex.names or len(lw) == 1 for lw in lws if lw not in CONNECTORS):
        return "PERSON"
    if all(lw in g.places for lw in lws if lw not in CONNECTORS):
        return "LOCATION"
    return "NAME"
