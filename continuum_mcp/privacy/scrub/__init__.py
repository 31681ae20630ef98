"""Offline PII scrubber: replaces personal data with typed placeholders such as ``<PERSON>``.

Why rules and gazetteers rather than a neural NER model: nothing may be downloaded at run time,
the scrubber must be deterministic and linear in the input length, and for federation what
matters is *recall* (a missed name leaves the machine; an over-scrubbed word only makes a
pattern a little vaguer). So the scrubber errs towards removal:

1. **Pattern detectors** (:mod:`.detectors`; regexes with bounded quantifiers, validated in
   Python): private keys, known API-token shapes, ``password: ...`` values, e-mails, URLs and bare
   domains, file paths, IBANs (mod 97), MAC and IP addresses, dates and times, money, street
   addresses and unit numbers, vehicle registration plates, runs of digits (credit cards by Luhn,
   SSN shapes, phones), high-entropy tokens.
2. **Word pass** (:mod:`.wordpass`, :mod:`.entities`): every remaining word is looked up in
   compact gazetteers shipped in ``continuum_mcp/data`` (:mod:`.gazetteers`; first and last names,
   places, nationalities, common words in seven languages; see ``benchmarks/build_gazetteers.py``)
   and the word lists of :mod:`.words`. A capitalised word that is not an ordinary word (or is a
   name), a run of two or more capitalised words, a word after an honorific, a chain ending in a
   company suffix, and a lower-case word that is only known as a name are all replaced.
   Remaining numbers of two or more digits become ``<NUMBER>``.

The result is idempotent: placeholders are never rescrubbed and the rules only ever remove.
"""

from continuum_mcp.privacy.scrub.gazetteers import Gazetteers, default_gazetteers
from continuum_mcp.privacy.scrub.models import PLACEHOLDER_RE, PLACEHOLDERS, ScrubberConfig, ScrubResult, ScrubSpan
from continuum_mcp.privacy.scrub.scrubber import Scrubber
from continuum_mcp.privacy.scrub.words import STOP_WORDS

__all__ = [
    "PLACEHOLDERS", "PLACEHOLDER_RE", "STOP_WORDS", "Gazetteers", "ScrubResult", "ScrubSpan",
    "Scrubber", "ScrubberConfig", "default_gazetteers",
]
