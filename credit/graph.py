"""`TrajectoryGraph`: a group's trajectories merged into one graph of states and actions.

This is the one place where a group's states, edges and paths are identified, and the contract
the credit modules that group steps read (GiGPO's anchor states, HGPO's k-histories, SALT's edges
and prefixes). It is array-form, built in one linear pass over the group's steps, once per group
(`TrajectoryGroup.graph()` caches it), and holds for every step, in the group's flat
(trajectory, step) order:

- ``node[j]``: the id of the state the action was taken in (`Step.state_key`);
- ``next_node[j]``: the id of the state it led to (`Step.next_state_key`);
- ``edge[j]``: the id of the pair (state, action); two steps taking the same action in the same
  state share it even if they led to different next states;
- ``path_ids(k)[j]``: on request, the id of the last k states ending at the step (-1 when the
  trajectory has fewer than k states so far); ``path_ids(1)`` is ``node``;
- ``prefix_ids()[j]``: on request, the id of the whole history (s_0, a_0, ..., s_t, a_t).

Ids are dense integers 0..n-1 in first-seen order (node ids: the states steps were taken in, then
the states only ever reached). States are equal when their keys are equal.
`to_networkx` gives the same graph as a `networkx.MultiDiGraph` (nodes: states with ``visits``,
``start``, ``ends``; keyed edges s -> s' with key = action and ``occurrences``), for export and
pictures; `to_dict` / `from_dict` (and the JSON pair) round-trip it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import networkx as nx

    from creditgym.credit.trajectory import TrajectoryGroup

Occurrence = tuple[int, int]  # (trajectory index in the group, step index)


class TrajectoryGraph:
    """States (nodes) and actions (edges) of one group, with per-step ids in array form.

    ``states[n]`` is the key of node n; ``edge_keys[e]`` the (node id, action) of edge e;
    ``lengths[i]`` the number of steps of trajectory i. ``start[n]`` counts the trajectories that
    start in node n and ``ends[n]`` those whose last step led to it.
    """

    def __init__(
        self,
        states: list[str],
        node: np.ndarray,
        next_node: np.ndarray,
        actions: list[str],
        lengths: np.ndarray,
        edge: np.ndarray | None = None,
        edge_keys: list[tuple[int, str]] | None = None,
    ):
        self.states = states
        self.node = np.asarray(node, dtype=np.int64)
        self.next_node = np.asarray(next_node, dtype=np.int64)
        self.actions = actions
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._edge = None if edge is None else np.asarray(edge, dtype=np.int64)
        self._edge_keys = edge_keys
        self._paths: dict[int, np.ndarray] = {1: self.node}
        self._prefix: np.ndarray | None = None

    @classmethod
    def from_group(cls, group: TrajectoryGroup) -> TrajectoryGraph:
        """A few linear passes over the group's steps. Node ids: the states steps were taken in,
        in first-seen order, then the states only ever reached."""
        steps = [s for traj in group.trajectories for s in traj.steps]
        ids: dict[str, int] = {}
        node = [ids.setdefault(s.state_key, len(ids)) for s in steps]
        nxt = [ids.setdefault(s.next_state_key, len(ids)) for s in steps]
        actions = [s.action for s in steps]
        lengths = [len(traj.steps) for traj in group.trajectories]
        return cls(list(ids), node, nxt, actions, lengths)

    # ------------------------------------------------------------------ per-step ids
    @property
    def edge(self) -> np.ndarray:
        """Edge id (state, action) of every step, computed on first use."""
        if self._edge is None or self._edge_keys is None:
            table: dict[tuple[int, str], int] = {}
            ids = [table.setdefault(k, len(table)) for k in zip(self.node.tolist(), self.actions)]
            self._edge, self._edge_keys = np.asarray(ids, dtype=np.int64), list(table)
        return self._edge

    @property
    def edge_keys(self) -> list[tuple[int, str]]:
        """(node id, action) of every edge id."""
        self.edge  # noqa: B018  (computes both)
        return self._edge_keys  # type: ignore[return-value]

    @property
    def num_steps(self) -> int:
        return len(self.node)

    @property
    def step_index(self) -> np.ndarray:
        """t of every step (its index inside its trajectory)."""
        starts = np.repeat(np.cumsum(self.lengths) - self.lengths, self.lengths)
        return np.arange(self.num_steps, dtype=np.int64) - starts

    @property
    def traj_index(self) -> np.ndarray:
        """i of every step (its trajectory's index in the group)."""
        return np.repeat(np.arange(len(self.lengths), dtype=np.int64), self.lengths)

    def path_ids(self, k: int) -> np.ndarray:
        """Id of the last k states (s_{t-k+1}, ..., s_t) of every step; -1 where t + 1 < k.

        Built like a trie, key_k(t) = (key_{k-1}(t-1), s_t), one `np.unique` per level, and
        cached per k.
        """
        if k < 1:
            raise ValueError(f"path length k must be >= 1, got {k}")
        if k not in self._paths:
            prev = self.path_ids(k - 1)
            shifted = np.roll(prev, 1)  # key_{k-1} of the previous step of the same trajectory
            present = self.step_index >= k - 1
            code = np.where(present, shifted * len(self.states) + self.node, -1)
            out = np.full(self.num_steps, -1, dtype=np.int64)
            if present.any():
                out[present] = np.unique(code[present], return_inverse=True)[1].reshape(-1)
            self._paths[k] = out
        return self._paths[k]

    def prefix_ids(self) -> np.ndarray:
        """Id of every step's whole history (s_0, a_0, ..., s_t, a_t): the nodes of a trie."""
        if self._prefix is None:
            trie: dict[tuple[int, int], int] = {}
            out = []
            pos = 0
            edge = self.edge.tolist()
            for n in self.lengths.tolist():
                parent = -1
                for e in edge[pos : pos + n]:
                    parent = trie.setdefault((parent, e), len(trie))
                    out.append(parent)
                pos += n
            self._prefix = np.asarray(out, dtype=np.int64)
        return self._prefix

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.states)

    @property
    def start(self) -> np.ndarray:
        firsts = (np.cumsum(self.lengths) - self.lengths)[self.lengths > 0]
        return np.bincount(self.node[firsts], minlength=len(self.states))

    @property
    def ends(self) -> np.ndarray:
        lasts = (np.cumsum(self.lengths) - 1)[self.lengths > 0]
        return np.bincount(self.next_node[lasts], minlength=len(self.states))

    def _occurrences(self) -> list[Occurrence]:
        return list(zip(self.traj_index.tolist(), self.step_index.tolist()))

    def edges(self) -> Iterator[tuple[str, str, str, list[Occurrence]]]:
        """(state, next_state, action, occurrences) for every distinct transition, in
        first-seen order."""
        table: dict[tuple[int, int, str], list[Occurrence]] = {}
        for occ, s, s2, a in zip(
            self._occurrences(), self.node.tolist(), self.next_node.tolist(), self.actions
        ):
            table.setdefault((s, s2, a), []).append(occ)
        for (s, s2, a), occ in table.items():
            yield self.states[s], self.states[s2], a, occ

    @property
    def num_edges(self) -> int:
        """Distinct transitions (state, action, next state)."""
        return len(set(zip(self.node.tolist(), self.next_node.tolist(), self.actions)))

    def action_occurrences(self) -> dict[tuple[str, str], list[Occurrence]]:
        """(state, action) -> occurrences: the steps of each edge id."""
        out: dict[tuple[str, str], list[Occurrence]] = {
            (self.states[n], a): [] for n, a in self.edge_keys
        }
        keys = list(out)
        for occ, e in zip(self._occurrences(), self.edge.tolist()):
            out[keys[e]].append(occ)
        return out

    def visits(self, state_key: str) -> list[Occurrence]:
        """Occurrences of the steps taken in that state."""
        try:
            n = self.states.index(state_key)
        except ValueError:
            return []
        return [o for o, m in zip(self._occurrences(), self.node.tolist()) if m == n]

    # ------------------------------------------------------------------ export
    def to_networkx(self) -> nx.MultiDiGraph:
        """The graph as a `networkx.MultiDiGraph` (built on each call, public API only)."""
        import networkx as nx

        g = nx.MultiDiGraph()
        visits: list[list[Occurrence]] = [[] for _ in self.states]
        for occ, n in zip(self._occurrences(), self.node.tolist()):
            visits[n].append(occ)
        start, ends = self.start.tolist(), self.ends.tolist()
        for n, key in enumerate(self.states):
            g.add_node(key, visits=visits[n], start=start[n], ends=ends[n])
        for s, s2, a, occ in self.edges():
            g.add_edge(s, s2, key=a, occurrences=occ)
        return g

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the states, and per trajectory its steps as (node, action, next node)."""
        rows, pos = [], 0
        node, nxt = self.node.tolist(), self.next_node.tolist()
        for n in self.lengths.tolist():
            rows.append([[node[j], self.actions[j], nxt[j]] for j in range(pos, pos + n)])
            pos += n
        return {"states": list(self.states), "trajectories": rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrajectoryGraph:
        rows = data["trajectories"]
        flat = [step for row in rows for step in row]
        return cls(
            list(data["states"]),
            np.array([s[0] for s in flat], np.int64),
            np.array([s[2] for s in flat], np.int64),
            [str(s[1]) for s in flat],
            np.array([len(r) for r in rows], np.int64),
        )

    @classmethod
    def from_json(cls, text: str) -> TrajectoryGraph:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrajectoryGraph):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TrajectoryGraph(nodes={len(self)}, edges={self.num_edges}, steps={self.num_steps})"


def batch_ids(per_group: list[np.ndarray]) -> np.ndarray:
    """Concatenate per-group ids (dense within each group, -1 = absent) into ids unique over the
    batch; each absent entry gets an id of its own (a singleton)."""
    out, offset = [], 0
    for ids in per_group:
        ids = np.asarray(ids, dtype=np.int64)
        out.append(np.where(ids >= 0, ids + offset, -1))
        offset += int(ids.max()) + 1 if ids.size else 0
    flat = np.concatenate(out) if out else np.zeros(0, np.int64)
    absent = flat < 0
    if absent.any():
        flat[absent] = offset + np.arange(int(absent.sum()))
    return flat
