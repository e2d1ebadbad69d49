"""Where a WebShop catalog comes from: the original data files when given, else generated."""

from __future__ import annotations

from functools import lru_cache

from creditgym.envs.webshop.catalog import Catalog, generate_catalog
from creditgym.envs.webshop.original import load_original

__all__ = ["cached_catalog"]


@lru_cache(maxsize=4)
def cached_catalog(n_products: int = 1000, seed: int = 0, data_path: str | None = None) -> Catalog:
    """One catalog per spec and process, shared by every env that asks for it.

    With ``data_path`` the original WebShop files there are loaded (`load_original`); otherwise
    `generate_catalog(n_products, seed)` builds one.
    """
    if data_path:
        return load_original(data_path)
    return generate_catalog(n_products, seed)
