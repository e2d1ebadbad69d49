"""The shop: a FastAPI app serving WebShop's pages over real HTTP, and its process entry point.

Pages (every URL carries the session id, so one server serves many episodes at once):

- ``GET /start/{sid}?goal=ID``  start (or restart) session `sid` on goal ID; the search page.
- ``GET /{sid}/``               the search page.
- ``GET /{sid}/search?q=&page=`` results, 10 per page, from a BM25 search (top 50, as WebShop).
- ``GET /{sid}/item/{asin}?q=&page=&o=`` an item: option groups, Buy Now, and links to its
  description, features and reviews (``/{sid}/item/{asin}/{description|features|reviews}``).
  ``o`` is the JSON object of chosen options; choosing an option is a link that changes it.
- ``GET /{sid}/buy/{asin}?o=``   buy: the done page with WebShop's reward for the session's goal.
- ``GET /``                      a new session on a random goal, for a person browsing.
- ``GET /health``                JSON: catalog fingerprint, number of products and sessions.

Run as a process (``python -m creditgym.envs.webshop.app --port 0``) it prints one line
``WEBSHOP-READY <port> <fingerprint>`` when it accepts connections. With ``--watch-parent`` it
exits as soon as its parent process dies or closes its stdin, so no server outlives its owner.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from creditgym.envs.webshop.catalog import Catalog, Goal, Product
from creditgym.envs.webshop.loading import cached_catalog
from creditgym.envs.webshop.reward import compute_reward

RESULTS_PER_PAGE = 10
SEARCH_RETURN_N = 50
MAX_SESSIONS = 100_000

BACK_TO_SEARCH = "Back to Search"
NEXT_PAGE = "Next >"
PREV_PAGE = "< Prev"
BUY_NOW = "Buy Now"
SUBPAGES = {"description": "Description", "features": "Features", "reviews": "Reviews"}

_STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:60em}
#instruction-text{background:#eef;padding:.5em;margin-bottom:1em}
a.btn,button.btn{display:inline-block;background:#fc3;color:#000;padding:.25em .6em;margin:.2em;
 border:1px solid #a80;border-radius:3px;text-decoration:none}
a.option{display:inline-block;border:1px solid #888;padding:.1em .5em;margin:.1em;
 color:#000;text-decoration:none}
a.option.selected{background:#333;color:#fff}
.product{margin:.6em 0;padding:.4em;border-bottom:1px solid #ddd}
a.product-link{font-weight:bold}
"""


class SearchEngine:
    """BM25 (`bm25s`) over each product's title, type, category, attributes and text."""

    def __init__(self, products: list[Product]):
        import bm25s

        self._bm25s = bm25s
        corpus = [
            " ".join(
                [
                    p.title,
                    p.query,
                    p.product_category.replace("›", " "),
                    " ".join(p.attributes),
                    " ".join(p.features),
                    p.description,
                ]
            )
            for p in products
        ]
        self.retriever = bm25s.BM25()
        self.retriever.index(
            bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
        )
        self.n = len(products)

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[int]:
        """Indices of the top-`k` products with a positive score, best first."""
        tokens = self._bm25s.tokenize(
            [query], stopwords="en", return_ids=False, show_progress=False
        )
        if not tokens or not tokens[0]:
            return []
        docs, scores = self.retriever.retrieve(
            tokens, k=min(k, self.n), show_progress=False, n_threads=0
        )
        return [int(d) for d, s in zip(docs[0], scores[0]) if s > 0]


class Shop:
    """The shop's state: catalog, search engine and sessions (session id -> goal and purchase)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.engine = SearchEngine(catalog.products)
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def start(self, sid: str, goal_id: str) -> None:
        if goal_id not in self.catalog.goal_by_id:
            raise KeyError(goal_id)
        self.sessions[sid] = {"goal": goal_id, "purchase": None}
        self.sessions.move_to_end(sid)
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)

    def goal(self, sid: str) -> Goal | None:
        s = self.sessions.get(sid)
        return None if s is None else self.catalog.goal_by_id[s["goal"]]


# ------------------------------------------------------------------------------------- HTML
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _page(sid: str, kind: str, goal: Goal | None, body: str) -> str:
    instruction = (
        f'<div id="instruction-text"><h4>Instruction:<br>{_e(goal.instruction)}</h4></div>'
        if goal is not None
        else ""
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>WebShop</title>"
        f"<style>{_STYLE}</style></head>"
        f'<body data-page="{_e(kind)}" data-session="{_e(sid)}" data-nonce="{secrets.token_hex(4)}">'
        f"{instruction}{body}</body></html>"
    )


def _btn(href: str, text: str, ident: str = "") -> str:
    id_attr = f' id="{ident}"' if ident else ""
    return f'<a class="btn"{id_attr} href="{_e(href)}">{_e(text)}</a>'


def _state_qs(q: str, page: int, opts: dict[str, str] | None = None) -> str:
    params: dict[str, Any] = {"q": q, "page": page}
    if opts:
        params["o"] = json.dumps(opts, sort_keys=True)
    return urlencode(params)


def search_page(shop: Shop, sid: str) -> str:
    body = (
        "<div><h2>WebShop</h2></div>"
        f'<form id="search-form" method="get" action="/{quote(sid)}/search">'
        '<input id="search_input" type="text" name="q" placeholder="Search...">'
        '<button class="btn" id="search_button" type="submit">Search</button></form>'
    )
    return _page(sid, "search", shop.goal(sid), body)


def results_page(shop: Shop, sid: str, q: str, page: int) -> str:
    hits = shop.engine.search(q)
    total = len(hits)
    start = (page - 1) * RESULTS_PER_PAGE
    shown = hits[start : start + RESULTS_PER_PAGE]
    parts = [_btn(f"/{quote(sid)}/", BACK_TO_SEARCH, "back-to-search")]
    parts.append(f'<div class="page-info">Page {page} (Total results: {total})</div>')
    if page > 1:
        parts.append(_btn(f"/{quote(sid)}/search?{_state_qs(q, page - 1)}", PREV_PAGE, "prev"))
    if start + RESULTS_PER_PAGE < total:
        parts.append(_btn(f"/{quote(sid)}/search?{_state_qs(q, page + 1)}", NEXT_PAGE, "next"))
    for i in shown:
        p = shop.catalog.products[i]
        href = f"/{quote(sid)}/item/{p.asin}?{_state_qs(q, page)}"
        parts.append(
            f'<div class="product"><a class="product-link" href="{_e(href)}">{_e(p.asin)}</a>'
            f'<div class="title">{_e(p.title)}</div><div class="price">${p.price:.2f}</div></div>'
        )
    return _page(sid, "results", shop.goal(sid), "".join(parts))


def _item_header(sid: str, asin: str, q: str, page: int, opts: dict[str, str], sub: str) -> str:
    if sub:
        prev = f"/{quote(sid)}/item/{asin}?{_state_qs(q, page, opts)}"
    else:
        prev = f"/{quote(sid)}/search?{_state_qs(q, page)}"
    return _btn(f"/{quote(sid)}/", BACK_TO_SEARCH, "back-to-search") + _btn(prev, PREV_PAGE, "prev")


def item_page(
    shop: Shop, sid: str, p: Product, q: str, page: int, opts: dict[str, str], sub: str = ""
) -> str:
    parts = [_item_header(sid, p.asin, q, page, opts, sub)]
    if sub == "description":
        parts.append(f'<div class="description">{_e(p.description)}</div>')
    elif sub == "features":
        parts.extend(f'<div class="feature">{_e(f)}</div>' for f in p.features)
    elif sub == "reviews":
        if not p.reviews:
            parts.append("<div>No reviews yet.</div>")
        for r in p.reviews:
            parts.append(
                f'<div class="review"><div>Rating: {r["score"]} out of 5</div>'
                f"<div>{_e(r.get('body', ''))}</div></div>"
            )
    else:
        for group, values in p.options.items():
            parts.append(f'<div class="option-group"><div class="option-name">{_e(group)}</div>')
            for v in values:
                new = {**opts, group: v}
                href = f"/{quote(sid)}/item/{p.asin}?{_state_qs(q, page, new)}"
                cls = "option selected" if opts.get(group) == v else "option"
                parts.append(
                    f'<a class="{cls}" data-group="{_e(group)}" href="{_e(href)}">{_e(v)}</a>'
                )
            parts.append("</div>")
        rating = "N.A." if p.rating is None else p.rating
        parts.append(
            f'<div class="title">{_e(p.title)}</div><div class="price">Price: ${p.price:.2f}</div>'
            f"<div>Rating: {rating}</div>"
        )
        base = f"/{quote(sid)}/item/{p.asin}"
        qs = _state_qs(q, page, opts)
        for key, label in SUBPAGES.items():
            parts.append(_btn(f"{base}/{key}?{qs}", label, key))
        parts.append(_btn(f"/{quote(sid)}/buy/{p.asin}?{qs}", BUY_NOW, "buy-now"))
    kind = f"item-{sub}" if sub else "item"
    return _page(sid, kind, shop.goal(sid), "".join(parts))


def done_page(shop: Shop, sid: str, p: Product, opts: dict[str, str]) -> str:
    session = shop.sessions[sid]
    if session["purchase"] is None:
        goal = shop.goal(sid)
        assert goal is not None
        breakdown = compute_reward(p, goal, opts)
        session["purchase"] = {"asin": p.asin, "options": opts, "reward": breakdown.reward}
    bought = session["purchase"]
    chosen = ", ".join(f"{k}: {v}" for k, v in bought["options"].items()) or "none"
    body = (
        "<h2>Thank you for shopping with us!</h2>"
        f'<div id="purchased">Purchased: {_e(bought["asin"])} (options: {_e(chosen)})</div>'
        "<div>Your score (min 0.0, max 1.0)</div>"
        f'<div id="reward" data-reward="{bought["reward"]!r}">{bought["reward"]:.4f}</div>'
    )
    return _page(sid, "done", shop.goal(sid), body)


def message_page(sid: str, message: str, kind: str = "error") -> str:
    return _page(sid, kind, None, f'<div id="message">{_e(message)}</div>')


# ------------------------------------------------------------------------------------- app
def create_app(catalog: Catalog) -> FastAPI:
    """The FastAPI app serving `catalog` (sessions live in the app's memory)."""
    shop = Shop(catalog)
    app = FastAPI(title="creditgym WebShop", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.shop = shop

    def _html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status)

    def _missing(sid: str) -> HTMLResponse:
        return _html(message_page(sid, f"Unknown session {sid!r}: start it at /start/{sid}"), 404)

    def _args(request: Request) -> tuple[str, int, dict[str, str]]:
        qp = request.query_params
        q = " ".join(qp.get("q", "").lower().split())
        try:
            page = max(1, int(qp.get("page", "1")))
        except ValueError:
            page = 1
        try:
            raw = json.loads(qp.get("o", "{}"))
            opts = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        except ValueError:
            opts = {}
        return q, page, opts

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(
            {
                "fingerprint": catalog.fingerprint,
                "products": len(catalog),
                "goals": len(catalog.goals),
                "sessions": len(shop.sessions),
            }
        )

    @app.get("/")
    async def index(goal: str | None = None) -> Any:
        sid = secrets.token_hex(6)
        if goal is None:
            goal = catalog.goals[secrets.randbelow(len(catalog.goals))].goal_id
        try:
            shop.start(sid, goal)
        except KeyError:
            return _html(message_page(sid, f"Unknown goal {goal!r}"), 404)
        return RedirectResponse(f"/{sid}/", status_code=303)

    @app.get("/start/{sid}")
    async def start(sid: str, goal: str) -> HTMLResponse:
        try:
            shop.start(sid, goal)
        except KeyError:
            return _html(message_page(sid, f"Unknown goal {goal!r}"), 404)
        return _html(search_page(shop, sid))

    @app.get("/{sid}/")
    async def search(sid: str) -> HTMLResponse:
        if sid not in shop.sessions:
            return _missing(sid)
        return _html(search_page(shop, sid))

    @app.get("/{sid}/search")
    async def results(sid: str, request: Request) -> HTMLResponse:
        if sid not in shop.sessions:
            return _missing(sid)
        q, page, _ = _args(request)
        return _html(results_page(shop, sid, q, page))

    @app.get("/{sid}/item/{asin}")
    async def item(sid: str, asin: str, request: Request) -> HTMLResponse:
        return _item(sid, asin, request, "")

    @app.get("/{sid}/item/{asin}/{sub}")
    async def item_sub(sid: str, asin: str, sub: str, request: Request) -> HTMLResponse:
        if sub not in SUBPAGES:
            return _html(message_page(sid, f"No such page {sub!r}"), 404)
        return _item(sid, asin, request, sub)

    def _item(sid: str, asin: str, request: Request, sub: str) -> HTMLResponse:
        if sid not in shop.sessions:
            return _missing(sid)
        p = catalog.by_asin.get(asin)
        if p is None:
            return _html(message_page(sid, f"No product {asin!r}"), 404)
        q, page, opts = _args(request)
        opts = {k: v for k, v in opts.items() if v in p.options.get(k, [])}
        return _html(item_page(shop, sid, p, q, page, opts, sub))

    @app.get("/{sid}/buy/{asin}")
    async def buy(sid: str, asin: str, request: Request) -> HTMLResponse:
        if sid not in shop.sessions:
            return _missing(sid)
        p = catalog.by_asin.get(asin)
        if p is None:
            return _html(message_page(sid, f"No product {asin!r}"), 404)
        _, _, opts = _args(request)
        opts = {k: v for k, v in opts.items() if v in p.options.get(k, [])}
        return _html(done_page(shop, sid, p, opts))

    return app


# ------------------------------------------------------------------------------------- process
def _watch_parent(log_file: str | None = None) -> None:
    """Exit when the parent dies: stdin reaches EOF, or we are re-parented. The parent cannot
    clean up after itself then, so its server log (`log_file`) is removed here."""
    parent = os.getppid()

    def leave() -> None:
        if log_file:
            with contextlib.suppress(OSError):
                os.unlink(log_file)
        os._exit(0)

    def stdin_eof() -> None:
        try:
            while sys.stdin.buffer.read(1024):
                pass
        except (OSError, ValueError):
            pass
        leave()

    def reparented() -> None:
        while True:
            if os.getppid() != parent:
                leave()
            time.sleep(0.5)

    threading.Thread(target=stdin_eof, daemon=True).start()
    threading.Thread(target=reparented, daemon=True).start()


def serve(
    catalog: Catalog, host: str = "127.0.0.1", port: int = 0, ready_line: bool = True
) -> None:
    """Bind `host:port` (0 = a free port), print the ready line, and serve until stopped."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = create_app(catalog)  # builds the search index before we announce readiness
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    bound = sock.getsockname()[1]
    if ready_line:
        original_startup = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original_startup(sockets=sockets)
            print(f"WEBSHOP-READY {bound} {catalog.fingerprint}", flush=True)

        server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Serve the creditgym WebShop (one catalog).")
    p.add_argument("--n-products", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-path", default=None, help="folder with the original WebShop JSON")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--watch-parent", action="store_true", help="exit when the parent dies")
    p.add_argument("--log-file", default=None, help="removed when the parent dies")
    args = p.parse_args(argv)
    if args.watch_parent:
        _watch_parent(args.log_file)
    catalog = cached_catalog(args.n_products, args.seed, args.data_path)
    serve(catalog, args.host, args.port)


if __name__ == "__main__":
    main()
