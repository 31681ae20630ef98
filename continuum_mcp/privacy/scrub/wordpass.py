"""The word pass: tokenise what the detectors left, and tell names from ordinary words.

Every remaining word is looked up in the gazetteers. A capitalised word that is not an ordinary
word (or is a name), a word after an honorific, and a lower-case word known only as a name are
marked; :mod:`.entities` then groups marked words into entities and accepts them.
"""

from __future__ import annotations

import re

from continuum_mcp.privacy.scrub._spans import Cand, Tok, joinable_gap
from continuum_mcp.privacy.scrub.entities import chains, places, street_words
from continuum_mcp.privacy.scrub.lexicon import Lexicon
from continuum_mcp.privacy.scrub.words import (
    _LOCATION_PREPOSITIONS, _NAME_AFTER, _NAME_BEFORE, AMBIGUOUS_MONTHS, HONORIFICS, MONTHS,
    ORG_SUFFIXES, STOP_WORDS, WEEKDAYS,
)

_WORD_RE = re.compile(r"[^\W\d_](?:[^\W_]|['’](?=[^\W\d_])){0,99}|\d[\w]{0,99}")
_SENT_END = frozenset(".!?:;\n\r•")
_OPENERS = " \t\"'“”‘’«»([{*-–—>"


def tokens(text: str, mask: bytearray) -> list[Tok]:
    toks: list[Tok] = []
    for m in _WORD_RE.finditer(text):
        s, e = m.span()
        if any(mask[s:e]):
            continue
        w = m.group()
        # sentence-initial: previous significant character ends a sentence (or none)
        j = s - 1
        while j >= 0 and text[j] in _OPENERS:
            j -= 1
        initial = j < 0 or text[j] in _SENT_END
        if initial and j >= 1 and text[j] == ".":
            # "J. Smith", "Dr. Smith": the period ends an abbreviation, not a sentence
            k = j - 1
            while k >= 0 and text[k].isalpha():
                k -= 1
            prev_word = text[k + 1:j]
            if (len(prev_word) == 1 and prev_word.isupper()) or prev_word.lower() in HONORIFICS:
                initial = False
        if j >= 0 and text[j] == ">" and mask[j]:  # right after a placeholder: unknown
            initial = initial or (j + 1 < len(text) and text[j + 1] == "\n")
        toks.append(Tok(s, e, w, w.lower(), w[0].isupper(), len(w) > 1 and w.isupper(), initial))
    return toks


def name_context(toks: list[Tok], idx: int, text: str) -> bool:
    """A lower-case word that is also a name is read as a name only where a name is
    expected: after "call", "ask", "met"...; before "said", "told"...; coordinated with a
    name ("mary and pip")."""
    if idx > 0 and joinable_gap(text[toks[idx - 1].end:toks[idx].start]):
        prev = toks[idx - 1]
        if prev.lw in _NAME_BEFORE:
            return True
        if prev.lw in ("and", "or", "&") and idx > 1 and toks[idx - 2].kind in ("PERSON", "HON"):
            return True
    if idx > 0 and toks[idx].start >= 9 and text[toks[idx].start - 13:toks[idx].start].rstrip(
            ).endswith(("<PERSON> and", "<PERSON> or", "<PERSON>,")):
        return True
    if idx + 1 < len(toks) and joinable_gap(text[toks[idx].end:toks[idx + 1].start]):
        nxt = toks[idx + 1]
        if nxt.lw in _NAME_AFTER:
            return True
    return False


def word_pass(lex: Lexicon, text: str, mask: bytearray, accepted: list[Cand]) -> None:
    toks = tokens(text, mask)
    if not toks:
        return
    g = lex.gaz
    names, ordinary = lex.names, lex.ordinary
    # Sentences in which most words are capitalised (titles, shouting) carry no case signal.
    uninformative = [False] * len(toks)
    i = 0
    while i < len(toks):
        j = i + 1
        while j < len(toks) and not toks[j].initial:
            j += 1
        # title case / shouting: many *ordinary* words capitalised (a list of names is not)
        words = [t for t in toks[i:j] if t.text[0].isalpha() and not t.initial
                 and t.lw in ordinary and t.lw not in STOP_WORDS]
        if len(words) >= 3 and sum(t.cap for t in words) >= 0.6 * len(words):
            for k in range(i, j):
                uninformative[k] = True
        i = j

    for idx, t in enumerate(toks):
        lw = t.lw.replace("’", "'")
        if "'" in lw and lw not in ordinary:
            base, _, suffix = lw.rpartition("'")
            if suffix in ("s", "m", "ve", "re", "ll", "d", "t") and base:
                lw = base[:-1] if suffix == "t" and base.endswith("n") else base
        t.lw = lw
        if t.text[0].isdigit():
            digits = sum(c.isdigit() for c in t.text)
            if t.text.isdigit():
                if not (lex.config.keep_single_digits and len(t.text) == 1):
                    t.kind = "NUMBER"
            elif digits >= 4 or (digits >= 2 and len(t.text) >= 6):
                t.kind = "ID"
            elif re.fullmatch(r"\d{1,2}(st|nd|rd|th|er|e|º|ª)", lw) is None and digits >= 2:
                t.kind = "NUMBER"
            continue
        if any(c.isdigit() for c in t.text):
            if sum(c.isdigit() for c in t.text) >= 4:
                t.kind = "ID"
            continue
        if lw in lex.allow or len(lw) == 1:
            continue  # single letters only matter as initials inside a name chain
        if lw in lex.deny:
            t.kind = "NAME"
            continue
        if lw in HONORIFICS and t.cap and idx + 1 < len(toks) and (toks[idx + 1].cap or
                                                                    toks[idx + 1].lw in names):
            t.kind = "HON"
            continue
        if lw in STOP_WORDS:
            continue
        if lw in WEEKDAYS:
            t.kind = "DATE"
            continue
        if t.cap and lw in MONTHS and not t.initial and (lw not in AMBIGUOUS_MONTHS or lw in ("may", "mai")):
            t.kind = "DATE"
            continue
        dem = lw if lw in g.demonyms else (lw[:-1] if lw.endswith("s") and lw[:-1] in g.demonyms else "")
        if dem and (t.cap or dem not in ordinary):
            t.kind = "NRP"
            continue
        in_names = lw in names
        in_places = lw in g.places
        known = lw in ordinary
        # technical vocabulary and inflections of known words are not unknown words
        soft = not known and (lw in lex.tech or lw in lex.ambiguous
                              or lex.variant_known(lw, inflection_only=t.cap))
        t.tech = lw in lex.tech and not in_names and not in_places
        if t.upper and len(lw) <= 4 and not in_places:
            continue  # acronym (AWS, SSN, IBAN, MAC): not a name by itself
        if t.cap:
            if t.initial or uninformative[idx]:
                if (in_names or in_places) and not known:
                    t.kind = "PERSON" if in_names else "LOCATION"
                elif not known and not soft and len(lw) >= 2:
                    t.kind = "NAME"
                elif in_names or in_places:
                    t.kind = "MAYBE"  # e.g. "Will", "Mark": joins a following name
                elif lw in ORG_SUFFIXES:
                    t.kind = "SUFFIX"
                else:
                    t.kind = "CAPWORD"
            else:
                if (known or soft) and not (in_names or in_places):
                    t.kind = "SUFFIX" if lw in ORG_SUFFIXES else "CAPWORD"
                else:
                    t.kind = "PERSON" if in_names and not (in_places and idx > 0 and toks[idx - 1].lw in
                                                           _LOCATION_PREPOSITIONS) else (
                        "LOCATION" if in_places else "NAME")
        else:
            if len(lw) >= 3 and in_names and not known:
                # "pip", "mode", "file": a dictionary or technical word first; a name only
                # where a name is expected. Other lower-case names stay names anywhere.
                if soft and not name_context(toks, idx, text):
                    t.kind = "LNAME"
                else:
                    t.kind = "PERSON"
            elif (lex.config.scrub_unknown_words and len(lw) >= 4 and not known and not soft
                  and not in_names and not in_places and lw.replace("'", "").isalpha()):
                t.kind = "NAME"
            elif len(lw) >= 3 and in_names and lw not in _NAME_AFTER:
                t.kind = "LNAME"  # lower-case name that is also a word: joins a name

    places(lex, text, toks, mask, accepted)
    chains(lex, text, toks, mask, accepted)
    street_words(text, toks, mask, accepted)
