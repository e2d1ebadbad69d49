import networkx as nx

from creditgym.credit.graph import TrajectoryGraph
from tests.credit.helpers import group, traj


def sample_group():
    return group(
        traj([("s0", "go", 0), ("s1", "take", 0), ("s2", "put", 10)], end="win"),
        traj([("s0", "go", 0), ("s1", "look", 0), ("s1", "take", 0)], end="s2"),
        traj([("s0", "wait", 0)], end="s0"),
    )


def test_graph_nodes_edges_and_occurrences():
    g = sample_group().graph()
    assert isinstance(g.g, nx.MultiDiGraph)
    assert set(g.g.nodes) == {"s0", "s1", "s2", "win"}
    occ = g.action_occurrences()
    assert occ[("s0", "go")] == [(0, 0), (1, 0)]
    assert occ[("s1", "take")] == [(0, 1), (1, 2)]
    assert occ[("s1", "look")] == [(1, 1)]  # self-loop s1 -> s1
    assert occ[("s0", "wait")] == [(2, 0)]
    assert g.visits("s1") == [(0, 1), (1, 1), (1, 2)]
    assert g.g.nodes["s0"]["start"] == 3
    assert g.num_edges == 5  # go, take (shared), put, look, wait


def test_graph_is_built_lazily_and_cached():
    grp = sample_group()
    assert grp._graph is None
    first = grp.graph()
    assert grp.graph() is first


def test_json_round_trip_is_exact():
    g = sample_group().graph()
    text = g.to_json()
    back = TrajectoryGraph.from_json(text)
    assert back == g
    assert back.to_json() == text
    assert nx.utils.graphs_equal(back.g, g.g)
    for u, v, k, d in g.g.edges(keys=True, data=True):
        assert back.g.edges[u, v, k] == d
