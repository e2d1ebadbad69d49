"""`TrajectoryGraph`: a group's trajectories merged into one graph of states and actions.

Nodes are canonical env states (`Step.state_key`); an edge s -> s' keyed by the action taken
there. Each edge remembers every (trajectory, step) that produced it, so a credit module can ask
"which trajectories took action a in state s". Built in one linear pass over the steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from creditgym.credit.trajectory import TrajectoryGroup

Occurrence = tuple[int, int]  # (trajectory index in the group, step index)


class TrajectoryGraph:
    """A `networkx.MultiDiGraph` of states (nodes) and actions (keyed edges).

    Node attributes: ``visits`` (list of occurrences of steps taken in that state),
    ``start`` (number of trajectories starting there), ``terminal_returns`` (returns of the
    trajectories that ended there). Edge attributes (edge key = action): ``occurrences``.
    """

    def __init__(self, graph: nx.MultiDiGraph | None = None):
        self.g: nx.MultiDiGraph = graph if graph is not None else nx.MultiDiGraph()

    @classmethod
    def from_group(cls, group: TrajectoryGroup) -> TrajectoryGraph:
        g = nx.MultiDiGraph()
        nodes = g._node  # direct dict access keeps the build linear with a small constant
        for i, traj in enumerate(group.trajectories):
            for t, step in enumerate(traj.steps):
                s, s2 = step.state_key, step.next_state_key
                if s not in nodes:
                    g.add_node(s, visits=[], start=0, ends=0)
                if s2 not in nodes:
                    g.add_node(s2, visits=[], start=0, ends=0)
                nodes[s]["visits"].append((i, t))
                if t == 0:
                    nodes[s]["start"] += 1
                if t == len(traj.steps) - 1:
                    nodes[s2]["ends"] += 1
                edges = g._adj[s].get(s2)
                if edges is not None and step.action in edges:
                    edges[step.action]["occurrences"].append((i, t))
                else:
                    g.add_edge(s, s2, key=step.action, occurrences=[(i, t)])
        return cls(g)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return self.g.number_of_nodes()

    @property
    def num_edges(self) -> int:
        return self.g.number_of_edges()

    def edges(self) -> Iterator[tuple[str, str, str, list[Occurrence]]]:
        """(state, next_state, action, occurrences) for every distinct edge."""
        for s, s2, a, data in self.g.edges(keys=True, data=True):
            yield s, s2, a, data["occurrences"]

    def action_occurrences(self) -> dict[tuple[str, str], list[Occurrence]]:
        """(state, action) -> occurrences, merging edges that led to different next states."""
        out: dict[tuple[str, str], list[Occurrence]] = {}
        for s, _s2, a, occ in self.edges():
            out.setdefault((s, a), []).extend(occ)
        return out

    def visits(self, state_key: str) -> list[Occurrence]:
        return list(self.g.nodes[state_key]["visits"])

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        nodes = [
            {
                "id": n,
                "visits": [list(o) for o in d["visits"]],
                "start": d["start"],
                "ends": d["ends"],
            }
            for n, d in self.g.nodes(data=True)
        ]
        edges = [
            {"source": s, "target": s2, "action": a, "occurrences": [list(o) for o in occ]}
            for s, s2, a, occ in self.edges()
        ]
        return {"nodes": nodes, "edges": edges}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryGraph:
        g = nx.MultiDiGraph()
        for n in data["nodes"]:
            g.add_node(
                n["id"],
                visits=[tuple(o) for o in n["visits"]],
                start=n["start"],
                ends=n["ends"],
            )
        for e in data["edges"]:
            g.add_edge(
                e["source"],
                e["target"],
                key=e["action"],
                occurrences=[tuple(o) for o in e["occurrences"]],
            )
        return cls(g)

    @classmethod
    def from_json(cls, text: str) -> TrajectoryGraph:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrajectoryGraph):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TrajectoryGraph(nodes={len(self)}, edges={self.num_edges})"
