"""Pattern detectors: regexes with bounded quantifiers, validated in Python (Luhn, IBAN mod 97,
``ipaddress``, entropy), and secrets announced by a keyword ("the door code is 7731").

Every quantifier is bounded and no two adjacent pieces can match the same characters
ambiguously, so each regex does O(bound) work per start position and a pass stays linear.
"""

from __future__ import annotations

import ipaddress
import math
import re

from continuum_mcp.privacy.scrub._spans import Cand, take
from continuum_mcp.privacy.scrub.lexicon import Lexicon
from continuum_mcp.privacy.scrub.models import PLACEHOLDER_RE
from continuum_mcp.privacy.scrub.words import MONTHS_EN, OCCUPATION_HEADS, STOP_WORDS, _TITLE_CONTEXT

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


# Vehicle registration plates. Standalone only in shapes that ordinary codes do not take: UK
# "AB12 CDE" / "AB12CDE" and the older "A123 BCD", French "AB-123-CD", German "B-MW 1234" (not
# "USB-C 100": three letters and one). Any other alphanumeric (US "7ABC123", "ABC-1234", German
# "M AB 1234") is a plate only right after a plate keyword ("licence plate", "reg", ...).
_PLATE_KEYWORDS = (
    r"licen[cs]e[ -]plates?|number[ -]plates?|plates?(?:[ -]numbers?)?|tags?[ -]numbers?|"
    r"registrations?(?:[ -](?:plates?|numbers?|marks?))?|reg(?:[ .-]?(?:no|number|plate))?\.?|"
    r"kennzeichen|nummernschild|plaque(?: d'immatriculation)?|immatriculation|matr[ií]cula|targa"
)
_PLATE_RE = re.compile(
    r"\b(?:[A-Z]{2}\d{2} ?[A-Z]{3}|[A-Z]\d{1,3} ?[A-Z]{3}|[A-Z]{2}-\d{3}-[A-Z]{2}"
    r"|(?:[A-ZÄÖÜ]{1,2}-[A-Z]{1,2}|[A-ZÄÖÜ]{3}-[A-Z]{2}) [1-9]\d{0,3}[EH]?)\b(?![.,]\d)")
_PLATE_CONTEXT_RE = re.compile(
    r"(?i)\b(?:" + _PLATE_KEYWORDS + r")(?:\s{1,3}(?:is|was|number|no\.?|reads|of|:)){0,2}[\s:#]{1,4}"
    r"([A-Z0-9ÄÖÜ]{1,8}(?:[ -][A-Z0-9]{1,4}){0,2})\b(?![.,]\d)")
_PLATE_PIECE_RE = re.compile(r"[ -]?[^ -]+")


def plate_length(value: str) -> int:
    """Length of the plate that starts a value captured after a plate keyword, 0 if none.

    Trailing pieces with no digit that are not upper case are the next words ("AB12 CDE and");
    a plate has 2 to 8 letters and digits, at least one of them a digit.
    """
    pieces = _PLATE_PIECE_RE.findall(value)
    while len(pieces) > 1 and not any(c.isdigit() for c in pieces[-1]) and not pieces[-1].isupper():
        pieces.pop()
    plate = "".join(pieces)
    alnum = plate.replace(" ", "").replace("-", "")
    if not 2 <= len(alnum) <= 8 or not any(c.isdigit() for c in alnum):
        return 0
    if any(not any(c.isdigit() for c in p) and not p.isupper() for p in pieces):
        return 0
    return len(plate)



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
    ("VEHICLE_PLATE", 3, _PLATE_RE, 0),
    ("VEHICLE_PLATE", 3, _PLATE_CONTEXT_RE, 1),
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



def pattern_pass(lex: Lexicon, text: str, mask: bytearray, accepted: list[Cand]) -> None:
    """Run every detector, then accept the candidates strongest first (priority, then length)."""
    cands: list[Cand] = []
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
                    cands.append(Cand(typ2, s, e, prio))
                    continue
            elif typ == "VEHICLE_PLATE" and group == 1:
                e = s + plate_length(val)
                if e <= s:
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
                cands.append(Cand(kind, s, e, prio))
                continue
            cands.append(Cand(typ, s, e, prio))
    context_secrets(lex, text, mask, cands)
    # high-entropy tokens (secrets) last among pattern detectors but before the word pass
    cfg = lex.config
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
            cands.append(Cand("SECRET", s, e, 1))
    cands.sort(key=lambda c: (c.prio, -(c.end - c.start), c.start))
    for c in cands:
        take(mask, accepted, c.type, c.start, c.end, c.prio)


def context_secrets(lex: Lexicon, text: str, mask: bytearray, cands: list[Cand]) -> None:
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
        if not secret_value(lex, val, code_like, quoted):
            continue
        cands.append(Cand("SECRET", s, e, 0))


def secret_value(lex: Lexicon, val: str, code_like: bool, quoted: bool) -> bool:
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
    return not (lw in lex.ordinary or lw in lex.gaz.tech_terms or lex.variant_known(lw))
