"""Pages as the agent sees them: parsed from HTML (text mode) or read from the DOM (browser mode).

Both modes reduce a page to the same `Page`: an ordered list of `Item`s (plain text, buttons,
product links, options), whether a search box is present, and the reward on the done page.
From a `Page` come the WebShop-style observation (``[SEP]``-separated, clickables marked
``[button] ... [button_]``, chosen options ``[clicked button] ... [clicked button_]``), the
clickables (lower-cased text -> item), and from its URL the canonical `state_key`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, unquote, urlsplit

SEP = " [SEP] "


@dataclass
class Item:
    """One visible piece of a page. `role`: text, button, search-button, product, option."""

    role: str
    text: str
    href: str = ""
    selected: bool = False


@dataclass
class Page:
    url: str
    kind: str
    items: list[Item] = field(default_factory=list)
    has_search: bool = False
    reward: float | None = None

    def observation(self) -> str:
        parts = []
        for it in self.items:
            if it.role == "text":
                parts.append(it.text)
            elif it.selected:
                parts.append(f"[clicked button] {it.text} [clicked button_]")
            else:
                parts.append(f"[button] {it.text} [button_]")
        return SEP.join(parts)

    def clickables(self) -> dict[str, Item]:
        """Lower-cased clickable text -> item (first wins; the search button is not one)."""
        out: dict[str, Item] = {}
        for it in self.items:
            if it.role in ("button", "product", "option"):
                out.setdefault(it.text.lower(), it)
        return out


def _clean(text: str) -> str:
    return " ".join(text.split())


class _Parser(HTMLParser):
    """Collects `Item`s in document order from our shop's HTML."""

    SKIP = {"style", "script", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[Item] = []
        self.kind = ""
        self.has_search = False
        self.reward: float | None = None
        self._skip = 0
        self._link: Item | None = None
        self._link_text: list[str] = []
        self._button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "body":
            self.kind = a.get("data-page", "")
        elif tag == "a":
            classes = a.get("class", "").split()
            role = (
                "product"
                if "product-link" in classes
                else "option"
                if "option" in classes
                else "button"
            )
            self._link = Item(role, "", a.get("href", ""), "selected" in classes)
            self._link_text = []
        elif tag == "button":
            self._button = True
            self._link_text = []
        elif tag == "input" and a.get("id") == "search_input":
            self.has_search = True
        elif tag == "div" and a.get("id") == "reward" and a.get("data-reward"):
            self.reward = float(a["data-reward"])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._link is not None:
            self._link.text = _clean("".join(self._link_text))
            if self._link.text:
                self.items.append(self._link)
            self._link = None
        elif tag == "button" and self._button:
            self._button = False
            text = _clean("".join(self._link_text))
            if text:
                self.items.append(Item("search-button", text))

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._link is not None or self._button:
            self._link_text.append(data)
            return
        text = _clean(data)
        if text:
            self.items.append(Item("text", text))


def parse_html(html: str, url: str) -> Page:
    """Reduce one of the shop's HTML pages to a `Page`."""
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return Page(url, parser.kind or "unknown", parser.items, parser.has_search, parser.reward)


# JavaScript that walks the rendered DOM the same way `_Parser` walks the HTML. It returns
# [kind, has_search, reward, [[role, text, href, selected, element], ...]].
DOM_WALK_JS = r"""
const clean = s => s.split(/\s+/).filter(Boolean).join(' ');
const body = document.body;
const out = [];
let hasSearch = !!document.getElementById('search_input');
const rewardEl = document.getElementById('reward');
const reward = rewardEl && rewardEl.dataset.reward ? parseFloat(rewardEl.dataset.reward) : null;
function walk(node) {
  for (const child of node.childNodes) {
    if (child.nodeType === Node.TEXT_NODE) {
      const t = clean(child.textContent);
      if (t) out.push(['text', t, '', false, null]);
    } else if (child.nodeType === Node.ELEMENT_NODE) {
      const tag = child.tagName.toLowerCase();
      if (['style', 'script', 'head', 'title'].includes(tag)) continue;
      if (tag === 'a') {
        const t = clean(child.textContent);
        if (!t) continue;
        const cls = child.classList;
        const role = cls.contains('product-link') ? 'product' : (cls.contains('option') ? 'option' : 'button');
        out.push([role, t, child.getAttribute('href') || '', cls.contains('selected'), child]);
      } else if (tag === 'button') {
        const t = clean(child.textContent);
        if (t) out.push(['search-button', t, '', false, child]);
      } else {
        walk(child);
      }
    }
  }
}
walk(body);
return [body.dataset.page || 'unknown', hasSearch, reward, out];
"""


def state_key(url: str) -> str:
    """Canonical state from a shop URL: page kind + query + results page + product + options."""
    parts = urlsplit(url)
    path = [unquote(p) for p in parts.path.split("/") if p]
    qs = parse_qs(parts.query)
    q = " ".join(qs.get("q", [""])[0].lower().split())
    page = qs.get("page", ["1"])[0]
    try:
        opts = json.loads(qs.get("o", ["{}"])[0])
    except ValueError:
        opts = {}
    opts_key = json.dumps(opts, sort_keys=True) if isinstance(opts, dict) else "{}"
    if not path or path[0] == "start" or len(path) == 1:
        return "search"
    what = path[1]
    if what == "search":
        return f"results|q={q}|page={page}"
    if what == "item" and len(path) >= 3:
        sub = f"|view={path[3]}" if len(path) >= 4 else ""
        return f"item|q={q}|page={page}|asin={path[2]}|options={opts_key}{sub}"
    if what == "buy" and len(path) >= 3:
        return f"done|asin={path[2]}|options={opts_key}"
    return f"other|{parts.path}"
