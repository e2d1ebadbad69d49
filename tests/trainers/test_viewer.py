"""The trajectory viewer without a browser: collapse, layout, recomputed advantages, escaping."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import gymnasium
import numpy as np
import pytest

from creditgym import credit
from creditgym.envs.base import TextEnv
from creditgym.trainers.viewer import (
    SourceError,
    build_payload,
    escape_json,
    load_source,
    recompute,
    render_html,
)
from creditgym.trainers.viewer.bench import parse_iterations
from creditgym.trainers.viewer.layout import collapse, layout
from creditgym.trainers.viewer.source import optimal_advantages
from tests.credit.helpers import group, traj
from tests.trainers.viewer_data import ENV_ID, benchmark_folder, play_groups

XSS = '</script><img src=x onerror="window.__pwned=1">&amp;\u2028'


def _two_paths():
    # A: s0 -a-> s1 -b-> s2 -c-> s3 (won); B: s0 -a-> s1 -d-> s4 -e-> s5 -f-> s6 (lost).
    a = traj([("s0", "a", 0), ("s1", "b", 0), ("s2", "c", 10)], end="s3")
    b = traj([("s0", "a", 0), ("s1", "d", 0), ("s4", "e", 0), ("s5", "f", 0)], end="s6")
    return group(a, b)


def test_chains_of_states_visited_once_collapse():
    g = collapse(_two_paths())
    # Kept: s0, s1 (visited twice), ends s3, s6; hidden runs (s2) and (s4, s5) become chains.
    kinds = [(n["kind"], tuple(n["states"])) for n in g.nodes]
    assert kinds == [
        ("state", ("s0",)),
        ("state", ("s1",)),
        ("chain", ("s2",)),
        ("state", ("s3",)),
        ("chain", ("s4", "s5")),
        ("state", ("s6",)),
    ]
    assert (g.raw_nodes, g.hidden_states) == (7, 3)
    edges = [(e["source"], e["target"], e["action"], e["count"], e["won"]) for e in g.edges]
    assert edges == [(0, 1, "a", 2, 1), (1, 2, "b", 1, 1), (2, 3, "c", 1, 1),
                     (1, 4, "d", 1, 0), (4, 5, "f", 1, 0)]  # fmt: skip
    assert g.step_node == [[0, 1, 2], [0, 1, 4, 4]]
    assert g.step_edge == [[0, 1, 2], [0, 3, None, 4]]  # s4 -e-> s5 lies inside the chain
    assert [n["visits"] for n in g.nodes] == [2, 2, 1, 1, 2, 1]
    assert (g.nodes[3]["won_ends"], g.nodes[5]["lost_ends"], g.nodes[0]["start"]) == (1, 1, 2)


def test_top_k_keeps_starts_and_ends_and_the_most_visited():
    # One trajectory walking a, b, a, b, c, c, c, d: visits a 2, b 2, c 3 (and d once, the end).
    t = traj([(s, "go", 0) for s in "ababccc"], end="d")
    g = collapse(group(t), top_k=3)
    assert g.top_k_applied
    kept = {n["states"][0] for n in g.nodes if n["kind"] == "state"}
    assert kept == {"a", "d", "c"}  # a starts, d ends, c is the most visited of the rest
    assert sum(n["visits"] for n in g.nodes) == len(t) + 1
    with pytest.raises(ValueError, match="top_k"):
        collapse(group(t), top_k=0)


def test_many_actions_between_two_nodes_draw_as_one_edge():
    # Five different (invalid) outputs that all stay in s0, then one that moves on.
    t = traj([("s0", f"junk {k}", 0) for k in range(5)] + [("s0", "go", 0)], end="s1")
    g = collapse(group(t), max_parallel=3)
    assert [(e["action"], e["count"]) for e in g.edges] == [("5 different actions", 5), ("go", 1)]
    assert g.edges[0]["actions"] == [f"junk {k}" for k in range(5)]
    assert g.step_edge == [[0, 0, 0, 0, 0, 1]]
    assert len(collapse(group(t), max_parallel=5).edges) == 6


@pytest.mark.parametrize("engine", ["dot", "networkx"])
def test_layout_places_every_node_and_edge(engine):
    g = collapse(_two_paths())
    out = layout(g, engine)
    assert out["engine"] == engine and len(out["nodes"]) == 6 and len(out["edges"]) == 5
    for n in out["nodes"]:
        assert 0 <= n["x"] <= out["width"] and 0 <= n["y"] <= out["height"]
    assert all(len(e["points"]) >= 2 for e in out["edges"])
    # Left to right: the start lies left of the ends.
    xs = {tuple(n["states"]): n["x"] for n in out["nodes"]}
    assert xs[("s0",)] < xs[("s3",)] and xs[("s0",)] < xs[("s6",)]
    with pytest.raises(ValueError, match="unknown layout"):
        layout(g, "circo")


def test_escaped_json_cannot_close_the_script_and_round_trips():
    payload = {"text": XSS, "nested": [XSS, "\u2029"]}
    text = escape_json(payload)
    assert not set("<>&") & set(text) and "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == payload
    with pytest.raises(ValueError):
        escape_json({"x": float("nan")})


def test_page_is_self_contained_and_its_csp_allows_only_its_own_script():
    page = render_html({"meta": {"x": "{{DATA}} " + XSS}}, title="t <b>")
    assert page.count("{{") == 1  # every placeholder filled, the one in the data left alone
    assert "<img" not in page and "t &lt;b&gt;" in page
    assert not re.search(r"(src|href)=\"https?:", page)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert (
        f"script-src &#x27;sha256-{digest}&#x27;" in csp and "default-src &#x27;none&#x27;" in csp
    )


def test_recompute_scales_like_the_learner_and_explains_missing_inputs():
    groups, _ = play_groups(n_groups=2, group_size=4)
    out = {r["name"]: r for r in recompute(groups, ["grpo", "ppo", "igpo", "empg"], {}, "rms")}
    grpo = out["grpo"]["values"]
    raw = credit.make("grpo")(groups).values
    assert np.allclose(grpo, raw / (np.sqrt(np.mean(raw**2)) + 1e-8))
    assert not out["ppo"]["available"] and "value estimates" in out["ppo"]["reason"]
    assert not out["igpo"]["available"] and "answer log-probs" in out["igpo"]["reason"]
    assert not out["empg"]["available"] and "entropies" in out["empg"]["reason"]
    bad = recompute(groups, ["gigpo"], {"gigpo": {"no_such": 1}})[0]
    assert not bad["available"] and "no_such" in bad["reason"]
    with pytest.raises(ValueError, match="unknown scale"):
        recompute(groups, ["grpo"], {}, "whiten")


def test_benchmark_folder_payload_matches_the_dump(tmp_path):
    groups, ref = play_groups(n_groups=3, group_size=4)
    folder = benchmark_folder(tmp_path / "bench", groups, ref, iterations=(0, 10))
    data = load_source(folder, iteration=10)
    assert (data.kind, data.trained, data.iteration, data.scale) == (
        "benchmark",
        "gigpo",
        10,
        "rms",
    )
    payload = build_payload(data, ["gigpo", "grpo", "hgpo", "salt", "ppo"], groups=[1])
    meta = payload["meta"]
    assert meta["check"]["ok"], meta["check"]  # recomputed gigpo == what the update received
    assert payload["reference"]["available"]
    start = groups[0].num_steps
    n = groups[1].num_steps
    assert payload["groups"][0]["start"] == 0 and payload["groups"][0]["end"] == n
    assert np.allclose(payload["reference"]["values"], ref[start : start + n], atol=1e-4)
    methods = {m["name"]: m for m in payload["methods"]}
    assert methods["gigpo"]["trained"] and len(methods["gigpo"]["values"]) == n
    assert not methods["ppo"]["available"]
    steps = payload["steps"]
    assert len(steps["obs"]) == n and steps["pv"] == [10] * n
    assert payload["strings"][steps["obs"][0]] == groups[1].trajectories[0].steps[0].observation
    with pytest.raises(ValueError, match="not in this iteration"):
        build_payload(data, ["grpo"], groups=[7])


def test_source_errors_name_what_exists(tmp_path):
    with pytest.raises(SourceError, match="neither a training run"):
        load_source(tmp_path)
    groups, ref = play_groups(n_groups=1, group_size=2)
    folder = benchmark_folder(tmp_path / "b", groups, ref, iterations=(0, 5))
    with pytest.raises(SourceError, match=r"dumped: \[0, 5\]"):
        load_source(folder, iteration=3)
    with pytest.raises(SourceError, match="dumped methods: \\['gigpo'\\]"):
        load_source(folder, run="salt")
    with pytest.raises(SourceError, match="seed_0"):
        load_source(folder, run="gigpo/4")


def test_optimal_advantages_are_zero_on_shortest_paths_and_negative_elsewhere():
    groups, _ = play_groups(n_groups=1, group_size=3, p_expert=0.5)
    a_star, reason = optimal_advantages(ENV_ID, {"level": "small", "max_steps": 12}, groups)
    assert reason == "" and np.all(np.isfinite(a_star)) and np.all(a_star <= 1e-9)
    env = gymnasium.make(ENV_ID, split="train", level="small").unwrapped
    env.reset(seed=0, options={"task_id": 0})
    model = env.model()
    steps = [s for t in groups[0].trajectories for s in t.steps]
    for s, a in zip(steps, a_star):
        best = model.shortest_path_actions(s.state_key)
        assert (abs(a) < 1e-9) == (s.action in best), (s.action, best, a)
    none, why = optimal_advantages(NO_MODEL, {}, groups)
    assert none is None and "has no finite model" in why


class _NoModel(TextEnv):
    """A one-state env without a finite model (whose panel holds KeyRooms' task id)."""

    env_name = "test/ViewerNoModel-v0"

    def task_ids(self, split):
        return [play_groups(1, 1)[0][0].task_id]

    def _reset_task(self, task_id):
        return "here", {"state_key": "s", "admissible_actions": ["wait"], "won": False}

    def _step(self, action):
        return "here", 0.0, False, {"state_key": "s", "won": False}


NO_MODEL = "test/ViewerNoModel-v0"
if NO_MODEL not in gymnasium.registry:
    gymnasium.register(NO_MODEL, entry_point=_NoModel)


def test_parse_iterations():
    assert parse_iterations("20,0,10,10") == [0, 10, 20]
    assert parse_iterations("none") == [] and parse_iterations("") == []
    with pytest.raises(ValueError):
        parse_iterations("1,x")
