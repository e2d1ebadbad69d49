"""A seeded encyclopedia of fictional entities, at any size, and multi-hop questions over it.

The entities are invented (names built from syllables), so a model cannot answer from memory: it
has to search. Four kinds of entity, each one passage:

- nations: continent, capital city, currency, language;
- cities: nation, founding year, population;
- companies: industry, headquarters city, founding year, staff;
- people: profession, birth year, birth city, employer.

Questions: single-hop (a person's birth city, a nation's currency), two-hop bridges (the nation a
person was born in, the founding year of a person's employer) and comparisons (who was born
earlier, which company is older). 100,000 passages build in a few seconds.
"""

from __future__ import annotations

import numpy as np

from creditgym.envs.search.corpus import Hop, Passage, Question, SearchDataset

_ONSETS = [
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s",
    "t", "v", "z", "br", "dr", "gr", "kr", "pl", "st", "tr", "th", "sh", "ch",
]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m", "th", "x"]
_CONTINENTS = ["Aurelia", "Boreas", "Cindara", "Dravon", "Esperin", "Fallow Reach"]
_INDUSTRIES = [
    "shipbuilding", "textile", "mining", "software", "brewing", "publishing",
    "pharmaceutical", "railway", "glassmaking", "insurance", "robotics", "dairy",
]  # fmt: skip
_PROFESSIONS = [
    "engineer", "painter", "botanist", "lawyer", "chemist", "sculptor", "pilot",
    "architect", "novelist", "astronomer", "surgeon", "economist", "composer", "geologist",
]  # fmt: skip
_CURRENCY_SUFFIX = ["mark", "crown", "dinar", "florin", "talent", "shell"]


class _Names:
    """Unique pronounceable names from syllables (deterministic for an rng)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        parts = []
        for _ in range(syllables):
            parts.append(_ONSETS[self.rng.integers(len(_ONSETS))])
            parts.append(_VOWELS[self.rng.integers(len(_VOWELS))])
        parts.append(_CODAS[self.rng.integers(len(_CODAS))])
        return "".join(parts).capitalize()

    def unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name.lower() not in self.used:
                self.used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted; add syllables")


def build_synthetic_dataset(
    num_passages: int = 5_000, num_questions: int = 3_000, seed: int = 0
) -> SearchDataset:
    """A fictional encyclopedia of `num_passages` passages and `num_questions` questions."""
    if num_passages < 50:
        raise ValueError(f"num_passages must be at least 50, got {num_passages}")
    rng = np.random.default_rng(seed)
    names = _Names(rng)
    n_nations = max(5, num_passages // 250)
    n_cities = max(10, num_passages // 10)
    n_companies = max(10, num_passages // 8)
    n_people = num_passages - n_nations - n_cities - n_companies

    def ri(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi))

    cities = []
    for i in range(n_cities):
        cities.append(
            {
                "id": f"city-{i}",
                "name": names.unique(lambda: names.word(ri(2, 4))),
                "nation": i % n_nations,
                "founded": ri(800, 1900),
                "population": ri(5_000, 3_000_000),
            }
        )
    nations = []
    for i in range(n_nations):
        currency = f"{names.unique(lambda: names.word(2))} {_CURRENCY_SUFFIX[ri(0, len(_CURRENCY_SUFFIX))]}"
        nations.append(
            {
                "id": f"nation-{i}",
                "name": names.unique(lambda: names.word(ri(2, 4)) + "ia"),
                "continent": _CONTINENTS[ri(0, len(_CONTINENTS))],
                "capital": i,  # city i is in nation i (i % n_nations == i for i < n_nations)
                "currency": currency.lower(),
                "language": names.unique(lambda: names.word(2) + "ic"),
            }
        )
    companies = []
    for i in range(n_companies):
        companies.append(
            {
                "id": f"company-{i}",
                "name": names.unique(
                    lambda: (
                        f"{names.word(ri(2, 3))} {['Works', 'Group', 'Holdings', 'Company'][ri(0, 4)]}"
                    )
                ),
                "industry": _INDUSTRIES[ri(0, len(_INDUSTRIES))],
                "city": ri(0, n_cities),
                "founded": ri(1700, 2020),
                "staff": ri(12, 90_000),
            }
        )
    people = []
    for i in range(n_people):
        people.append(
            {
                "id": f"person-{i}",
                "name": names.unique(lambda: f"{names.word(ri(1, 3))} {names.word(ri(2, 4))}"),
                "profession": _PROFESSIONS[ri(0, len(_PROFESSIONS))],
                "born": ri(1900, 2005),
                "city": ri(0, n_cities),
                "employer": ri(0, n_companies),
            }
        )

    passages = []
    for n in nations:
        cap = cities[n["capital"]]["name"]
        passages.append(
            Passage(
                n["id"],
                n["name"],
                f"{n['name']} is a nation on the continent of {n['continent']}. Its capital is "
                f"{cap}. Its currency is the {n['currency']}, and its official language is "
                f"{n['language']}.",
            )
        )
    for c in cities:
        passages.append(
            Passage(
                c["id"],
                c["name"],
                f"{c['name']} is a city in {nations[c['nation']]['name']}. It was founded in "
                f"{c['founded']} and has a population of {c['population']:,}.",
            )
        )
    for co in companies:
        passages.append(
            Passage(
                co["id"],
                co["name"],
                f"{co['name']} is a {co['industry']} company headquartered in "
                f"{cities[co['city']]['name']}. It was founded in {co['founded']} and employs "
                f"{co['staff']:,} people.",
            )
        )
    for p in people:
        passages.append(
            Passage(
                p["id"],
                p["name"],
                f"{p['name']} is a {p['profession']} born in {p['born']} in "
                f"{cities[p['city']]['name']}. {p['name']} works for "
                f"{companies[p['employer']]['name']}.",
            )
        )

    questions = []
    for k in range(num_questions):
        kind = k % 6
        p = people[ri(0, len(people))]
        city = cities[p["city"]]
        employer = companies[p["employer"]]
        if kind == 0:
            q = Question(
                f"In which city was {p['name']} born?",
                (city["name"],),
                "single_hop",
                (Hop(f"{p['name']} born", p["id"]),),
            )
        elif kind == 1:
            n = nations[ri(0, n_nations)]
            q = Question(
                f"What is the currency of {n['name']}?",
                (n["currency"],),
                "single_hop",
                (Hop(f"{n['name']} currency", n["id"]),),
            )
        elif kind == 2:
            nation = nations[city["nation"]]
            q = Question(
                f"In which nation was {p['name']} born?",
                (nation["name"],),
                "bridge",
                (Hop(f"{p['name']} born", p["id"]), Hop(f"{city['name']} city nation", city["id"])),
            )
        elif kind == 3:
            q = Question(
                f"In which year was the company that {p['name']} works for founded?",
                (str(employer["founded"]),),
                "bridge",
                (
                    Hop(f"{p['name']} works for", p["id"]),
                    Hop(f"{employer['name']} founded", employer["id"]),
                ),
            )
        elif kind == 4:
            other = people[ri(0, len(people))]
            if other["born"] == p["born"]:
                continue
            winner = p if p["born"] < other["born"] else other
            q = Question(
                f"Who was born earlier, {p['name']} or {other['name']}?",
                (winner["name"],),
                "comparison",
                (Hop(f"{p['name']} born", p["id"]), Hop(f"{other['name']} born", other["id"])),
            )
        else:
            a, b = companies[ri(0, n_companies)], companies[ri(0, n_companies)]
            if a["founded"] == b["founded"]:
                continue
            winner = a if a["founded"] < b["founded"] else b
            q = Question(
                f"Which company was founded earlier, {a['name']} or {b['name']}?",
                (winner["name"],),
                "comparison",
                (Hop(f"{a['name']} founded", a["id"]), Hop(f"{b['name']} founded", b["id"])),
            )
        questions.append(q)
    return SearchDataset(f"syn{num_passages}s{seed}", tuple(passages), tuple(questions))
