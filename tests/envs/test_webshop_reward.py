"""WebShop's reward on hand-built products and goals; every expected number is worked by hand."""

from __future__ import annotations

import pytest

from creditgym.envs.webshop.catalog import Goal, Product
from creditgym.envs.webshop.reward import compute_reward, is_success, normalize_color, type_reward


def product(**kw) -> Product:
    base = dict(
        asin="B000000001",
        title="Acme Gluten Free Snack Bar",
        category="food",
        product_category="Grocery & Gourmet Food › Snacks › Snack Bar",
        query="snack bar",
        type_words=["snack", "bar"],
        price=25.0,
        attributes=["gluten free", "non gmo"],
        options={"flavor": ["peanut butter", "cinnamon"], "size": ["12 count", "24 count"]},
        features=["Crunchy and chewy."],
        description="A crunchy bar for the trail.",
    )
    base.update(kw)
    return Product(**base)


def goal(**kw) -> Goal:
    base = dict(
        goal_id="g0",
        asin="B000000001",
        instruction="i need a gluten free high protein snack bar",
        query="snack bar",
        name="Acme Gluten Free Snack Bar",
        product_category="Grocery & Gourmet Food › Snacks › Snack Bar",
        type_words=["snack", "bar"],
        attributes=["gluten free", "high protein"],
        options={"flavor": "peanut butter", "size": "12 count"},
        price_upper=30.0,
        category="food",
    )
    base.update(kw)
    return Goal(**base)


def test_partial_match_three_of_five():
    # attributes: "gluten free" matches (ratio 100), "high protein" nowhere -> 1
    # options: flavor "peanut butter" fuzzy 100 -> 1; size "24 count" is not exactly a goal
    #          option and not in the text -> 0
    # price: 25 <= 30 -> 1;  r_type: same query -> 1
    # r = (1 + 1 + 1) / (2 + 2 + 1) = 0.6
    b = compute_reward(product(), goal(), {"flavor": "peanut butter", "size": "24 count"})
    assert (b.attr_matches, b.option_matches, b.price_ok, b.r_type) == (1, 1, True, 1.0)
    assert b.reward == pytest.approx(0.6)
    assert not is_success(b.reward)


def test_full_match_is_success():
    # all attributes (one via the description), both options, price -> (2 + 2 + 1) / 5 = 1
    p = product(description="A high protein bar.")
    b = compute_reward(p, goal(), {"flavor": "peanut butter", "size": "12 count"})
    assert b.matched_attributes == ["gluten free", "high protein"]
    assert b.reward == 1.0 and is_success(b.reward)


def test_over_budget_and_missing_options():
    # price 35 > 30 -> 0; no option chosen -> 0; attributes 1 -> r = 1 / 5 = 0.2
    b = compute_reward(product(price=35.0), goal(), {})
    assert (b.attr_matches, b.option_matches, b.price_ok) == (1, 0, False)
    assert b.reward == pytest.approx(0.2)


def test_type_zero_when_no_type_word_shared():
    # category levels share 2 ("Grocery & Gourmet Food", "Snacks") so the match flag is set,
    # but the title score 0/2 = 0 forces r_type = 0, whatever else matches
    p = product(
        query="trail mix",
        type_words=["trail", "mix"],
        product_category="Grocery & Gourmet Food › Snacks › Trail Mix",
    )
    r_type, query_match, category_match, title_score = type_reward(p, goal())
    assert (r_type, query_match, category_match, title_score) == (0.0, False, True, 0.0)
    assert compute_reward(p, goal(), {"flavor": "peanut butter"}).reward == 0.0


def test_type_one_by_title_overlap():
    # no query or category match, but title score 1/2 = 0.5 > 0.2 -> r_type 1
    p = product(
        query="protein bar",
        type_words=["protein", "bar"],
        product_category="Health › Sports Nutrition › Protein Bars",
    )
    assert type_reward(p, goal()) == (1.0, False, False, 0.5)


def test_type_half_and_tenth():
    g = goal(
        query="gaming mouse pad",
        type_words=["wireless", "bluetooth", "gaming", "mouse", "pad"],
        product_category="Electronics › Computer Accessories › Mouse Pad",
    )
    p = product(
        query="wireless earbuds",
        type_words=["wireless", "earbuds"],
        product_category="Electronics › Headphones › Wireless Earbuds",
    )
    # title score 1/5 = 0.2: not > 0.2, and only 1 category level shared -> 0.5
    assert type_reward(p, g) == (0.5, False, False, 0.2)
    # title score 1/11 < 0.1 -> 0.1
    g11 = goal(
        type_words=["wireless"] + [f"w{i}" for i in range(10)],
        query="x",
        product_category="A › B › C",
    )
    r_type, _, _, score = type_reward(p, g11)
    assert r_type == 0.1 and score == pytest.approx(1 / 11)
    # with r_type 0.5: attrs 1 + options 0 + price 1 over 5 -> 0.4 * 0.5 = 0.2
    assert compute_reward(p, g, {}).reward == pytest.approx(0.2)


def test_option_rules_exact_size_fuzzy_colour_and_text():
    g = goal(attributes=["gluten free"], options={"size": "Large", "color": "heather gray"})
    p = product(options={"size": ["large", "x-large"], "color": ["heather grey", "black"]})
    # size "large" equals goal "large" after lower-casing; "Heather Grey" -> "heather gray"
    b = compute_reward(p, g, {"size": "large", "color": "Heather Grey"})
    assert b.option_matches == 2 and b.reward == 1.0
    # "x-large" is not exactly "large" (size is never fuzzy) -> (1 + 1 + 1) / 4 = 0.75
    b = compute_reward(p, g, {"size": "x-large", "color": "heather grey"})
    assert b.option_matches == 1 and b.reward == pytest.approx(0.75)
    # WebShop's quirk, kept: a wrong option that occurs in the title still counts
    p_black = product(title="Acme Black Snack Bar", options=p.options)
    assert compute_reward(p_black, g, {"color": "black"}).option_matches == 1


def test_total_is_capped_at_one():
    # the goal names one option; two bought options both match -> (1 + 2 + 1) / 3 capped to 1
    g = goal(attributes=["gluten free"], options={"flavor": "peanut butter"})
    p = product(description="peanut butter and 12 count")
    assert compute_reward(p, g, {"flavor": "peanut butter", "size": "12 count"}).reward == 1.0


def test_normalize_color():
    assert normalize_color("  Heather GREY ") == "heather gray"
