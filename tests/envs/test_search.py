"""Search-v0: answer metrics, corpora and questions, loaders, retrieval, protocol, oracle."""

import json
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs  # noqa: F401  (registers the ids)
from creditgym.envs.search import (
    BM25Retriever,
    SearchEnv,
    exact_match,
    f1_score,
    get_dataset,
    load_corpus_jsonl,
    load_jsonl_dataset,
    load_qa_jsonl,
    normalize_answer,
)
from creditgym.envs.search.env import format_hits
from creditgym.envs.search.synthetic import build_synthetic_dataset

ENV_ID = "creditgym/Search-v0"
SYN = {"corpus": "synthetic", "num_passages": 2000, "num_questions": 600}


# ----------------------------------------------------------------------------- metrics
def test_normalisation_and_metrics():
    assert normalize_answer("  The  Euro! ") == "euro"
    assert normalize_answer("66,987,244") == "66987244"
    assert exact_match("the euro", ["Euro", "EUR"]) == 1.0
    assert exact_match("eur.", ["Euro", "EUR"]) == 1.0
    assert exact_match("euro coin", ["Euro"]) == 0.0
    # F1: "new york city" vs "new york": precision 2/3, recall 1 -> 0.8.
    assert f1_score("New York City", ["new york"]) == pytest.approx(0.8)
    assert f1_score("Paris", ["Lyon", "paris"]) == 1.0
    assert f1_score("nothing", ["Paris"]) == 0.0
    assert f1_score("", ["Paris"]) == 0.0


# ----------------------------------------------------------------------------- corpora
def test_geo_dataset_facts_and_hop_chains():
    ds = get_dataset("geo")
    by_id = {p.id: p for p in ds.passages}
    assert len({p.id for p in ds.passages}) == len(ds.passages) > 4000
    fr = by_id["country-FR"]
    assert fr.title == "France"
    assert "Its capital is Paris." in fr.text and "Euro (EUR)" in fr.text
    assert "Switzerland" in fr.text and "Western Europe" in fr.text
    types = {q.qtype for q in ds.questions}
    assert types == {"single_hop", "bridge", "comparison"}
    assert len(ds.questions) > 2000
    for q in ds.questions:
        assert q.hops and all(h.doc_id in by_id for h in q.hops)
        assert q.question.endswith("?") and q.golden_answers
        if q.qtype == "bridge":
            assert len(q.hops) == 2
            # The answer is stated in the last hop's passage (the bridge entity's page).
            assert q.golden_answers[0] in by_id[q.hops[-1].doc_id].text
        if q.qtype == "comparison":
            assert q.golden_answers[0] in q.question
    fes = [q for q in ds.questions if q.qtype == "bridge" and "currency" in q.question]
    assert fes, "bridge questions about currencies exist"


def test_synthetic_dataset_is_seeded_and_consistent():
    a = build_synthetic_dataset(1000, 200, seed=3)
    b = build_synthetic_dataset(1000, 200, seed=3)
    c = build_synthetic_dataset(1000, 200, seed=4)
    assert a.passages == b.passages and a.questions == b.questions
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(a.passages) == 1000
    assert len({p.title.lower() for p in a.passages}) == 1000, "entity names are unique"
    by_id = {p.id: p for p in a.passages}
    for q in a.questions:
        last = by_id[q.hops[-1].doc_id].text
        if q.qtype in ("single_hop", "bridge"):
            assert q.golden_answers[0] in last, (q, last)
    with pytest.raises(ValueError, match="at least 50"):
        build_synthetic_dataset(10)


def test_jsonl_loaders(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"id": "1", "title": "Alpha", "text": "Alpha is a red fruit."},
        {"id": "2", "contents": '"Beta"\nBeta is a blue stone.'},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What colour is Beta?", "golden_answers": ["blue"]}))
    passages = load_corpus_jsonl(corpus)
    assert [(p.id, p.title) for p in passages] == [("1", "Alpha"), ("2", "Beta")]
    assert passages[1].text == "Beta is a blue stone."
    assert passages[1].contents == '"Beta"\nBeta is a blue stone.'
    (q,) = load_qa_jsonl(qa)
    assert q.golden_answers == ("blue",) and q.hops == ()
    ds = load_jsonl_dataset(corpus, qa)
    assert ds.tag.startswith("jsonl")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_corpus_jsonl(bad)
    bad.write_text('{"id": "1", "text": "x"}\n{"id": "1", "text": "y"}\n')
    with pytest.raises(ValueError, match="duplicate passage id '1'"):
        load_corpus_jsonl(bad)
    bad.write_text('{"question": "Q?", "golden_answers": "yes"}\n{"question": "R?"}\n')
    with pytest.raises(ValueError, match="record 2 needs 'golden_answers'"):
        load_qa_jsonl(bad)
    with pytest.raises(ValueError, match="qa_path"):
        get_dataset(str(corpus))
    with pytest.raises(ValueError, match="one of"):
        get_dataset("wikipedia")


def test_user_jsonl_files_play_in_the_env(tmp_path):
    corpus, qa = tmp_path / "c.jsonl", tmp_path / "q.jsonl"
    texts = [f"Item {i} is kept in drawer {i * 7}." for i in range(40)]
    corpus.write_text(
        "\n".join(
            json.dumps({"id": str(i), "title": f"Item {i}", "text": t}) for i, t in enumerate(texts)
        )
    )
    qa.write_text(
        "\n".join(
            json.dumps(
                {"question": f"Which drawer holds item {i}?", "golden_answers": [str(i * 7)]}
            )
            for i in range(40)
        )
    )
    env = SearchEnv(corpus=str(corpus), qa_path=str(qa), split="train")
    won = 0
    for i in range(len(env.panel)):
        env.reset(options={"task_id": i})
        first = env.expert_action()
        assert first.startswith("<search>Which drawer holds item")
        env.step(first)
        _, r, term, _, info = env.step(env.expert_action())
        assert term and info["ground_truth"] == info["golden_answers"][0]
        won += r
    assert won == len(env.panel)


# ----------------------------------------------------------------------------- retrieval
def test_bm25_ranks_the_named_entity_first_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path))
    ds = build_synthetic_dataset(500, 50, seed=11)
    fresh = BM25Retriever.for_dataset(ds)
    assert fresh.built
    cached = BM25Retriever.for_dataset(ds)
    assert not cached.built, "second construction loads the on-disk index"
    queries = [q.hops[0].query for q in ds.questions]
    golds = [q.hops[0].doc_id for q in ds.questions]
    for r in (fresh, cached):
        results = r.search(queries, topk=3)
        assert len(results) == len(queries) and all(len(h) == 3 for h in results)
        hit_rate = np.mean([g in {h.id for h in hits} for g, hits in zip(golds, results)])
        assert hit_rate >= 0.95
        assert all(hits[0].score >= hits[1].score >= hits[2].score for hits in results)
    assert [h.id for h in fresh.search(["zzzz unknownword"], 3)[0]] == [
        h.id for h in cached.search(["zzzz unknownword"], 3)[0]
    ]
    assert fresh.search([], 3) == []


@pytest.mark.slow
def test_dense_retriever_with_packaged_minilm(tmp_path, monkeypatch):
    from creditgym.envs.search import DenseRetriever, Passage

    monkeypatch.setenv("CREDITGYM_CACHE", str(tmp_path))
    passages = [
        Passage("a", "Volcano", "A volcano erupts lava and ash from a magma chamber."),
        Passage("b", "Violin", "The violin is a bowed string instrument with four strings."),
        Passage("c", "Bread", "Bread is baked from flour, water and yeast."),
        Passage("d", "Comet", "A comet is an icy body that releases gas near the Sun."),
    ]
    r = DenseRetriever(passages, "dense-test")
    top = r.search(["which instrument is played with a bow", "molten rock from a mountain"], 2)
    assert top[0][0].id == "b" and top[1][0].id == "a"
    assert top[0][0].score > top[0][1].score
    again = DenseRetriever(passages, "dense-test")  # loads the cached embeddings
    assert np.allclose(again.embeddings, r.embeddings)


# ----------------------------------------------------------------------------- env protocol
def test_check_env_without_warnings():
    env = gymnasium.make(ENV_ID, **SYN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_protocol_rewards_and_state_keys():
    env = envs.make(ENV_ID, split="valid", **SYN)
    assert isinstance(env, SearchEnv) and env.max_steps == 4 and env.family == "search"
    obs, info = env.reset(options={"task_id": 0})
    q = env._question
    assert q.question in obs and "<search>" in obs and "<answer>" in obs
    assert info["ground_truth"] == q.golden_answers[0] and info["task_type"] == q.qtype
    key0 = info["state_key"]
    assert json.loads(key0) == {"q": q.question, "docs": []}

    for bad, needle in [
        ("I think the answer is obvious.", "no <search>query</search> or <answer>text</answer>"),
        ("<search>x</search><answer>y</answer>", "both <search> and <answer>"),
        ("<search>   </search>", "search query is empty"),
        ("<answer> </answer>", "answer is empty"),
    ]:
        env.reset(options={"task_id": 0})
        obs, r, term, trunc, info = env.step(bad)
        assert needle in obs and not info["action_valid"] and r == 0.0 and not term
        assert info["state_key"] == key0, "an invalid turn does not change the state"

    env.reset(options={"task_id": 0})
    hop = q.hops[0]
    obs, r, term, trunc, info = env.step(f"<think>look it up</think><search>{hop.query}</search>")
    assert obs.startswith("<information>Doc 1 (Title: ") and obs.endswith("</information>")
    assert obs.count("\nDoc ") == 2 and info["action_valid"] and r == 0.0 and not term
    assert hop.doc_id in info["retrieved"] and len(info["retrieved"]) == 3
    key1 = info["state_key"]
    assert sorted(json.loads(key1)["docs"]) == sorted(info["retrieved"])
    # The same search again retrieves the same documents: same state.
    _, _, _, _, info = env.step(f"<search>{hop.query}</search>")
    assert info["state_key"] == key1
    obs, r, term, trunc, info = env.step(f"<answer>The {q.golden_answers[0]}</answer>")
    assert term and not trunc and r == 1.0 and info["won"] and info["f1"] == 1.0
    assert json.loads(info["state_key"])["answer"] == f"The {q.golden_answers[0]}"

    env.reset(options={"task_id": 0})
    _, r, term, _, info = env.step("<answer>certainly not this</answer>")
    assert term and r == 0.0 and not info["won"] and info["f1"] == 0.0 and info["score"] == 0.0


def test_at_most_four_turns():
    env = envs.make(ENV_ID, **SYN)
    env.reset(seed=5)
    for turn in range(1, 5):
        _, _, term, trunc, _ = env.step("<search>something</search>")
        assert not term and trunc == (turn == 4)


def test_panels_are_disjoint_deterministic_and_hashed():
    a, b = SearchEnv(split="train", **SYN), SearchEnv(split="valid", **SYN)
    t = SearchEnv(split="test", **SYN)
    assert not set(a.panel.ids) & set(b.panel.ids) and not set(b.panel.ids) & set(t.panel.ids)
    assert SearchEnv(split="valid", **SYN).panel.hash == b.panel.hash
    assert SearchEnv(split="valid").panel.hash != b.panel.hash  # geo corpus: other tasks
    env = SearchEnv(**SYN)
    o1, i1 = env.reset(seed=9)
    o2, i2 = env.reset(seed=9)
    assert o1 == o2 and i1["task_id"] == i2["task_id"]


@pytest.mark.parametrize("corpus", ["geo", "synthetic"])
def test_oracle_solves_valid_panel(corpus):
    env = SearchEnv(split="valid", **(SYN if corpus == "synthetic" else {}))
    n = min(len(env.panel), 150)
    wins, recall = 0.0, []
    for i in range(n):
        env.reset(options={"task_id": i})
        done = False
        while not done:
            _, r, term, trunc, info = env.step(env.expert_action())
            done = term or trunc
        wins += r
        recall.append(info["gold_recall"])
    assert wins / n >= 0.95
    assert np.mean(recall) >= 0.95, "the expert's queries retrieve the gold passages"


def test_random_text_never_raises_and_rarely_wins():
    env = SearchEnv(split="valid", **SYN)
    env.action_space.seed(0)
    wins = 0
    for ep in range(10):
        env.reset(seed=ep)
        done = False
        while not done:
            _, r, term, trunc, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(env._last_obs)
            done = term or trunc
        wins += r
    assert wins == 0


def test_format_hits():
    from creditgym.envs.search import Hit

    text = format_hits(
        [Hit("1", "Fes", "Fes is a city in Morocco.", 2.0), Hit("2", "Rabat", "Capital.", 1.0)]
    )
    assert text == (
        "<information>Doc 1 (Title: Fes) Fes is a city in Morocco.\nDoc 2 (Title: Rabat) Capital."
        "</information>"
    )
