"""KeyRooms-v0: contract, determinism, invalid actions, oracle, random agent, model vs step."""

import random
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs  # noqa: F401  (registers the ids)
from creditgym.envs.keyrooms import LEVELS, NOTHING, KeyRoomsEnv, generate_world

ENV_ID = "creditgym/KeyRooms-v0"
LEVEL_NAMES = list(LEVELS)


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_check_env_without_warnings(level):
    env = gymnasium.make(ENV_ID, level=level)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_make_and_kwargs():
    env = envs.make(ENV_ID, level="hard", split="valid")
    assert isinstance(env, KeyRoomsEnv)
    assert env.max_steps == 80 and env.family == "keyrooms"
    assert [KeyRoomsEnv(level=lv).max_steps for lv in LEVEL_NAMES] == [20, 40, 80]
    assert KeyRoomsEnv(level="small", max_steps=7).max_steps == 7
    with pytest.raises(ValueError, match="unknown level 'huge'"):
        KeyRoomsEnv(level="huge")
    with pytest.raises(ValueError, match="unknown split"):
        KeyRoomsEnv(split="dev")


def test_panels_are_disjoint_and_named_by_level():
    env = KeyRoomsEnv(level="medium")
    ids = {s: env.task_ids(s) for s in ("train", "valid", "test")}
    assert [len(ids[s]) for s in ids] == [2000, 200, 200]
    assert ids["train"][42] == "medium-000042"
    assert not set(ids["train"]) & set(ids["valid"])
    assert not set(ids["train"]) & set(ids["test"])
    assert not set(ids["valid"]) & set(ids["test"])
    # Disjoint ids also give different worlds: no initial layout is shared across splits.
    small = KeyRoomsEnv(level="small")

    def layout(task_id):
        return generate_world(task_id, "small", "1").key(0).split("|", 1)[1]

    train = {layout(t) for t in small.task_ids("train")}
    held_out = {layout(t) for t in small.task_ids("valid")} | {
        layout(t) for t in small.task_ids("test")
    }
    assert not train & held_out


def test_generation_is_deterministic_and_pinned():
    a, b = KeyRoomsEnv(level="small", split="test"), KeyRoomsEnv(level="small", split="test")
    obs_a, info_a = a.reset(options={"task_id": 5})
    obs_b, info_b = b.reset(options={"task_id": 5})
    assert obs_a == obs_b and info_a == info_b
    # Same seed -> same task and the same initial state.
    assert a.reset(seed=11)[1]["state_key"] == b.reset(seed=11)[1]["state_key"]
    # The generator is pinned: changing it must bump `generator_version` (panel hashes change).
    assert info_a["task_id"] == "small-002205"
    assert info_a["state_key"] == (
        "small-002205|at=den|doors=golden:locked"
        "|items=golden key@den,silver coin@laundry,bottle@laundry"
    )


def test_text_and_info_keys():
    env = KeyRoomsEnv(level="medium", split="valid")
    obs, info = env.reset(options={"task_id": 0})
    assert obs.startswith("You are in the ") and "Doors:" in obs
    assert obs.endswith(f"Your task is to: {info['task']}")
    assert info["task"].startswith("put the ") and " in the chest in the " in info["task"]
    assert info["task_type"] == "medium"
    assert info["won"] is False and info["action_valid"] is True and info["score"] == 0.0
    assert info["subgoals"][-1].startswith("put the ")
    assert {"look", "inventory"} <= set(info["admissible_actions"])
    assert any(a.startswith("examine ") for a in info["admissible_actions"])
    assert info["state_key"].startswith("medium-002000|at=")


def test_invalid_actions_do_nothing_and_never_raise():
    env = KeyRoomsEnv(level="small", split="test")
    _, info = env.reset(options={"task_id": 3})
    key = info["state_key"]
    bad = [
        "",
        "fly to the moon",
        "take unicorn",
        "go to",
        "open door",
        "x" * 5000,
        "prendre la clé ✓",
        "\n\t",
        "put " + info["task"][8:],
    ]
    for action in bad:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs == NOTHING
        assert info["action_valid"] is False
        assert reward == 0.0 and not terminated
        assert info["state_key"] == key
    # A non-string action is coerced, not a crash.
    assert env.step(None)[4]["action_valid"] is False  # type: ignore[arg-type]
    # Case, blanks and a final period are forgiven for admissible actions.
    obs, _, _, _, info = env.step("  LOOK. ")
    assert info["action_valid"] is True and obs.startswith("You are in the ")


def test_step_before_reset_is_a_clear_error():
    with pytest.raises(RuntimeError, match="reset"):
        KeyRoomsEnv(level="small").step("look")


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_oracle_solves_every_task_optimally(level):
    env = KeyRoomsEnv(level=level, split="valid")
    for task in range(50):
        _, info = env.reset(options={"task_id": task})
        model = env.model()
        optimal = int(model.distance[model.initial])
        steps, terminated, truncated, total = 0, False, False, 0.0
        while not (terminated or truncated):
            action = env.expert_action()
            assert action in info["admissible_actions"]
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
            steps += 1
        assert info["won"] and terminated and total == 10.0 and info["score"] == 1.0
        assert steps == optimal <= env.max_steps
        assert env.expert_action() is None
        # One reward of 10 after `optimal` steps: V*(s0) = 10 * 0.95^(optimal - 1).
        v_star = model.optimal_values(0.95)[model.initial]
        assert v_star == pytest.approx(10 * 0.95 ** (optimal - 1), rel=1e-12)


def test_optimal_lengths_per_level():
    means = {}
    for level in LEVEL_NAMES:
        env = KeyRoomsEnv(level=level, split="test")
        lengths = []
        for task in range(12):
            env.reset(options={"task_id": task})
            model = env.model()
            lengths.append(model.distance[model.initial])
        means[level] = float(np.mean(lengths))
    assert 5 <= means["small"] <= 8
    assert 10 <= means["medium"] <= 15
    assert 21 <= means["hard"] <= 29


def test_random_agent_rarely_succeeds():
    rng = random.Random(0)
    for level, episodes in (("small", 300), ("medium", 100)):
        env = KeyRoomsEnv(level=level)
        wins = 0
        for ep in range(episodes):
            _, info = env.reset(seed=ep)
            done = False
            while not done:
                _, _, term, trunc, info = env.step(rng.choice(info["admissible_actions"]))
                assert info["action_valid"]
                done = term or trunc
            wins += info["won"]
        assert wins / episodes < 0.05, level


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_model_agrees_with_step(level):
    """Random walks replayed through the env and the model visit the same states and rewards."""
    rng = random.Random(1)
    env = KeyRoomsEnv(level=level, split="test")
    wins = 0
    for task in range(6):
        _, info = env.reset(options={"task_id": task})
        model = env.model()
        assert model.states[model.initial] == info["state_key"]
        s = model.initial
        for _ in range(3 * env.max_steps):
            assert model.actions[s] == info["admissible_actions"]
            assert bool(model.terminal[s]) == info["won"]
            if model.terminal[s]:
                break
            # Bias the walk towards progress so walks also reach the win.
            if rng.random() < 0.5:
                action = model.shortest_path_actions(s)[0]
            else:
                action = rng.choice(model.actions[s])
            j = model.actions[s].index(action)
            _, reward, terminated, _, info = env.step(action)
            assert reward == model.reward[s][j]
            s = model.next_state[s][j]
            assert info["state_key"] == model.states[s]
            assert terminated == bool(model.terminal[s])
            wins += terminated
    assert wins >= 1  # the walks exercised the winning transition too


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_model_rewards_and_successors_match_step_from_every_state(level):
    """For sampled model states, stepping each action in a fresh episode matches the model."""
    env = KeyRoomsEnv(level=level, split="valid")
    env.reset(options={"task_id": 7})
    model = env.model()
    rng = np.random.default_rng(2)
    # Reach sampled states by a breadth-first path in the model from the initial state.
    for target in rng.choice(model.n_states, size=min(15, model.n_states), replace=False):
        path = _path_to(model, int(target))
        for j, action in enumerate(model.actions[target]):
            env.reset(options={"task_id": 7})
            for a in path:
                env.step(a)
            assert env.state_key == model.states[target]
            _, reward, terminated, _, info = env.step(action)
            assert info["state_key"] == model.states[model.next_state[target][j]]
            assert reward == model.reward[target][j]
            assert terminated == bool(model.terminal[model.next_state[target][j]])


def _path_to(model, target: int) -> list[str]:
    """Actions from the initial state to `target` (breadth first over the model)."""
    parent = {model.initial: None}
    frontier = [model.initial]
    while target not in parent:
        nxt = []
        for s in frontier:
            for a, x in zip(model.actions[s], model.next_state[s]):
                if x not in parent:
                    parent[x] = (s, a)
                    nxt.append(x)
        frontier = nxt
    path = []
    while parent[target] is not None:
        target, a = parent[target]
        path.append(a)
    return path[::-1]


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_state_space_is_bounded_and_values_are_exact(level):
    env = KeyRoomsEnv(level=level, split="test")
    bound = {"small": 200, "medium": 2_000, "hard": 20_000}[level]
    for task in range(0, 200, 40):
        env.reset(options={"task_id": task})
        model = env.model()
        assert model.n_states <= bound
        # Every terminal state is a win (target in the chest); nothing else ends an episode.
        assert model.terminal.sum() >= 1
        np.testing.assert_array_equal(model.goal, model.terminal)
        assert all("@chest" in model.states[s] for s in np.flatnonzero(model.terminal))
        assert np.all(np.isfinite(model.distance))  # the win stays reachable from every state
        values = model.evaluate(model.uniform_policy(), gamma=0.95)
        for s in range(model.n_states):
            p = np.full(len(model.actions[s]), 1.0 / max(1, len(model.actions[s])))
            assert abs(float(np.dot(p, values.A[s]))) < 1e-9
        v_star = model.optimal_values(0.95)
        assert np.all(v_star + 1e-9 >= values.V)
        assert 0 < values.V[model.initial] < v_star[model.initial]


def test_state_key_excludes_step_counter_and_states_recur():
    env = KeyRoomsEnv(level="small", split="test")
    _, info = env.reset(options={"task_id": 0})
    start = info["state_key"]
    for action in ("look", "inventory", "look"):
        _, _, _, _, info = env.step(action)
        assert info["state_key"] == start and info["step"] > 0
    # Going to a neighbouring room and back recurs to the start state.
    start_room = start.split("|")[1].removeprefix("at=")
    go = next(a for a in info["admissible_actions"] if a.startswith("go to "))
    _, _, _, _, info = env.step(go)
    assert info["state_key"] != start
    _, _, _, _, info = env.step(f"go to {start_room}")
    assert info["action_valid"] and info["state_key"] == start


def test_exact_values_match_monte_carlo_returns_of_the_env():
    """V^pi(s0) from the model equals the mean discounted return of pi played in the env."""
    gamma = 0.95
    env = KeyRoomsEnv(level="small", split="test", max_steps=300)  # gamma^300 ~ 2e-7: negligible
    env.reset(options={"task_id": 1})
    model = env.model()
    # An epsilon-soft expert: 60% on the first shortest-path action, the rest spread uniformly.
    policy = []
    for s, actions in enumerate(model.actions):
        p = np.full(len(actions), 0.4 / max(1, len(actions)))
        if actions:
            p[actions.index(model.shortest_path_actions(s)[0])] += 0.6
        policy.append(p)
    exact = model.evaluate(policy, gamma).V[model.initial]
    rng = np.random.default_rng(3)
    returns = []
    for _ in range(1500):
        _, info = env.reset(options={"task_id": 1})
        ret, discount, done = 0.0, 1.0, False
        while not done:
            s = model.index[info["state_key"]]
            action = model.actions[s][rng.choice(len(policy[s]), p=policy[s])]
            _, reward, terminated, truncated, info = env.step(action)
            ret += discount * reward
            discount *= gamma
            done = terminated or truncated
        returns.append(ret)
    mean, sem = float(np.mean(returns)), float(np.std(returns) / np.sqrt(len(returns)))
    assert 0.5 < exact < 9.0  # a non-trivial value, so the comparison means something
    assert abs(mean - exact) < 4 * sem + 1e-3, (mean, exact, sem)
