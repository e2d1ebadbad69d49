"""Lock-step rollout collection: grouping, finished episodes, env failures."""

import gymnasium
import pytest

from creditgym.agents.base import Turn
from creditgym.agents.random_agent import RandomAgent
from creditgym.envs.base import TextEnv
from creditgym.trainers.rollout import EnvPool, collect


class Walk(TextEnv):
    """Walk to position `goal` (the task index + 1). 'crash' raises; 'flaky' reports an error."""

    env_name = "test/Walk-v0"
    default_max_steps = 6

    def task_ids(self, split):
        return [f"walk-{i}" for i in range(5)]

    def _reset_task(self, task_id):
        self.goal = int(task_id.split("-")[1]) + 1
        self.pos = 0
        self.start_draw = int(self.np_random.integers(1000))  # seed-dependent
        return "pos 0", self._info()

    def _info(self):
        return {
            "task": f"reach {self.goal}",
            "admissible_actions": ["step", "stay"],
            "state_key": f"{self.goal}:{self.pos}",
            "won": self.pos >= self.goal,
            "task_type": "even" if self.goal % 2 == 0 else "odd",
            "draw": self.start_draw,
        }

    def _step(self, action):
        if action == "crash":
            raise RuntimeError("engine died")
        if action == "flaky":
            return "server gone", 0.0, True, {**self._info(), "error": "server restarted"}
        if action == "step":
            self.pos += 1
        won = self.pos >= self.goal
        return f"pos {self.pos}", 10.0 * won, won, self._info()


if "test/Walk-v0" not in gymnasium.registry:
    gymnasium.register(id="test/Walk-v0", entry_point=Walk)


class Scripted:
    """Always steps, except the given episode indices do a fixed action at a given turn."""

    def __init__(self, special=None):
        self.special = special or {}
        self.calls = []

    def act(self, contexts):
        self.calls.append([c.episode for c in contexts])
        return [Turn(action=self.special.get((c.episode, c.step), "step")) for c in contexts]


def test_groups_share_task_and_seed_and_finished_episodes_never_act():
    pool = EnvPool("test/Walk-v0", 6)
    agent = Scripted()
    batch = collect(pool, agent, task_indices=[0, 2], group_size=3, seeds=[11, 12])
    g0, g1 = batch.groups
    assert [len(t) for t in g0.trajectories] == [1, 1, 1]  # goal 1
    assert [len(t) for t in g1.trajectories] == [3, 3, 3]  # goal 3
    assert g0.task_id == "walk-0" and g1.task_id == "walk-2"
    draws = {t.steps[0].info["draw"] for t in g1.trajectories}
    assert len(draws) == 1  # same seed -> same reset randomness
    # Turn 1: all 6 act; turns 2-3: only group 1's three episodes.
    assert agent.calls == [[0, 1, 2, 3, 4, 5], [3, 4, 5], [3, 4, 5]]
    assert batch.stats["success"] == 1.0 and batch.stats["success/odd"] == 1.0
    step = g1.trajectories[0].steps[1]
    assert (step.state_key, step.next_state_key) == ("3:1", "3:2")
    assert step.admissible_actions == ["step", "stay"]


def test_env_crashes_are_counted_dropped_and_the_env_rebuilt():
    """Group 0 loses one member of 3 and keeps 2; group 1 loses two and is dropped whole."""
    pool = EnvPool("test/Walk-v0", 6)
    agent = Scripted({(1, 0): "crash", (3, 1): "flaky", (4, 1): "flaky"})
    batch = collect(pool, agent, task_indices=[2, 2], group_size=3, seeds=[0, 1])
    assert batch.stats["env_errors"] == 3
    assert batch.stats["dropped"] == 4 and batch.stats["dropped_groups"] == 1
    assert [len(g) for g in batch.groups] == [2, 0]
    assert "engine died" in batch.dropped[0].error
    assert batch.dropped[-1].error is None  # the survivor of the dropped group
    assert pool.restarts == 1 and pool.health()["restarts"] == 1
    # The rebuilt env works on the next collection.
    again = collect(pool, Scripted(), task_indices=[0, 0], group_size=2, seeds=[0, 1])
    assert again.stats["dropped"] == 0 and again.stats["success"] == 1.0


def test_truncated_episodes_and_random_agent():
    pool = EnvPool("test/Walk-v0", 2)
    stay = Scripted({(i, t): "stay" for i in range(2) for t in range(10)})
    batch = collect(pool, stay, [4], group_size=2, seeds=[0])
    assert all(len(t) == 6 and t.steps[-1].truncated and not t.won for t in batch.groups[0])
    batch = collect(pool, RandomAgent(seed=0), [0], group_size=2, seeds=[0])
    assert batch.stats["episodes"] == 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        EnvPool("test/Walk-v0", 0)
    with pytest.raises(ValueError, match="one seed per task"):
        collect(EnvPool("test/Walk-v0", 1), Scripted(), [0], 1, seeds=[])
