"""The drawn state graph of one group: collapsed for readability, laid out by a graph library.

A group of G trajectories of T steps visits up to G x T + 1 distinct states. Drawn one node per
state, an 8 x 50 group is a hairball, so the drawn graph keeps only some states:

- every start state and every final state;
- every state visited at least twice (by two trajectories, or twice by one);
- when that is still more than ``top_k`` states, the ``top_k`` most visited of them (starts and
  ends always stay).

The states left out lie on runs between kept states. Each distinct run becomes one *chain* node
("5 states"): a chain of states visited once collapses into one box, and a state hidden by the
top-k cut shows up inside the chains of the trajectories that passed it. Edges join consecutive
drawn nodes along each trajectory, one per (tail, head, action), with the number of traversals
and the trajectories that made them; more than a few distinct actions between the same two nodes
(a small model's many invalid outputs that all stay in place) are drawn as one edge.

Layout: Graphviz ``dot`` (Debian's graphviz; ``make install-graphviz``) read back as JSON, with
B-spline edges; without ``dot`` on the PATH, networkx's multipartite layout by depth from the
start state, with straight edges. The page draws the result itself, so both look alike.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from creditgym.credit.trajectory import TrajectoryGroup

__all__ = ["LAYOUTS", "DrawnGraph", "collapse", "layout"]

LAYOUTS = ("auto", "dot", "networkx")
#: Points per inch in Graphviz coordinates.
_PT = 72.0


@dataclass
class DrawnGraph:
    """The drawn graph of one group.

    ``nodes``: dicts with ``id``, ``kind`` ("state" or "chain"), ``states`` (state keys; one for
    a state node), ``visits`` (step occurrences in it, final states counted), ``start``, ``won_ends``
    and ``lost_ends`` (trajectories ending there). ``edges``: dicts with ``id``, ``source``,
    ``target`` (node indices), ``action``, ``count``, ``trajectories`` and ``won`` (traversals by
    won trajectories). ``step_node[i][t]`` / ``step_edge[i][t]``: the node a step was taken from
    (the chain, for a hidden state) and the edge it belongs to (None inside a chain).
    """

    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    step_node: list[list[int]] = field(default_factory=list)
    step_edge: list[list[int | None]] = field(default_factory=list)
    raw_nodes: int = 0
    raw_edges: int = 0
    hidden_states: int = 0
    top_k_applied: bool = False


def _paths(group: TrajectoryGroup) -> list[list[str]]:
    """Each trajectory's states s_0 .. s_T (T steps give T + 1 states)."""
    out = []
    for traj in group.trajectories:
        if not traj.steps:
            out.append([])
            continue
        out.append([s.state_key for s in traj.steps] + [traj.steps[-1].next_state_key])
    return out


def collapse(group: TrajectoryGroup, top_k: int = 150, max_parallel: int = 3) -> DrawnGraph:
    """The drawn graph of ``group`` (see the module docstring for what is kept).

    More than ``max_parallel`` distinct actions between the same two nodes are drawn as one edge
    ("12 different actions"; the edge keeps their list in ``actions``).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    paths = _paths(group)
    visits: Counter[str] = Counter(s for p in paths for s in p)
    keep, top_k_applied = _kept_states(paths, visits, top_k)

    g = DrawnGraph(raw_nodes=len(visits), hidden_states=len(visits) - len(keep))
    g.raw_edges = len({(s.state_key, s.next_state_key, s.action) for t in group for s in t.steps})
    node_of: dict[tuple[str, ...] | str, int] = {}
    edge_of: dict[tuple[int, int, str], int] = {}

    def node(key: tuple[str, ...] | str) -> int:
        if key not in node_of:
            node_of[key] = len(g.nodes)
            chain = isinstance(key, tuple)
            g.nodes.append(
                {
                    "id": len(g.nodes),
                    "kind": "chain" if chain else "state",
                    "states": list(key) if chain else [key],
                    "visits": 0,
                    "start": 0,
                    "won_ends": 0,
                    "lost_ends": 0,
                }
            )
        return node_of[key]

    def edge(u: int, v: int, action: str, traj: int, won: bool) -> int:
        k = (u, v, action)
        if k not in edge_of:
            edge_of[k] = len(g.edges)
            g.edges.append(
                {
                    "id": len(g.edges),
                    "source": u,
                    "target": v,
                    "action": action,
                    "count": 0,
                    "trajectories": [],
                    "won": 0,
                }
            )
        e = g.edges[edge_of[k]]
        e["count"] += 1
        e["won"] += int(won)
        if traj not in e["trajectories"]:
            e["trajectories"].append(traj)
        return edge_of[k]

    for i, (traj, path) in enumerate(zip(group.trajectories, paths)):
        elements = [(node(key), first) for key, first in _elements(path, keep)]
        node_at = [0] * len(path)
        for j, (n, start) in enumerate(elements):
            stop = elements[j + 1][1] if j + 1 < len(elements) else len(path)
            for p in range(start, stop):
                node_at[p] = n
            g.nodes[n]["visits"] += stop - start
        if path:
            g.nodes[node_at[0]]["start"] += 1
            g.nodes[node_at[-1]]["won_ends" if traj.won else "lost_ends"] += 1
        edges: list[int | None] = []
        for t, step in enumerate(traj.steps):
            u, v = node_at[t], node_at[t + 1]
            inside_chain = u == v and g.nodes[u]["kind"] == "chain"
            edges.append(None if inside_chain else edge(u, v, step.action, i, traj.won))
        g.step_node.append(node_at[: len(traj.steps)])
        g.step_edge.append(edges)
    g.top_k_applied = top_k_applied
    _merge_parallel(g, max_parallel)
    return g


def _kept_states(paths: list[list[str]], visits: Counter[str], top_k: int) -> tuple[set[str], bool]:
    """States drawn as their own node: starts, ends and states visited twice or more, at most
    ``top_k`` of them (starts and ends always; then the most visited, first seen first)."""
    first_seen = {s: i for i, s in enumerate(dict.fromkeys(s for p in paths for s in p))}
    pinned = {p[0] for p in paths if p} | {p[-1] for p in paths if p}
    keep = pinned | {s for s, n in visits.items() if n >= 2}
    if len(keep) <= top_k:
        return keep, False
    rest = sorted(keep - pinned, key=lambda s: (-visits[s], first_seen[s]))
    return pinned | set(rest[: max(0, top_k - len(pinned))]), True


def _elements(path: list[str], keep: set[str]) -> list[tuple[tuple[str, ...] | str, int]]:
    """A path split into drawn elements: (kept state or run of hidden states, first position)."""
    elements: list[tuple[tuple[str, ...] | str, int]] = []
    pos = 0
    while pos < len(path):
        if path[pos] in keep:
            elements.append((path[pos], pos))
            pos += 1
        else:
            end = pos
            while end < len(path) and path[end] not in keep:
                end += 1
            elements.append((tuple(path[pos:end]), pos))
            pos = end
    return elements


def _merge_parallel(g: DrawnGraph, max_parallel: int) -> None:
    """Draw the edges between one pair of nodes as one edge when there are more than
    ``max_parallel`` of them (e.g. many different invalid actions that all stay in place)."""
    pairs: dict[tuple[int, int], list[int]] = {}
    for e in g.edges:
        pairs.setdefault((e["source"], e["target"]), []).append(e["id"])
    remap: dict[int, int] = {}
    edges: list[dict[str, Any]] = []
    for (u, v), ids in pairs.items():
        if len(ids) <= max_parallel:
            for i in ids:
                remap[i] = len(edges)
                edges.append({**g.edges[i], "id": len(edges)})
            continue
        merged = {
            "id": len(edges),
            "source": u,
            "target": v,
            "action": f"{len(ids)} different actions",
            "actions": [g.edges[i]["action"] for i in ids],
            "count": sum(g.edges[i]["count"] for i in ids),
            "won": sum(g.edges[i]["won"] for i in ids),
            "trajectories": sorted({t for i in ids for t in g.edges[i]["trajectories"]}),
        }
        for i in ids:
            remap[i] = len(edges)
        edges.append(merged)
    g.edges = edges
    g.step_edge = [[None if e is None else remap[e] for e in row] for row in g.step_edge]


# ----------------------------------------------------------------------------- layout
def _node_size(n: dict[str, Any]) -> tuple[float, float]:
    """Width and height in inches: circles grow with visits, chains are boxes."""
    if n["kind"] == "chain":
        return 0.55, 0.3
    d = 0.22 + 0.06 * math.sqrt(max(n["visits"], 1))
    d = min(d, 0.7)
    return d, d


def _dot_source(g: DrawnGraph) -> str:
    lines = [
        "digraph G {",
        "  rankdir=LR; nodesep=0.18; ranksep=0.35; splines=true; outputorder=edgesfirst;",
        '  node [label="", fixedsize=true];',
    ]
    for n in g.nodes:
        w, h = _node_size(n)
        shape = "box" if n["kind"] == "chain" else "circle"
        lines.append(f"  n{n['id']} [shape={shape}, width={w:.3f}, height={h:.3f}];")
    for e in g.edges:
        lines.append(f'  n{e["source"]} -> n{e["target"]} [eid="{e["id"]}"];')
    lines.append("}")
    return "\n".join(lines)


def _parse_points(pos: str) -> tuple[list[list[float]], list[float] | None]:
    """A Graphviz edge ``pos`` ("e,x,y p1 p2 ...") as control points and the arrow tip."""
    tip = None
    points = []
    for part in pos.split():
        if part.startswith("e,"):
            _, x, y = part.split(",")
            tip = [float(x), float(y)]
        elif part.startswith("s,"):
            continue
        else:
            x, y = part.split(",")[:2]
            points.append([float(x), float(y)])
    return points, tip


def _layout_dot(g: DrawnGraph, dot: str, timeout: float) -> dict[str, Any]:
    run = subprocess.run(
        [dot, "-Tjson0"],
        input=_dot_source(g),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"dot failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    out = json.loads(run.stdout)
    x0, y0, x1, y1 = (float(v) for v in out["bb"].split(","))
    height = y1 - y0

    def flip(p: list[float]) -> list[float]:
        return [round(p[0] - x0, 1), round(height - (p[1] - y0), 1)]

    nodes = {}
    for obj in out.get("objects", []):
        idx = int(obj["name"][1:])
        x, y = (float(v) for v in obj["pos"].split(","))
        nodes[idx] = flip([x, y])
    edges = {}
    for e in out.get("edges", []):
        points, tip = _parse_points(e["pos"])
        edges[int(e["eid"])] = {
            "points": [flip(p) for p in points],
            "tip": flip(tip) if tip else None,
        }
    return _assemble(g, nodes, edges, x1 - x0, height, "dot")


def _layout_networkx(g: DrawnGraph) -> dict[str, Any]:
    """Columns by breadth-first depth from the start nodes (networkx multipartite layout)."""
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(n["id"] for n in g.nodes)
    graph.add_edges_from((e["source"], e["target"]) for e in g.edges)
    starts = [n["id"] for n in g.nodes if n["start"]] or [0]
    depth = dict.fromkeys(graph.nodes, 0)
    seen = set()
    frontier = list(starts)
    d = 0
    while frontier:
        nxt = []
        for u in frontier:
            if u in seen:
                continue
            seen.add(u)
            depth[u] = d
            nxt.extend(v for v in graph.successors(u) if v not in seen)
        frontier, d = nxt, d + 1
    for n in graph.nodes:
        graph.nodes[n]["layer"] = depth[n]
    pos = nx.multipartite_layout(graph, subset_key="layer", align="vertical", scale=1.0)
    layers = max(depth.values(), default=0) + 1
    widest = max(Counter(depth.values()).values(), default=1)
    width, height = max(60.0 * layers, 100.0), max(40.0 * widest, 60.0)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)

    def place(p) -> list[float]:
        fx = 0.5 if xhi == xlo else (p[0] - xlo) / (xhi - xlo)
        fy = 0.5 if yhi == ylo else (p[1] - ylo) / (yhi - ylo)
        return [round(20 + fx * (width - 40), 1), round(20 + fy * (height - 40), 1)]

    nodes = {n: place(p) for n, p in pos.items()}
    edges = {}
    for e in g.edges:
        a, b = nodes[e["source"]], nodes[e["target"]]
        edges[e["id"]] = {"points": [a, b], "tip": None}
    return _assemble(g, nodes, edges, width, height, "networkx")


def _assemble(g, nodes, edges, width, height, engine) -> dict[str, Any]:
    out_nodes = []
    for n in g.nodes:
        w, h = _node_size(n)
        out_nodes.append(
            {**n, "x": nodes[n["id"]][0], "y": nodes[n["id"]][1], "w": w * _PT, "h": h * _PT}
        )
    out_edges = [{**e, **edges[e["id"]]} for e in g.edges]
    return {
        "nodes": out_nodes,
        "edges": out_edges,
        "width": round(width, 1),
        "height": round(height, 1),
        "engine": engine,
        "raw_nodes": g.raw_nodes,
        "raw_edges": g.raw_edges,
        "hidden_states": g.hidden_states,
        "top_k_applied": g.top_k_applied,
    }


def layout(g: DrawnGraph, engine: str = "auto", timeout: float = 60.0) -> dict[str, Any]:
    """Positions (in points, y down) of the drawn graph's nodes and edges, plus its size.

    ``engine``: "dot" (Graphviz; an error when missing), "networkx", or "auto" (dot when on the
    PATH, else networkx).
    """
    if engine not in LAYOUTS:
        raise ValueError(f"unknown layout {engine!r}; choose one of {list(LAYOUTS)}")
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise RuntimeError(
            "layout 'dot' needs Graphviz: run `make install-graphviz` (apt-get install graphviz)"
        )
    if engine == "networkx" or dot is None:
        return _layout_networkx(g)
    return _layout_dot(g, dot, timeout)
