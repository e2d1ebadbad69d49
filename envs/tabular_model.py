"""`TabularModel`: the complete finite model of one task, for exact values and an optimal expert.

Any env whose reachable state space is finite and deterministic (KeyRooms is the built-in one)
can expose its task as a `TabularModel` by overriding the optional `TextEnv.model` (callers ask
`TextEnv.has_model()` first): every state reachable from the initial state, the
admissible actions of each state, and where each action leads with what reward. With the model,
the value of any tabular policy is not estimated but computed: `evaluate` solves the Bellman
equations as a sparse linear system and returns V^pi, Q^pi and the true advantage
A^pi = Q^pi - V^pi, the reference a credit module's step advantages are compared against.

Conventions (they match how the credit modules see an episode):

- Values are for the infinite-horizon discounted return sum_t gamma^t r_t. Terminal states are
  absorbing with value 0 and have no actions.
- The env's step limit is ignored. Truncation at ``max_steps`` is a time-out, not a property of
  the state: the step counter is not part of ``state_key``, so two visits of a state at different
  steps fall into one GiGPO anchor group and must share one value. The only value that is a
  function of the state alone is the time-limit-free one (the "partial-episode bootstrapping"
  view of time-outs, Pardo et al. 2018). With gamma = 0.95 and step limits several times the
  optimal length, the difference to a horizon-aware value is at most gamma^(steps left) times
  the largest reward.
- Only admissible actions are in the model, so the invalid-action penalty of ALGORITHMS.md never
  applies to a policy over the model's actions (a tabular agent that samples from
  ``info["admissible_actions"]`` never pays it).

States are indexed 0..n-1 and named by their ``state_key`` strings (`states`, `index`); per state
``actions[s]``, ``next_state[s]`` and ``reward[s]`` are parallel lists. A policy is a sequence of
probability vectors, ``policy[s]`` over ``actions[s]`` (empty for terminal states).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.sparse.linalg import spsolve

__all__ = ["PolicyValues", "TabularModel"]


@dataclass
class PolicyValues:
    """Exact values of one policy: V per state, Q and A = Q - V per (state, action), ragged."""

    V: np.ndarray
    Q: list[np.ndarray]
    A: list[np.ndarray]
    gamma: float


class TabularModel:
    """A finite deterministic MDP: states (by key), admissible actions, successors, rewards.

    Build it with `explore` (breadth-first from an initial state through an env's own transition
    function) or directly from lists. ``goal`` marks the states the expert heads for (by default
    every terminal state reached by a positive reward).
    """

    def __init__(
        self,
        states: Sequence[str],
        actions: Sequence[Sequence[str]],
        next_state: Sequence[Sequence[int]],
        reward: Sequence[Sequence[float]],
        terminal: Sequence[bool] | np.ndarray,
        initial: int = 0,
        goal: Sequence[bool] | np.ndarray | None = None,
    ):
        n = len(states)
        if not (len(actions) == len(next_state) == len(reward) == len(terminal) == n):
            raise ValueError(
                "states, actions, next_state, reward and terminal must have one entry per state; "
                f"got {len(states)}, {len(actions)}, {len(next_state)}, {len(reward)}, "
                f"{len(terminal)}"
            )
        if not 0 <= initial < n:
            raise ValueError(f"initial must be a state index in [0, {n}), got {initial}")
        self.states: list[str] = list(states)
        self.index: dict[str, int] = {k: i for i, k in enumerate(self.states)}
        if len(self.index) != n:
            raise ValueError("state keys must be unique")
        self.actions: list[list[str]] = [list(a) for a in actions]
        self.terminal: np.ndarray = np.asarray(terminal, dtype=bool)
        self.initial: int = int(initial)

        counts = np.fromiter((len(a) for a in self.actions), dtype=np.int64, count=n)
        for s in range(n):
            if len(next_state[s]) != counts[s] or len(reward[s]) != counts[s]:
                raise ValueError(f"state {s}: actions, next_state and reward differ in length")
            if self.terminal[s] and counts[s]:
                raise ValueError(f"state {s} is terminal but has actions (terminals are absorbing)")
        # Flat (CSR-like) layout: transitions of state s are offsets[s]:offsets[s+1] of
        # flat_next / flat_reward. The ragged `next_state` / `reward` lists are views built on
        # first use (a model of 10^5 states would otherwise hold 2 * 10^5 small lists).
        self.offsets: np.ndarray = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        total = int(self.offsets[-1])
        self.flat_next: np.ndarray = np.fromiter(
            (x for row in next_state for x in row), dtype=np.int64, count=total
        )
        self.flat_reward: np.ndarray = np.fromiter(
            (x for row in reward for x in row), dtype=np.float64, count=total
        )
        self._next_rows: list[list[int]] | None = None
        self._reward_rows: list[list[float]] | None = None
        if self.flat_next.size and (self.flat_next.min() < 0 or self.flat_next.max() >= n):
            raise ValueError("next_state holds an index outside [0, n_states)")
        self.flat_state: np.ndarray = np.repeat(np.arange(n, dtype=np.int64), counts)
        if goal is None:
            goal_mask = np.zeros(n, dtype=bool)
            goal_mask[self.flat_next[(self.flat_reward > 0) & self.terminal[self.flat_next]]] = True
        else:
            goal_mask = np.asarray(goal, dtype=bool)
            if goal_mask.shape != (n,):
                raise ValueError(f"goal must have one flag per state ({n}), got {goal_mask.shape}")
        self.goal: np.ndarray = goal_mask
        self._distance: np.ndarray | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def explore(
        cls,
        initial: Hashable,
        expand: Callable[[Any], tuple[bool, Sequence[tuple[str, Any, float]]]],
        key: Callable[[Any], str] = str,
        max_states: int = 1_000_000,
    ) -> TabularModel:
        """Enumerate every state reachable from `initial`, breadth first.

        ``expand(state) -> (terminal, [(action, next_state, reward), ...])`` is the env's own
        transition function (states are any hashable value); ``key(state)`` names a state.
        Raises ValueError beyond `max_states` states rather than exhausting memory.
        """
        ids: dict[Any, int] = {initial: 0}
        order: list[Any] = [initial]
        actions: list[list[str]] = []
        nexts: list[list[int]] = []
        rewards: list[list[float]] = []
        terminal: list[bool] = []
        i = 0
        while i < len(order):
            is_terminal, transitions = expand(order[i])
            terminal.append(bool(is_terminal))
            row_a, row_n, row_r = [], [], []
            if not is_terminal:
                for action, nxt, r in transitions:
                    j = ids.get(nxt)
                    if j is None:
                        j = ids[nxt] = len(order)
                        order.append(nxt)
                        if len(order) > max_states:
                            raise ValueError(
                                f"more than {max_states} reachable states; the model is too large"
                            )
                    row_a.append(action)
                    row_n.append(j)
                    row_r.append(r)
            actions.append(row_a)
            nexts.append(row_n)
            rewards.append(row_r)
            i += 1
        return cls([key(s) for s in order], actions, nexts, rewards, terminal, initial=0)

    # ------------------------------------------------------------------ basic facts
    @property
    def next_state(self) -> list[list[int]]:
        """``next_state[s][a]``: the state index that action a of state s leads to."""
        if self._next_rows is None:
            self._next_rows = [row.tolist() for row in self._ragged(self.flat_next)]
        return self._next_rows

    @property
    def reward(self) -> list[list[float]]:
        """``reward[s][a]``: the reward of taking action a in state s."""
        if self._reward_rows is None:
            self._reward_rows = [row.tolist() for row in self._ragged(self.flat_reward)]
        return self._reward_rows

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_transitions(self) -> int:
        return int(self.offsets[-1])

    def _state(self, state: int | str) -> int:
        if isinstance(state, str):
            if state not in self.index:
                raise KeyError(f"unknown state key {state!r}")
            return self.index[state]
        s = int(state)
        if not 0 <= s < self.n_states:
            raise IndexError(f"state index {s} outside [0, {self.n_states})")
        return s

    def uniform_policy(self) -> list[np.ndarray]:
        """The policy that picks uniformly among each state's actions."""
        return [np.full(len(a), 1.0 / len(a)) if a else np.zeros(0) for a in self.actions]

    # ------------------------------------------------------------------ exact evaluation
    def _flat_policy(self, policy: Sequence[Sequence[float]]) -> np.ndarray:
        if len(policy) != self.n_states:
            raise ValueError(f"policy has {len(policy)} entries, the model {self.n_states} states")
        flat = np.zeros(self.n_transitions, dtype=np.float64)
        for s, probs in enumerate(policy):
            lo, hi = self.offsets[s], self.offsets[s + 1]
            p = np.asarray(probs, dtype=np.float64).reshape(-1)
            if p.shape[0] != hi - lo:
                raise ValueError(
                    f"policy[{s}] has {p.shape[0]} probabilities for {hi - lo} actions "
                    f"({self.states[s]!r})"
                )
            if hi > lo and not (
                np.all(np.isfinite(p)) and p.min() >= -1e-12 and abs(p.sum() - 1.0) <= 1e-6
            ):
                raise ValueError(
                    f"policy[{s}] is not a probability vector (min {p.min()}, sum {p.sum()})"
                )
            flat[lo:hi] = p
        return flat

    def evaluate(self, policy: Sequence[Sequence[float]], gamma: float = 0.95) -> PolicyValues:
        """Exact V^pi, Q^pi and A^pi = Q^pi - V^pi of a stochastic policy.

        Solves (I - gamma P_pi) V = r_pi with a sparse direct solver, where P_pi and r_pi are the
        policy's transition matrix and expected one-step reward. Terminal states are absorbing
        with value 0 (their rows are empty). See the module docstring for why the step limit is
        not part of these values.
        """
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1) for the discounted system, got {gamma}")
        n = self.n_states
        pi = self._flat_policy(policy)
        r_pi = np.bincount(self.flat_state, weights=pi * self.flat_reward, minlength=n)
        weight = pi * gamma
        P = sp.csr_matrix((weight, (self.flat_state, self.flat_next)), shape=(n, n))
        system = (sp.identity(n, format="csr") - P).tocsc()
        V = np.asarray(spsolve(system, r_pi), dtype=np.float64).reshape(n)
        V[self.terminal] = 0.0
        Q_flat = self._q_flat(V, gamma)
        A_flat = Q_flat - V[self.flat_state]
        return PolicyValues(V=V, Q=self._ragged(Q_flat), A=self._ragged(A_flat), gamma=gamma)

    def q_values(self, V: np.ndarray, gamma: float = 0.95) -> list[np.ndarray]:
        """Q(s, a) = r(s, a) + gamma V(s') for given state values V (ragged per state)."""
        return self._ragged(self._q_flat(np.asarray(V, dtype=np.float64), gamma))

    def _q_flat(self, V: np.ndarray, gamma: float) -> np.ndarray:
        v_next = np.where(self.terminal[self.flat_next], 0.0, V[self.flat_next])
        return self.flat_reward + gamma * v_next

    def _ragged(self, flat: np.ndarray) -> list[np.ndarray]:
        return np.split(flat, self.offsets[1:-1])

    def optimal_values(self, gamma: float = 0.95, tol: float = 1e-12) -> np.ndarray:
        """V* by value iteration (states without actions keep value 0)."""
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma}")
        n = self.n_states
        V = np.zeros(n)
        has_actions = np.diff(self.offsets) > 0
        starts = self.offsets[:-1][has_actions]
        while True:
            Q = self._q_flat(V, gamma)
            new = np.zeros(n)
            if starts.size:
                new[has_actions] = np.maximum.reduceat(Q, starts)
            if np.max(np.abs(new - V), initial=0.0) <= tol:
                return new
            V = new

    # ------------------------------------------------------------------ shortest paths
    @property
    def distance(self) -> np.ndarray:
        """Fewest steps from each state to a goal state (inf where no goal is reachable)."""
        if self._distance is None:
            n = self.n_states
            # Reverse graph with unit weights; duplicate edges collapse to one.
            rev = sp.csr_matrix(
                (np.ones(self.n_transitions), (self.flat_next, self.flat_state)), shape=(n, n)
            )
            rev.data[:] = 1.0
            goals = np.flatnonzero(self.goal)
            if goals.size == 0:
                self._distance = np.full(n, np.inf)
            else:
                self._distance = csgraph.dijkstra(rev, directed=True, indices=goals, min_only=True)
        return self._distance

    def shortest_path_actions(self, state: int | str) -> list[str]:
        """The actions of `state` that start a shortest path to a goal ([] if none does)."""
        s = self._state(state)
        d = self.distance
        if not np.isfinite(d[s]) or d[s] == 0:
            return []
        lo, hi = self.offsets[s], self.offsets[s + 1]
        on_path = d[self.flat_next[lo:hi]] == d[s] - 1
        return [a for a, ok in zip(self.actions[s], on_path) if ok]
