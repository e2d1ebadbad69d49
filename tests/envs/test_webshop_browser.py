"""`creditgym/WebShop-v0` with ``mode="browser"``: Selenium driving Debian's headless Chromium.

One browser env serves the whole module (Chromium takes seconds to start). These tests need
``make install-browser``; they fail (not skip) without it, since CI must run them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs
from creditgym.envs.webshop import WebShopEnv

pytestmark = pytest.mark.slow

ENV_ID = "creditgym/WebShop-v0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair():
    browser = envs.make(ENV_ID, split="valid", mode="browser", render_mode="rgb_array")
    text = envs.make(ENV_ID, split="valid")
    yield browser, text
    browser.close()
    text.close()


def test_check_env_in_browser_mode(pair):
    browser, _ = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(browser, skip_render_check=True)  # rendering: see the screenshot test


def test_same_observations_and_state_keys_as_text_mode(pair):
    browser, text = pair
    obs_b, info_b = browser.reset(options={"task_id": 5})
    obs_t, info_t = text.reset(options={"task_id": 5})
    assert obs_b == obs_t and info_b["state_key"] == info_t["state_key"]
    goal = text.catalog.goal_by_id[info_t["task_id"]]
    script = [
        f"search[{goal.search_terms}]",
        "click[next >]",
        "click[< prev]",
        f"click[{goal.asin.lower()}]",
        "click[features]",
        "click[< prev]",
        "click[no such button]",
        "click[reviews]",
        "click[< prev]",
    ]
    for action in script:
        ob, rb, tb, _, ib = browser.step(action)
        ot, rt, tt, _, it = text.step(action)
        assert ob == ot, action
        assert (
            ib["state_key"] == it["state_key"]
            and ib["admissible_actions"] == it["admissible_actions"]
        )
        assert (rb, tb, ib["action_valid"]) == (rt, tt, it["action_valid"])
    assert "error" not in ib


def test_oracle_buys_in_the_browser_and_render_is_a_screenshot(pair):
    browser, _ = pair
    for task in range(3):
        _, info = browser.reset(options={"task_id": task})
        for _ in range(15):
            _, reward, term, _, info = browser.step(browser.expert_action())
            if term:
                break
        assert reward == 10.0 and info["won"] and info["score"] == 1.0
    image = browser.render()
    assert isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # not blank


def test_browser_episode_survives_a_server_crash(pair):
    browser, _ = pair
    browser.reset(options={"task_id": 7})
    browser.step(browser.expert_action())
    old = browser.server.pid
    os.kill(old, signal.SIGKILL)
    obs, reward, term, _, info = browser.step(browser.expert_action())
    assert term and reward == 0.0 and "error" in info
    assert browser.server.alive() and browser.server.pid != old
    _, info = browser.reset(options={"task_id": 7})
    assert info["state_key"] == "search" and "error" not in info


def test_screenshot_needs_browser_mode():
    env = WebShopEnv(split="test")
    with pytest.raises(RuntimeError, match="browser"):
        env.screenshot()
    env.close()


def test_browser_processes_die_with_their_owner():
    script = textwrap.dedent(
        """
        import time
        from creditgym.envs.webshop import WebShopEnv
        env = WebShopEnv(split="test", mode="browser")
        env.reset(options={"task_id": 0})
        print(env._browser._profile, env._browser.driver.service.process.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        profile, driver_pid = owner.stdout.readline().split()
        assert Path(profile).is_dir()
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)

        def leftovers() -> list[int]:
            pids = []
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if profile.encode() in (entry / "cmdline").read_bytes():
                            pids.append(int(entry.name))
                    except OSError:
                        pass
            return pids

        end = time.monotonic() + 15
        while time.monotonic() < end and (leftovers() or Path(profile).exists()):
            time.sleep(0.2)
        assert leftovers() == [] and not Path(profile).exists()
        assert (
            not Path(f"/proc/{driver_pid}/cmdline").exists()
            or not Path(f"/proc/{driver_pid}/cmdline").read_bytes()
        )  # gone, or a zombie awaiting its reaper
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
