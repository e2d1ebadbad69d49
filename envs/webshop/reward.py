"""WebShop's purchase reward (Yao et al. 2022, section 3.1 and the original ``goal.py``).

    r = r_type * (|matched attributes| + |matched options| + [price <= budget])
                 / (|goal attributes| + |goal options| + 1)

- An attribute of the goal matches when some product attribute has a fuzzy token-set ratio
  > 85 with it (`rapidfuzz`), or when it occurs in the product's title, features or description.
- Each purchased option matches when (group "size") it equals a goal option, (other groups) some
  goal option has a token-set ratio > 85 with it, or it occurs in the title/features/description.
  Options are compared after colour normalisation.
- r_type is 1 when the product's query equals the goal's, or >= 2 category levels match, or the
  title score (overlap of type nouns) > 0.2; otherwise 0.5. Then 0.1 when the title score < 0.1
  and 0 when it is 0.

Our one deviation from the original: it extracts the nouns of both titles with a spaCy model.
In a generated catalog the product type is known, so the type's words (``type_words``: "snack
bar" -> {"snack", "bar"}) stand in for the title nouns; for original data, the title's
alphabetic non-stop words do (see `creditgym.envs.webshop.original`). The original can exceed 1.0 when more
options are bought than the goal names; we cap the total at 1.0. Success means reward 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz

from creditgym.envs.webshop.catalog import Goal, Product

EXACT_MATCH_OPTIONS = ("size",)
FUZZY_THRESHOLD = 85.0

_COLOR_SPELLINGS = {"grey": "gray", "colour": "color"}


def normalize_color(value: str) -> str:
    """Lower-case an option value and unify colour spellings ("Heather Grey" -> "heather gray")."""
    words = value.lower().strip().split()
    return " ".join(_COLOR_SPELLINGS.get(w, w) for w in words)


@dataclass
class RewardBreakdown:
    """The reward and each of its parts, for the done page and for `info`."""

    reward: float
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float
    attr_matches: int
    option_matches: int
    price_ok: bool
    n_goal_attributes: int
    n_goal_options: int
    matched_attributes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def type_reward(product: Product, goal: Goal) -> tuple[float, bool, bool, float]:
    """(r_type, query_match, category_match, title_score) of `product` for `goal`."""
    query_match = product.query == goal.query
    levels_p = {x.strip() for x in product.product_category.split("›")}
    levels_g = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(levels_p & levels_g) >= 2
    wanted = set(goal.type_words)
    title_score = 0.2 if not wanted else len(set(product.type_words) & wanted) / len(wanted)
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, query_match, category_match, title_score


def attribute_matches(product: Product, goal: Goal) -> list[str]:
    """The goal attributes the product has (fuzzy on its attributes, or literally in its text)."""
    text = product.text()
    matched = []
    for g_attr in goal.attributes:
        fuzzy = any(
            fuzz.token_set_ratio(p_attr, g_attr) > FUZZY_THRESHOLD for p_attr in product.attributes
        )
        if fuzzy or g_attr.lower() in text:
            matched.append(g_attr)
    return matched


def option_matches(product: Product, goal: Goal, chosen: dict[str, str]) -> int:
    """How many of the purchased options match a goal option (see the module docstring)."""
    goal_values = [normalize_color(v) for v in goal.options.values()]
    text = product.text()
    count = 0
    for group, value in chosen.items():
        value = normalize_color(value)
        if group.lower() in EXACT_MATCH_OPTIONS:
            ok = value in goal_values
        else:
            ok = any(fuzz.token_set_ratio(g, value) > FUZZY_THRESHOLD for g in goal_values)
        if ok or value in text:
            count += 1
    return count


def compute_reward(
    product: Product, goal: Goal, chosen: dict[str, str], price: float | None = None
) -> RewardBreakdown:
    """WebShop's reward for buying `product` with options `chosen` against `goal`."""
    price = product.price if price is None else price
    r_type, query_match, category_match, title_score = type_reward(product, goal)
    attrs = attribute_matches(product, goal)
    n_opt = option_matches(product, goal, chosen)
    price_ok = bool(price <= goal.price_upper) if goal.price_upper > 0 else False
    denom = len(goal.attributes) + len(goal.options) + 1
    total = min(1.0, (len(attrs) + n_opt + int(price_ok)) / denom) * r_type
    return RewardBreakdown(
        reward=float(total),
        r_type=r_type,
        query_match=query_match,
        category_match=category_match,
        title_score=title_score,
        attr_matches=len(attrs),
        option_matches=n_opt,
        price_ok=price_ok,
        n_goal_attributes=len(goal.attributes),
        n_goal_options=len(goal.options),
        matched_attributes=attrs,
    )


def is_success(reward: float) -> bool:
    """WebShop counts a purchase as a success when its reward is 1.0."""
    return reward >= 1.0 - 1e-9
