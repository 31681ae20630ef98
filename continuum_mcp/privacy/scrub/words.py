"""Word lists written into the code: stop words, name particles, honorifics, company suffixes,
street and unit words, dates, job-title heads, name contexts and the stemming rules that tell an
inflected ordinary word from a name. (The large lists are data files: see :mod:`.gazetteers`.)"""

from __future__ import annotations

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

_LOCATION_PREPOSITIONS = frozenset("in at from to near à en dans vers nach aus bei im zu desde hacia "
                                   "para em no na da do".split())
_ABBREVIATIONS = HONORIFICS | frozenset("inc corp ltd co st ave rd jr sr bros".split())
