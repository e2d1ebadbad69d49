"""WebShop: a generated catalog served by a real web server, played as text or in a browser.

`WebShopEnv` is registered as ``creditgym/WebShop-v0``. The pieces: `catalog` (seeded products and
goals), `original` (loader for the original WebShop JSON files), `loading` (`cached_catalog`:
one of the two per process), `reward` (WebShop's reward),
`app` (the FastAPI shop), `server` (its child process), `pages` (HTML/DOM -> observation),
`browser` (Selenium + headless Chromium).
"""

from creditgym.envs.webshop.catalog import Catalog, Goal, Product, generate_catalog
from creditgym.envs.webshop.env import WebShopEnv
from creditgym.envs.webshop.loading import cached_catalog
from creditgym.envs.webshop.original import load_original
from creditgym.envs.webshop.reward import RewardBreakdown, compute_reward, is_success
from creditgym.envs.webshop.server import ShopServer

__all__ = [
    "Catalog",
    "Goal",
    "Product",
    "RewardBreakdown",
    "ShopServer",
    "WebShopEnv",
    "cached_catalog",
    "compute_reward",
    "generate_catalog",
    "is_success",
    "load_original",
]
