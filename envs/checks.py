"""Contract checks of creditgym envs beyond Gymnasium's `check_env`: `check_branching`.

`check_branching(env)` plays seeded episodes whose first part follows random actions or the
env's expert, then requires that

- replaying the episode from its reset (twice) gives identical observations, rewards, done flags
  and state keys at every step;
- ``restore(snapshot())`` taken at the start, the middle and near the end of the episode returns
  the (obs, info) the env gave there, and continuing with the recorded actions reproduces the
  rest of the episode; for native snapshots, also after dropping the payload (replay); the
  middle snapshot also after a pickle round trip on a second instance, when one is given.

It returns what restores cost (seconds per restore, snapshot sizes), which
``scripts/bench_branching.py`` reports for every env.
"""

from __future__ import annotations

import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from creditgym.envs.base import TextEnv
from creditgym.envs.branching import EnvSnapshot

__all__ = ["BranchingReport", "check_branching"]

#: Words a random action is made of when an env lists no admissible actions.
_WORDS = ("look", "go", "north", "take", "open", "search", "answer", "help", "click", "next")


@dataclass
class BranchingReport:
    """What `check_branching` measured."""

    env_id: str
    branching: str
    episodes: int = 0
    #: Restores done (native and replayed) and their mean seconds, by kind.
    restores: dict[str, int] = field(default_factory=dict)
    restore_s: dict[str, float] = field(default_factory=dict)
    #: Mean number of steps replayed per replayed restore.
    replay_steps: float = 0.0
    #: Mean pickled size of a snapshot, bytes, by kind.
    snapshot_bytes: dict[str, float] = field(default_factory=dict)
    step_s: float = 0.0
    reset_s: float = 0.0

    def add(self, kind: str, seconds: float) -> None:
        n = self.restores.get(kind, 0)
        self.restore_s[kind] = (self.restore_s.get(kind, 0.0) * n + seconds) / (n + 1)
        self.restores[kind] = n + 1


@dataclass
class _Played:
    """One played episode: per step (obs, reward, terminated, truncated, info) and snapshots."""

    seed: int
    task: int
    actions: list[str]
    frames: list[tuple[str, float, bool, bool, dict[str, Any]]]
    snaps: list[EnvSnapshot]


def _key_view(frame: tuple[str, float, bool, bool, dict[str, Any]]) -> tuple:
    obs, reward, terminated, truncated, info = frame
    return (obs, reward, terminated, truncated, info["state_key"], info.get("admissible_actions"))


def _random_action(env: TextEnv, info: dict[str, Any], rng: random.Random) -> str:
    acts = info.get("admissible_actions")
    if acts:
        return rng.choice(list(acts))
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))


def _play(
    env: TextEnv, seed: int, task: int, n_steps: int, prefix: str, rng: random.Random,
    report: BranchingReport,
) -> _Played:  # fmt: skip
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed, options={"task_id": task})
    report.reset_s += time.perf_counter() - t0
    frames = [(obs, 0.0, False, False, info)]
    snaps = [env.snapshot()]
    actions: list[str] = []
    t_step = 0.0
    for i in range(n_steps):
        action = None
        if prefix == "expert" and i < n_steps // 2 + 1:
            action = env.expert_action()
        if action is None:
            action = _random_action(env, info, rng)
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        t_step += time.perf_counter() - t0
        actions.append(action)
        frames.append((obs, reward, terminated, truncated, info))
        snaps.append(env.snapshot())
        if terminated or truncated:
            break
    report.step_s += t_step / max(len(actions), 1)
    return _Played(seed, task, actions, frames, snaps)


def _same(what: str, env_id: str, want: Any, got: Any) -> None:
    if want != got:
        raise AssertionError(f"{env_id}: {what} differs:\n  expected {want!r}\n  got      {got!r}")


def _check_from(
    env: TextEnv, played: _Played, m: int, snap: EnvSnapshot, kind: str, report: BranchingReport
) -> None:
    """Restore `snap` (the state after `m` actions) and continue with the recorded actions."""
    name = f"{report.env_id} ({played.actions[:m]} then restore [{kind}])"
    t0 = time.perf_counter()
    obs, info = env.restore(snap)
    report.add(kind, time.perf_counter() - t0)
    want_obs, _, _, _, want_info = played.frames[m]
    _same(f"{name}: restored observation", report.env_id, want_obs, obs)
    _same(f"{name}: restored info", report.env_id, want_info, info)
    for i, action in enumerate(played.actions[m:], start=m + 1):
        got = env.step(action)
        _same(f"{name}: step {i}", report.env_id, _key_view(played.frames[i]), _key_view(got))
    snap_after = env.snapshot()
    _same(
        f"{name}: actions after restore", report.env_id, tuple(played.actions), snap_after.actions
    )


def check_branching(
    env: TextEnv,
    *,
    other: TextEnv | None = None,
    episodes: int = 2,
    n_steps: int = 8,
    seed: int = 0,
    tasks: list[int] | None = None,
    prefixes: tuple[str, ...] = ("random", "expert"),
    progress: Callable[[str], None] | None = None,
) -> BranchingReport:
    """Check `env`'s `snapshot`/`restore` (see the module docstring); returns the costs.

    `other` is a second instance of the same env (same id and kwargs): snapshots taken on `env`
    must restore there too. ``episodes`` seeded episodes per prefix kind in `prefixes`
    ("random"; "expert" when the env has one) of at most ``n_steps`` steps each. Raises `AssertionError` on the first
    difference, naming the env, the actions and the step.
    """
    env = env.unwrapped  # type: ignore[assignment]
    name = env.spec.id if env.spec is not None else env.env_name
    report = BranchingReport(env_id=name, branching=env.branching)
    if env.branching == "none":
        return report
    rng = random.Random(seed)
    panel = env.panel
    tasks = tasks if tasks is not None else [rng.randrange(len(panel)) for _ in range(episodes)]
    unknown = set(prefixes) - {"random", "expert"}
    if unknown or not prefixes:
        raise ValueError(
            f"prefixes must be a non-empty subset of ('random', 'expert'), got {prefixes}"
        )
    kinds = [k for k in prefixes if k == "random" or type(env).has_expert()]
    replayed_steps = []
    for kind in kinds:
        for e, task in enumerate(tasks[:episodes]):
            ep_seed = seed + 101 * e
            played = _play(env, ep_seed, task, n_steps, kind, rng, report)
            report.episodes += 1
            n = len(played.actions)
            # replay from the reset, twice: identical frames
            for _ in range(2):
                obs, info = env.reset(seed=ep_seed, options={"task_id": task})
                _same(f"{name}: replayed reset", name, played.frames[0][0], obs)
                _same(f"{name}: replayed reset info", name, played.frames[0][4], info)
                for i, action in enumerate(played.actions, start=1):
                    got = env.step(action)
                    _same(f"{name}: replayed step {i} ({action!r})", name,
                          _key_view(played.frames[i]), _key_view(got))  # fmt: skip
            points = sorted({0, n // 2, max(n - 1, 0)})
            for m in points:
                snap = played.snaps[m]
                _same(f"{name}: snapshot keys", name,
                      tuple(f[4]["state_key"] for f in played.frames[: m + 1]), snap.keys)  # fmt: skip
                variants = [("replay", snap.without_payload())]
                if snap.payload is not None:
                    variants.insert(0, ("native", snap))
                for label, s in variants:
                    data = pickle.dumps(s)
                    report.snapshot_bytes[label] = max(
                        report.snapshot_bytes.get(label, 0), len(data)
                    )
                    _check_from(env, played, m, s, label, report)
                    if other is not None and m == n // 2:  # a pickled copy, on another instance
                        _check_from(other.unwrapped, played, m, pickle.loads(data), label, report)  # type: ignore[arg-type]
                replayed_steps.append(m)
            if progress is not None:
                progress(f"{name}: {kind} episode {e} ({n} steps) ok")
    report.replay_steps = sum(replayed_steps) / max(len(replayed_steps), 1)
    report.step_s /= max(report.episodes, 1)
    report.reset_s /= max(report.episodes, 1)
    return report
