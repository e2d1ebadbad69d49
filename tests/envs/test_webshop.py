"""`creditgym/WebShop-v0` in text mode, against the real shop server process."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs
from creditgym.envs.webshop import ShopServer, WebShopEnv, compute_reward

ENV_ID = "creditgym/WebShop-v0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def shared_shop():
    """Keep the shared server up across this module's tests (each would restart it otherwise)."""
    server = ShopServer.shared(1000, 0)
    yield server
    server.release()


@pytest.fixture
def env():
    e = envs.make(ENV_ID, split="valid")
    yield e
    e.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it has exited for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def play_oracle(env: WebShopEnv, task: int, limit: int = 15) -> tuple[float, dict, list]:
    obs, info = env.reset(options={"task_id": task})
    trace = [(obs, info["state_key"])]
    for _ in range(limit):
        action = env.expert_action()
        assert action is not None
        if not action.startswith("search["):
            assert action in info["admissible_actions"], (action, info["admissible_actions"])
        obs, reward, term, trunc, info = env.step(action)
        trace.append((obs, info["state_key"]))
        if term or trunc:
            return reward, info, trace
    raise AssertionError("oracle did not finish")


def test_registered_and_check_env(env):
    assert ENV_ID in envs.list_envs()
    check_env(env)


def test_oracle_solves_valid_goals(env):
    for task in range(20):
        reward, info, _ = play_oracle(env, task)
        assert reward == 10.0 and info["won"] and info["score"] == 1.0
        assert "error" not in info


def test_observation_and_actions_look_like_webshop(env):
    obs, info = env.reset(options={"task_id": 3})
    assert info["task"] in obs and "[button] Search [button_]" in obs
    assert info["admissible_actions"] == ["search[<your query>]"]
    assert info["state_key"] == "search" and info["task_type"] in {
        "beauty",
        "food",
        "fashion",
        "furniture",
        "electronics",
    }
    obs, _, _, _, info = env.step(env.expert_action())
    assert "[SEP]" in obs and "Page 1 (Total results:" in obs
    assert "click[back to search]" in info["admissible_actions"]
    assert not any(a.startswith("search[") for a in info["admissible_actions"])
    products = [a for a in info["admissible_actions"] if a.startswith("click[b0")]
    assert 1 <= len(products) <= 10


@pytest.mark.parametrize(
    "action",
    [
        "",
        "jump",
        "click[nothing here]",
        "search[]",
        "click[]",
        "search",
        "x" * 9000,
        "click[ünïcødé ☃]",
        "search[a][b",
        "CLICK[]",
    ],
)
def test_bad_actions_never_raise(env, action):
    obs0, info0 = env.reset(options={"task_id": 1})
    obs, reward, term, trunc, info = env.step(action)
    assert not info["action_valid"] and reward == 0.0 and not term
    assert obs.startswith("Nothing happens") and info["state_key"] == info0["state_key"]
    assert env.observation_space.contains(obs)


def test_search_only_where_there_is_a_search_box(env):
    env.reset(options={"task_id": 1})
    env.step("search[snack bar]")
    obs, _, _, _, info = env.step("search[coffee]")
    assert not info["action_valid"] and "no search box" in obs


def test_state_key_is_canonical(env):
    env.reset(options={"task_id": 0})
    _, _, _, _, r1 = env.step("search[  Snack   BAR ]")
    assert r1["state_key"] == "results|q=snack bar|page=1"
    item = next(a for a in r1["admissible_actions"] if a.startswith("click[b0"))
    _, _, _, _, i0 = env.step(item)
    opts = [
        a
        for a in i0["admissible_actions"]
        if a
        not in (
            "click[back to search]",
            "click[< prev]",
            "click[description]",
            "click[features]",
            "click[reviews]",
            "click[buy now]",
        )
    ]
    assert len(opts) >= 2
    # route A: option 0 directly; route B: option 1, then option 0 of the same group
    obs_a, _, _, _, a = env.step(opts[0])
    env.step("click[description]")
    obs_back, _, _, _, back = env.step("click[< prev]")
    assert back["state_key"] == a["state_key"] and obs_back == obs_a
    env.step("click[< prev]")
    env.step(item)
    env.step(opts[1])
    obs_b, _, _, _, b = env.step(opts[0])
    assert "options=" in a["state_key"] and a["state_key"] != i0["state_key"]
    if obs_b == obs_a:  # same group: same state
        assert b["state_key"] == a["state_key"]
    else:  # different groups: both options chosen, a different state
        assert b["state_key"] != a["state_key"]
    # page 2 of the same query, and another query, are other states
    env.step("click[< prev]")
    _, _, _, _, p2 = env.step("click[next >]")
    assert p2["state_key"] == "results|q=snack bar|page=2"
    env.step("click[back to search]")
    _, _, _, _, other = env.step("search[coffee beans]")
    assert other["state_key"] != r1["state_key"]


def test_wrong_purchase_scores_partially(env):
    env.reset(options={"task_id": 2})
    goal = env.catalog.goal_by_id[env.catalog.splits["valid"][2]]
    env.step(f"search[{goal.search_terms}]")
    env.step(f"click[{goal.asin.lower()}]")  # the target is on page 1 for this goal
    obs, reward, term, _, info = env.step("click[buy now]")  # no options chosen
    product = env.catalog.by_asin[goal.asin]
    expected = compute_reward(product, goal, {}).reward
    assert term and reward == 0.0 and not info["won"]
    assert info["score"] == pytest.approx(expected) and 0 < expected < 1
    assert f"{expected:.4f}" in obs
    obs, reward, term, _, info = env.step("click[buy now]")
    assert term and obs == "The episode is over." and not info["action_valid"]


def test_expert_recovers_from_random_detours(env):
    rng = __import__("random").Random(0)
    for task in range(5):
        obs, info = env.reset(options={"task_id": task})
        for _ in range(3):  # wander (never buy), then let the expert finish
            acts = [a for a in info["admissible_actions"] if a != "click[buy now]"]
            action = rng.choice(acts)
            if action.startswith("search["):
                action = "search[comfortable thing]"
            obs, _, term, _, info = env.step(action)
        for _ in range(12):
            obs, reward, term, _, info = env.step(env.expert_action())
            if term:
                break
        assert info["won"], task


def test_envs_share_one_server_and_the_last_close_stops_it():
    a = WebShopEnv(split="test", seed=1)  # a catalog of its own, so a server of its own
    b = WebShopEnv(split="test", seed=1)
    a.reset(options={"task_id": 0})
    b.reset(options={"task_id": 1})
    assert a.server is b.server
    pid = a.server.pid
    assert pid_alive(pid)
    a.close()
    assert pid_alive(pid)
    assert b.step(b.expert_action())[4]["action_valid"]
    b.close()
    assert wait_dead(pid, 5)


def test_server_dies_with_its_owner_process():
    script = textwrap.dedent(
        """
        import sys, time
        from creditgym.envs.webshop import WebShopEnv
        env = WebShopEnv(split="test")
        env.reset(options={"task_id": 0})
        print(env.server.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        server_pid = int(owner.stdout.readline())
        assert pid_alive(server_pid)
        owner.send_signal(signal.SIGKILL)  # no atexit, no close: the OS reaps only the owner
        owner.wait(10)
        assert wait_dead(server_pid, 10), "the shop server outlived its owner"
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()


def test_server_killed_mid_episode_is_restarted_and_the_episode_ends_cleanly():
    a = WebShopEnv(split="valid")
    b = WebShopEnv(split="valid")
    try:
        a.reset(options={"task_id": 0})
        b.reset(options={"task_id": 1})
        a.step(a.expert_action())
        b.step(b.expert_action())
        old_pid = a.server.pid
        os.kill(old_pid, signal.SIGKILL)
        assert wait_dead(old_pid, 5)
        obs, reward, term, trunc, info = a.step(a.expert_action())
        assert term and reward == 0.0 and "error" in info and "unavailable" in obs
        assert a.server.alive() and a.server.pid != old_pid
        # b's session lived in the dead process: it ends too, without raising
        obs, reward, term, trunc, info = b.step(b.expert_action())
        assert term and "error" in info and "restarted" in info["error"]
        # the next episodes run normally on the new server
        for env, task in ((a, 0), (b, 1)):
            reward, info, _ = play_oracle(env, task)
            assert reward == 10.0 and "error" not in info
    finally:
        a.close()
        b.close()


def test_external_server_url():
    server = ShopServer(n_products=1000, seed=0)
    try:
        env = envs.make(ENV_ID, split="test", server_url=server.url + "/")
        try:
            assert env.server is None
            reward, _, _ = play_oracle(env, 4)
            assert reward == 10.0
        finally:
            env.close()
        assert server.alive()  # an env never stops a server it does not own
    finally:
        pid = server.pid
        server.stop()
    assert wait_dead(pid, 5)


def test_concurrent_sessions_on_one_server():
    n_envs, n_steps = 8, 25
    pool = [WebShopEnv(split="train") for _ in range(n_envs)]
    errors: list[str] = []

    def run(i: int) -> None:
        env = pool[i]
        rng = __import__("random").Random(i)
        try:
            _, info = env.reset(options={"task_id": i})
            for _ in range(n_steps):
                acts = info["admissible_actions"]
                action = env.expert_action() if rng.random() < 0.5 or not acts else rng.choice(acts)
                if action is None or action.startswith("search[<"):
                    action = env.expert_action() or "search[shoes]"
                _, _, term, trunc, info = env.step(action)
                if "error" in info:
                    errors.append(info["error"])
                if term or trunc:
                    _, info = env.reset(options={"task_id": i})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_envs)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert len({id(e.server) for e in pool}) == 1
    finally:
        for e in pool:
            e.close()


def test_gymnasium_make_kwargs_and_errors():
    with pytest.raises(ValueError, match="mode"):
        gymnasium.make(ENV_ID, mode="vr")
    drawn = WebShopEnv(split="test", render_mode="rgb_array")
    drawn.reset(options={"task_id": 0})
    image = drawn.render()  # text mode: the observation drawn as an image
    assert image.ndim == 3 and image.shape[2] == 3 and image.min() < 50 and image.max() == 255
    drawn.close()
    with pytest.raises(ValueError, match="split"):
        gymnasium.make(ENV_ID, split="dev")
    e = envs.make(ENV_ID, split="test")
    assert len(e.panel) == 100 and e.panel.ids[0] == e.catalog.splits["test"][0]
    e.close()


def test_forked_child_never_stops_the_parents_server(shared_shop):
    pid = os.fork()
    if pid == 0:  # the child: releasing and stopping must leave the parent's server alone
        try:
            shared_shop.stop()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert shared_shop.alive() and shared_shop.healthy()


def test_original_data_is_served_and_playable(tmp_path):
    from tests.envs.test_webshop_catalog import _write_original

    _write_original(tmp_path, human=False)
    env = envs.make(ENV_ID, split="train", data_path=str(tmp_path))
    try:
        assert env.catalog.source.startswith("original:") and len(env.panel) == 2
        for task in range(2):
            reward, info, trace = play_oracle(env, task)
            assert reward == 10.0 and info["won"], trace
    finally:
        env.close()


def test_serve_script_serves_a_browsable_shop():
    proc = subprocess.Popen(
        [sys.executable, "scripts/serve_webshop.py", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        port = None
        for line in proc.stdout:
            if line.startswith("WEBSHOP-READY"):
                port = int(line.split()[1])
                break
        assert port is not None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/?goal=g000000")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303
        conn.request("GET", resp.getheader("location"))
        page = conn.getresponse().read().decode()
        assert 'id="search_input"' in page and "Instruction:" in page
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
