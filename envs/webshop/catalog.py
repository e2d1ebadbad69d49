"""A seeded generator of WebShop-like products and shopping goals.

The original WebShop catalog (1.18M scraped Amazon products) and its goals are a download we cannot
make, so this module writes a catalog of the same shape: products in WebShop's five categories
(beauty, food, fashion, furniture, electronics), each with a product type, a three-level category
path, a title, a price, attributes, option groups (size, color, flavor, ...), a description,
feature bullets and reviews; and goals written from a product (its type, some of its attributes,
one value of each option group and a price bound) in WebShop's instruction style.

Everything is a pure function of ``(n_products, seed)``: two machines build byte-identical
catalogs, and `Catalog.fingerprint` proves it.

Generated text never contains one of the product's own option values as a substring (the reward
would then credit a wrong option choice, see `creditgym.envs.webshop.reward`); the builder checks this.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

GENERATOR_VERSION = "webshop-gen-1"

#: WebShop's price bounds for goals: "price lower than X dollars" with X a multiple of 10.
PRICE_RANGE = [10.0 * i for i in range(1, 100)]

SPLIT_FRACTIONS = {"test": 0.1, "valid": 0.1}


@dataclass
class Product:
    """One catalog item; field names follow the original data where one exists."""

    asin: str
    title: str
    #: Top-level category, one of `CATEGORIES` (also the goal's task type).
    category: str
    #: Three category levels joined by " › ", as in the original ``product_category``.
    product_category: str
    #: The product type, e.g. "snack bar" (the original's scraping ``query``).
    query: str
    #: Stand-in for the nouns of the title that WebShop's type reward compares (see reward.py).
    type_words: list[str]
    price: float
    attributes: list[str]
    options: dict[str, list[str]]
    features: list[str]
    description: str
    reviews: list[dict[str, Any]] = field(default_factory=list)
    rating: float | None = None
    brand: str = ""

    def text(self) -> str:
        """Title, features and description, lower-cased: the text the reward searches."""
        return " ".join([self.title, " ".join(self.features), self.description]).lower()


@dataclass
class Goal:
    """A shopping goal: what the instruction asks for and what the reward checks against."""

    goal_id: str
    asin: str
    instruction: str
    query: str
    #: The target product's title (the original's goal ``name``).
    name: str
    product_category: str
    type_words: list[str]
    attributes: list[str]
    options: dict[str, str]
    price_upper: float
    category: str
    #: Words a shopper would type into the search box (the oracle searches with these).
    search_terms: str = ""


# ---------------------------------------------------------------------------------------------
# Vocabulary. Each product type: (type name, level-2 category, attribute pool, option groups).
# Option groups name a value list in `OPTION_VALUES`.

CATEGORY_NAMES = {
    "beauty": "Beauty & Personal Care",
    "food": "Grocery & Gourmet Food",
    "fashion": "Clothing, Shoes & Jewelry",
    "furniture": "Home & Kitchen",
    "electronics": "Electronics",
}
CATEGORIES = tuple(CATEGORY_NAMES)

_BEAUTY_ATTRS = [
    "paraben free",
    "cruelty free",
    "sulfate free",
    "long lasting",
    "natural ingredients",
    "dry skin",
    "sensitive skin",
    "travel size",
    "easy to use",
    "fragrance free",
    "oil free",
    "vegan formula",
    "hyaluronic acid",
    "tea tree",
    "argan oil",
    "dermatologist tested",
]
_FOOD_ATTRS = [
    "gluten free",
    "non gmo",
    "sugar free",
    "low carb",
    "keto friendly",
    "high protein",
    "usda organic",
    "kosher certified",
    "dairy free",
    "individually wrapped",
    "low calorie",
    "plant based",
    "caffeine free",
    "no artificial flavors",
    "resealable bag",
    "whole grain",
]
_FASHION_ATTRS = [
    "machine wash",
    "slim fit",
    "moisture wicking",
    "cotton spandex",
    "long sleeve",
    "short sleeve",
    "button closure",
    "rubber sole",
    "quick drying",
    "relaxed fit",
    "polyester cotton",
    "elastic waist",
    "hand wash",
    "lace up",
    "arch support",
    "non slip",
]
_FURNITURE_ATTRS = [
    "easy assembly",
    "solid wood",
    "living room",
    "engineered wood",
    "storage space",
    "metal legs",
    "mid century",
    "space saving",
    "heavy duty",
    "lumbar support",
    "faux leather",
    "steel frame",
    "wall mounted",
    "bedroom furniture",
    "height adjustable",
]
_ELECTRONICS_ATTRS = [
    "fast charging",
    "noise cancelling",
    "water resistant",
    "long battery life",
    "high definition",
    "plug and play",
    "easy install",
    "hands free",
    "usb port",
    "high speed",
    "compact size",
    "dual band",
    "bluetooth 5.0",
    "touch control",
    "aluminum alloy",
]

OPTION_VALUES: dict[str, list[str]] = {
    "clothing size": ["small", "medium", "large", "x-large", "xx-large", "3x-large"],
    "shoe size": ["6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12"],
    "apparel color": [
        "black",
        "white",
        "navy blue",
        "heather grey",
        "olive green",
        "burgundy",
        "khaki",
        "light pink",
        "royal blue",
        "charcoal",
    ],
    "furniture color": [
        "black",
        "white",
        "espresso",
        "natural oak",
        "grey",
        "walnut",
        "cherry",
        "rustic brown",
    ],
    "device color": ["black", "white", "silver", "space gray", "rose gold", "midnight blue"],
    "lip color": ["nude pink", "ruby", "coral", "berry", "mauve", "classic crimson", "peach"],
    "bed size": ["twin", "full", "queen", "king", "california king"],
    "liquid size": ["2 fl oz", "3.4 fl oz", "8 fl oz", "12 fl oz", "16 fl oz", "33.8 fl oz"],
    "cream size": ["1 ounce", "1.7 ounce", "2.5 ounce", "4 ounce", "8 ounce"],
    "food size": ["12 count", "18 count", "24 count", "36 count", "48 count"],
    "bag size": ["8 ounce", "12 ounce", "1 pound", "2 pound", "5 pound"],
    "pack": ["pack of 1", "pack of 2", "pack of 3", "pack of 4", "pack of 6"],
    "cable length": ["3 feet", "6 feet", "10 feet", "15 feet"],
    "tier": ["3-tier", "4-tier", "5-tier"],
    "snack flavor": [
        "chocolate chip",
        "peanut butter",
        "sea salt caramel",
        "blueberry almond",
        "cinnamon",
        "coconut cashew",
        "honey oat",
    ],
    "drink flavor": [
        "original",
        "vanilla",
        "hazelnut",
        "mocha",
        "chai spice",
        "mint",
        "french roast",
    ],
    "jerky flavor": ["teriyaki", "original", "peppered", "sweet and spicy", "hickory smoked"],
    "scent": ["lavender", "eucalyptus", "coconut", "unscented", "citrus", "sandalwood"],
    "phone model": [
        "iphone 15",
        "galaxy s24",
        "pixel 8",
        "moto g power",
        "oneplus 12",
        "xperia 10",
    ],
    "watch size": ["38mm", "40mm", "41mm", "44mm", "45mm"],
}

# (type, level-2 category, attribute pool, {option group name: value list key}, price range)
PRODUCT_TYPES: dict[str, list[tuple[str, str, list[str], dict[str, str], tuple[float, float]]]] = {
    "beauty": [
        ("shampoo", "Hair Care", _BEAUTY_ATTRS, {"size": "liquid size", "scent": "scent"}, (6, 40)),
        ("conditioner", "Hair Care", _BEAUTY_ATTRS, {"size": "liquid size"}, (6, 40)),
        ("face moisturizer", "Skin Care", _BEAUTY_ATTRS, {"size": "cream size"}, (8, 70)),
        ("lipstick", "Makeup", _BEAUTY_ATTRS, {"color": "lip color"}, (5, 35)),
        (
            "body wash",
            "Bath & Body",
            _BEAUTY_ATTRS,
            {"size": "liquid size", "scent": "scent"},
            (5, 30),
        ),
        ("sunscreen lotion", "Skin Care", _BEAUTY_ATTRS, {"size": "liquid size"}, (7, 35)),
        ("hair serum", "Hair Care", _BEAUTY_ATTRS, {"size": "liquid size"}, (9, 45)),
        ("eye cream", "Skin Care", _BEAUTY_ATTRS, {"size": "cream size"}, (10, 80)),
        ("beard oil", "Shaving & Hair Removal", _BEAUTY_ATTRS, {"scent": "scent"}, (8, 30)),
        ("bath bombs", "Bath & Body", _BEAUTY_ATTRS, {"scent": "scent", "size": "pack"}, (9, 35)),
    ],
    "food": [
        (
            "snack bar",
            "Snacks",
            _FOOD_ATTRS,
            {"flavor": "snack flavor", "size": "food size"},
            (8, 45),
        ),
        (
            "coffee beans",
            "Beverages",
            _FOOD_ATTRS,
            {"flavor": "drink flavor", "size": "bag size"},
            (9, 50),
        ),
        (
            "herbal tea",
            "Beverages",
            _FOOD_ATTRS,
            {"flavor": "drink flavor", "size": "food size"},
            (5, 25),
        ),
        (
            "beef jerky",
            "Snacks",
            _FOOD_ATTRS,
            {"flavor": "jerky flavor", "size": "bag size"},
            (8, 45),
        ),
        (
            "protein powder",
            "Sports Nutrition",
            _FOOD_ATTRS,
            {"flavor": "drink flavor", "size": "bag size"},
            (20, 90),
        ),
        ("trail mix", "Snacks", _FOOD_ATTRS, {"size": "pack"}, (6, 30)),
        ("dark chocolate", "Candy & Chocolate", _FOOD_ATTRS, {"size": "food size"}, (5, 40)),
        ("olive oil", "Pantry Staples", _FOOD_ATTRS, {"size": "liquid size"}, (8, 45)),
        (
            "granola cereal",
            "Breakfast Foods",
            _FOOD_ATTRS,
            {"flavor": "snack flavor", "size": "pack"},
            (5, 30),
        ),
        ("gummy candy", "Candy & Chocolate", _FOOD_ATTRS, {"size": "bag size"}, (4, 25)),
    ],
    "fashion": [
        (
            "t-shirt",
            "Men's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (9, 35),
        ),
        (
            "running shoes",
            "Men's Shoes",
            _FASHION_ATTRS,
            {"size": "shoe size", "color": "apparel color"},
            (30, 120),
        ),
        (
            "jeans",
            "Women's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (20, 80),
        ),
        (
            "hoodie",
            "Men's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (18, 60),
        ),
        (
            "summer dress",
            "Women's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (15, 70),
        ),
        (
            "crew socks",
            "Men's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (6, 25),
        ),
        (
            "yoga leggings",
            "Women's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (12, 50),
        ),
        (
            "rain jacket",
            "Women's Clothing",
            _FASHION_ATTRS,
            {"size": "clothing size", "color": "apparel color"},
            (25, 110),
        ),
        (
            "slide sandals",
            "Women's Shoes",
            _FASHION_ATTRS,
            {"size": "shoe size", "color": "apparel color"},
            (10, 45),
        ),
        (
            "hiking boots",
            "Men's Shoes",
            _FASHION_ATTRS,
            {"size": "shoe size", "color": "apparel color"},
            (40, 160),
        ),
    ],
    "furniture": [
        (
            "bookshelf",
            "Furniture",
            _FURNITURE_ATTRS,
            {"color": "furniture color", "size": "tier"},
            (35, 180),
        ),
        ("office chair", "Furniture", _FURNITURE_ATTRS, {"color": "furniture color"}, (60, 300)),
        ("coffee table", "Furniture", _FURNITURE_ATTRS, {"color": "furniture color"}, (45, 250)),
        (
            "bed frame",
            "Furniture",
            _FURNITURE_ATTRS,
            {"size": "bed size", "color": "furniture color"},
            (90, 450),
        ),
        ("nightstand", "Furniture", _FURNITURE_ATTRS, {"color": "furniture color"}, (30, 150)),
        ("tv stand", "Furniture", _FURNITURE_ATTRS, {"color": "furniture color"}, (50, 260)),
        (
            "bar stool",
            "Furniture",
            _FURNITURE_ATTRS,
            {"color": "furniture color", "size": "pack"},
            (40, 220),
        ),
        ("storage ottoman", "Furniture", _FURNITURE_ATTRS, {"color": "furniture color"}, (25, 120)),
        ("standing desk", "Furniture", _FURNITURE_ATTRS, {"color": "furniture color"}, (120, 500)),
        (
            "shoe rack",
            "Storage & Organization",
            _FURNITURE_ATTRS,
            {"color": "furniture color", "size": "tier"},
            (15, 80),
        ),
    ],
    "electronics": [
        (
            "wireless earbuds",
            "Headphones",
            _ELECTRONICS_ATTRS,
            {"color": "device color"},
            (15, 150),
        ),
        (
            "bluetooth speaker",
            "Portable Audio",
            _ELECTRONICS_ATTRS,
            {"color": "device color"},
            (20, 160),
        ),
        (
            "phone case",
            "Cell Phone Accessories",
            _ELECTRONICS_ATTRS,
            {"style": "phone model", "color": "device color"},
            (6, 40),
        ),
        (
            "charging cable",
            "Cell Phone Accessories",
            _ELECTRONICS_ATTRS,
            {"size": "cable length", "color": "device color"},
            (5, 25),
        ),
        (
            "power bank",
            "Cell Phone Accessories",
            _ELECTRONICS_ATTRS,
            {"color": "device color"},
            (15, 70),
        ),
        (
            "hdmi cable",
            "Computer Accessories",
            _ELECTRONICS_ATTRS,
            {"size": "cable length"},
            (6, 30),
        ),
        (
            "wireless mouse",
            "Computer Accessories",
            _ELECTRONICS_ATTRS,
            {"color": "device color"},
            (9, 60),
        ),
        (
            "screen protector",
            "Cell Phone Accessories",
            _ELECTRONICS_ATTRS,
            {"style": "phone model", "size": "pack"},
            (5, 25),
        ),
        (
            "smart watch band",
            "Wearable Technology",
            _ELECTRONICS_ATTRS,
            {"size": "watch size", "color": "device color"},
            (7, 35),
        ),
        (
            "usb webcam",
            "Computer Accessories",
            _ELECTRONICS_ATTRS,
            {"color": "device color"},
            (20, 120),
        ),
    ],
}

_BRAND_HEADS = [
    "zen",
    "nova",
    "kor",
    "lum",
    "brio",
    "vel",
    "oro",
    "tam",
    "quin",
    "sol",
    "pax",
    "mar",
    "fen",
    "dax",
    "ily",
    "rho",
    "cal",
    "ven",
    "bex",
    "tor",
]
_BRAND_TAILS = ["ora", "ique", "ix", "ana", "eon", "ova", "ly", "um", "ex", "ari", "opia", "ent"]
_TITLE_EXTRAS = {
    "beauty": ["for Women and Men", "Salon Quality", "Daily Care", "Professional Formula"],
    "food": ["Family Size", "Snack Pack", "Gourmet Selection", "Pantry Favorite"],
    "fashion": ["Everyday Wear", "Classic Style", "Athletic Fit", "Casual Comfort"],
    "furniture": ["for Home Office", "Modern Design", "Classic Style", "Compact Design"],
    "electronics": ["Latest Model", "Upgraded Version", "Travel Friendly", "Pro Edition"],
}
_FILLERS = [
    "Designed for everyday use at home or on the go.",
    "Backed by our satisfaction guarantee.",
    "Makes a thoughtful gift for family and friends.",
    "Made with attention to quality and detail.",
    "Ships in simple, recyclable packaging.",
    "A favorite of thousands of shoppers.",
]
_REVIEW_LINES = {
    5: ["Exactly what I wanted.", "Great value, would buy again.", "Works perfectly for me."],
    4: ["Very good overall.", "Nice quality for the price.", "Happy with this purchase."],
    3: ["It is okay.", "Does the job, nothing special.", "Average quality."],
    2: ["Not what I expected.", "Quality could be better."],
    1: ["Disappointed with this one.", "Would not buy again."],
}

_INSTRUCTION_OPENERS = [
    "i need",
    "i am looking for",
    "i want",
    "find me",
    "i'm searching for",
    "get me",
    "i would like",
    "show me",
]


def _make_asin(rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "B0" + "".join(rng.choice(alphabet) for _ in range(8))


def _article(words: str) -> str:
    return "an" if words[:1] in "aeiou" else "a"


def _make_product(rng: random.Random, asin: str, category: str) -> Product:
    ptype, level2, attr_pool, groups, (lo, hi) = rng.choice(PRODUCT_TYPES[category])
    brand = (rng.choice(_BRAND_HEADS) + rng.choice(_BRAND_TAILS)).capitalize()
    attributes = rng.sample(attr_pool, rng.randint(2, 4))
    options: dict[str, list[str]] = {}
    for group, key in groups.items():
        if rng.random() < 0.15:
            continue  # some items sell a single variant: no option group
        values = OPTION_VALUES[key]
        chosen = rng.sample(values, rng.randint(2, min(5, len(values))))
        options[group] = [v for v in values if v in chosen]  # keep the catalog's natural order
    title_attrs = [a for a in attributes if rng.random() < 0.6]
    extra = rng.choice(_TITLE_EXTRAS[category])
    title = f"{brand} {' '.join(w.title() for w in title_attrs)} {ptype.title()}, {extra}"
    title = " ".join(title.split())
    features = [f"{a.capitalize()}: {rng.choice(_FILLERS)}" for a in attributes]
    description = (
        f"This {ptype} from {brand} is "
        + ", ".join(attributes[:-1])
        + (" and " if len(attributes) > 1 else "")
        + attributes[-1]
        + ". "
        + " ".join(rng.sample(_FILLERS, 2))
    )
    price = round(rng.uniform(lo, hi), 2)
    reviews = []
    for _ in range(rng.randint(0, 3)):
        score = rng.choice([5, 5, 4, 4, 3, 2, 1])
        reviews.append({"score": score, "body": rng.choice(_REVIEW_LINES[score])})
    rating = round(sum(r["score"] for r in reviews) / len(reviews), 1) if reviews else None
    return Product(
        asin=asin,
        title=title,
        category=category,
        product_category=f"{CATEGORY_NAMES[category]} › {level2} › {ptype.title()}",
        query=ptype,
        type_words=ptype.split(),
        price=price,
        attributes=attributes,
        options=options,
        features=features,
        description=description,
        reviews=reviews,
        rating=rating,
        brand=brand,
    )


def _option_leaks(product: Product) -> bool:
    """Whether some option value occurs in the product text (it would match any goal)."""
    text = product.text()
    return any(v in text for values in product.options.values() for v in values)


def _make_goal(rng: random.Random, goal_id: str, product: Product) -> Goal:
    attrs = rng.sample(product.attributes, rng.randint(1, min(3, len(product.attributes))))
    options = {group: rng.choice(values) for group, values in product.options.items()}
    bounds = [p for p in PRICE_RANGE if p > product.price][:4]
    if len(bounds) >= 2:
        price_upper = max(rng.sample(bounds, 2))
        price_text = f", and price lower than {price_upper:.2f} dollars"
    else:
        price_upper, price_text = 1_000_000.0, ""
    ptype = product.query
    style = rng.randrange(3)
    opener = rng.choice(_INSTRUCTION_OPENERS)
    if style == 0:
        head = f"{opener} {' '.join(attrs)} {ptype}"
    elif style == 1:
        head = f"{opener} {_article(ptype)} {ptype} that is {' and '.join(attrs)}"
    else:
        head = f"{opener} {_article(attrs[0])} {attrs[0]} {ptype}" + "".join(
            f" with {a}" for a in attrs[1:]
        )
    option_text = ", and ".join(f"{k}: {v}" for k, v in options.items())
    instruction = head + (f" with {option_text}" if option_text else "") + price_text
    return Goal(
        goal_id=goal_id,
        asin=product.asin,
        instruction=instruction,
        query=product.query,
        name=product.title,
        product_category=product.product_category,
        type_words=list(product.type_words),
        attributes=attrs,
        options=options,
        price_upper=price_upper,
        category=product.category,
        search_terms=f"{' '.join(attrs)} {ptype}",
    )


class Catalog:
    """Products, goals and train/valid/test goal splits, with a content fingerprint."""

    def __init__(self, products: list[Product], goals: list[Goal], source: str):
        if not products:
            raise ValueError("a catalog needs at least one product")
        self.products = products
        self.by_asin = {p.asin: p for p in products}
        if len(self.by_asin) != len(products):
            raise ValueError("product asins must be unique")
        missing = [g.goal_id for g in goals if g.asin not in self.by_asin]
        if missing:
            raise ValueError(f"goals {missing[:5]} refer to products not in the catalog")
        self.goals = goals
        self.goal_by_id = {g.goal_id: g for g in goals}
        self.source = source
        n = len(goals)
        n_test = int(round(n * SPLIT_FRACTIONS["test"]))
        n_valid = int(round(n * SPLIT_FRACTIONS["valid"]))
        ids = [g.goal_id for g in goals]
        self.splits = {
            "test": ids[:n_test],
            "valid": ids[n_test : n_test + n_valid],
            "train": ids[n_test + n_valid :],
        }
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.products)

    @property
    def fingerprint(self) -> str:
        """A hash of every product and goal: equal fingerprints mean identical catalogs."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.source.encode())
            for p in self.products:
                h.update(json.dumps(asdict(p), sort_keys=True).encode())
            for g in self.goals:
                h.update(json.dumps(asdict(g), sort_keys=True).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def generate_catalog(n_products: int = 1000, seed: int = 0) -> Catalog:
    """Build a catalog of `n_products` products and one goal per product, deterministically.

    Goals are shuffled (seeded) so each split mixes categories; the first 10% are the test
    split, the next 10% valid, the rest train.
    """
    if n_products < 10:
        raise ValueError(f"n_products must be >= 10 (each split needs goals), got {n_products}")
    rng = random.Random(f"{GENERATOR_VERSION}:{n_products}:{seed}")
    products: list[Product] = []
    seen: set[str] = set()
    for i in range(n_products):
        category = CATEGORIES[i % len(CATEGORIES)]
        asin = _make_asin(rng)
        while asin in seen:
            asin = _make_asin(rng)
        seen.add(asin)
        product = _make_product(rng, asin, category)
        while _option_leaks(product):
            product = _make_product(rng, asin, category)
        products.append(product)
    order = list(range(n_products))
    rng.shuffle(order)
    goals = [_make_goal(rng, f"g{k:06d}", products[i]) for k, i in enumerate(order)]
    return Catalog(products, goals, source=f"generated:{GENERATOR_VERSION}:{n_products}:{seed}")
