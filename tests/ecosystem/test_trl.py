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
        (
            "creditgym/ToolUse-v0",
            {},
            {"calculator", "convert_units", "find_customer", "python", "answer"},
        ),
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
            assert prop["description"]
            if env_id != "creditgym/ToolUse-v0":  # ToolUse's tools keep their JSON-schema types
                assert prop["type"] == "string"


def test_tooluse_tools_are_typed_from_the_tools_own_schemas():
    schemas = _tools(trl_environment("creditgym/ToolUse-v0"))
    assert schemas["get_product"]["parameters"] == {
        "type": "object",
        "properties": {"product_id": {"type": "integer", "description": "The product id."}},
        "required": ["product_id"],
    }
    convert = schemas["convert_units"]["parameters"]
    assert convert["properties"]["value"]["type"] == "number"
    assert set(convert["required"]) == {"value", "from_unit", "to_unit"}
    orders = schemas["list_orders"]["parameters"]
    assert orders["required"] == ["customer_id"] and "status" in orders["properties"]


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


def test_scripted_tooluse_episodes_through_typed_tools():
    """The expert's tool calls, made as typed method calls, give the native env's episode."""
    import json

    cls = trl_environment("creditgym/ToolUse-v0", split="valid")
    for seed in range(4):  # the panel interleaves the four task families
        tool_env, native = cls(), envs.make("creditgym/ToolUse-v0", split="valid")
        assert tool_env.reset(seed=seed) == native.reset(seed=seed)[0]
        total, done = 0.0, False
        while not done:
            action = native.expert_action()
            if action.startswith("<tool_call>"):
                call = json.loads(action[len("<tool_call>") : -len("</tool_call>")])
                reply = getattr(tool_env, call["name"])(**call["arguments"])
            else:
                reply = tool_env.answer(action[len("<answer>") : -len("</answer>")])
            obs, reward, terminated, truncated, info = native.step(action)
            assert reply.startswith(obs)  # the last reply also says that the episode ended
            total += reward
            done = terminated or truncated
        assert info["won"] and tool_env.done and tool_env.get_reward() == total > 0
        native.close()
