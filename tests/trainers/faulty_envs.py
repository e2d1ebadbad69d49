"""Fault-injection envs for the env-backend tests (test doubles at the edge: the faults only).

``test/Faulty-v0`` is the rollout tests' Walk env plus actions that break the process it runs in:
"die" ends the process at once (a crashed worker), "hang" sleeps far past any step timeout, "leak"
keeps 200 MB allocated, and "slow" sleeps a little (so a test can act while steps are running).
With ``fail_if_exists=path`` the env cannot be built while that file exists (a rebuild that
fails). Remote workers make it as ``tests.trainers.faulty_envs:test/Faulty-v0``, which imports
this module there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium

from tests.trainers.test_rollout import Walk

FAULTY = "tests.trainers.faulty_envs:test/Faulty-v0"

_LEAK: list[bytearray] = []


class Faulty(Walk):
    env_name = "test/Faulty-v0"

    def __init__(self, split: str = "train", fail_if_exists: str | None = None, **kwargs):
        if fail_if_exists is not None and Path(fail_if_exists).exists():
            raise RuntimeError(f"cannot build the env while {fail_if_exists} exists")
        super().__init__(split=split, **kwargs)

    def _step(self, action):
        if action == "die":
            os._exit(3)
        if action == "hang":
            time.sleep(600)
        if action == "leak":
            block = bytearray(200 * 2**20)
            block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
            _LEAK.append(block)
            action = "stay"
        if action == "slow":
            time.sleep(0.5)
            action = "step"
        return super()._step(action)


if "test/Faulty-v0" not in gymnasium.registry:
    gymnasium.register(id="test/Faulty-v0", entry_point=Faulty)
