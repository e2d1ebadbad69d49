"""`creditgym/WebShop-v0`: shop for a product on a real web server, as text or in a real browser.

Each episode is one session on the shop server (`creditgym.envs.webshop.app`): the goal's instruction is
shown on every page; the agent acts with ``search[query]`` (when the page has a search box) and
``click[element]`` (any clickable, by its lower-cased text, as WebShop). ``admissible_actions``
lists every clickable, plus the template ``search[<your query>]`` when the page has a search box
(queries cannot be enumerated; an agent that only picks listed actions therefore searches for
"your query" and finds nothing, which is why the uniform random agent scores 0). Buying ends the episode:
``info["score"]`` is WebShop's dense reward in [0, 1] and the env reward is 10 x success (success
= reward 1.0), as in verl-agent.

``mode="text"`` fetches pages over HTTP and parses the HTML; ``mode="browser"`` drives headless
Chromium through Selenium (real clicks and typing) and reads the rendered DOM. Both give the
same observations and the same `state_key` (page kind + query + results page + product + chosen
options).

Many envs of one process share one server (`ShopServer.shared`); ``server_url`` points envs at a
server someone else runs (``scripts/serve_webshop.py``). If the server dies mid-episode, the env
restarts it and ends that episode with ``info["error"]`` instead of raising.
"""

from __future__ import annotations

import http.client
import io
import re
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import numpy as np

from creditgym.envs.base import TextEnv
from creditgym.envs.webshop.app import NEXT_PAGE, PREV_PAGE, SEARCH_RETURN_N
from creditgym.envs.webshop.catalog import GENERATOR_VERSION, Catalog, Goal, Product
from creditgym.envs.webshop.loading import cached_catalog
from creditgym.envs.webshop.pages import Item, Page, parse_html, state_key
from creditgym.envs.webshop.reward import (
    FUZZY_THRESHOLD,
    compute_reward,
    is_success,
    normalize_color,
)
from creditgym.envs.webshop.server import ShopServer

SEARCH_PLACEHOLDER = "search[<your query>]"
_ACTION_RE = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)
MAX_RESULT_PAGES = SEARCH_RETURN_N // 10
_PAGE_KINDS = frozenset(
    ["search", "results", "item", "item-description", "item-features", "item-reviews", "done"]
)


def _text_image(text: str, width: int = 100) -> np.ndarray:
    """`text` wrapped at `width` characters, drawn black on white (PIL's default font)."""
    import textwrap

    from PIL import Image, ImageDraw

    lines = textwrap.wrap(text, width) or [""]
    image = Image.new("RGB", (8 * width + 16, 14 * len(lines) + 16), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((8, 8 + 14 * i), line, fill="black")
    return np.asarray(image)


def _describe(exc: BaseException) -> str:
    """`TypeError: first line of the message` (Selenium messages run to many lines)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class ShopUnavailable(RuntimeError):
    """The shop (server, session or browser) failed; the episode cannot go on."""


class _HttpClient:
    """Keep-alive HTTP GETs against the shop; one connection per env."""

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._netloc = ""

    def get(self, base_url: str, path: str) -> Page:
        netloc = urlsplit(base_url).netloc
        for attempt in range(2):  # a stale keep-alive connection gets one fresh retry
            if self._conn is None or self._netloc != netloc:
                self.close()
                host, port = netloc.rsplit(":", 1)
                self._conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
                self._netloc = netloc
            try:
                self._conn.request("GET", path)
                resp = self._conn.getresponse()
                body = resp.read().decode("utf-8")
                if resp.status >= 500 or not body.lstrip().startswith("<"):
                    raise ShopUnavailable(f"GET {path}: HTTP {resp.status}: {body[:200]}")
                return parse_html(body, path)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 1:
                    raise ShopUnavailable(
                        f"GET {path} failed: {type(exc).__name__}: {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WebShopEnv(TextEnv):
    """WebShop on a generated (or the original) catalog; see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    env_name: ClassVar[str] = "creditgym/WebShop-v0"
    generator_version: ClassVar[str] = GENERATOR_VERSION
    family: ClassVar[str] = "webshop"
    default_max_steps: ClassVar[int] = 15

    def __init__(
        self,
        split: str = "train",
        max_steps: int | None = None,
        render_mode: str | None = None,
        mode: str = "text",
        n_products: int = 1000,
        seed: int = 0,
        data_path: str | None = None,
        server_url: str | None = None,
        timeout: float = 30.0,
    ):
        if mode not in ("text", "browser"):
            raise ValueError(f"mode must be 'text' or 'browser', got {mode!r}")
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        self.mode = mode
        self.catalog: Catalog = cached_catalog(int(n_products), int(seed), data_path)
        self._server_spec = (int(n_products), int(seed), data_path)
        self._external_url = server_url.rstrip("/") if server_url else None
        self._server: ShopServer | None = None
        self._generation = 0
        self._timeout = timeout
        self._http = _HttpClient(timeout)
        self._browser: Any = None
        self._sid = ""
        self._goal: Goal | None = None
        self._page: Page | None = None
        self._done = False
        self._score = 0.0

    # ------------------------------------------------------------------ plumbing
    @property
    def base_url(self) -> str:
        if self._external_url:
            return self._external_url
        if self._server is None:
            self._server = ShopServer.shared(*self._server_spec)
        return self._server.url

    @property
    def server(self) -> ShopServer | None:
        """The shop process this env uses (None with an external ``server_url``)."""
        _ = self.base_url
        return self._server

    def _ensure_browser(self) -> Any:
        if self._browser is None:
            from creditgym.envs.webshop.browser import Browser

            self._browser = Browser(page_timeout=self._timeout)
        return self._browser

    def _get(self, path: str) -> Page:
        if self.mode == "browser":
            try:
                return self._ensure_browser().get(self.base_url + path)
            except Exception as exc:  # selenium raises many types; all mean "unavailable"
                raise ShopUnavailable(f"browser failed on {path}: {_describe(exc)}") from exc
        return self._http.get(self.base_url, path)

    def _click(self, item: Item) -> Page:
        assert self._page is not None
        if self.mode == "browser":
            try:
                return self._browser.click(self._page, item)
            except Exception as exc:
                raise ShopUnavailable(f"browser click failed: {_describe(exc)}") from exc
        return self._http.get(self.base_url, item.href)

    def _search(self, query: str) -> Page:
        if self.mode == "browser":
            try:
                return self._browser.search(query)
            except Exception as exc:
                raise ShopUnavailable(f"browser search failed: {_describe(exc)}") from exc
        return self._http.get(
            self.base_url, f"/{quote(self._sid)}/search?{urlencode({'q': query, 'page': 1})}"
        )

    def _check_session(self, page: Page) -> Page:
        if self._server is not None and self._server.generation != self._generation:
            raise ShopUnavailable("the shop server was restarted; this episode's session is gone")
        if page.kind == "error":
            raise ShopUnavailable(f"the shop lost this session: {page.observation()}")
        if page.kind not in _PAGE_KINDS:  # e.g. the browser's own "site can't be reached" page
            raise ShopUnavailable(f"not a shop page: {page.observation()[:200]}")
        return page

    def _recover(self) -> None:
        """Restart whatever died (server, browser) so the next episode can run."""
        self._http.close()
        if self._server is not None:
            self._server.restart()
        if self._browser is not None and not self._browser.alive():
            self._browser.close()
            self._browser = None

    # ------------------------------------------------------------------ TextEnv API
    def task_ids(self, split: str) -> Sequence[str]:
        return self.catalog.splits[split]

    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        self._goal = self.catalog.goal_by_id[task_id]
        self._done, self._score = False, 0.0
        self._sid = secrets.token_hex(8)
        path = f"/start/{self._sid}?{urlencode({'goal': task_id})}"
        for attempt in range(2):
            try:
                _ = self.base_url  # starts (or joins) the shared server on first use
                self._generation = self._server.generation if self._server else 0
                self._page = self._check_session(self._get(path))
                break
            except ShopUnavailable:
                if attempt == 1:
                    raise
                self._recover()
        return self._page.observation(), self._info(True)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self._done or self._page is None:
            return "The episode is over.", 0.0, True, self._info(False)
        match = _ACTION_RE.match(action)
        if match is None:
            return self._invalid("use search[query] or click[element]")
        verb, arg = match.group(1).lower(), " ".join(match.group(2).lower().split())
        try:
            if verb == "search":
                if not self._page.has_search:
                    return self._invalid("there is no search box on this page")
                if not arg:
                    return self._invalid("search for some words")
                page = self._search(arg)
            else:
                item = self._page.clickables().get(arg)
                if item is None:
                    return self._invalid(f"there is no clickable {arg!r} on this page")
                page = self._click(item)
            self._page = self._check_session(page)
        except ShopUnavailable as exc:
            return self._failure(str(exc))
        if self._page.kind == "done":
            self._done = True
            self._score = float(self._page.reward or 0.0)
            won = is_success(self._score)
            return self._page.observation(), 10.0 * won, True, self._info(True)
        return self._page.observation(), 0.0, False, self._info(True)

    def _invalid(self, why: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self._page is not None
        obs = f"Nothing happens: {why}.{' [SEP] '}{self._page.observation()}"
        return obs, 0.0, False, self._info(False)

    def _failure(self, message: str) -> tuple[str, float, bool, dict[str, Any]]:
        self._recover()
        self._done = True
        info = self._info(True)
        info["error"] = message
        obs = f"The shop is unavailable ({message}). This episode has ended."
        return obs, 0.0, True, info

    def _info(self, valid: bool) -> dict[str, Any]:
        assert self._goal is not None
        page = self._page
        admissible: list[str] = []
        if page is not None and not self._done:
            if page.has_search:
                admissible.append(SEARCH_PLACEHOLDER)
            admissible += [f"click[{key}]" for key in page.clickables()]
        return {
            "task": self._goal.instruction,
            "admissible_actions": admissible,
            "action_valid": valid,
            "won": self._done and is_success(self._score),
            "state_key": state_key(page.url) if page is not None else "none",
            "task_type": self._goal.category,
            "score": self._score,
        }

    def render(self) -> Any:
        """``ansi``: the observation text. ``rgb_array``: in browser mode a screenshot of the
        page; in text mode the observation text drawn as an image (there is no browser)."""
        if self.render_mode == "rgb_array":
            if self.mode == "browser" and self._browser is not None:
                return self.screenshot()
            return _text_image(self._last_obs)
        return super().render()

    def screenshot(self) -> np.ndarray:
        """The browser's current view as an RGB array (browser mode only)."""
        if self.mode != "browser" or self._browser is None:
            raise RuntimeError("screenshots need mode='browser' and a started episode")
        from PIL import Image

        png = self._browser.screenshot_png()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self) -> None:
        self._http.close()
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._server is not None:
            self._server.release()
            self._server = None
        super().close()

    # ------------------------------------------------------------------ oracle
    def _best_options(self, product: Product) -> dict[str, str]:
        """For each option group of `product`, the value that matches the goal, if any."""
        assert self._goal is not None
        wanted = [normalize_color(v) for v in self._goal.options.values()]
        from rapidfuzz import fuzz

        chosen = {}
        for group, values in product.options.items():
            for v in values:
                nv = normalize_color(v)
                exact = nv in wanted
                fuzzy = any(fuzz.token_set_ratio(w, nv) > FUZZY_THRESHOLD for w in wanted)
                if exact or (group.lower() != "size" and fuzzy):
                    chosen[group] = v
                    break
        return chosen

    def _achievable(self, asin: str) -> float:
        assert self._goal is not None
        product = self.catalog.by_asin.get(asin)
        if product is None:
            return 0.0
        return compute_reward(product, self._goal, self._best_options(product)).reward

    def expert_action(self) -> str | None:
        """The expert's next action: search the goal's words, pick a matching item, set its
        options, buy. Works from any state (it reads only the current page and the goal)."""
        page, goal = self._page, self._goal
        if page is None or goal is None or self._done:
            return None
        kind = page.kind
        clickables = page.clickables()
        if kind == "search":
            return f"search[{goal.search_terms}]"
        if kind == "results":
            products = [it.text for it in page.items if it.role == "product"]
            scored = [(self._achievable(a), a == goal.asin, a) for a in products]
            perfect = [s for s in scored if is_success(s[0])]
            if perfect:
                best = max(perfect, key=lambda s: s[1])
                return f"click[{best[2].lower()}]"
            page_no = int(parse_qs(urlsplit(page.url).query).get("page", ["1"])[0])
            if NEXT_PAGE.lower() in clickables and page_no < MAX_RESULT_PAGES:
                return f"click[{NEXT_PAGE.lower()}]"
            if scored:
                return f"click[{max(scored)[2].lower()}]"
            return "click[back to search]"
        if kind == "item":
            asin = urlsplit(page.url).path.rstrip("/").split("/")[-1]
            product = self.catalog.by_asin.get(asin)
            if product is not None:
                selected = {it.text for it in page.items if it.role == "option" and it.selected}
                for value in self._best_options(product).values():
                    if value not in selected and value in clickables:
                        return f"click[{value}]"
            return "click[buy now]"
        if kind.startswith("item-"):
            return f"click[{PREV_PAGE.lower()}]"
        return None
