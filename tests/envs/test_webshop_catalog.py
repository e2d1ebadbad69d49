"""The generated catalog, its goals and splits, and the loader for the original WebShop files."""

from __future__ import annotations

import json
from itertools import combinations

import pytest
from rapidfuzz import fuzz

from creditgym.envs.webshop.catalog import (
    CATEGORIES,
    OPTION_VALUES,
    PRODUCT_TYPES,
    generate_catalog,
)
from creditgym.envs.webshop.original import load_original
from creditgym.envs.webshop.reward import compute_reward


@pytest.fixture(scope="module")
def catalog():
    return generate_catalog(1000, seed=0)


def test_deterministic_and_seeded(catalog):
    assert generate_catalog(1000, seed=0).fingerprint == catalog.fingerprint
    assert generate_catalog(1000, seed=1).fingerprint != catalog.fingerprint


def test_shape(catalog):
    assert len(catalog) == 1000 and len(catalog.goals) == 1000
    assert {p.category for p in catalog.products} == set(CATEGORIES)
    sizes = {k: len(v) for k, v in catalog.splits.items()}
    assert sizes == {"test": 100, "valid": 100, "train": 800}
    assert not set(catalog.splits["test"]) & set(catalog.splits["train"])
    p = catalog.products[0]
    assert p.title and p.price > 0 and p.attributes and p.features and p.description
    assert p.product_category.count("›") == 2


def test_every_goal_is_solvable_by_its_product(catalog):
    for g in catalog.goals:
        p = catalog.by_asin[g.asin]
        assert p.price <= g.price_upper
        assert compute_reward(p, g, g.options).reward == 1.0, g.instruction
        assert g.query in g.instruction and "price lower than" in g.instruction
        for value in g.options.values():
            assert value in g.instruction


def test_no_option_value_leaks_into_product_text(catalog):
    # otherwise any choice of that option would be credited by the reward's text rule
    for p in catalog.products:
        text = p.text()
        for values in p.options.values():
            assert not any(v in text for v in values), p.asin


def test_values_of_fuzzy_groups_are_distinguishable():
    # non-size options match by token-set ratio > 85; two values of one list must not
    groups = {
        key
        for types in PRODUCT_TYPES.values()
        for t in types
        for g, key in t[3].items()
        if g != "size"
    }
    for key in groups:
        for a, b in combinations(OPTION_VALUES[key], 2):
            assert fuzz.token_set_ratio(a, b) <= 85, (key, a, b)


@pytest.mark.slow
def test_100k_products_build():
    # build time is a benchmark (scripts/bench_webshop.py catalog), not asserted here
    big = generate_catalog(100_000, seed=0)
    assert len(big) == 100_000 and len(big.by_asin) == 100_000
    assert len(big.splits["test"]) == 10_000
    assert {p.category for p in big.products} == set(CATEGORIES)


def _write_original(folder, human: bool) -> None:
    products = [
        {
            "asin": "B07ABCDEF1",
            "name": "Organic Green Tea Bags, Decaf",
            "category": "grocery",
            "query": "green tea",
            "product_category": "Grocery & Gourmet Food › Beverages › Tea",
            "full_description": "Smooth decaf green tea.",
            "small_description": ["100 tea bags", "USDA organic"],
            "pricing": "$12.99",
            "customization_options": {"Size": [{"value": "100 Count"}, {"value": "50 Count"}]},
        },
        {
            "asin": "B07ABCDEF2",
            "name": "Wireless Mouse for Laptop",
            "category": "electronics",
            "query": "wireless mouse",
            "product_category": "Electronics › Computers › Mice",
            "full_description": "Quiet clicks.",
            "small_description": "Ergonomic",
            "pricing": "$9.99 to $14.99",
            "customization_options": None,
        },
        {"asin": "nan", "name": "broken"},
    ]
    attrs = {
        "B07ABCDEF1": {
            "attributes": ["decaf", "organic"],
            "instruction": "i want decaf green tea",
            "instruction_attributes": ["decaf"],
        },
        "B07ABCDEF2": {
            "attributes": ["wireless"],
            "instruction": "i need a wireless mouse",
            "instruction_attributes": ["wireless"],
        },
    }
    (folder / "items_shuffle_1000.json").write_text(json.dumps(products))
    (folder / "items_ins_v2_1000.json").write_text(json.dumps(attrs))
    if human:
        goals = {
            "B07ABCDEF1": [
                {
                    "instruction": "i'd like organic green tea, 50 count",
                    "instruction_attributes": ["organic"],
                    "instruction_options": ["50 count"],
                }
            ]
        }
        (folder / "items_human_ins.json").write_text(json.dumps(goals))


def test_original_loader_synthetic_goals(tmp_path):
    _write_original(tmp_path, human=False)
    cat = load_original(tmp_path)
    assert len(cat) == 2  # the "nan" asin is skipped, as in WebShop
    tea = cat.by_asin["B07ABCDEF1"]
    assert tea.options == {"size": ["100 count", "50 count"]} and tea.price == 12.99
    assert tea.features == ["100 tea bags", "USDA organic"]
    assert 9.99 <= cat.by_asin["B07ABCDEF2"].price <= 14.99
    assert len(cat.goals) == 2
    for g in cat.goals:
        assert g.instruction.endswith("dollars") and g.price_upper > cat.by_asin[g.asin].price
        assert compute_reward(cat.by_asin[g.asin], g, {}).reward == 1.0


def test_original_loader_prefers_human_goals(tmp_path):
    _write_original(tmp_path, human=True)
    cat = load_original(tmp_path)
    assert len(cat.goals) == 1
    g = cat.goals[0]
    assert g.attributes == ["organic"] and list(g.options.values()) == ["50 count"]
    tea = cat.by_asin[g.asin]
    assert compute_reward(tea, g, {"size": "50 count"}).reward == 1.0
    assert compute_reward(tea, g, {"size": "100 count"}).reward == pytest.approx(2 / 3)


def test_original_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_original(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="items_shuffle"):
        load_original(tmp_path)
