"""TRL: the environment_factory contract, checked with transformers' own tool-schema reader."""

from __future__ import annotations

import inspect

import pytest
from transformers.utils import get_json_schema

from creditgym import envs
from creditgym.envs.remote.trl_tools import trl_environment

trl = pytest.importorskip("trl")


def _tools(cls) -> dict[str, dict]:
    """What GRPOTrainer exposes: the class's public functions except reset and get_reward."""
    members = inspect.getmembers(cls, predicate=inspect.isfunction)
    public = [f for n, f in members if not n.startswith("_") and n not in ("reset", "get_reward")]
    return {f.__name__: get_json_schema(f)["function"] for f in public}


@pytest.mark.parametrize(
    "env_id,kwargs,names",
    [
        ("creditgym/KeyRooms-v0", {"level": "small"}, {"go_to", "take", "open", "put", "drop"}),
        ("creditgym/ALFWorld-v0", {}, {"go_to", "take", "move", "heat", "cool", "clean", "use"}),
        ("creditgym/Search-v0", {}, {"search", "answer"}),
        ("creditgym/WebShop-v0", {}, {"search", "click"}),
        ("creditgym/ToolUse-v0", {}, {"call_tool", "answer"}),
        ("creditgym/TWX-coin-v0", {}, {"act"}),
    ],
)
def test_contract(env_id, kwargs, names):
    cls = trl_environment(env_id, **kwargs)
    env = cls()  # no-argument constructor
    assert callable(env.reset) and callable(env.get_reward)
    schemas = _tools(cls)
    assert names <= set(schemas), sorted(schemas)
    for schema in schemas.values():
        assert schema["description"] and schema["return"] == {"type": "string"}
        for prop in schema["parameters"].get("properties", {}).values():
            assert prop["type"] == "string" and prop["description"]


def test_scripted_episode_through_verb_tools():
    cls = trl_environment("creditgym/KeyRooms-v0", level="small", split="valid")
    tool_env, native = cls(), envs.make("creditgym/KeyRooms-v0", level="small", split="valid")
    text = tool_env.reset(seed=3, prompt=[{"role": "user", "content": "ignored"}])
    obs, _ = native.reset(seed=3)
    assert text == obs
    total, done = 0.0, False
    while not done:
        action = native.expert_action()
        verb = next(v for v in ("go to", "take", "open", "put", "drop") if action.startswith(v))
        reply = getattr(tool_env, verb.replace(" ", "_"))(action[len(verb) + 1 :])
        obs, reward, terminated, truncated, info = native.step(action)
        assert reply.startswith(obs)
        total += reward
        done = terminated or truncated
    assert info["won"] and tool_env.get_reward() == total == 10.0
    assert "changed nothing" in tool_env.look()


def test_scripted_episodes_search_and_webshop():
    for env_id in ("creditgym/Search-v0", "creditgym/WebShop-v0"):
        tool_env = trl_environment(env_id, split="valid")()
        native = envs.make(env_id, split="valid")
        tool_env.reset(seed=5)
        native.reset(seed=5)
        done = False
        while not done:
            action = native.expert_action()
            if action.startswith("<search>"):
                tool_env.search(action[len("<search>") : -len("</search>")])
            elif action.startswith("<answer>"):
                tool_env.answer(action[len("<answer>") : -len("</answer>")])
            elif action.startswith("search["):
                tool_env.search(action[len("search[") : -1])
            else:
                tool_env.click(action[len("click[") : -1])
            _, _, terminated, truncated, info = native.step(action)
            done = terminated or truncated
        assert tool_env.done and tool_env.info["won"] and tool_env.get_reward() > 0, env_id
