"""Rollout collection: B tasks x G trajectories, advancing in lock-step turns.

Every turn makes one batched `agent.act` call for the episodes still running (finished episodes
never act). All G members of a group reset with the same task and seed. An env that raises, or
reports ``info["error"]`` (an infrastructure failure such as a dead server), ends that episode:
it is counted, its env is rebuilt, and the trajectory is dropped from its group, so nothing is
ever trained on a broken episode.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium

from creditgym.agents.base import Agent, Context
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup
from creditgym.envs.base import Panel, TextEnv


class EnvPool:
    """A batch of env instances of one id and split, reused across iterations.

    In-process today; the same interface can be served by worker processes or Ray actors.
    """

    def __init__(
        self,
        env_id: str,
        size: int,
        split: str = "train",
        env_kwargs: dict[str, Any] | None = None,
    ):
        if size < 1:
            raise ValueError(f"EnvPool size must be >= 1, got {size}")
        self.env_id = env_id
        self.split = split
        self.env_kwargs = dict(env_kwargs or {})
        self.envs: list[TextEnv] = [self._make() for _ in range(size)]
        self.restarts = 0

    def _make(self) -> TextEnv:
        env = gymnasium.make(self.env_id, split=self.split, **self.env_kwargs).unwrapped
        if not isinstance(env, TextEnv):
            raise TypeError(f"{self.env_id} is not a creditgym TextEnv (got {type(env).__name__})")
        return env

    @property
    def panel(self) -> Panel:
        return self.envs[0].panel

    def ensure(self, size: int) -> None:
        while len(self.envs) < size:
            self.envs.append(self._make())

    def restart(self, i: int) -> None:
        """Replace env `i` after a failure (its old instance is closed, errors ignored)."""
        with contextlib.suppress(Exception):
            self.envs[i].close()
        self.envs[i] = self._make()
        self.restarts += 1

    def close(self) -> None:
        for env in self.envs:
            with contextlib.suppress(Exception):
                env.close()
        self.envs = []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RolloutBatch:
    groups: list[TrajectoryGroup]
    stats: dict[str, float] = field(default_factory=dict)
    #: Trajectories dropped because of env errors (kept for inspection, never trained on).
    dropped: list[Trajectory] = field(default_factory=list)


@dataclass
class _Episode:
    group: int
    env_index: int
    traj: Trajectory
    obs: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)
    done: bool = False


def collect(
    pool: EnvPool,
    agent: Agent,
    task_indices: Sequence[int],
    group_size: int,
    seeds: Sequence[int],
    on_turn: Callable[[int, int], None] | None = None,
) -> RolloutBatch:
    """Roll out ``len(task_indices)`` groups of ``group_size`` episodes in lock-step.

    ``task_indices[b]`` is an index into the pool's panel and ``seeds[b]`` the reset seed shared by
    group b. ``on_turn(turn, active)`` is called after every turn (progress display).
    """
    if len(seeds) != len(task_indices):
        raise ValueError("need one seed per task")
    n = len(task_indices) * group_size
    pool.ensure(n)
    stats: dict[str, float] = defaultdict(float)
    episodes: list[_Episode] = []
    t_env = 0.0
    for b, (task, seed) in enumerate(zip(task_indices, seeds)):
        for m in range(group_size):
            i = b * group_size + m
            ep = _Episode(group=b, env_index=i, traj=Trajectory(seed=int(seed)))
            t0 = time.perf_counter()
            try:
                ep.obs, ep.info = pool.envs[i].reset(seed=int(seed), options={"task_id": int(task)})
            except Exception as exc:
                _fail(pool, ep, exc, stats)
            t_env += time.perf_counter() - t0
            ep.traj.task_id = str(ep.info.get("task_id", task))
            ep.traj.task_type = str(ep.info.get("task_type", "default"))
            episodes.append(ep)

    t_agent = 0.0
    turn = 0
    while True:
        active = [ep for ep in episodes if not ep.done]
        if not active:
            break
        contexts = []
        for ep in active:
            env = pool.envs[ep.env_index]
            contexts.append(
                Context(
                    task=ep.info.get("task", ""),
                    observation=ep.obs,
                    admissible_actions=ep.info.get("admissible_actions"),
                    history=ep.history,
                    state_key=ep.info["state_key"],
                    info=ep.info,
                    env_id=pool.env_id,
                    family=env.family,
                    episode=ep.env_index,
                    step=len(ep.traj.steps),
                    env=env,
                )
            )
        t0 = time.perf_counter()
        turns = agent.act(contexts)
        t_agent += time.perf_counter() - t0
        if len(turns) != len(active):
            raise RuntimeError(f"agent returned {len(turns)} turns for {len(active)} contexts")
        t0 = time.perf_counter()
        for ep, ctx, out in zip(active, contexts, turns):
            env = pool.envs[ep.env_index]
            try:
                obs, reward, terminated, truncated, info = env.step(out.action)
            except Exception as exc:
                _fail(pool, ep, exc, stats)
                continue
            if info.get("error"):
                ep.traj.error = str(info["error"])
                ep.done = True
                stats["env_errors"] += 1
                continue
            step = Step(
                state_key=ctx.state_key,
                action=out.action,
                reward=float(reward),
                valid=bool(info.get("action_valid", True)) and out.format_ok,
                next_state_key=info["state_key"],
                observation=ctx.observation,
                admissible_actions=ctx.admissible_actions,
                text=out.text or out.action,
                terminated=terminated,
                truncated=truncated,
                info=info,
                prompt_ids=out.prompt_ids,
                response_ids=out.response_ids,
                sampler_logprobs=out.logprobs,
                spans=out.spans,
                extras=out.extras,
            )
            ep.traj.steps.append(step)
            ep.history.append((ctx.observation, out.action))
            ep.obs, ep.info = obs, info
            if terminated or truncated:
                ep.done = True
                ep.traj.won = bool(info.get("won", False))
                ep.traj.info = {"score": float(info.get("score", 0.0)), "truncated": truncated}
        t_env += time.perf_counter() - t0
        turn += 1
        if on_turn is not None:
            on_turn(turn, len(active))

    groups = [
        TrajectoryGroup(task_id="", seed=int(seeds[b]), env_id=pool.env_id)
        for b in range(len(task_indices))
    ]
    dropped: list[Trajectory] = []
    for ep in episodes:
        if ep.traj.error is not None:
            dropped.append(ep.traj)
            continue
        groups[ep.group].trajectories.append(ep.traj)
        groups[ep.group].task_id = ep.traj.task_id
    finished = [t for g in groups for t in g.trajectories]
    steps = sum(len(t) for t in finished)
    by_type: dict[str, list[float]] = defaultdict(list)
    for t in finished:
        by_type[t.task_type].append(float(t.won))
    invalid = sum(1 for t in finished for s in t.steps if not s.valid)
    stats.update(
        {
            "episodes": float(len(finished)),
            "steps": float(steps),
            "turns": float(turn),
            "success": sum(t.won for t in finished) / max(len(finished), 1),
            "mean_return": sum(sum(s.reward for s in t.steps) for t in finished)
            / max(len(finished), 1),
            "mean_score": sum(t.info.get("score", 0.0) for t in finished) / max(len(finished), 1),
            "invalid_rate": invalid / max(steps, 1),
            "mean_length": steps / max(len(finished), 1),
            "dropped": float(len(dropped)),
            "time_env_s": t_env,
            "time_agent_s": t_agent,
        }
    )
    for k, v in by_type.items():
        stats[f"success/{k}"] = sum(v) / len(v)
    return RolloutBatch(groups=groups, stats=dict(stats), dropped=dropped)


def _fail(pool: EnvPool, ep: _Episode, exc: BaseException, stats: dict[str, float]) -> None:
    """Record an env failure: end the episode, mark it errored, and rebuild the env."""
    ep.traj.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    ep.done = True
    ep.info.setdefault("state_key", "")
    stats["env_errors"] += 1
    try:
        pool.restart(ep.env_index)
    except Exception:
        stats["env_restart_failures"] += 1
