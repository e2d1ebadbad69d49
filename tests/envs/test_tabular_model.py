"""TabularModel: exact evaluation against hand-computed values, value iteration, shortest paths."""

import numpy as np
import pytest

from creditgym.envs.tabular_model import TabularModel


def chain_model() -> TabularModel:
    """Three states: s0 --right--> s1 --win (+10)--> g (terminal); s0 --left--> s0; s1 --back--> s0."""
    return TabularModel(
        states=["s0", "s1", "g"],
        actions=[["left", "right"], ["back", "win"], []],
        next_state=[[0, 1], [0, 2], []],
        reward=[[0.0, 0.0], [0.0, 10.0], []],
        terminal=[False, False, True],
    )


def test_evaluate_matches_hand_computation():
    model = chain_model()
    policy = [np.array([0.5, 0.5]), np.array([0.25, 0.75]), np.zeros(0)]
    values = model.evaluate(policy, gamma=0.5)
    # Bellman equations with gamma = 0.5 (V(g) = 0, terminal):
    #   V0 = 0.5 * (0 + 0.5 V0) + 0.5 * (0 + 0.5 V1) = 0.25 V0 + 0.25 V1  =>  V1 = 3 V0
    #   V1 = 0.25 * (0 + 0.5 V0) + 0.75 * (10 + 0)   = 0.125 V0 + 7.5
    #   => 3 V0 = 0.125 V0 + 7.5  =>  V0 = 7.5 / 2.875 = 60/23,  V1 = 180/23
    V0, V1 = 60 / 23, 180 / 23
    np.testing.assert_allclose(values.V, [V0, V1, 0.0], atol=1e-12)
    # Q(s0, left) = 0.5 V0 = 30/23;  Q(s0, right) = 0.5 V1 = 90/23
    # Q(s1, back) = 0.5 V0 = 30/23;  Q(s1, win)   = 10
    np.testing.assert_allclose(values.Q[0], [30 / 23, 90 / 23], atol=1e-12)
    np.testing.assert_allclose(values.Q[1], [30 / 23, 10.0], atol=1e-12)
    assert values.Q[2].shape == (0,)
    # A = Q - V: s0: (30 - 60)/23, (90 - 60)/23; s1: (30 - 180)/23, (230 - 180)/23
    np.testing.assert_allclose(values.A[0], [-30 / 23, 30 / 23], atol=1e-12)
    np.testing.assert_allclose(values.A[1], [-150 / 23, 50 / 23], atol=1e-12)
    assert values.gamma == 0.5


def test_optimal_values_and_shortest_paths():
    model = chain_model()
    # V*(s1) = 10 (win now); V*(s0) = gamma * 10.
    np.testing.assert_allclose(model.optimal_values(0.5), [5.0, 10.0, 0.0])
    np.testing.assert_allclose(model.optimal_values(0.95), [9.5, 10.0, 0.0])
    np.testing.assert_array_equal(model.distance, [2, 1, 0])
    assert model.shortest_path_actions(0) == ["right"]
    assert model.shortest_path_actions("s1") == ["win"]
    assert model.shortest_path_actions("g") == []


def test_goal_excludes_terminal_without_reward():
    # s0 can fall into a trap (terminal, reward 0) or step to s1 and win: only "win" leads to goal.
    model = TabularModel(
        states=["s0", "trap", "s1", "g"],
        actions=[["fall", "go"], [], ["win"], []],
        next_state=[[1, 2], [], [3], []],
        reward=[[0.0, 0.0], [], [10.0], []],
        terminal=[False, True, False, True],
    )
    np.testing.assert_array_equal(model.goal, [False, False, False, True])
    assert model.shortest_path_actions("s0") == ["go"]
    assert np.isinf(model.distance[1])
    # Uniform policy, gamma 0.9: V(s1) = 10, V(s0) = 0.5 * 0 + 0.5 * 0.9 * 10 = 4.5.
    values = model.evaluate(model.uniform_policy(), gamma=0.9)
    np.testing.assert_allclose(values.V, [4.5, 0.0, 10.0, 0.0])


def random_model(rng: np.random.Generator, n: int = 40) -> TabularModel:
    actions, nexts, rewards, terminal = [], [], [], []
    for s in range(n):
        is_terminal = s >= n - 3
        k = 0 if is_terminal else int(rng.integers(1, 5))
        terminal.append(is_terminal)
        actions.append([f"a{j}" for j in range(k)])
        nexts.append([int(x) for x in rng.integers(0, n, size=k)])
        rewards.append([float(x) for x in rng.normal(size=k)])
    return TabularModel([f"s{i}" for i in range(n)], actions, nexts, rewards, terminal)


def test_evaluate_agrees_with_iterated_bellman_backups():
    rng = np.random.default_rng(0)
    model = random_model(rng)
    policy = [rng.dirichlet(np.ones(len(a))) if a else np.zeros(0) for a in model.actions]
    gamma = 0.9
    exact = model.evaluate(policy, gamma)
    V = np.zeros(model.n_states)
    for _ in range(600):  # contraction 0.9^600 ~ 1e-28
        V = np.array([float(np.dot(p, q)) for p, q in zip(policy, model.q_values(V, gamma))])
    np.testing.assert_allclose(exact.V, V, atol=1e-9)
    for s, p in enumerate(policy):
        # The policy-weighted advantage is zero in every state.
        assert abs(float(np.dot(p, exact.A[s]))) < 1e-9


def test_value_iteration_is_a_fixed_point_of_the_greedy_backup():
    rng = np.random.default_rng(1)
    model = random_model(rng)
    V = model.optimal_values(0.9)
    Q = model.q_values(V, 0.9)
    backed = np.array([q.max() if len(q) else 0.0 for q in Q])
    np.testing.assert_allclose(V, backed, atol=1e-10)
    greedy = []
    for q in Q:
        p = np.zeros(len(q))
        if len(q):
            p[int(np.argmax(q))] = 1.0
        greedy.append(p)
    # The greedy policy of V* has value V*.
    np.testing.assert_allclose(model.evaluate(greedy, 0.9).V, V, atol=1e-9)


def test_explore_enumerates_reachable_states_breadth_first():
    graph = {"a": ["b", "c"], "b": ["a", "d"], "c": ["c"], "d": [], "unreachable": ["a"]}

    def expand(state):
        return state == "d", [(f"to {x}", x, 1.0 if x == "d" else 0.0) for x in graph[state]]

    model = TabularModel.explore("a", expand, key=str.upper)
    assert model.states == ["A", "B", "C", "D"]
    assert model.initial == 0
    assert model.actions[0] == ["to b", "to c"]
    assert model.next_state[1] == [0, 3]
    assert model.reward[1] == [0.0, 1.0]
    np.testing.assert_array_equal(model.terminal, [False, False, False, True])
    assert model.n_transitions == 5
    with pytest.raises(ValueError, match="more than 2 reachable states"):
        TabularModel.explore("a", expand, max_states=2)


def test_bad_inputs_are_clear_errors():
    model = chain_model()
    with pytest.raises(ValueError, match="policy has 2 entries"):
        model.evaluate([[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"policy\[1\] has 3 probabilities for 2 actions"):
        model.evaluate([[0.5, 0.5], [0.2, 0.3, 0.5], []])
    with pytest.raises(ValueError, match=r"policy\[0\] is not a probability vector"):
        model.evaluate([[0.7, 0.7], [1.0, 0.0], []])
    with pytest.raises(ValueError, match=r"policy\[1\] is not a probability vector"):
        model.evaluate([[0.5, 0.5], [float("nan"), 1.0], []])
    with pytest.raises(ValueError, match="gamma"):
        model.evaluate(model.uniform_policy(), gamma=1.0)
    with pytest.raises(ValueError, match="terminal but has actions"):
        TabularModel(["x"], [["stay"]], [[0]], [[0.0]], [True])
    with pytest.raises(ValueError, match="outside"):
        TabularModel(["x"], [["jump"]], [[5]], [[0.0]], [False])
    with pytest.raises(KeyError, match="unknown state key"):
        model.shortest_path_actions("nowhere")
