"""One self-contained HTML file: the template, its CSS and JS inline, the data as escaped JSON.

The data sits in a ``<script type="application/json">`` block that is never executed; the
page parses it and sets every text with ``textContent``. In the JSON, ``<``, ``>`` and ``&`` are
written as ``\\u003c``-style escapes (so no text from the data can close the block or open a
tag) and everything outside ASCII is escaped too (U+2028/U+2029 included). A Content Security
Policy allows only this page's own script and style (by hash) and no network at all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Any

__all__ = ["escape_json", "render_html"]


def escape_json(payload: Any) -> str:
    """JSON safe to place inside an HTML ``<script>`` element (no NaN: it is not JSON)."""
    text = json.dumps(payload, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _asset(name: str) -> str:
    return resources.files("creditgym.trainers.viewer").joinpath(name).read_text("utf-8")


def _sha256(text: str) -> str:
    return (
        "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"
    )


def render_html(payload: dict[str, Any], title: str = "creditgym trajectories") -> str:
    """The page for ``payload`` (see `creditgym.trainers.viewer.payload.build_payload`)."""
    template = _asset("template.html")
    style = _asset("viewer.css")
    script = _asset("viewer.js")
    if "</script" in script.lower() or "</style" in style.lower():
        raise ValueError("viewer assets must not contain a closing script/style tag")
    csp = (
        f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    parts = {
        "{{CSP}}": html.escape(csp, quote=True),
        "{{TITLE}}": html.escape(title, quote=False),
        "{{STYLE}}": style,
        "{{SCRIPT}}": script,
        "{{DATA}}": escape_json(payload),
    }
    # One pass over the template, so a placeholder inside the data is never replaced.
    out, pos = [], 0
    while True:
        nxt = template.find("{{", pos)
        if nxt < 0:
            out.append(template[pos:])
            break
        end = template.index("}}", nxt) + 2
        out.append(template[pos:nxt])
        out.append(parts[template[nxt:end]])
        pos = end
    return "".join(out)
