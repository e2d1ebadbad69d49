"""The viewer page in Debian's headless Chromium (Selenium): drawing, filters, tokens, escaping.

Needs ``make install-browser`` (fails, not skips, without it). Screenshots go to the test's
temporary folder, or to ``$CREDITGYM_SCREENSHOT_DIR`` when set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from creditgym.envs.webshop.browser import Browser
from creditgym.trainers.viewer import build_payload, load_source, render_html
from tests.trainers.viewer_data import benchmark_folder, play_groups

pytestmark = pytest.mark.slow

XSS = '</script><img src=x onerror="window.__pwned=1"><b>bold?</b> '
METHODS = ["gigpo", "grpo", "rloo", "hgpo", "salt", "hiper", "empg", "ppo"]
#: Installed before any page script runs: console errors, uncaught errors and CSP violations.
CAPTURE = """
window.__errors = [];
const origError = console.error;
console.error = function (...a) { window.__errors.push(a.map(String).join(' ')); origError.apply(console, a); };
window.addEventListener('error', (e) => window.__errors.push('error: ' + e.message));
document.addEventListener('securitypolicyviolation', (e) => window.__errors.push('csp: ' + e.violatedDirective));
"""
N_TOKENS = 6


def _prepare(tmp_path: Path):
    groups, ref = play_groups(n_groups=2, group_size=6, max_steps=12, p_expert=0.5, seed=1)
    for g in groups:
        for traj in g.trajectories:
            room = None
            for step in traj.steps:
                here = step.state_key.split("|")[1]
                step.extras = {"switch": "SWITCH" if here != room else "KEEP", "subgoal": here}
                room = here
    first = groups[0].trajectories[0]
    first.steps[0].observation = XSS + first.steps[0].observation
    for t, step in enumerate(first.steps):
        step.response_ids = list(range(100 + t, 100 + t + N_TOKENS))
        step.sampler_logprobs = [-0.1 * (k + 1) for k in range(N_TOKENS)]
        step.entropies = np.array([0.5 + 0.1 * k for k in range(N_TOKENS)])
        step.spans = {"switch": [(0, 1)], "subgoal": [(1, 3)], "action": [(3, 6)]}
    folder = benchmark_folder(tmp_path / "bench", groups, ref)
    import json

    summary = json.loads((folder / "summary.json").read_text())
    summary["config"]["method_options"] = {
        "hiper": {"values": "group", "group_bootstrap": "return"}
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    data = load_source(folder)
    payload = build_payload(data, METHODS)
    out = tmp_path / "view.html"
    out.write_text(render_html(payload), encoding="utf-8")
    return payload, out


def _fmt(v):
    return "–" if v is None else ("+" if v >= 0 else "−") + f"{abs(v):.2f}"


def _mixed(payload, rows, columns) -> int:
    count = 0
    for i in rows:
        signs = {np.sign(c[i]) if c[i] is not None and abs(c[i]) > 1e-9 else 0 for c in columns}
        count += 1 in signs and -1 in signs
    return count


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    b.driver.set_window_size(1400, 1100)
    b.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE})
    yield b
    b.close()


def test_viewer_page_in_chromium(browser, tmp_path):
    payload, page = _prepare(tmp_path)
    shots = Path(os.environ.get("CREDITGYM_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    d = browser.driver
    d.get(page.as_uri())
    state = d.execute_script("return window.__viewer")
    assert state and state["ready"], state
    js = d.execute_script

    # The graph draws the collapsed node count of the data.
    graph = payload["groups"][0]["graph"]
    assert js("return document.querySelectorAll('svg#graph .node').length") == len(graph["nodes"])
    assert js("return document.getElementById('graph-note').dataset.nodes") == str(
        len(graph["nodes"])
    )
    assert len(graph["nodes"]) <= graph["raw_nodes"]

    # Every step of the group is a row; the disagreement filter keeps the mixed-sign ones.
    grp = payload["groups"][0]
    rows = list(range(grp["start"], grp["end"]))
    n_rows = "return document.querySelectorAll('#steps tbody tr').length"
    assert js(n_rows) == len(rows)
    available = [m for m in payload["methods"] if m["available"]]
    assert {m["name"] for m in available} == {"gigpo", "grpo", "rloo", "hgpo", "salt", "hiper"}
    columns = {m["name"]: m["values"] for m in available}
    columns["@ref"] = payload["reference"]["values"]
    js("document.getElementById('disagree').click()")
    expected = _mixed(payload, rows, list(columns.values()))
    assert 0 < expected < len(rows)
    assert js(n_rows) == expected
    # Toggling a method off changes which rows disagree.
    js("document.querySelector('input[data-method=\"hgpo\"]').click()")
    del columns["hgpo"]
    assert js(n_rows) == _mixed(payload, rows, list(columns.values()))
    assert js("return document.querySelectorAll('#steps thead th[data-key=\"hgpo\"]').length") == 0
    js("document.getElementById('disagree').click()")
    assert js(n_rows) == len(rows)

    # Unavailable methods are listed with their reason.
    reasons = js("return document.getElementById('unavailable').textContent")
    assert "ppo unavailable: needs value estimates" in reasons and "empg unavailable" in reasons

    # Sorting by a method column puts its smallest value first.
    js("document.querySelector('#steps thead th[data-key=\"gigpo\"]').click()")
    first = js("return document.querySelector('#steps tbody tr').dataset.step")
    gigpo = [columns["gigpo"][i] for i in rows]
    assert columns["gigpo"][int(first)] == min(gigpo)

    # The token strip of a step: one card per token, HiPER's span values routed to its tokens.
    step = next(int(k) for k in payload["tokens"])
    js(f"document.querySelector('#steps tbody tr[data-step=\"{step}\"]').click()")
    assert js("return document.querySelectorAll('.tok').length") == N_TOKENS
    js(
        "const s = document.getElementById('tok-method'); s.value = 'hiper';"
        "s.dispatchEvent(new Event('change'))"
    )
    hiper = next(m for m in payload["methods"] if m["name"] == "hiper")
    spans = {"switch": [0], "subgoal": [1, 2], "action": [3, 4, 5]}
    want = [None] * N_TOKENS
    for name, toks in spans.items():
        for k in toks:
            want[k] = hiper["spans"][name][step]
    cards = js(
        "return [...document.querySelectorAll('.tok')].map(t => t.querySelectorAll('.n')[0].textContent)"
    )
    assert cards == [_fmt(v) for v in want]
    lps = js(
        "return [...document.querySelectorAll('.tok')].map(t => t.querySelectorAll('.n')[1].textContent)"
    )
    assert lps == [f"{-0.1 * (k + 1):.2f}" for k in range(N_TOKENS)]
    assert "policy version 0" in js("return document.getElementById('detail-title').textContent")
    d.save_screenshot(str(shots / "viewer_tokens.png"))

    # Highlighting a trajectory fades the edges off its path.
    js("document.querySelector('.traj-chip[data-traj=\"1\"]').click()")
    assert js("return document.querySelectorAll('svg#graph .edge.hl').length") > 0

    # The observation with markup renders as text and runs nothing.
    assert js("return window.__pwned === undefined")
    assert (
        js("return document.images.length + document.querySelectorAll('main b, #steps b').length")
        == 0
    )
    texts = js("return [...document.querySelectorAll('#steps td.obs')].map(td => td.textContent)")
    assert any(t.startswith(XSS) for t in texts)
    assert js("return window.__errors") == []

    # Another group renders too.
    js(
        "const g = document.getElementById('group'); g.value = '1'; g.dispatchEvent(new Event('change'))"
    )
    time.sleep(0.1)
    grp1 = payload["groups"][1]
    assert js(n_rows) == grp1["end"] - grp1["start"]
    assert js("return document.querySelectorAll('svg#graph .node').length") == len(
        grp1["graph"]["nodes"]
    )
    assert js("return window.__errors") == []
    d.save_screenshot(str(shots / "viewer_group1.png"))
