"""KeyRooms with a fixed delay per step, so a test can kill a training run mid-iteration on any
machine: ``gymnasium.make("tests.trainers.slow_keyrooms:test/SlowKeyRooms-v0")`` imports this
module, which registers the id."""

from __future__ import annotations

import time

import gymnasium

from creditgym.envs.keyrooms import KeyRoomsEnv

#: Seconds each step sleeps: one iteration of the resume test's rollout takes >= 8 of them.
STEP_DELAY_S = 0.25


class SlowKeyRoomsEnv(KeyRoomsEnv):
    def _step(self, action: str):
        time.sleep(STEP_DELAY_S)
        return super()._step(action)


if "test/SlowKeyRooms-v0" not in gymnasium.registry:
    gymnasium.register(id="test/SlowKeyRooms-v0", entry_point=SlowKeyRoomsEnv)
