import networkx as nx
import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.graph import TrajectoryGraph, batch_ids
from tests.credit.helpers import group, traj


def sample_group():
    return group(
        traj([("s0", "go", 0), ("s1", "take", 0), ("s2", "put", 10)], end="win"),
        traj([("s0", "go", 0), ("s1", "look", 0), ("s1", "take", 0)], end="s2"),
        traj([("s0", "wait", 0)], end="s0"),
    )


def test_per_step_node_edge_and_path_ids():
    g = sample_group().graph()
    # States in first-seen order: s0 = 0, s1 = 1, s2 = 2, win = 3 (next states included).
    assert g.states == ["s0", "s1", "s2", "win"]
    # Flat steps: T0 (s0 go, s1 take, s2 put), T1 (s0 go, s1 look, s1 take), T2 (s0 wait).
    assert g.node.tolist() == [0, 1, 2, 0, 1, 1, 0]
    assert g.next_node.tolist() == [1, 2, 3, 1, 1, 2, 0]
    # Edges (state, action): (s0,go)=0, (s1,take)=1, (s2,put)=2, (s1,look)=3, (s0,wait)=4.
    assert g.edge.tolist() == [0, 1, 2, 0, 3, 1, 4]
    assert g.edge_keys == [(0, "go"), (1, "take"), (2, "put"), (1, "look"), (0, "wait")]
    # Last-2-state paths: T0 t1 (s0,s1) = T1 t1 (s0,s1); T1 t2 (s1,s1); T0 t2 (s1,s2); t0: -1.
    p2 = g.path_ids(2)
    assert p2[[0, 3, 6]].tolist() == [-1, -1, -1]
    assert p2[1] == p2[4] and len({p2[1], p2[2], p2[5]}) == 3
    np.testing.assert_array_equal(g.path_ids(1), g.node)
    # Prefixes: T0 and T1 share only their first step (s0, go).
    pre = g.prefix_ids()
    assert pre[0] == pre[3] and len(set(pre.tolist())) == 6
    assert g.start.tolist() == [3, 0, 0, 0] and g.ends.tolist() == [1, 0, 1, 1]
    with pytest.raises(ValueError, match="k must be >= 1"):
        g.path_ids(0)


def test_queries_and_networkx_export():
    g = sample_group().graph()
    occ = g.action_occurrences()
    assert occ[("s0", "go")] == [(0, 0), (1, 0)]
    assert occ[("s1", "take")] == [(0, 1), (1, 2)]
    assert occ[("s1", "look")] == [(1, 1)]  # self-loop s1 -> s1
    assert occ[("s0", "wait")] == [(2, 0)]
    assert g.visits("s1") == [(0, 1), (1, 1), (1, 2)]
    assert g.num_edges == 5  # go, take (shared), put, look, wait
    nxg = g.to_networkx()
    assert isinstance(nxg, nx.MultiDiGraph)
    assert set(nxg.nodes) == {"s0", "s1", "s2", "win"}
    assert nxg.nodes["s0"]["start"] == 3 and nxg.nodes["win"]["ends"] == 1
    assert nxg.nodes["s1"]["visits"] == [(0, 1), (1, 1), (1, 2)]
    assert nxg.edges["s1", "s2", "take"]["occurrences"] == [(0, 1), (1, 2)]
    assert nxg.number_of_edges() == g.num_edges


def test_json_round_trip_is_exact():
    g = sample_group().graph()
    text = g.to_json()
    back = TrajectoryGraph.from_json(text)
    assert back == g
    assert back.to_json() == text
    np.testing.assert_array_equal(back.edge, g.edge)
    np.testing.assert_array_equal(back.path_ids(2), g.path_ids(2))
    assert nx.utils.graphs_equal(back.to_networkx(), g.to_networkx())
    for u, v, k, d in g.to_networkx().edges(keys=True, data=True):
        assert back.to_networkx().edges[u, v, k] == d


def test_graph_is_built_lazily_and_cached():
    grp = sample_group()
    assert grp._graph is None
    first = grp.graph()
    assert grp.graph() is first


def test_a_batchs_graph_is_built_once_and_shared_by_every_module(monkeypatch):
    # GiGPO, HGPO and SALT (edge and prefix keys) all read the group's graph: one build per
    # group for the whole batch, however many modules run.
    builds = []
    original = TrajectoryGraph.from_group.__func__

    def counting(cls, grp):
        builds.append(id(grp))
        return original(cls, grp)

    monkeypatch.setattr(TrajectoryGraph, "from_group", classmethod(counting))
    batch = [sample_group(), sample_group()]
    graphs = [g.graph() for g in batch]
    for name, options in [
        ("gigpo", {}),
        ("hgpo", {}),
        ("salt", {}),
        ("salt", {"key": "prefix"}),
    ]:
        credit.make(name, **options)(batch)
    assert sorted(builds) == sorted(id(g) for g in batch)
    assert [g.graph() for g in batch] == graphs and all(
        g.graph() is gr for g, gr in zip(batch, graphs)
    )


def test_modules_group_steps_by_the_graphs_ids():
    # GiGPO's anchors are the graph's nodes: with the graph's ids swapped for other ids that
    # induce the same partition nothing changes; merging two nodes changes GiGPO.
    grp = sample_group()
    base = credit.make("gigpo")([grp]).values
    g = grp.graph()
    g.node = g.node * 7 % 11  # same partition, other labels
    np.testing.assert_allclose(credit.make("gigpo")([grp]).values, base)
    g.node = np.zeros_like(g.node)  # one anchor for all steps
    assert not np.allclose(credit.make("gigpo")([grp]).values, base)


def test_batch_ids_offsets_groups_and_makes_absent_steps_singletons():
    ids = batch_ids([np.array([0, 1, 0, -1]), np.array([-1, 0, 0])])
    assert ids.tolist() == [0, 1, 0, 3, 4, 2, 2]
