"""OpenEnv: our server (openenv's own app) played by `creditgym/OpenEnv-v0` and by openenv's client.

Every server is a child process on a free 127.0.0.1 port, run by the interpreter that holds
``openenv`` (`creditgym.envs.remote.launch.openenv_python`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.sync.client import connect

from creditgym import envs
from creditgym.envs.remote.client import OpenEnvError
from creditgym.envs.remote.launch import SCRIPT, OpenEnvServer, openenv_python
from creditgym.envs.remote.wire import jsonable

PYTHON = openenv_python()
pytestmark = [
    pytest.mark.slow,  # each test starts a server process (5-20 s on 2 cores)
    pytest.mark.skipif(PYTHON is None, reason="openenv not installed: make install-openenv"),
]

KEYROOMS = ("creditgym/KeyRooms-v0", {"level": "small"})
ALFWORLD = ("creditgym/ALFWorld-v0", {"backend": "fast"})


def _actions(native, rng: np.random.Generator, expert: bool) -> str:
    """The expert's action, or a random admissible one (or a junk string, 1 in 10)."""
    if expert:
        return native.expert_action()
    admissible = native._last_info["admissible_actions"]
    return "dance wildly" if rng.random() < 0.1 else str(rng.choice(admissible))


def _play_both(url: str, env_id: str, kwargs: dict, seeds: range, split: str) -> tuple[int, int]:
    """Play each seed natively and through the server with the same actions; assert equality."""
    remote = envs.make("creditgym/OpenEnv-v0", base_url=url, split=split)
    native = envs.make(env_id, split=split, **kwargs)
    assert remote.panel.hash == native.panel.hash and remote.max_steps == native.max_steps
    episodes = steps = 0
    try:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            expert = seed % 2 == 0
            got, want = remote.reset(seed=seed), native.reset(seed=seed)
            assert got[0] == want[0] and got[1] == jsonable(want[1]), f"reset seed {seed}"
            native._last_info = want[1]
            done = False
            while not done:
                action = _actions(native, rng, expert)
                got, want = remote.step(action), native.step(action)
                assert got[:4] == want[:4], f"seed {seed} step {native._steps}: {action!r}"
                assert got[4] == jsonable(want[4]), f"seed {seed} step {native._steps} info"
                native._last_info = want[4]
                done = want[2] or want[3]
                steps += 1
            episodes += 1
        # A task chosen by index instead of by seed.
        got, want = remote.reset(options={"task_id": 3}), native.reset(options={"task_id": 3})
        assert got[0] == want[0] and got[1]["task_id"] == want[1]["task_id"]
    finally:
        remote.close()
        native.close()
    return episodes, steps


@pytest.mark.parametrize("env", [KEYROOMS, ALFWORLD], ids=["keyrooms", "alfworld-fast"])
def test_round_trip_equals_native(env):
    env_id, kwargs = env
    with OpenEnvServer(env_id, kwargs) as url:
        episodes, steps = _play_both(url, env_id, kwargs, range(6), split="valid")
    print(f"{env_id}: {episodes} episodes, {steps} steps identical")
    assert episodes == 6 and steps >= 30


def test_metadata_names_env_and_panels():
    env_id, kwargs = KEYROOMS
    native = envs.make(env_id, split="test", **kwargs)
    with OpenEnvServer(env_id, kwargs) as url:
        meta = json.loads(urllib.request.urlopen(url + "/metadata").read())
        schema = json.loads(urllib.request.urlopen(url + "/schema").read())
        splits = json.loads(urllib.request.urlopen(url + "/KeyRooms-v0/splits").read())
    assert meta["name"] == env_id
    assert f"#{native.panel.hash}" in meta["description"]
    assert {s["name"]: s["hash"] for s in splits}["test"] == native.panel.hash
    observation = schema["observation"]["properties"]
    for field in ("text", "admissible_actions", "action_valid", "won", "score", "state_key"):
        assert field in observation
    assert schema["action"]["required"] == ["action"]


def test_errors_are_clear():
    out = subprocess.run(
        [PYTHON, str(SCRIPT), "--env", "creditgym/Nope-v0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "unknown env 'creditgym/Nope-v0'" in out.stderr
    assert "creditgym/KeyRooms-v0" in out.stderr  # lists the registered ones

    env_id, kwargs = KEYROOMS
    with OpenEnvServer(env_id, kwargs) as url, connect(url.replace("http", "ws") + "/ws") as ws:

        def send(message):
            ws.send(json.dumps(message))
            return json.loads(ws.recv(timeout=30))

        reply = send({"type": "step", "data": {"action": "look"}})
        assert reply["type"] == "error" and "call reset before step" in reply["data"]["message"]
        reply = send({"type": "reset", "data": {"seed": 0, "colour": "red"}})
        assert reply["type"] == "error" and "unknown reset arguments ['colour']" in str(reply)
        assert send({"type": "reset", "data": {"seed": 0}})["type"] == "observation"
        for bad in ({"act": "look"}, {"action": 7}, {}):
            reply = send({"type": "step", "data": bad})
            assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_ERROR", bad
        reply = send({"type": "step", "data": {"action": "fly to the moon"}})
        assert reply["data"]["observation"]["action_valid"] is False  # any text is an action
        done = False
        while not done:
            done = send({"type": "step", "data": {"action": "look"}})["data"]["done"]
        reply = send({"type": "step", "data": {"action": "look"}})
        assert reply["type"] == "error" and "the episode has ended" in reply["data"]["message"]

    with pytest.raises(ValueError, match="needs base_url"):
        envs.make("creditgym/OpenEnv-v0")


def test_dead_server_ends_the_episode_with_an_error():
    env_id, kwargs = KEYROOMS
    server = OpenEnvServer(env_id, kwargs)
    with server as url:
        env = envs.make("creditgym/OpenEnv-v0", base_url=url)
        env.reset(seed=1)
        env.step("look")
        server.stop()
        obs, reward, terminated, truncated, info = env.step("look")
    assert terminated and not truncated and reward == 0.0
    assert "error" in info and "unavailable" in obs
    with pytest.raises(OpenEnvError, match="cannot reset"):
        env.reset(seed=1)


def test_abandoned_sessions_are_reaped_and_free_their_slots():
    """A vanished client must not hold a session slot for ever (openenv PR #1000's deadlock)."""
    env_id, kwargs = KEYROOMS
    args = ("--max-sessions", "2", "--session-timeout", "1")
    with OpenEnvServer(env_id, kwargs, *args) as url:
        ws_url = url.replace("http", "ws") + "/ws"
        # 1. A client process killed mid-episode: its socket closes and its slot frees at once.
        client = textwrap.dedent(
            f"""
            import json, sys, time
            from websockets.sync.client import connect
            ws = connect({ws_url!r}, legacy=True)
            ws.send(json.dumps({{"type": "reset", "data": {{"seed": 0}}}}))
            ws.recv()
            print("ready", flush=True)
            time.sleep(600)
            """
        )
        killed = []
        for _ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-c", client], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout.readline().strip() == "ready"
            killed.append(proc)
        for proc in killed:
            proc.kill()
            proc.wait()
        # 2. Two clients that stay connected but go silent: full, until the reaper closes them.
        silent = [connect(ws_url, legacy=True) for _ in range(2)]
        for ws in silent:
            ws.send(json.dumps({"type": "reset", "data": {"seed": 0}}))
            assert json.loads(ws.recv(timeout=30))["type"] == "observation"
        with connect(ws_url) as third:  # refused at once: an error frame, then the close
            assert json.loads(third.recv(timeout=30))["data"]["code"] == "CAPACITY_REACHED"
        deadline, played = time.monotonic() + 30, False
        while time.monotonic() < deadline and not played:
            time.sleep(1)
            env = envs.make("creditgym/OpenEnv-v0", base_url=url)
            try:
                env.reset(seed=0)
                other = envs.make("creditgym/OpenEnv-v0", base_url=url)
                other.reset(seed=0)  # both slots are free again
                other.close()
                played = True
            except OpenEnvError as e:
                assert "CAPACITY_REACHED" in str(e)
            finally:
                env.close()
        assert played, "the idle sessions were never reaped"
        # The reaped session's client gets a clear error, not a hang.
        silent[0].send(json.dumps({"type": "step", "data": {"action": "look"}}))
        reply = json.loads(silent[0].recv(timeout=30))
        assert "closed by the server after 1 s idle" in reply["data"]["message"]
        for ws in silent:
            ws.close()


def test_token_and_non_loopback_refusal():
    for argv, message in (
        (["--env", "creditgym/KeyRooms-v0", "--host", "0.0.0.0"], "refusing to serve on '0.0.0.0'"),
        (["--env", "creditgym/ToolUse-v0"], "serving it needs a token"),
    ):
        out = subprocess.run(
            [PYTHON, str(SCRIPT), *argv, "--port", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin"},  # no CREDITGYM_OPENENV_TOKEN from the caller
        )
        assert out.returncode == 2 and message in out.stderr, out.stderr

    env_id, kwargs = KEYROOMS
    with OpenEnvServer(env_id, kwargs, token="s3cret") as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/metadata")
        assert refused.value.code == 401
        with pytest.raises(OpenEnvError, match="401"):
            envs.make("creditgym/OpenEnv-v0", base_url=url, token="wrong")
        env = envs.make("creditgym/OpenEnv-v0", base_url=url, token="s3cret")
        assert env.reset(seed=0)[1]["task_type"] == "small"
        env.close()
        # openenv's own client, with the token as a header.
        code = textwrap.dedent(
            f"""
            from openenv import GenericEnvClient
            with GenericEnvClient(base_url={url!r}, headers={{"Authorization": "Bearer s3cret"}}).sync() as env:
                first = env.reset(seed=0)
                result = env.step({{"action": first.observation["admissible_actions"][0]}})
                print(first.observation["task"], "|", result.observation["action_valid"])
            """
        )
        out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("| True")


def test_check_env_passes_on_a_served_env():
    import warnings

    from gymnasium.utils.env_checker import check_env

    env_id, kwargs = KEYROOMS
    with OpenEnvServer(env_id, kwargs) as url:
        env = envs.make("creditgym/OpenEnv-v0", base_url=url)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                check_env(env, skip_render_check=True)
        finally:
            env.close()
