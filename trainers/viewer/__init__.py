"""The trajectory viewer: one iteration's groups, every credit method's step advantages, in a page.

``python scripts/view.py DIR --out view.html`` writes one self-contained HTML file (no server, no
network at view time) for a training run folder or a ``benchmark_credit.py`` output folder:

- per group, the state graph (nodes = ``state_key``, edges = actions with visit counts, won and
  lost paths coloured, a trajectory's path highlighted; chains of states visited once collapse);
- the step table: observation, action, validity, reward, ``policy_version``, one column per
  credit method (recomputed from the dump by the modules themselves), the exact A^pi (benchmark)
  or the optimal A* (finite-model env), sign agreement, the difference of two methods, a filter
  for steps whose signs disagree, sorting by any column;
- for LLM steps a token strip: tokens, the advantage each receives (HiPER's span routing), the
  sampler log-prob and the entropy.

Modules: `layout` (collapse + Graphviz/networkx layout), `payload` (advantages and page data),
`source` (reading run and benchmark folders), `html` (the page, escaped), `bench` (the dumps
``benchmark_credit.py --dump-iterations`` writes).
"""

from __future__ import annotations

from pathlib import Path

from creditgym.trainers.viewer.html import escape_json, render_html
from creditgym.trainers.viewer.payload import ViewInput, build_payload, recompute
from creditgym.trainers.viewer.source import SourceError, load_source

__all__ = [
    "SourceError",
    "ViewInput",
    "build_payload",
    "escape_json",
    "load_source",
    "recompute",
    "render_html",
    "write_view",
]


def write_view(
    folder: str | Path,
    out: str | Path,
    iteration: int | None = None,
    group: int | None = None,
    methods: list[str] | None = None,
    run: str | None = None,
    top_k: int = 150,
    layout: str = "auto",
) -> dict:
    """Write the page for ``folder`` to ``out``; returns the payload's meta with ``bytes``."""
    from creditgym import credit

    data = load_source(folder, iteration=iteration, run=run)
    names = methods if methods else credit.available()
    payload = build_payload(
        data,
        names,
        groups=None if group is None else [group],
        top_k=top_k,
        layout_engine=layout,
    )
    title = f"creditgym · {Path(folder).name} · iteration {data.iteration}"
    page = render_html(payload, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {**payload["meta"], "bytes": len(page.encode("utf-8")), "out": str(out)}
