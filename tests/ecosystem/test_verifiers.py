"""verifiers 0.4: creditgym episodes through ``vf.Env`` against vLLM's server, replayed natively.

verifiers pins ``openai<3`` and ``mcp==2.0.0`` while the project venv holds vLLM's newer ones, so
the verifiers side runs in ``.venv-verifiers`` (``make install-verifiers``), driven here as a
subprocess; vLLM's OpenAI-compatible server runs SmolLM2-135M-Instruct on 127.0.0.1 from the
project venv. Run under the big-memory lock::

    flock /tmp/cg-bigmem.lock .venv/bin/pytest tests/ecosystem/test_verifiers.py
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from creditgym import envs

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-verifiers" / "bin" / "python"
README = ROOT / "README.md"
MODULE = "creditgym.envs.remote.verifiers_env"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(), reason="verifiers not installed: make install-verifiers (.venv-verifiers)"
)

KEYROOMS = ("creditgym/KeyRooms-v0", {"level": "small"})
SEEDS = (0, 1, 2)
MAX_TURNS = 3
# Seeded sampling: vLLM's per-request seed makes each reply a function of its prompt.
SAMPLING = {"temperature": 1.0, "max_tokens": 32, "seed": 0}


def _venv(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the verifiers venv's interpreter; fail with its output if it fails."""
    proc = subprocess.run(
        [str(PYTHON), "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc


def test_plugin_resolves_through_verifiers_loaders():
    """The taskset id resolves to our taskset, env and harness with verifiers' own loaders; the
    prompts are the native resets; actions parse as documented; bad input fails clearly."""
    code = f"""
import json, sys
import verifiers.v1 as vf
from verifiers.v1.utils import loaders
import {MODULE} as m
print(json.dumps({{
    "version": __import__("verifiers").__version__,
    "env": loaders.environment_class(m.TASKSET_ID).__name__,
    "taskset": loaders.taskset_class(m.TASKSET_ID).__name__,
    "harness": loaders.default_harness_id(m.TASKSET_ID),
    "harness_class": loaders.harness_class(m.TASKSET_ID).__name__,
    "prompts": [t.data.prompt for t in m.CreditgymEnv(m.env_config(
        "creditgym/KeyRooms-v0", {{"level": "small"}}, seeds=[0, 1])).taskset],
    "unbounded": m.CreditgymEnv(m.env_config("creditgym/KeyRooms-v0")).taskset.bounded,
    "parse": [
        m.parse_action("<think>x</think><action> take red key </action>", "action"),
        m.parse_action("go north", "action"),
        m.parse_action("I will Take  Towel now", "action", ["take towel", "look"], "admissible"),
        m.parse_action("<action>TAKE TOWEL</action>", "action", ["take towel"], "admissible"),
        m.parse_action("look around and take towel", "action", ["take towel", "look"], "admissible"),
        m.parse_action("dance", "action", ["look"], "admissible"),
        m.parse_action(" <search>q</search> ", "search"),
    ],
}}))
try:
    list(m.CreditgymEnv(m.env_config("creditgym/Nope-v0", seeds=[0])).taskset)
except ValueError as e:
    print(e)
"""
    out = _venv(code).stdout.splitlines()
    facts = json.loads(out[0])
    assert facts["version"] == "0.4.0"
    assert (facts["env"], facts["taskset"]) == ("CreditgymEnv", "CreditgymTaskset")
    assert facts["harness"] == "creditgym_verifiers"
    assert facts["harness_class"] == "CreditgymHarness"
    assert facts["unbounded"] is False
    native = envs.make(KEYROOMS[0], split="valid", **KEYROOMS[1])
    for seed, prompt in zip((0, 1), facts["prompts"]):
        obs, info = native.reset(seed=seed)
        assert prompt.startswith(
            obs + "\n\nAdmissible actions: " + ", ".join(info["admissible_actions"])
        )
    assert facts["prompts"][0] != facts["prompts"][1]
    assert facts["parse"] == [
        "take red key",
        "go north",
        "take towel",
        "take towel",
        "look",
        "dance",
        "<search>q</search>",
    ]
    assert "unknown env 'creditgym/Nope-v0'" in out[1] and "creditgym/KeyRooms-v0" in out[1]


@pytest.fixture(scope="module")
def server():
    """vLLM's OpenAI-compatible server on SmolLM2-135M-Instruct, on a free 127.0.0.1 port."""
    from creditgym.agents.backends.vllm import VLLMServerBackend
    from creditgym.agents.models import resolve_model

    backend = VLLMServerBackend(resolve_model("smollm2-135m"), max_model_len=2048, kv_cache_gb=0.25)
    yield backend
    backend.close()


def _user_turns(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


@pytest.mark.slow  # starts vLLM's server (about 1 minute) and samples 9 turns from SmolLM2
def test_rollout_rewards_equal_native_replay(server, tmp_path):
    """Episodes played by ``vf.Env`` with SmolLM2 replay step for step in the native env: the same
    actions give the same rewards, validity, states and observations, and the trace's reward is
    the episode's return."""
    out = tmp_path / "episodes.json"
    env_id, kwargs = KEYROOMS
    args = [
        "--env", env_id, "--env-kwargs", json.dumps(kwargs), "--seeds", ",".join(map(str, SEEDS)),
        "--max-turns", str(MAX_TURNS), "--action-match", "admissible",
        "--base-url", server.base_url, "--model", server.model_name,
        "--sampling", json.dumps(SAMPLING), "--out", str(out),
    ]  # fmt: skip
    _venv(f"from {MODULE} import main; main()", *args, timeout=600)
    episodes = json.loads(out.read_text())
    assert len(episodes) == len(SEEDS)
    native = envs.make(env_id, split="valid", **kwargs)
    steps = valid = 0
    for seed, episode in zip(SEEDS, episodes):
        assert episode["ok"] and not episode["errors"], episode["errors"]
        record = episode["creditgym"]
        assert (record["env_id"], record["seed"]) == (env_id, seed)
        messages = episode["messages"]
        replies = [m["content"].strip() for m in messages if m["role"] == "assistant"]
        users = _user_turns(messages)
        assert [s["reply"] for s in record["steps"]] == replies  # the trace's own replies
        obs, info = native.reset(seed=seed)
        assert record["task_id"] == info["task_id"]
        total = 0.0
        for k, step in enumerate(record["steps"]):
            assert users[k].startswith(obs), f"seed {seed} turn {k}: the user turn is not the obs"
            admissible = info["admissible_actions"]
            tagged = re.findall(r"<action>(.*?)</action>", step["reply"], re.S)
            assert (
                step["action"] in admissible
                or step["action"] == (tagged[-1] if tagged else step["reply"]).strip()
            )
            obs, reward, terminated, truncated, info = native.step(step["action"])
            got = (step["reward"], step["terminated"], step["truncated"], step["action_valid"])
            assert got == (reward, terminated, truncated, info["action_valid"]), (
                f"seed {seed} step {k}"
            )
            assert (step["state_key"], step["won"], step["score"]) == (
                info["state_key"],
                info["won"],
                info["score"],
            )
            total += reward
            steps += 1
            valid += info["action_valid"]
        assert len(record["steps"]) == MAX_TURNS or terminated or truncated
        assert len(users) == len(record["steps"])  # no user turn after the last step
        assert episode["reward"] == episode["rewards"]["env_reward"] == total
        assert record["won"] == bool(record["steps"] and record["steps"][-1]["won"])
    native.close()
    print(f"{len(episodes)} episodes, {steps} steps replayed natively, {valid} valid actions")
    assert steps >= len(SEEDS) and valid >= 1  # the model's actions moved the env


@pytest.mark.slow
def test_readme_snippet_runs_against_the_server(server):
    """The README's verifiers snippet, pointed at the test's server."""
    blocks = dict(re.findall(r"```python\n# ecosystem: (\w+)\n(.*?)```", README.read_text(), re.S))
    code = blocks["verifiers"]
    assert 'BASE_URL = "http://127.0.0.1:8000/v1"' in code
    code = code.replace("http://127.0.0.1:8000/v1", server.base_url)
    out = _venv(code, timeout=600).stdout.strip().splitlines()
    assert out and all(line.startswith("True ") for line in out), out
