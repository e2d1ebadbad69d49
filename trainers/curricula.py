"""Task samplers that learn from results: Single-stream PO's prioritised sampler and DUMP.

Both register in `creditgym.trainers.samplers` (``sampler.name``), keep their whole state in
``state_dict`` and learn in ``observe(task_indices, batch)`` (SSPO) or ``after_credit(groups,
adv, ctx)`` (DUMP, which reads the credit module's advantages).

- ``sspo_priority`` (arXiv 2509.13232; verl ``recipe/spo``): per task a success value v = S / N
  (S <- rho S + won, N <- rho N + 1, prior v = 0.5, N = 1), weight w = sqrt(v (1 - v)) /
  N^gamma + eps; each iteration draws B tasks with p proportional to w, without replacement
  unless B exceeds the panel. The ref's gamma = 0 (no N term) is the default; the paper's gamma
  in [0, 1] is an option. rho is a constant here (``decay``, the tracker's rho_max by default):
  the sampler does not see the policy's drift **[recon]**.
- ``dump`` (arXiv 2504.09710; code ZhentingWang/DUMP ``curriculum_learning.py``): distributions
  = the panel's task types. Per type a window of the last ``window`` samples' a_i = mean_t A_{i,t}
  (signed, ref; ``per="step"``: mean_t |A_{i,t}|); learnability L_j = mean |a| over the window;
  UCB_j = L_j + sqrt(2 ln(N + 1) / (n_j + 1)) with n_j the samples of type j so far and N their
  sum; p = softmax(UCB / tau), tau = 0.1. Each slot draws a type from p, then a task of that type
  uniformly (with replacement). Weights start uniform (no samples yet: equal UCB).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from creditgym.trainers.samplers import TaskSampler, register_sampler

__all__ = ["DUMPSampler", "SSPOPrioritySampler", "dump_scores", "panel_task_types"]


def panel_task_types(
    env_id: str, split: str, env_kwargs: dict, indices: Sequence[int]
) -> list[str]:
    """The task type of each panel index (``info["task_type"]`` after a reset on that task)."""
    import gymnasium

    from creditgym import envs  # noqa: F401  (registers the envs)

    env = gymnasium.make(env_id, split=split, **(env_kwargs or {})).unwrapped
    try:
        out = []
        for i in indices:
            _, info = env.reset(seed=0, options={"task_id": int(i)})
            out.append(str(info.get("task_type", "default")))
        return out
    finally:
        env.close()


@register_sampler("sspo_priority")
class SSPOPrioritySampler(TaskSampler):
    """Prioritised task sampling of Single-stream PO (module docstring)."""

    def __init__(
        self,
        num_tasks: int,
        seed: int,
        gamma: float = 0.0,
        eps: float = 0.05,
        decay: float = 0.96,
        prior_value: float = 0.5,
        prior_count: float = 1.0,
    ):
        super().__init__(num_tasks, seed)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.gamma, self.eps, self.decay = float(gamma), float(eps), float(decay)
        self.s = np.full(self.num_tasks, prior_value * prior_count, dtype=np.float64)
        self.n = np.full(self.num_tasks, float(prior_count), dtype=np.float64)
        self.draws = 0

    def weights(self) -> np.ndarray:
        """w(x) = sqrt(v (1 - v)) / N^gamma + eps for every task."""
        v = np.clip(self.s / self.n, 0.0, 1.0)
        return np.sqrt(v * (1.0 - v)) / self.n**self.gamma + self.eps

    def next(self, k: int) -> list[int]:
        w = self.weights()
        rng = np.random.default_rng([self.seed, self.draws, 19])
        self.draws += 1
        replace = k > self.num_tasks
        return [int(i) for i in rng.choice(self.num_tasks, size=k, replace=replace, p=w / w.sum())]

    def observe(self, task_indices: Sequence[int], batch: Any) -> None:
        for task, group in zip(task_indices, batch.groups):
            wins = [float(t.won) for t in group.trajectories]
            if wins:
                self.s[task] = self.decay * self.s[task] + sum(wins)
                self.n[task] = self.decay * self.n[task] + len(wins)

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "seed": self.seed,
            "draws": self.draws,
            "s": self.s.tolist(),
            "n": self.n.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.seed, self.draws = int(state["seed"]), int(state["draws"])
        self.s = np.asarray(state["s"], dtype=np.float64)
        self.n = np.asarray(state["n"], dtype=np.float64)


def dump_scores(
    learnability: Sequence[float], counts: Sequence[float], tau: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """DUMP's UCB_j = L_j + sqrt(2 ln(N + 1) / (n_j + 1)) and p = softmax(UCB / tau)."""
    L = np.asarray(learnability, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    ucb = L + np.sqrt(2.0 * np.log(n.sum() + 1.0) / (n + 1.0))
    z = ucb / tau
    p = np.exp(z - z.max())
    return ucb, p / p.sum()


@register_sampler("dump")
class DUMPSampler(TaskSampler):
    """UCB curriculum over task types (module docstring). ``task_types`` (one per panel index)
    must be given, or bound later with `bind_task_types` before the first `next`."""

    needs_task_types = True

    def __init__(
        self,
        num_tasks: int,
        seed: int,
        task_types: Sequence[str] | None = None,
        tau: float = 0.1,
        window: int = 300,
        per: str = "trajectory",
    ):
        super().__init__(num_tasks, seed)
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if per not in ("trajectory", "step"):
            raise ValueError(f"per={per!r} is not valid; choose trajectory or step")
        self.tau, self.window, self.per = float(tau), int(window), per
        self.draws = 0
        self.types: list[str] = []
        self.task_types: list[str] | None = None
        self.samples: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}
        if task_types is not None:
            self.bind_task_types(task_types)

    def bind_task_types(self, task_types: Sequence[str]) -> None:
        """Set each panel index's task type (the distributions)."""
        if len(task_types) != self.num_tasks:
            raise ValueError(f"dump: {len(task_types)} task types for {self.num_tasks} tasks")
        self.task_types = [str(t) for t in task_types]
        self.types = sorted(set(self.task_types))
        for t in self.types:
            self.samples.setdefault(t, [])
            self.counts.setdefault(t, 0)

    def probabilities(self) -> np.ndarray:
        """p over `types` (sorted) from the current window and counts."""
        L = [
            float(np.mean(np.abs(self.samples[t]))) if self.samples[t] else 0.0 for t in self.types
        ]
        return dump_scores(L, [self.counts[t] for t in self.types], self.tau)[1]

    def next(self, k: int) -> list[int]:
        if self.task_types is None:
            raise ValueError("the dump sampler needs the panel's task types (bind_task_types)")
        p = self.probabilities()
        rng = np.random.default_rng([self.seed, self.draws, 23])
        self.draws += 1
        members = {t: [i for i, x in enumerate(self.task_types) if x == t] for t in self.types}
        out = []
        for _ in range(k):
            t = self.types[int(rng.choice(len(self.types), p=p))]
            out.append(int(members[t][int(rng.integers(len(members[t])))]))
        return out

    def after_credit(self, groups: Sequence[Any], adv: Any, ctx: Any) -> None:
        """Add each trajectory's a_i to its type's window (the credit module's raw output)."""
        pos = 0
        for g in groups:
            for t in g.trajectories:
                a = np.asarray(adv.values[pos : pos + len(t)], dtype=np.float64)
                pos += len(t)
                if not len(a):
                    continue
                ttype = t.task_type if t.task_type in self.samples else None
                if ttype is None:
                    continue
                value = float(np.mean(np.abs(a))) if self.per == "step" else float(a.mean())
                window = self.samples[ttype]
                window.append(value)
                del window[: -self.window]
                self.counts[ttype] += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "seed": self.seed,
            "draws": self.draws,
            "task_types": self.task_types,
            "samples": {k: list(v) for k, v in self.samples.items()},
            "counts": dict(self.counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.seed, self.draws = int(state["seed"]), int(state["draws"])
        if state["task_types"] is not None:
            self.bind_task_types(state["task_types"])
        self.samples = {k: [float(x) for x in v] for k, v in state["samples"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}
