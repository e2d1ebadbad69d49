"""SkyRL-gym: every creditgym env registers, and `skyrl_gym.make` plays each family like the native env."""

from __future__ import annotations

import pytest

skyrl_gym = pytest.importorskip("skyrl_gym")

from creditgym import envs  # noqa: E402
from creditgym.envs.remote.skyrl import register_all  # noqa: E402

FAMILIES = [
    ("creditgym/KeyRooms-v0", {"level": "small"}),
    ("creditgym/ALFWorld-v0", {"backend": "fast"}),
    ("creditgym/WebShop-v0", {}),
    ("creditgym/Search-v0", {}),
    ("creditgym/ToolUse-v0", {}),
]


def test_every_env_registers():
    ids = register_all()
    assert set(envs.list_envs(namespace="creditgym")) == set(ids)
    assert all(i in skyrl_gym.registry for i in ids)


@pytest.mark.parametrize("env_id,kwargs", FAMILIES, ids=[f[0].split("/")[1] for f in FAMILIES])
def test_scripted_episode_matches_native(env_id, kwargs):
    register_all()
    extras = {"env_kwargs": kwargs, "split": "valid", "seed": 7}
    env = skyrl_gym.make(env_id, env_config={}, extras=extras)
    native = envs.make(env_id, split="valid", **kwargs)
    try:
        prompt, meta = env.init([{"role": "system", "content": "You are an agent."}])
        obs, info = native.reset(seed=7)
        assert prompt[0]["role"] == "system" and prompt[1]["content"].startswith(obs)
        assert meta["state_key"] == info["state_key"]
        rewards, native_rewards, done = [], [], False
        while not done:
            action = native.expert_action()
            wrapped = (
                action
                if getattr(native, "action_syntax", "action") != "action"
                else f"<action>{action}</action>"
            )
            out = env.step(wrapped)
            _, reward, terminated, truncated, info = native.step(action)
            rewards.append(out["reward"])
            native_rewards.append(reward)
            done = terminated or truncated
            assert out["done"] == done and out["metadata"]["state_key"] == info["state_key"]
        assert rewards == native_rewards and out["metadata"]["won"] is True
        assert env.get_metrics()["won"] == 1.0
    finally:
        env.close()
        native.close()
