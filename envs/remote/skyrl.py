"""creditgym envs as SkyRL-gym environments (``skyrl_gym.envs.BaseTextEnv``).

    from creditgym.envs.remote.skyrl import register_all
    register_all()                     # every creditgym env, under its own id
    env = skyrl_gym.make("creditgym/KeyRooms-v0", env_config={}, extras={"env_kwargs": {"level": "small"}, "seed": 3})
    prompt, meta = env.init([{"role": "system", "content": "..."}])
    out = env.step("<action>take red key</action>")     # observations, reward, done, metadata

SkyRL's generator builds an env per dataset row and hands it the row's ``extras``; these keys
are read: ``env_kwargs`` (constructor kwargs), ``split``, ``seed``, ``task_id`` (panel index) and
``max_turns``. `init` resets the env and appends the first observation (with the admissible
actions, when the env lists them) as a user message. `step` takes the model's text: for envs
whose syntax is ``action`` the command inside ``<action>...</action>`` (or the whole stripped
text), for ``search`` and ``tool`` envs the text as is, since they parse their own tags.
``metadata`` is the step's `info`; ``done`` is terminated or truncated (or ``max_turns`` reached).
"""

from __future__ import annotations

import re
from typing import Any

import skyrl_gym
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

from creditgym import envs
from creditgym.envs.base import TextEnv
from creditgym.envs.remote.wire import jsonable

__all__ = ["CreditgymSkyRLEnv", "register_all"]

_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.S)


def _user(text: str, info: dict[str, Any]) -> dict[str, str]:
    admissible = info.get("admissible_actions")
    if admissible:
        text += "\nAdmissible actions: " + ", ".join(admissible)
    return {"role": "user", "content": text}


class CreditgymSkyRLEnv(BaseTextEnv):
    """One creditgym env, one episode per SkyRL env instance (see the module docstring)."""

    def __init__(
        self, env_config: Any = None, extras: dict[str, Any] | None = None, env_id: str = ""
    ):
        super().__init__()
        extras = dict(extras or {})
        if not env_id:
            raise ValueError("CreditgymSkyRLEnv needs env_id= (register_all sets it)")
        self.env_id = env_id
        self.env: TextEnv = envs.make(
            env_id, split=extras.get("split", "train"), **dict(extras.get("env_kwargs") or {})
        )
        self.seed = extras.get("seed")
        self.task_id = extras.get("task_id")
        self.max_turns = int(extras.get("max_turns") or self.env.max_steps)
        self.info: dict[str, Any] = {}
        self.total_reward = 0.0

    def init(self, prompt: list[dict[str, str]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
        options = None if self.task_id is None else {"task_id": int(self.task_id)}
        obs, self.info = self.env.reset(seed=self.seed, options=options)
        self.turns = 0
        return [*prompt, _user(obs, self.info)], jsonable(self.info)

    def step(self, action: str) -> BaseTextEnvStepOutput:
        self.turns += 1
        command = action
        if getattr(self.env, "action_syntax", "action") == "action":
            match = _ACTION_TAG.search(action)
            command = (match.group(1) if match else action).strip()
        obs, reward, terminated, truncated, self.info = self.env.step(command)
        self.total_reward += reward
        done = terminated or truncated or self.turns >= self.max_turns
        return BaseTextEnvStepOutput(
            observations=[] if done else [_user(obs, self.info)],
            reward=float(reward),
            done=bool(done),
            metadata=jsonable(self.info),
            postprocessed_action=command,
        )

    def get_metrics(self) -> dict[str, Any]:
        return {
            "won": float(bool(self.info.get("won"))),
            "score": float(self.info.get("score", 0.0)),
            "turns": self.turns,
            "return": self.total_reward,
        }

    def close(self) -> None:
        self.env.close()


def register_all(namespace: str = "creditgym") -> list[str]:
    """Register every creditgym env (`envs.list_envs(namespace)`) with SkyRL-gym; return the ids.

    ``creditgym/OpenEnv-v0`` is included: pass its ``base_url`` in ``extras["env_kwargs"]``.
    """
    ids = []
    for env_id in envs.list_envs(namespace=namespace):
        if env_id not in skyrl_gym.registry:
            skyrl_gym.register(
                id=env_id,
                entry_point="creditgym.envs.remote.skyrl:CreditgymSkyRLEnv",
                kwargs={"env_id": env_id},
            )
        ids.append(env_id)
    return ids
