"""Measure the trajectory viewer on one iteration of 16 groups x 8 trajectories x up to 50 steps.

    python scripts/bench_view.py                 # writes runs/bench-view/, prints one JSON line
    python scripts/bench_view.py --dir FOLDER    # measure an existing run or benchmark folder

Without --dir it first runs the tabular benchmark for one GiGPO iteration on KeyRooms medium with
50-step episodes (``--dump-iterations 0``), so the page holds real steps with their exact A^pi.
Then it times `write_view` (Python: recompute every method, lay out 16 graphs, write the page),
and opens the page in Debian's headless Chromium --repeats times, reporting medians of: the time to
first render (navigation start to the end of the viewer's first render of a group: graph, table,
controls; the page's own ``performance.now()``), the first animation frame after it (the render
on screen), the load event, and the time to switch to another group.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_benchmark(out: Path, groups: int, group_size: int, max_steps: int) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark_credit.py"),
        "--env",
        "creditgym/KeyRooms-v0",
        "--env-kwargs",
        json.dumps({"level": "medium", "max_steps": max_steps}),
        "--methods",
        "gigpo",
        "--seeds",
        "1",
        "--iterations",
        "1",
        "--groups",
        str(groups),
        "--group-size",
        str(group_size),
        "--tasks",
        str(groups),
        "--prior-success",
        "0.3",
        "--fidelity-every",
        "0",
        "--eval-every",
        "1",
        "--eval-episodes",
        "1",
        "--workers",
        "1",
        "--dump-iterations",
        "0",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dir", default=None, help="an existing run or benchmark folder")
    p.add_argument("--out", default="runs/bench-view", help="where the benchmark and page go")
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)

    from creditgym.envs.webshop.browser import Browser
    from creditgym.trainers.viewer import write_view

    out = Path(a.out)
    folder = Path(a.dir) if a.dir else out / "benchmark"
    if a.dir is None and not (folder / "summary.json").exists():
        make_benchmark(folder, a.groups, a.group_size, a.max_steps)
    page = out / "view.html"
    t0 = time.perf_counter()
    meta = write_view(folder, page)
    build_s = time.perf_counter() - t0

    browser = Browser()
    try:
        d = browser.driver
        d.set_window_size(1400, 1000)
        first, frame, loads, switch = [], [], [], []
        for _ in range(a.repeats):
            d.get("about:blank")
            d.get(page.resolve().as_uri())
            state = d.execute_script("return window.__viewer")
            if not state or not state.get("ready"):
                raise SystemExit(f"the page did not render: {state}")
            first.append(state["firstRenderMs"])
            frame.append(
                d.execute_script(
                    "return await new Promise(r => { const w = () => window.__viewer.frameMs"
                    " === null ? setTimeout(w, 5) : r(window.__viewer.frameMs); w(); })"
                )
            )
            loads.append(
                d.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0];"
                    "return t.loadEventEnd - t.startTime"
                )
            )
            switch.append(
                d.execute_script(
                    "const g = document.getElementById('group'); const t = performance.now();"
                    "g.value = String(g.options.length - 1); g.dispatchEvent(new Event('change'));"
                    "return performance.now() - t"
                )
            )
        d.save_screenshot(str(out / "view.png"))
        nodes = d.execute_script("return document.querySelectorAll('svg#graph .node').length")
    finally:
        browser.close()
    result = {
        "folder": str(folder),
        "page": str(page),
        "steps": meta["steps_total"],
        "groups": meta["groups_total"],
        "html_mb": round(meta["bytes"] / 1e6, 2),
        "build_s": round(build_s, 2),
        "first_render_ms_median": round(statistics.median(first), 1),
        "first_frame_ms_median": round(statistics.median(frame), 1),
        "load_event_ms_median": round(statistics.median(loads), 1),
        "switch_group_ms_median": round(statistics.median(switch), 1),
        "nodes_drawn_last_group": nodes,
        "repeats": a.repeats,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
