"""`TextEnv.snapshot` / `restore` semantics: replay, native snapshots, divergence, refusals."""

from __future__ import annotations

import dataclasses
import pickle
from typing import ClassVar

import gymnasium
import pytest

from creditgym import envs
from creditgym.credit.trajectory import Step, Trajectory
from creditgym.envs.base import TextEnv
from creditgym.envs.branching import (
    BranchDivergence,
    BranchingUnsupported,
    EnvSnapshot,
    branching_of,
    require_branching,
    snapshot_from_record,
)
from creditgym.envs.checks import check_branching


class Dice(TextEnv):
    """Each reset draws a start face from `np_random`; 'roll' adds one. Replay needs the seed (or
    the generator state of an unseeded reset)."""

    env_name = "test/Dice-v0"
    default_max_steps = 5

    def task_ids(self, split):
        return ["dice-0", "dice-1"]

    def _reset_task(self, task_id):
        self.face = int(self.np_random.integers(6))
        return f"face {self.face}", self._info()

    def _info(self):
        return {"admissible_actions": ["roll", "wait"], "state_key": f"face={self.face}"}

    def _step(self, action):
        if action == "roll":
            self.face = (self.face + 1) % 6
        return f"face {self.face}", 0.0, False, self._info()


class Frozen(Dice):
    env_name = "test/Frozen-v0"
    branching: ClassVar[str] = "none"


for _cls in (Dice, Frozen):
    if _cls.env_name not in gymnasium.registry:
        gymnasium.register(id=_cls.env_name, entry_point=_cls)


def test_replay_restores_seeded_and_unseeded_resets():
    env = envs.make("test/Dice-v0")
    for seed in (3, None):
        env.reset(seed=seed, options={"task_id": 1})
        env.step("roll")
        snap = env.snapshot()
        assert (snap.seed is None) == (snap.rng is not None) and snap.actions == ("roll",)
        want = env.step("roll")
        other = envs.make("test/Dice-v0")
        other.reset(seed=99)  # another generator state: the snapshot must not depend on it
        obs, info = other.restore(pickle.loads(pickle.dumps(snap)))
        assert info["state_key"] == snap.state_key and info["step"] == 1
        assert other.step("roll") == want


def test_restore_keeps_the_step_limit_of_the_original_episode():
    env = envs.make("test/Dice-v0")
    env.reset(seed=0, options={"task_id": 0})
    for _ in range(4):
        env.step("wait")
    env.restore(env.snapshot())
    assert env.step("wait")[3]  # step 5 of 5: truncated


def test_divergence_and_bad_snapshots_are_clear_errors():
    env = envs.make("test/Dice-v0")
    with pytest.raises(RuntimeError, match="reset"):
        env.snapshot()
    env.reset(seed=0, options={"task_id": 0})
    env.step("roll")
    snap = env.snapshot()
    with pytest.raises(BranchDivergence, match="diverged at step 1") as err:
        env.restore(dataclasses.replace(snap, keys=(), state_key="face=9"))
    assert err.value.expected == "face=9" and err.value.got == snap.state_key
    with pytest.raises(BranchDivergence, match="diverged at step 0"):
        env.restore(dataclasses.replace(snap, keys=("face=9", snap.state_key)))
    with pytest.raises(
        ValueError, match=r"snapshot of test/Dice-v0 \(train\) cannot restore creditgym/KeyRooms"
    ):
        envs.make("creditgym/KeyRooms-v0").restore(snap)
    with pytest.raises(ValueError, match="not in this env's train panel"):
        env.restore(dataclasses.replace(snap, task_id="dice-7"))
    with pytest.raises(ValueError, match="needs 2 state keys"):
        EnvSnapshot("e", "train", "t", 0, 0, ("a",), "k", keys=("k",))
    with pytest.raises(TypeError, match="EnvSnapshot"):
        env.restore({"actions": []})


def test_an_env_that_cannot_branch_refuses():
    env = envs.make("test/Frozen-v0")
    env.reset(seed=0)
    with pytest.raises(BranchingUnsupported, match="test/Frozen-v0 cannot snapshot"):
        env.snapshot()
    assert branching_of("test/Frozen-v0") == "none" and branching_of("test/Dice-v0") == "replay"
    with pytest.raises(ValueError, match="SPO-tree needs env branching.*test/Frozen-v0 cannot"):
        require_branching("test/Frozen-v0", "SPO-tree")
    require_branching("test/Dice-v0", "SPO-tree")
    with pytest.raises(ValueError, match="unknown env id 'nope/Nope-v0'; registered"):
        branching_of("nope/Nope-v0")
    assert check_branching(env).episodes == 0


def test_native_snapshot_keyrooms_matches_replay_and_other_instances():
    env, other = (envs.make("creditgym/KeyRooms-v0", level="medium") for _ in range(2))
    report = check_branching(env, other=other, episodes=2, n_steps=12)
    assert report.restores["native"] > 0 and report.restores["replay"] > 0
    env.reset(seed=0, options={"task_id": 4})
    for _ in range(3):
        env.step(env.expert_action())
    snap = env.snapshot()
    assert isinstance(snap.payload["state"], tuple)  # the state tuple, portable across instances
    assert other.restore(snap) == env.restore(snap.without_payload())


def test_snapshot_from_record_names_the_state_before_step_t():
    env = envs.make("test/Dice-v0")
    obs, info = env.reset(seed=5, options={"task_id": 1})
    steps, key = [], info["state_key"]
    for action in ("roll", "wait", "roll"):
        o, r, _, _, info = env.step(action)
        steps.append(Step(state_key=key, action=action, reward=r, next_state_key=info["state_key"],
                          observation=obs, info=info))  # fmt: skip
        obs, key = o, info["state_key"]
    traj = Trajectory(steps=steps, task_id="dice-1", seed=5)
    snap = snapshot_from_record("test/Dice-v0", "train", traj, 2)
    assert snap.actions == ("roll", "wait") and snap.task_index == 1
    assert envs.make("test/Dice-v0").restore(snap)[0] == steps[2].observation
    with pytest.raises(ValueError, match=r"t must be in \[0, 3\]"):
        snapshot_from_record("test/Dice-v0", "train", traj, 4)
    with pytest.raises(ValueError, match="env error"):
        snapshot_from_record("test/Dice-v0", "train", dataclasses.replace(traj, error="x"), 1)


def test_a_snapshot_of_a_restored_state_without_keys_still_restores():
    env = envs.make("creditgym/KeyRooms-v0", level="small")
    env.reset(seed=0, options={"task_id": 2})
    env.step(env.expert_action())
    snap = dataclasses.replace(env.snapshot(), keys=())  # intermediate keys unknown
    env.restore(snap)
    obs = env.step(env.expert_action())[0]
    later = env.snapshot()
    assert later.keys == () and later.step == 2
    assert (
        envs.make("creditgym/KeyRooms-v0", level="small").restore(later.without_payload())[0] == obs
    )
