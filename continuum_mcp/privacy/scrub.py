"""Offline PII scrubber: replaces personal data with typed placeholders such as ``<PERSON>``.

Why rules and gazetteers rather than a neural NER model: nothing may be downloaded at run time,
the scrubber must be deterministic and linear in the input length, and for federation what
matters is *recall* (a missed name leaves the machine; an over-scrubbed word only makes a
pattern a little vaguer). So the scrubber errs towards removal:

1. **Pattern detectors** (regexes with bounded quantifiers, validated in Python): private keys,
   known API-token shapes, ``password: ...`` values, e-mails, URLs and bare domains, file paths,
   IBANs (mod 97), MAC and IP addresses, dates and times, money, street addresses and unit
   numbers, runs of digits (credit cards by Luhn, SSN shapes, phones), high-entropy tokens.
2. **Word pass**: every remaining word is looked up in compact gazetteers shipped in
   ``continuum_mcp/data`` (first and last names, places, nationalities, common words in seven
   languages; see ``benchmarks/build_gazetteers.py``). A capitalised word that is not an
   ordinary word (or is a name), a run of two or more capitalised words, a word after an
   honorific, a chain ending in a company suffix, and a lower-case word that is only known as a
   name are all replaced. Remaining numbers of two or more digits become ``<NUMBER>``.

The result is idempotent: placeholders are never rescrubbed and the rules only ever remove.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

# ---------------------------------------------------------------------------------------------
# Public models

PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z_]{1,19}>")

PLACEHOLDERS: dict[str, str] = {
    t: f"<{t}>"
    for t in (
        "PERSON", "ORG", "LOCATION", "NRP", "NAME", "EMAIL", "PHONE", "URL", "IP", "MAC",
        "CREDIT_CARD", "IBAN", "ID", "DATE", "TIME", "NUMBER", "MONEY", "SECRET", "PATH",
        "ADDRESS", "TITLE",
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


# ---------------------------------------------------------------------------------------------
# Word lists

STOP_WORDS: frozenset[str] = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    let lets let's please thanks thank hi hello hey yes yeah ok okay oh well also via per
    der die das und oder ein eine einen dem den des ist sind mit von zu im am auf für nicht ich
    du er sie wir ihr es le la les un une des du et ou est avec pour dans sur je tu il elle nous
    vous ils el los las y o es con para en por yo tú él ella nosotros il lo gli e di da che
    """.split()
)

# Particles that may sit inside a multi-word name ("Reguengos de Monsaraz", "Bank of America").
CONNECTORS = frozenset("de del della di da das do dos du la le van von der den ten ter bin ibn al el "
                       "y of and & st st. san santa".split())

HONORIFICS = frozenset("mr mrs ms miss mx dr prof sir dame madam madame mme mlle herr frau fr hr "
                       "sr sra srta dott dott.ssa don doña lord lady rev fr capt sgt col gen".split())

ORG_SUFFIXES = frozenset(
    """inc inc. corp corp. corporation ltd ltd. llc llp plc gmbh ag sa s.a. sas sarl srl spa bv b.v.
    nv n.v. ab asa oy oyj co co. company companies group holdings systems software technologies
    technology solutions labs laboratories partners bank insurance university college institute
    foundation association society hospital clinic school agency ministry council consulting
    industries enterprises ventures capital media networks pharmaceuticals motors airlines
    services trust fund studio studios""".split()
)

# Words that name a street or a unit; scrubbed when they touch scrubbed text ("<NAME> str").
STREET_WORDS = frozenset(
    """street st str avenue ave av road rd lane ln boulevard blvd drive court ct place pl square sq
    terrace parkway pkwy highway hwy crescent gardens grove alley trail plaza mews rue via viale
    calle carrer rua avenida strasse straße gasse weg allee platz utca ulica ul tér körút út ulice
    odos katu tie gatan vägen vej gade laan straat apt apartment suite ste unit flat floor box po
    psc apo fpo dpo cedex terrasse terrace cite cité residence résidence quartier barrio colonia
    rakpart rkp court courts square squares""".split()
)
_ORDINAL_WORDS = frozenset(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth north south "
    "east west upper lower old new".split()
)

# Head nouns of job titles (general knowledge, not from any evaluation file). Titles are
# quasi-identifiers; they are only scrubbed in a job context ("works as a ...", own line).
OCCUPATION_HEADS = (
    r"administrator|analyst|architect|assistant|associate|attendant|auditor|baker|barber|bartender|"
    r"buyer|carpenter|cashier|chef|chemist|cleaner|clerk|coach|consultant|coordinator|counselou?r|"
    r"designer|developer|director|doctor|driver|economist|editor|electrician|engineer|executive|"
    r"farmer|firefighter|guard|hairdresser|handler|helper|inspector|installer|instructor|"
    r"investigator|janitor|journalist|labou?rer|lawyer|lecturer|librarian|machinist|manager|"
    r"mechanic|nurse|officer|operator|painter|paralegal|pharmacist|photographer|physician|"
    r"physicist|pilot|planner|plumber|producer|professor|programmer|psychologist|receptionist|"
    r"recruiter|repairer|representative|researcher|salesperson|scientist|secretary|specialist|"
    r"supervisor|surgeon|surveyor|teacher|technician|therapist|trainer|translator|tutor|"
    r"underwriter|veterinarian|waiter|waitress|welder|worker|writer|accountant|actuary|agent|aide|"
    r"advi[sz]or|adviser|broker|captain|dentist|dispatcher|estimator|examiner|fabricator|framer|"
    r"gardener|hygienist|interpreter|lifeguard|logistician|mover|packer|porter|reporter|sailor|"
    r"salesman|saleswoman|sorter|statistician|steward|stocker|tailor|tester|trucker|usher|vendor|"
    r"butcher|cook|courier|dancer|musician|singer|artist|actor|actress|author|soldier|detective|"
    r"banker|trader|founder|owner|intern|apprentice|ceo|cto|cfo|coo|[a-z]{2,20}(?:ologist|ician|"
    r"grapher|ographer|ist|eer|smith|wright|maker|keeper|setter|fitter|cutter|tender)"
)
_TITLE_CONTEXT = (
    r"as|am|i'm|is|was|are|were|became|become|becomes|hired|job|title|position|role|profession|"
    r"occupation|work(?:s|ed|ing)? as"
)

WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday montag dienstag "
                     "mittwoch donnerstag freitag samstag sonntag lundi mardi mercredi jeudi vendredi "
                     "samedi dimanche lunes martes miércoles jueves viernes sábado domingo".split())
MONTHS_EN = ("january february march april may june july august september october november december "
             "jan feb mar apr jun jul aug sep sept oct nov dec")
MONTHS = frozenset((MONTHS_EN + " januar februar märz mai juni juli oktober dezember janvier février "
                    "mars avril juin juillet août septembre octobre novembre décembre enero febrero "
                    "marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre").split())
AMBIGUOUS_MONTHS = frozenset("may mar jan jun sept dec mai mars".split())

STREET_TYPES = (
    r"Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|"
    r"Terrace|Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Crescent|Close|Gardens|Grove|Row|Walk|"
    r"Alley|Trail|Plaza|Mews|Hill|Park|Green|Loop|Path|Pike|Route|Causeway|Embankment|Quay|Wharf"
)
FOREIGN_STREET_SUFFIX = (
    r"straße|strasse|str\.|gasse|weg|allee|platz|ring|damm|ufer|katu|tie|gatan|vägen|väg|gata|"
    r"vej|gade|veien|laan|straat|plein|gracht|utca|ulica|ulice|út|sokak|caddesi|odos"
)
STREET_PREFIX = (
    r"Rue|Avenue|Av\.|Avenida|Via|Viale|Corso|Piazza|Calle|Carrer|Camino|Paseo|Plaza|Rua|Travessa|"
    r"Chemin|Boulevard|Bd|Allée|Place|Quai|Ulica|Ul\.|Strada|Odos|Iroon"
)


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
        text = resources.files("continuum_mcp").joinpath("data", name).read_text(encoding="utf-8")
        return text.splitlines()

    return Gazetteers.from_words(
        first_names=load("first_names.txt"), last_names=load("last_names.txt"),
        places=load("places.txt"), demonyms=load("demonyms.txt"), common=load("common_words.txt"),
        tech_terms=load("tech_terms.txt"), name_collisions=load("name_collisions.txt"),
    )


# ---------------------------------------------------------------------------------------------
# Pattern detectors. Every quantifier is bounded and no two adjacent pieces can match the same
# characters ambiguously, so each regex does O(bound) work per start position.

_TLDS = (
    "com|org|net|edu|gov|mil|int|io|co|uk|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|cz|pt|br|au|ca|us|"
    "jp|cn|ru|in|info|biz|me|app|dev|ai|eu|ie|nz|za|mx|ar|cl|gr|hu|ro|tv|cc|xyz|online|site|tech|"
    "cy|si|uy|sk|lt|lv|ee|is|lu|hr|bg|ua|tr|il|kr|tw|hk|sg|my|ph|id|vn|th|ae|sa|eg|ng|ke|pe|ve|"
    "cloud|shop|store|blog|news|email|mail|name|pro|mobi|asia|travel|museum|aero|coop|jobs|tel"
)

_SECRET_KEYWORDS = (
    r"password|passwd|passwort|pwd|passcode|passphrase|pass|secret|token|api[_ -]?key|apikey|"
    r"access[_ -]?key|secret[_ -]?key|client[_ -]?secret|private[_ -]?key|auth[_ -]?token|"
    r"credentials?|pin|mot de passe|contraseña|clave|senha"
)

# (type, priority, compiled regex, group to take). Lower priority number wins overlaps.
_DETECTORS: list[tuple[str, int, re.Pattern[str], int]] = [
    ("SECRET", 0, re.compile(
        r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----[\s\S]{0,10000}?-----END [A-Z ]{0,40}PRIVATE KEY-----"), 0),
    ("SECRET", 0, re.compile(
        r"(?<![\w-])(?:sk|pk|rk)[-_](?:live[-_]|test[-_]|proj[-_]|ant[-_])?[A-Za-z0-9_-]{16,300}"
        r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"
        r"|\bgh[pousr]_[A-Za-z0-9]{20,255}\b|\bgithub_pat_[A-Za-z0-9_]{20,255}"
        r"|\bglpat-[A-Za-z0-9_-]{20,64}|\bnpm_[A-Za-z0-9]{30,64}\b|\bhf_[A-Za-z0-9]{30,64}\b"
        r"|\bxox[abprse]-[A-Za-z0-9-]{10,255}|\bAIza[0-9A-Za-z_-]{30,40}"
        r"|\beyJ[A-Za-z0-9_-]{5,2000}\.[A-Za-z0-9_-]{5,2000}\.[A-Za-z0-9_-]{0,2000}"), 0),
    ("SECRET", 0, re.compile(
        r"(?i)\b(?:" + _SECRET_KEYWORDS + r")\b[\"']?\s{0,3}(?:=|:|:=|=>|->)\s{0,3}[\"']?"
        r"([^\s\"',;]{1,200})"), 1),
    ("SECRET", 0, re.compile(r"(?i)\b(?:bearer|basic)\s{1,3}([A-Za-z0-9._~+/=-]{8,500})"), 1),
    ("EMAIL", 1, re.compile(
        r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"), 0),
    ("URL", 2, re.compile(r"(?i)\b(?:https?|ftp|file|ssh|git)://[^\s<>\"'`]{1,2000}"), 0),
    ("URL", 2, re.compile(r"(?i)\bwww\.[^\s<>\"'`]{1,2000}"), 0),
    ("URL", 3, re.compile(
        r"(?i)(?<![\w@.-])(?:[a-z0-9][a-z0-9-]{0,62}\.){1,6}(?:" + _TLDS + r")\b(?![.-]?\w)"
        r"(?:/[^\s<>\"'`]{0,500})?"), 0),
    ("PATH", 2, re.compile(r"(?<![\w/>])(?:~|\.{1,2})?(?:/[\w.@%+~-]{1,255}){2,64}/?"), 0),
    ("PATH", 2, re.compile(r"(?<![\w/])~/[\w.@%+~-]{1,255}(?:/[\w.@%+~-]{1,255}){0,64}/?"), 0),
    ("PATH", 2, re.compile(r"(?i)\b[a-z]:\\[^\s\\:*?\"<>|]{0,255}(?:\\[^\s\\:*?\"<>|]{1,255}){0,64}\\?"), 0),
    ("PATH", 2, re.compile(r"\\\\[\w.$-]{1,255}(?:\\[^\s\\:*?\"<>|]{1,255}){1,64}"), 0),
    ("IBAN", 3, re.compile(r"(?i)\b[a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,3})?\b"), 0),
    ("MAC", 3, re.compile(r"(?i)\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b|\b[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\b"), 0),
    ("IP", 3, re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?\b"), 0),
    ("IP", 3, re.compile(r"(?i)(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])"), 0),
    ("DATE", 4, re.compile(
        r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        r"|\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b|\b\d{4}/\d{1,2}/\d{1,2}\b"), 0),
    ("DATE", 4, re.compile(
        r"(?i)\b(?:\d{1,2}(?:st|nd|rd|th|er|\.)?\s{1,3}(?:of\s{1,3}|de\s{1,3})?)?(?:" + MONTHS_EN.replace(" ", "|")
        + r"|januar|februar|märz|juni|juli|oktober|dezember|janvier|février|avril|juin|juillet|août|"
        r"septembre|octobre|novembre|décembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|"
        r"septiembre|octubre|noviembre|diciembre)\b(?:\s{1,3}\d{1,2}(?:st|nd|rd|th)?\b)?"
        r"(?:,?\s{1,3}(?:de\s{1,3})?\d{4}\b)?"), 0),
    ("TIME", 4, re.compile(
        r"(?i)\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?!\w)|\b\d{1,2}\s?[ap]\.?m\.?(?!\w)|\b\d{1,2}h\d{2}\b"), 0),
    ("MONEY", 4, re.compile(
        r"(?i)[$€£¥₹]\s?\d(?:[\d,.' ]{0,20}\d)?(?:\s?(?:k|m|bn|million|billion)\b)?"
        r"|\b\d[\d,.']{0,20}\s?(?:usd|eur|gbp|chf|jpy|dollars?|euros?|pounds?|francs?|€|\$|£)(?!\w)"), 0),
    ("ADDRESS", 5, re.compile(
        r"\b\d{1,6}[A-Za-z]?(?:[-/]\d{1,4})?,?\s{1,3}(?:[^\W\d_][\w'’.-]{0,40}\s{1,3}){0,5}?"
        r"(?:" + STREET_TYPES + r")\b\.?"), 0),
    ("ADDRESS", 5, re.compile(
        r"(?i)\b[^\W\d_][\w'’-]{0,40}?(?:" + FOREIGN_STREET_SUFFIX + r")\s{1,3}\d{1,5}[a-z]?\b"), 0),
    ("ADDRESS", 5, re.compile(
        r"\b(?:" + STREET_PREFIX + r")\s{1,3}(?:(?:de|del|la|le|des|du|di|della|do|da|dos|das)\s{1,3})?"
        r"[A-ZÀ-Ý][\w'’-]{0,40}(?:\s{1,3}[A-ZÀ-Ý][\w'’-]{0,40}){0,3}(?:,?\s{1,3}\d{1,5}[a-z]?\b)?"), 0),
    ("ADDRESS", 5, re.compile(
        r"(?i)\b(?:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|bldg|building|box|p\.?\s?o\.?\s?box|"
        r"psc|apo|fpo|dpo)\.?\s{0,3}#?\s{0,2}\d{1,6}[a-z]?\b|#\s?\d{1,6}\b"
        r"|\b(?:apo|fpo|dpo)\s{1,3}a[aep]\s{1,3}\d{5}\b"), 0),
    ("TITLE", 5, re.compile(
        r"(?i)\b(?:" + _TITLE_CONTEXT + r")\b:?\s{1,3}(?:an?\s{1,3}|the\s{1,3})?"
        r"((?:[a-z][a-z-]{1,30}\s{1,3}(?:and\s{1,3}|&\s{1,3})?){0,4}?(?:" + OCCUPATION_HEADS + r")s?)\b"), 1),
    ("TITLE", 5, re.compile(
        r"(?im)^[ \t>*-]{0,6}((?:[a-z][a-z-]{1,30}[ \t]{1,3}(?:and[ \t]{1,3}|&[ \t]{1,3})?){0,5}?"
        r"(?:" + OCCUPATION_HEADS + r")s?)[ \t]{0,6}$"), 1),
    ("ADDRESS", 5, re.compile(
        r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b|\b[A-Z]\d[A-Z] ?\d[A-Z]\d\b"), 0),  # UK / CA postcodes
    ("DIGITS", 6, re.compile(r"(?:\+|\(\+?)?\d[\d ()./-]{0,40}\d|\d"), 0),
]

# "The wifi password at home is hunter2-Xk9!pQ", "the door code is 7731": a secret keyword, a
# few words, a copula, then the value. The scan after each keyword is bounded (a few tokens), so
# this stays linear. Values after "is"/"was" must not be ordinary words ("the token is expired").
_SECRET_CONTEXT_RE = re.compile(
    r"(?i)\b(?:" + _SECRET_KEYWORDS + r"|pin[ _-]?(?:code|number)|access[ _-]?code|wi-?fi[ _-]?key|"
    r"(?:alarm|door|gate|garage|lock|safe|security|entry|building|locker|keypad|unlock|"
    r"verification|confirmation|otp|2fa|mfa|one-time)[ _-]?(?:code|pin)|code|combination)s?\b")
_CODE_KEYWORD_RE = re.compile(r"(?i)(?:code|combination|pin|number)s?$")
# "error code", "zip code", "status code": a code, but not a secret (numbers are still scrubbed)
_NON_SECRET_CODE_PREFIX = frozenset(
    "error exit status return http response source zip postal post area country dialing dialling "
    "promo promotional discount coupon qr bar morse dress machine byte op unicode ascii hex color "
    "colour sort airport iata icao iso language currency country product item sku tax hs naics "
    "sic bank swift bic routing branch".split())
_SECRET_COPULAS = frozenset("is was are were = : := => -> equals reads".split())
_SECRET_FILLERS = frozenset("now still just actually currently literally simply probably".split())
_SECRET_TO_VERBS = frozenset("set changed change reset updated update rotated rotate switched".split())
_SECRET_WINDOW = 6  # words allowed between the keyword and the copula
_SCAN_TOKEN_RE = re.compile(r"\S{1,200}")


_LOCATION_PREPOSITIONS = frozenset("in at from to near à en dans vers nach aus bei im zu desde hacia "
                                   "para em no na da do".split())
_ABBREVIATIONS = HONORIFICS | frozenset("inc corp ltd co st ave rd jr sr bros".split())
_WORD_RE = re.compile(r"[^\W\d_](?:[^\W_]|['’](?=[^\W\d_])){0,99}|\d[\w]{0,99}")
_SENT_END = frozenset(".!?:;\n\r•")
_OPENERS = " \t\"'“”‘’«»([{*-–—>"


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(value: str) -> bool:
    s = value.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def _entropy(s: str) -> float:
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_HIGH_ENTROPY_RE = re.compile(r"(?<![\w+/.-])[A-Za-z0-9+/_.-]{16,1000}={0,2}")


def _classify_digits(value: str) -> str | None:
    """Type a run of digits and separators, or None to leave it to the word pass."""
    digits = "".join(c for c in value if c.isdigit())
    n = len(digits)
    if n < 5:
        return None
    if re.fullmatch(r"\d{3}-\d{2}-\d{4}", value):
        return "ID"
    if 13 <= n <= 19 and _luhn_ok(digits):
        return "CREDIT_CARD"
    if value.startswith(("+", "(")) or (7 <= n <= 15 and any(c in value for c in " ()-.")):
        return "PHONE"
    if n >= 7:
        return "ID"
    return "NUMBER"


# ---------------------------------------------------------------------------------------------


@dataclass
class _Cand:
    type: str
    start: int
    end: int
    prio: int


@dataclass
class _Tok:
    start: int
    end: int
    text: str
    lw: str
    cap: bool
    upper: bool
    initial: bool  # sentence-initial (case says nothing about proper-noun-ness)
    kind: str = ""  # "" keep, else entity hint: PERSON/LOCATION/ORG/NRP/NAME/DATE/HON/CAP
    tech: bool = False  # a technical term that is no name (joins no entity on its own)


class Scrubber:
    """Replace PII in text by typed placeholders. Stateless after construction; thread-safe."""

    def __init__(self, config: ScrubberConfig | None = None, *,
                 gazetteers: Gazetteers | None = None) -> None:
        self.config = config or ScrubberConfig()
        self.gaz = gazetteers if gazetteers is not None else default_gazetteers()
        g = self.gaz
        self._names = g.first_names | g.last_names
        self._allow = frozenset(w.lower() for w in self.config.allow_words)
        self._deny = frozenset(w.lower() for w in self.config.deny_words)
        self._ordinary = g.common | STOP_WORDS | self._allow
        self._tech = g.tech_terms
        # lower-case words that are a name only in a name context ("call pip at", "mode said")
        self._ambiguous = g.name_collisions | (g.tech_terms & self._names)

    # -- public --------------------------------------------------------------------------------

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
            spans = _compose(spans, new, current)
            current = nxt
        return ScrubResult(text=current, spans=spans)

    def _scrub_once(self, text: str) -> tuple[str, list[ScrubSpan]]:
        mask = bytearray(len(text))  # 1 = already taken by an accepted span or a placeholder
        for m in PLACEHOLDER_RE.finditer(text):
            mask[m.start():m.end()] = b"\x01" * (m.end() - m.start())
        accepted: list[_Cand] = []
        self._pattern_pass(text, mask, accepted)
        self._word_pass(text, mask, accepted)
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

    # -- pattern detectors ---------------------------------------------------------------------

    def _take(self, mask: bytearray, accepted: list[_Cand], typ: str, start: int, end: int,
              prio: int) -> bool:
        if end <= start or any(mask[start:end]):
            return False
        mask[start:end] = b"\x01" * (end - start)
        accepted.append(_Cand(typ, start, end, prio))
        return True

    def _pattern_pass(self, text: str, mask: bytearray, accepted: list[_Cand]) -> None:
        cands: list[_Cand] = []
        has_at = "@" in text
        for typ, prio, rx, group in _DETECTORS:
            if typ == "EMAIL" and not has_at:
                continue
            for m in rx.finditer(text):
                s, e = m.span(group)
                if s < 0 or e <= s:
                    continue
                val = text[s:e]
                if typ in ("URL", "PATH"):
                    while e > s and text[e - 1] in ".,;:!?)]}'\"":
                        e -= 1
                    val = text[s:e]
                    if typ == "URL" and "(" in val and val.count("(") < val.count(")"):
                        continue
                elif typ == "SECRET" and group == 1:
                    while e > s and text[e - 1] in ".,;:!?)]}":
                        e -= 1
                    if e <= s:
                        continue
                elif typ == "IBAN":
                    if not _iban_ok(val):
                        if sum(ch.isdigit() for ch in val) < 6:
                            continue
                        typ2 = "ID"
                        cands.append(_Cand(typ2, s, e, prio))
                        continue
                elif typ == "IP":
                    core = val.split("/")[0]
                    try:
                        ipaddress.ip_address(core)
                    except ValueError:
                        continue
                elif typ == "TITLE":
                    words = val.lower().split()
                    while words and words[0] in STOP_WORDS:
                        s = text.index(words[0], s) + len(words[0])
                        while s < e and text[s].isspace():
                            s += 1
                        words.pop(0)
                    if not words:
                        continue
                elif typ == "DIGITS":
                    kind = _classify_digits(val)
                    if kind is None:
                        continue
                    cands.append(_Cand(kind, s, e, prio))
                    continue
                cands.append(_Cand(typ, s, e, prio))
        self._context_secrets(text, mask, cands)
        # high-entropy tokens (secrets) last among pattern detectors but before the word pass
        cfg = self.config
        for m in _HIGH_ENTROPY_RE.finditer(text):
            s, e = m.span()
            val = text[s:e].rstrip(".-")
            e = s + len(val)
            if len(val) < cfg.secret_min_length:
                continue
            classes = (any(c.islower() for c in val) + any(c.isupper() for c in val)
                       + any(c.isdigit() for c in val))
            if classes < 2 or not any(c.isdigit() for c in val):
                continue
            if _entropy(val) >= cfg.secret_min_entropy:
                cands.append(_Cand("SECRET", s, e, 1))
        cands.sort(key=lambda c: (c.prio, -(c.end - c.start), c.start))
        for c in cands:
            self._take(mask, accepted, c.type, c.start, c.end, c.prio)

    def _context_secrets(self, text: str, mask: bytearray, cands: list[_Cand]) -> None:
        """Values announced by a secret keyword a few words earlier ("the wifi password at home
        is hunter2-Xk9!pQ", "the alarm code is 7731", "I changed the token to ...")."""
        for m in _SECRET_CONTEXT_RE.finditer(text):
            kw = m.group().lower()
            code_like = _CODE_KEYWORD_RE.search(kw) is not None and not kw.startswith(
                ("pass", "pwd", "secret", "token", "api", "access key", "credential"))
            if kw.startswith("code") or kw.startswith("combination"):
                k = m.start() - 1
                while k >= 0 and text[k] in " -_":
                    k -= 1
                e_prev = k + 1
                while k >= 0 and text[k].isalpha():
                    k -= 1
                if text[k + 1:e_prev].lower() in _NON_SECRET_CODE_PREFIX:
                    continue
            pos = m.end()
            words = 0
            prev_lw = ""
            value: re.Match[str] | None = None
            copula_seen = False
            for w in _SCAN_TOKEN_RE.finditer(text, pos, min(len(text), pos + 400)):
                if "\n" in text[pos:w.start()]:
                    break
                pos = w.end()
                tok = w.group()
                lw = tok.lower()
                if copula_seen:
                    if lw in _SECRET_FILLERS:
                        continue
                    value = w
                    break
                if lw in _SECRET_COPULAS or (lw == "to" and (prev_lw in _SECRET_TO_VERBS or (
                        words == 0 and _SECRET_TO_VERBS & set(
                            text[max(0, m.start() - 40):m.start()].lower().split())))):
                    copula_seen = True
                    continue
                if len(tok) > 1 and tok.endswith(":") and tok[:-1].isalpha():
                    copula_seen = True
                    continue
                words += 1
                if words > _SECRET_WINDOW or tok[-1] in ".!?;," or PLACEHOLDER_RE.search(tok):
                    break
                prev_lw = lw
            if value is None:
                continue
            s, e = value.span()
            quoted = text[s] in "\"'“‘`"
            while s < e and text[s] in "\"'“‘`(":
                s += 1
            while e > s and text[e - 1] in ".,;:!?)]}\"'”’`":
                e -= 1
            if e <= s or any(mask[s:e]):
                continue
            val = text[s:e]
            if not self._secret_value(val, code_like, quoted):
                continue
            cands.append(_Cand("SECRET", s, e, 0))

    def _secret_value(self, val: str, code_like: bool, quoted: bool) -> bool:
        """Whether a token after a secret keyword and a copula looks like the secret itself."""
        if PLACEHOLDER_RE.fullmatch(val):
            return False
        digits = sum(c.isdigit() for c in val)
        if code_like:
            return digits >= 3 or (digits >= 1 and len(val) >= 4 and val.isalnum()) or (
                quoted and len(val) >= 3)
        if quoted:
            return True
        if digits or not val.replace("'", "").isalpha():
            return True  # hunter2, Xk9!pQ, correct-horse
        if any(c.isupper() for c in val[1:]):
            return True  # mixed case: hUnTeR
        lw = val.lower()
        return not (lw in self._ordinary or lw in self.gaz.tech_terms or self._variant_known(lw))

    # -- word pass -----------------------------------------------------------------------------

    def _tokens(self, text: str, mask: bytearray) -> list[_Tok]:
        toks: list[_Tok] = []
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
            toks.append(_Tok(s, e, w, w.lower(), w[0].isupper(), len(w) > 1 and w.isupper(), initial))
        return toks

    def _variant_known(self, lw: str, inflection_only: bool = False) -> bool:
        """An inflected or prefixed form of an ordinary word or technical term (``configs``,
        ``refactoring``, ``linters``, ``dependencies``, ``unpinned``): not a name.
        ``inflection_only`` (for capitalised words, where made-up company names such as
        "Estately" or "Recargo" are common): plural, -ed and -ing endings only."""
        if len(lw) < 5 or not lw.isalpha():
            return False
        return any(self._base_known(c) for c in _stem_candidates(lw, inflection_only))

    def _base_known(self, w: str) -> bool:
        g = self.gaz
        return len(w) >= 3 and w not in STOP_WORDS and w not in g.demonyms and (
            w in self._ordinary or w in self._tech or w in g.name_collisions)

    def _name_context(self, toks: list[_Tok], idx: int, text: str) -> bool:
        """A lower-case word that is also a name is read as a name only where a name is
        expected: after "call", "ask", "met"...; before "said", "told"...; coordinated with a
        name ("mary and pip")."""
        if idx > 0 and _joinable_gap(text[toks[idx - 1].end:toks[idx].start]):
            prev = toks[idx - 1]
            if prev.lw in _NAME_BEFORE:
                return True
            if prev.lw in ("and", "or", "&") and idx > 1 and toks[idx - 2].kind in ("PERSON", "HON"):
                return True
        if idx > 0 and toks[idx].start >= 9 and text[toks[idx].start - 13:toks[idx].start].rstrip(
                ).endswith(("<PERSON> and", "<PERSON> or", "<PERSON>,")):
            return True
        if idx + 1 < len(toks) and _joinable_gap(text[toks[idx].end:toks[idx + 1].start]):
            nxt = toks[idx + 1]
            if nxt.lw in _NAME_AFTER:
                return True
        return False

    def _word_pass(self, text: str, mask: bytearray, accepted: list[_Cand]) -> None:
        toks = self._tokens(text, mask)
        if not toks:
            return
        g = self.gaz
        names, ordinary = self._names, self._ordinary
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
                    if not (self.config.keep_single_digits and len(t.text) == 1):
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
            if lw in self._allow or len(lw) == 1:
                continue  # single letters only matter as initials inside a name chain
            if lw in self._deny:
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
            soft = not known and (lw in self._tech or lw in self._ambiguous
                                  or self._variant_known(lw, inflection_only=t.cap))
            t.tech = lw in self._tech and not in_names and not in_places
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
                    if soft and not self._name_context(toks, idx, text):
                        t.kind = "LNAME"
                    else:
                        t.kind = "PERSON"
                elif (self.config.scrub_unknown_words and len(lw) >= 4 and not known and not soft
                      and not in_names and not in_places and lw.replace("'", "").isalpha()):
                    t.kind = "NAME"
                elif len(lw) >= 3 and in_names and lw not in _NAME_AFTER:
                    t.kind = "LNAME"  # lower-case name that is also a word: joins a name

        self._places(text, toks, mask, accepted)
        self._chains(text, toks, mask, accepted)
        self._street_words(text, toks, mask, accepted)

    def _places(self, text: str, toks: list[_Tok], mask: bytearray, accepted: list[_Cand]) -> None:
        """Multi-word capitalised place names ("United Kingdom", "New York")."""
        places = self.gaz.places
        n = len(toks)
        i = 0
        while i < n:
            if not toks[i].cap:
                i += 1
                continue
            done = False
            for width in range(min(self.gaz.max_place_words, n - i), 1, -1):
                seq = toks[i:i + width]
                if not seq[-1].cap or any(not _joinable_gap(text[a.end:b.start], a)
                                          for a, b in zip(seq, seq[1:])):
                    continue
                if " ".join(t.lw for t in seq) in places:
                    if self._take(mask, accepted, "LOCATION", seq[0].start, seq[-1].end, 8):
                        for t in seq:
                            t.kind = ""
                        i += width
                        done = True
                    break
            if not done:
                i += 1

    def _street_words(self, text: str, toks: list[_Tok], mask: bytearray, accepted: list[_Cand]) -> None:
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
                self._take(mask, accepted, "ADDRESS", s, e, 9)

    def _chains(self, text: str, toks: list[_Tok], mask: bytearray, accepted: list[_Cand]) -> None:
        """Group adjacent tokens into entities and accept them."""
        strong = {"PERSON", "LOCATION", "NAME", "NRP", "HON"}
        n = len(toks)
        i = 0
        while i < n:
            t = toks[i]
            if t.kind in ("NUMBER", "ID", "DATE"):
                self._take(mask, accepted, t.kind, t.start, t.end, 7)
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
                if not _joinable_gap(gap, toks[j]):
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
                    if _joinable_gap(gap2, nxt) and (after.kind in strong or after.kind in ("CAPWORD", "SUFFIX", "MAYBE")) \
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
            typ = self._chain_type([toks[k] for k in members], toks, members[0])
            s = toks[members[0]].start
            e = toks[members[-1]].end
            if e < len(text) and text[e] == "." and toks[members[-1]].lw in _ABBREVIATIONS:
                e += 1
            self._take(mask, accepted, typ, s, e, 8)
            i = j + 1

    def _chain_type(self, chain: list[_Tok], toks: list[_Tok], first: int) -> str:
        g = self.gaz
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
        if lws[0] in g.first_names or all(lw in self._names or len(lw) == 1 for lw in lws if lw not in CONNECTORS):
            return "PERSON"
        if all(lw in g.places for lw in lws if lw not in CONNECTORS):
            return "LOCATION"
        return "NAME"


_NAME_BEFORE = frozenset(
    """call called calling phone phoned ring rang text texted email emailed mail mailed message
    messaged ping pinged dm ask asked asking tell told telling meet met meeting invite invited
    remind reminded thank thanked visit visited dear hi hey hello cc bcc married dating date
    uncle aunt cousin brother sister mum mom dad father mother son daughter wife husband
    boyfriend girlfriend partner friend colleague boss neighbour neighbor""".split())
_NAME_AFTER = frozenset(
    """said says told asks asked wrote writes mentioned mentions replied replies thinks thought
    suggested suggests texted emailed called phoned promised agreed reckons""".split())

# (suffix, replacement) pairs for ``_stem_candidates``; longest first
_SUFFIX_RULES: tuple[tuple[str, str], ...] = (
    ("izations", "ize"), ("isations", "ise"), ("ization", "ize"), ("isation", "ise"),
    ("ations", "e"), ("ations", ""), ("ation", "e"), ("ation", ""), ("ments", ""), ("ment", ""),
    ("nesses", ""), ("ness", ""), ("ings", ""), ("ings", "e"), ("ing", ""), ("ing", "e"),
    ("iers", "y"), ("ier", "y"), ("ies", "y"), ("ied", "y"), ("ers", ""), ("ers", "e"),
    ("er", ""), ("er", "e"), ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""), ("ly", ""),
    ("able", ""), ("able", "e"), ("ability", "able"), ("ize", ""), ("ise", ""), ("ized", ""),
    ("ised", ""), ("izing", ""), ("ising", ""), ("ful", ""), ("less", ""), ("ish", ""),
)
_INFLECTIONS: tuple[tuple[str, str], ...] = (
    ("ings", ""), ("ings", "e"), ("ing", ""), ("ing", "e"), ("ies", "y"), ("ied", "y"),
    ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""),
)
_PREFIXES = ("re", "un", "pre", "non", "mis", "dis", "de", "sub", "auto", "multi", "over", "under")


def _stem_candidates(lw: str, inflection_only: bool = False) -> list[str]:
    """Possible base forms of an inflected or prefixed word (over-generation is harmless: a
    candidate counts only if it is itself a known word of 3+ letters)."""
    out: list[str] = []
    rules = _INFLECTIONS if inflection_only else _SUFFIX_RULES

    def suffixes(w: str) -> None:
        for suf, rep in rules:
            if w.endswith(suf) and len(w) - len(suf) >= 3:
                base = w[: len(w) - len(suf)]
                out.append(base + rep)
                if (not rep and suf in ("ed", "ing", "ings", "er", "ers") and len(base) >= 4
                        and base[-1] == base[-2] and base[-1] not in "aeiouy"):
                    out.append(base[:-1])  # "mapped" -> "map", "bundling" handled by + "e"

    suffixes(lw)
    if inflection_only:
        return out
    for pre in _PREFIXES:
        if lw.startswith(pre) and len(lw) - len(pre) >= 4:
            rest = lw[len(pre):]
            out.append(rest)
            suffixes(rest)
    return out


_MAX_PASSES = 6


def _compose(first: list[ScrubSpan], second: list[ScrubSpan], mid_text: str) -> list[ScrubSpan]:
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


def _joinable_gap(gap: str, prev: _Tok | None = None) -> bool:
    """Words of one name are separated by a space, hyphen or apostrophe; ". " only after an
    initial or honorific ("J. Smith", "Dr. Smith")."""
    if gap in (" ", "-", "'", "’", "  ", " - "):
        return True
    if gap in (". ", ".", ".  ") and prev is not None and (len(prev.text) == 1 or prev.lw in HONORIFICS):
        return True
    return False
