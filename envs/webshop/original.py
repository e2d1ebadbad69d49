"""Load the original WebShop product and goal JSON files into a `Catalog`, for users who have them.

WebShop ships its data as a download (not available offline here). A user who has it points
``data_path`` at the folder holding:

- ``items_shuffle.json`` or ``items_shuffle_1000.json``: the scraped products (``asin``, ``name``,
  ``category``, ``query``, ``product_category``, ``full_description``, ``small_description``,
  ``pricing``, ``customization_options``);
- ``items_ins_v2.json`` or ``items_ins_v2_1000.json``: per-asin ``attributes`` (and synthetic
  ``instruction`` / ``instruction_attributes``);
- optionally ``items_human_ins.json``: per-asin human goals (``instruction``,
  ``instruction_attributes``, ``instruction_options``). Human goals are used when present, as in
  WebShop's default.

Prices follow the original: a "$a to $b" range is sampled (seeded) within, and the goal's price
bound is the larger of two bounds drawn from the first four multiples of 10 above the price.
The original's type reward compares spaCy noun parses of titles; without spaCy we use the
title's alphabetic words minus stop words (documented in `creditgym.envs.webshop.reward`).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from creditgym.envs.webshop.catalog import CATEGORIES, PRICE_RANGE, Catalog, Goal, Product

_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "for",
        "with",
        "of",
        "in",
        "on",
        "to",
        "by",
        "from",
        "at",
        "or",
        "is",
        "are",
        "be",
        "as",
        "it",
        "its",
        "this",
        "that",
        "your",
        "you",
        "our",
        "new",
        "pack",
        "set",
        "men",
        "women",
        "mens",
        "womens",
        "inch",
        "x",
    ]
)


def title_words(title: str) -> list[str]:
    """Alphabetic, non-stop-word tokens of a title: our stand-in for its noun parse."""
    words = re.findall(r"[a-z]+", title.lower())
    return sorted({w for w in words if len(w) > 2 and w not in _STOP})


def _first_existing(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


def _parse_price(pricing: Any, rng: random.Random) -> float:
    if not pricing:
        return 100.0
    if isinstance(pricing, list):
        values = [float(p) for p in pricing]
    else:
        values = [float(re.sub(r"[^\d.]", "", part) or 0) for part in str(pricing).split("$")[1:]]
    if not values:
        return 100.0
    if len(values) == 1:
        return values[0]
    return round(rng.uniform(values[0], values[1]), 2)


def _category_of(raw: str) -> str:
    raw = (raw or "").lower()
    for cat in CATEGORIES:
        if cat in raw:
            return cat
    return raw or "unknown"


def load_original(data_path: str | Path, seed: int = 233) -> Catalog:
    """Read the original WebShop files in `data_path` (see the module docstring)."""
    folder = Path(data_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"WebShop data folder {folder} does not exist")
    products_file = _first_existing(folder, ["items_shuffle.json", "items_shuffle_1000.json"])
    if products_file is None:
        raise FileNotFoundError(
            f"{folder} has no items_shuffle.json or items_shuffle_1000.json (the WebShop products)"
        )
    attrs_file = _first_existing(folder, ["items_ins_v2.json", "items_ins_v2_1000.json"])
    human_file = _first_existing(folder, ["items_human_ins.json"])
    rng = random.Random(seed)
    raw_products = json.loads(products_file.read_text())
    attrs = json.loads(attrs_file.read_text()) if attrs_file else {}
    human = json.loads(human_file.read_text()) if human_file else None

    products: list[Product] = []
    seen: set[str] = set()
    for raw in raw_products:
        asin = str(raw.get("asin", ""))
        if not asin or asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        options: dict[str, list[str]] = {}
        for name, contents in (raw.get("customization_options") or {}).items():
            if not contents:
                continue
            options[name.lower()] = [
                c["value"].strip().replace("/", " | ").lower() for c in contents if "value" in c
            ]
        bullets = raw.get("small_description") or []
        if not isinstance(bullets, list):
            bullets = [str(bullets)]
        title = str(raw.get("name", ""))
        products.append(
            Product(
                asin=asin,
                title=title,
                category=_category_of(raw.get("category", "")),
                product_category=str(raw.get("product_category", "")),
                query=str(raw.get("query", "")).lower().strip(),
                type_words=title_words(title),
                price=_parse_price(raw.get("pricing"), rng),
                attributes=list((attrs.get(asin) or {}).get("attributes") or []),
                options=options,
                features=[str(b) for b in bullets],
                description=str(raw.get("full_description") or ""),
            )
        )

    goals: list[Goal] = []
    for p in products:
        if human is not None:
            specs = [
                (
                    g.get("instruction", ""),
                    g.get("instruction_attributes") or [],
                    g.get("instruction_options") or [],
                )
                for g in human.get(p.asin, [])
            ]
        else:
            a = attrs.get(p.asin) or {}
            specs = (
                [(a["instruction"], a.get("instruction_attributes") or [], [])]
                if a.get("instruction")
                else []
            )
        for text, goal_attrs, goal_opts in specs:
            if not goal_attrs:
                continue
            bounds = [b for b in PRICE_RANGE if b > p.price][:4]
            if len(bounds) >= 2:
                upper = max(rng.sample(bounds, 2))
                price_text = f", and price lower than {upper:.2f} dollars"
            else:
                upper, price_text = 1_000_000.0, ""
            if isinstance(goal_opts, dict):
                options = {str(k): str(v) for k, v in goal_opts.items()}
            else:
                options = {f"option {i}": str(v) for i, v in enumerate(goal_opts)}
            goals.append(
                Goal(
                    goal_id=f"g{len(goals):06d}",
                    asin=p.asin,
                    instruction=text.strip().strip(".") + price_text,
                    query=p.query,
                    name=p.title,
                    product_category=p.product_category,
                    type_words=list(p.type_words),
                    attributes=list(goal_attrs),
                    options=options,
                    price_upper=upper,
                    category=p.category,
                    search_terms=text.strip().strip("."),
                )
            )
    random.Random(seed).shuffle(goals)
    for i, g in enumerate(goals):
        g.goal_id = f"g{i:06d}"
    return Catalog(products, goals, source=f"original:{products_file.name}:{len(products)}")
