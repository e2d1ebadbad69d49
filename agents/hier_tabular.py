"""Hierarchical tabular agent: HiPER's switch / subgoal / action decisions without an LLM.

Three softmax tables, all keyed by the env's `state_key`:

    pi_switch(KEEP | SWITCH | s, g)   whether to keep the current subgoal g (turn 0 always SWITCHes)
    pi_high(g | s)                    which subgoal to pursue, chosen on SWITCH turns
    pi_low(a | s, g)                  which admissible action to take under subgoal g:
                                      softmax(shared[s] + offset[s, g]), so the subgoal refines a
                                      state policy that every subgoal's experience trains

Subgoal candidates are the env's ``info["subgoals"]`` (KeyRooms lists its task's chain: take the
key, open the door, ...); an env without them gets one subgoal per verb of its admissible actions
("go", "take", ...). Each turn is written in HiPER's output format,
``<switch>..</switch><subgoal>..</subgoal><action>..</action>``, and ``Turn.extras`` carries the
parsed ``switch`` and ``subgoal``, exactly what an LLM agent with ``output_format="hiper"`` records,
so the `hiper` credit module reads both the same way.

`update` routes HiPER's span advantages: "switch" trains pi_switch (turns > 0), "subgoal" trains
pi_high on SWITCH turns, "action" trains pi_low. A flat module (no spans) trains all three with its
one advantage per step, so every credit module can drive this agent.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from creditgym.agents.base import Context, Turn
from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, TrajectoryGroup

SWITCH_CHOICES = ("KEEP", "SWITCH")


class _SoftmaxTable:
    """Logits per key over that key's choices: a learned offset per key (zeros when unseen) plus
    an optional shared ``base(key, choices)`` read at every use."""

    def __init__(self, base: Callable[[Hashable, Sequence[str]], np.ndarray] | None = None):
        self.entries: dict[Hashable, tuple[list[str], np.ndarray]] = {}
        self.base = base

    def logits(self, key: Hashable, choices: Sequence[str]) -> np.ndarray:
        out = self.base(key, choices) if self.base is not None else np.zeros(len(choices))
        entry = self.entries.get(key)
        if entry is not None:
            known, offset = entry
            if known == list(choices):
                return out + offset
            index = {c: i for i, c in enumerate(known)}
            out = out + np.array([offset[index[c]] if c in index else 0.0 for c in choices])
        return out

    def probs(self, key: Hashable, choices: Sequence[str]) -> np.ndarray:
        z = self.logits(key, choices)
        z = np.exp(z - z.max())
        return z / z.sum()

    def accumulate(
        self, grads: dict, key: Hashable, choices: Sequence[str], chosen: str, adv: float
    ) -> None:
        """Add adv * (onehot(chosen) - pi(. | key)) to the gradient of `key`."""
        if key not in self.entries:
            self.entries[key] = (list(choices), np.zeros(len(choices)))
        known = self.entries[key][0]
        if chosen not in known:
            return
        grad = grads.setdefault(key, np.zeros(len(known)))
        grad -= adv * self.probs(key, known)
        grad[known.index(chosen)] += adv

    def apply(self, grads: dict, scale: float) -> float:
        sq = 0.0
        for key, grad in grads.items():
            self.entries[key][1][:] += scale * grad
            sq += float(grad @ grad)
        return sq


def subgoal_candidates(ctx: Context) -> list[str]:
    """The env's subgoal list, or one subgoal per verb of the admissible actions."""
    listed = ctx.info.get("subgoals")
    if listed:
        return [str(s) for s in listed]
    verbs = sorted({a.split()[0] for a in ctx.admissible_actions or [] if a.split()})
    return verbs or ["act"]


class HierTabularAgent:
    """Switch / subgoal / action softmax tables trained from (span-routed) advantages."""

    def __init__(self, lr: float = 1.0, seed: int | None = 0, greedy: bool = False):
        self.lr = float(lr)
        self.greedy = greedy
        self.rng = np.random.default_rng(seed)
        #: state_key -> (admissible actions, logits shared by every subgoal): pi_low(. | s, g) =
        #: softmax(shared[s] + offset[s, g]). A benchmark may warm-start it, as the flat agent's
        #: table; every low-level update also trains it, so what one subgoal learns about a
        #: state helps the others. Every state the agent has acted in is listed.
        self.table: dict[str, tuple[list[str], np.ndarray]] = {}
        self.switch = _SoftmaxTable()
        self.high = _SoftmaxTable()
        self.low = _SoftmaxTable(base=self._shared_logits)
        #: The current subgoal of every running episode (by rollout index).
        self._current: dict[int, str] = {}

    def _sample(self, p: np.ndarray) -> int:
        return int(p.argmax()) if self.greedy else int(self.rng.choice(len(p), p=p))

    def _shared_logits(self, key: Hashable, choices: Sequence[str]) -> np.ndarray:
        entry = self.table.get(key[0])  # key = (state_key, subgoal)
        if entry is None:
            return np.zeros(len(choices))
        index = {a: i for i, a in enumerate(entry[0])}
        return np.array([entry[1][index[a]] if a in index else 0.0 for a in choices])

    def probs(
        self, state_key: str, actions: Sequence[str], subgoals: Sequence[str] = ()
    ) -> np.ndarray:
        """Marginal pi(a | s) for a freshly chosen subgoal: sum_g pi_high(g|s) pi_low(a|s,g).

        The agent's real policy also depends on the subgoal it keeps, which is not part of the
        env state; this Markov marginal is what exact-advantage comparisons can use.
        """
        goals = list(subgoals) or [k[1] for k in self.low.entries if k[0] == state_key]
        if not goals:
            return self.low.probs((state_key, None), actions)
        ph = self.high.probs(state_key, goals)
        return sum(w * self.low.probs((state_key, g), actions) for w, g in zip(ph, goals))

    def branch_memory(self, env_id: str, episode: int, prefix: Sequence[Step]) -> None:
        """Set episode `episode`'s current subgoal to the one of the recorded `prefix`'s last step
        (branching rollouts call this before a continuation's first turn)."""
        subgoal = prefix[-1].extras.get("subgoal") if prefix else None
        if subgoal is None:
            self._current.pop(episode, None)
        else:
            self._current[episode] = subgoal

    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        turns = []
        for ctx in contexts:
            acts = ctx.admissible_actions
            if not acts:
                raise ValueError(
                    f"the hierarchical tabular agent needs admissible actions; {ctx.env_id} gave none"
                )
            goals = subgoal_candidates(ctx)
            self.table.setdefault(ctx.state_key, (list(acts), np.zeros(len(acts))))
            current = self._current.get(ctx.episode) if ctx.step > 0 else None
            if current is None:
                switch = "SWITCH"
            else:
                p = self.switch.probs((ctx.state_key, current), SWITCH_CHOICES)
                switch = SWITCH_CHOICES[self._sample(p)]
            if switch == "SWITCH":
                current = goals[self._sample(self.high.probs(ctx.state_key, goals))]
            self._current[ctx.episode] = current
            action = acts[self._sample(self.low.probs((ctx.state_key, current), acts))]
            text = f"<switch>{switch}</switch><subgoal>{current}</subgoal><action>{action}</action>"
            extras = {"switch": switch, "subgoal": current, "subgoals": goals}
            turns.append(Turn(action=action, text=text, extras=extras))
        return turns

    def update(self, groups: Sequence[TrajectoryGroup], advantages: Advantages) -> dict[str, float]:
        """One policy-gradient step per table, scaled by lr / (number of trajectories)."""
        n_traj = sum(len(g) for g in groups)
        if n_traj == 0:
            return {"grad_norm": 0.0}
        spans = advantages.spans or {}
        flat = advantages.values
        a_switch = spans.get("switch", flat)
        a_subgoal = spans.get("subgoal", flat)
        a_action = spans.get("action", flat)
        grads: tuple[dict, dict, dict] = ({}, {}, {})
        pos = 0
        for g in groups:
            for traj in g.trajectories:
                for t, step in enumerate(traj.steps):
                    i = pos
                    pos += 1
                    sw, goal = step.extras.get("switch"), step.extras.get("subgoal")
                    if sw is None or goal is None or not step.admissible_actions:
                        continue
                    s = step.state_key
                    if t > 0:
                        prev = traj.steps[t - 1].extras.get("subgoal")
                        self.switch.accumulate(
                            grads[0], (s, prev), SWITCH_CHOICES, sw, float(a_switch[i])
                        )
                    if sw == "SWITCH":
                        goals = step.extras.get("subgoals") or [goal]
                        self.high.accumulate(grads[1], s, goals, goal, float(a_subgoal[i]))
                    acts = step.admissible_actions
                    self.low.accumulate(grads[2], (s, goal), acts, step.action, float(a_action[i]))
        scale = self.lr / n_traj
        for (s, _goal), grad in grads[2].items():  # the shared part of pi_low's logits
            known = self.low.entries[(s, _goal)][0]
            actions, shared = self.table.setdefault(s, (list(known), np.zeros(len(known))))
            if actions == known:
                shared += scale * grad
            else:
                index = {a: i for i, a in enumerate(actions)}
                for a, g_a in zip(known, grad):
                    if a in index:
                        shared[index[a]] += scale * g_a
        sq = sum(
            table.apply(gr, scale) for table, gr in zip((self.switch, self.high, self.low), grads)
        )
        return {"grad_norm": scale * sq**0.5, "states": float(len(self.table))}
