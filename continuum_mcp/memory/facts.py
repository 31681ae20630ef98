"""Is a new text a true restatement of an old one? A pure comparator, no model involved.

Why: embeddings put "I am allergic to peanuts" and "I am not allergic to peanuts" at cosine 0.97,
and two phone numbers that differ in one digit at 0.998. Cosine says "same subject"; only the
facts say "same statement". Two texts restate each other only if they carry the same numbers
(digits and number words), the same dates and times (weekdays, months, am/pm, relative days),
the same names (capitalised words, compared case-insensitively so that a case change is not a
new name), the same negation, and otherwise the same content words up to inflection, order,
stop words, case, punctuation and whitespace. Anything else is an update or a different memory,
and is stored: a false "same" loses what the user said, a false "different" costs one row.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_DIGITS_RE = re.compile(r"\d+")

NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor",
                       "without", "cannot", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
                       "wont", "wouldnt", "cant", "couldnt", "shouldnt", "hasnt", "havent", "hadnt",
                       "mustnt", "neednt", "nope"})
NUMBER_WORDS = frozenset("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                         "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
                         "eighty ninety hundred thousand million billion half quarter dozen first second third "
                         "fourth fifth sixth seventh eighth ninth tenth once twice double triple".split())
TIME_WORDS = frozenset("monday tuesday wednesday thursday friday saturday sunday weekend weekday january february "
                       "march april may june july august september october november december jan feb mar apr "
                       "jun jul aug sep sept oct nov dec am pm noon midnight morning afternoon evening night "
                       "tonight today tomorrow yesterday daily weekly monthly yearly annually week month year "
                       "spring summer autumn fall winter before after earlier later early late next last "
                       "ago soon".split())
STOP_WORDS = frozenset("a an the is are was were be been being am do does did has have had of to in on at by for "
                       "with from into onto over under about as and or but so that this these those it its "
                       "i me my mine we us our you your he him his she her they them their there here "
                       "very really just also too quite will would shall should can could may might must "
                       "please note remember s".split())


@dataclass(frozen=True)
class Facts:
    """What must match for two texts to be the same statement."""

    numbers: tuple[str, ...]
    times: frozenset[str]
    names: frozenset[str]
    negated: frozenset[str]
    words: frozenset[str]


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _stem(word: str) -> str:
    """A crude inflection fold (plural, -ing, -ed): 'meetings'/'meeting', 'moved'/'move'."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def facts(text: str) -> Facts:
    raw = _fold(text)
    tokens = _TOKEN_RE.findall(raw)
    lower = [t.casefold().replace("’", "'") for t in tokens]
    numbers = tuple(sorted(int_str.lstrip("0") or "0" for int_str in _DIGITS_RE.findall(raw)))
    negated: set[str] = set()
    words: set[str] = set()
    times: set[str] = set()
    for w in lower:
        bare = w.replace("'", "")
        if bare in NEGATIONS or w.endswith("n't"):
            negated.add("not")
            continue
        if bare in NUMBER_WORDS:
            words.add(bare)
        if bare in TIME_WORDS:
            times.add(bare)
        if bare.isdigit() or bare in STOP_WORDS:
            continue
        words.add(_stem(bare.removesuffix("'s").replace("'", "")))
    # Names: a capitalised word anywhere but the first word, or an all-caps/mixed-case token.
    names = {t.casefold() for i, t in enumerate(tokens)
             if (i > 0 and t[:1].isupper()) or (len(t) > 1 and any(c.isupper() for c in t[1:]))}
    names = {n.removesuffix("'s").removesuffix("’s") for n in names}
    return Facts(numbers=numbers, times=frozenset(times), names=frozenset(names),
                 negated=frozenset(negated), words=frozenset(words))


def same_facts(a: str, b: str) -> bool:
    """True only when ``b`` restates ``a``: same numbers, times, names, negation and content words."""
    fa, fb = facts(a), facts(b)
    if fa.numbers != fb.numbers or fa.times != fb.times or fa.negated != fb.negated:
        return False
    if fa.words != fb.words:
        return False
    # A name in one text must at least be a word of the other (a case change is not a new name;
    # this catches names that are also stop words, e.g. 'Will' or 'Art').
    return fa.names <= fb.names | fb.words | {n for n in fa.names if n in STOP_WORDS and n in _lowered(b)} \
        and fb.names <= fa.names | fa.words | {n for n in fb.names if n in STOP_WORDS and n in _lowered(a)}


def _lowered(text: str) -> set[str]:
    return {t.casefold() for t in _TOKEN_RE.findall(_fold(text))}


def differences(a: str, b: str) -> list[str]:
    """Which kinds of fact differ (for logs and tests): numbers, times, names, negation, words."""
    fa, fb = facts(a), facts(b)
    return [kind for kind in ("numbers", "times", "negated", "words") if getattr(fa, kind) != getattr(fb, kind)]


__all__ = ["Facts", "differences", "facts", "same_facts"]
