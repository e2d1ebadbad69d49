"""Env branching data: `EnvSnapshot`, `BranchDivergence`, and the helpers around them.

Every creditgym env is seeded and deterministic, so a state is named by how it was reached: the
task, the reset seed and the actions taken since. `TextEnv.snapshot()` returns that as an
`EnvSnapshot` (plain, picklable data), and `TextEnv.restore(snap)` brings an env back to it:

- ``branching = "replay"`` (the default): reset with the same task and seed, then step the
  recorded actions, checking the state key after each one.
- ``branching = "snapshot"``: the env also copies its own state into ``payload`` (cheap for
  pure-Python envs: KeyRooms, ALFWorld's fast backend) and restores it without replaying. A
  snapshot without a payload (one built from a record) is replayed.
- ``branching = "none"``: the env cannot branch; `snapshot`/`restore` raise
  `BranchingUnsupported`, and anything that needs branching refuses at config time
  (`require_branching`).

A restored env whose state key differs from the recorded one raises `BranchDivergence`: the
branch is dropped and counted by the caller, never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BRANCHING_MODES",
    "BranchDivergence",
    "Branching",
    "BranchingUnsupported",
    "EnvSnapshot",
    "branching_of",
    "require_branching",
    "snapshot_from_record",
]

Branching = Literal["replay", "snapshot", "none"]
#: The values `TextEnv.branching` may take.
BRANCHING_MODES = ("replay", "snapshot", "none")


@dataclass(frozen=True)
class EnvSnapshot:
    """A restorable env state: which task, which seed, which actions, and the state key reached.

    ``keys`` holds the state key after the reset and after each action (``len(actions) + 1``
    entries) when known, so a replay is checked step by step; ``()`` checks only the end.
    ``rng`` is the env's ``np_random`` state right after an unseeded reset (None when ``seed``
    is set). ``payload`` is an env's native state (None: restore by replay).
    """

    env_id: str
    split: str
    task_id: str
    task_index: int
    seed: int | None
    actions: tuple[str, ...]
    state_key: str
    keys: tuple[str, ...] = ()
    rng: dict[str, Any] | None = field(default=None, compare=False)
    payload: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.keys and len(self.keys) != len(self.actions) + 1:
            raise ValueError(
                f"an EnvSnapshot with {len(self.actions)} actions needs {len(self.actions) + 1} "
                f"state keys (one after the reset and after each action), got {len(self.keys)}"
            )

    @property
    def step(self) -> int:
        """The env's step counter at this state (actions since the reset)."""
        return len(self.actions)

    def without_payload(self) -> EnvSnapshot:
        """The same state, to be restored by replay."""
        from dataclasses import replace

        return replace(self, payload=None)


class BranchDivergence(RuntimeError):
    """A restored env did not reach the recorded state: the branch must be dropped."""

    def __init__(
        self, env_id: str, task_id: str, step: int, expected: str, got: str, why: str = ""
    ):
        self.env_id, self.task_id, self.step = env_id, task_id, step
        self.expected, self.got = expected, got
        reason = why or "state key differs"
        super().__init__(
            f"{env_id} task {task_id!r} diverged at step {step} on restore ({reason}): "
            f"expected state key {_short(expected)}, got {_short(got)}"
        )


class BranchingUnsupported(TypeError):
    """The env declares ``branching = "none"``."""


def _short(text: str, limit: int = 120) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def branching_of(env_id: str) -> str:
    """An env id's ``branching`` mode, read from its class without making the env."""
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    if ":" in env_id:  # gymnasium's "module:EnvId" form: importing the module registers the id
        import importlib

        module, env_id = env_id.split(":", 1)
        importlib.import_module(module)
    try:
        spec = gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        known = sorted(i for i in gymnasium.registry if "/" in i)  # namespaced (text) envs
        raise ValueError(f"unknown env id {env_id!r}; registered: {known}") from exc
    entry = spec.entry_point
    creator = load_env_creator(entry) if isinstance(entry, str) else entry
    mode = getattr(creator, "branching", None)
    if mode is None:  # a factory function: only its product knows
        return "replay"
    return str(mode)


def require_branching(env_id: str, what: str) -> None:
    """Refuse (ValueError naming the env) when `what` needs branching and `env_id` cannot branch."""
    mode = branching_of(env_id)
    if mode == "none":
        raise ValueError(
            f"{what} needs env branching (restoring intermediate states), but {env_id} cannot "
            "branch (its env class sets branching = 'none'); use an env that can"
        )


def snapshot_from_record(env_id: str, split: str, traj: Any, t: int) -> EnvSnapshot:
    """The state before step `t` of a recorded `Trajectory` (``0 <= t <= len(traj)``), to replay.

    Actions are the recorded ones (``Step.action``, what the env received); the state keys are
    ``steps[0].state_key`` then each step's ``next_state_key``; the task index comes from the
    steps' ``info["task_index"]`` and the seed from ``traj.seed``.
    """
    steps: Sequence[Any] = traj.steps
    if not steps:
        raise ValueError("cannot branch an empty trajectory (it has no recorded state)")
    if not 0 <= t <= len(steps):
        raise ValueError(f"t must be in [0, {len(steps)}] for a trajectory of {len(steps)} steps")
    if traj.error is not None:
        raise ValueError(f"cannot branch a trajectory that ended in an env error: {traj.error}")
    info = steps[0].info or {}
    if "task_index" not in info:
        raise ValueError(
            "the trajectory's steps carry no info['task_index'] (recorded by a TextEnv rollout); "
            "pass an EnvSnapshot instead"
        )
    keys = (steps[0].state_key, *(s.next_state_key for s in steps[:t]))
    return EnvSnapshot(
        env_id=env_id,
        split=split,
        task_id=str(info.get("task_id", traj.task_id)),
        task_index=int(info["task_index"]),
        seed=None if traj.seed is None else int(traj.seed),
        actions=tuple(s.action for s in steps[:t]),
        state_key=keys[-1],
        keys=keys,
    )
