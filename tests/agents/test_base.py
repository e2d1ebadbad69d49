"""The agent contract: output formats against env action syntaxes, needs, agents without env objects."""

import gymnasium
import numpy as np
import pytest

from creditgym.agents.base import FORMAT_SYNTAX, Context, agent_needs, check_format
from creditgym.agents.oracle import OracleAgent
from creditgym.agents.parsing import OUTPUT_FORMATS
from creditgym.agents.random_agent import RandomAgent
from creditgym.envs.base import ACTION_SYNTAXES, TextEnv
from creditgym.envs.keyrooms import KeyRoomsEnv
from creditgym.envs.search import SearchEnv


def test_every_output_format_writes_a_known_action_syntax():
    assert set(FORMAT_SYNTAX) == set(OUTPUT_FORMATS)
    assert set(FORMAT_SYNTAX.values()) == set(ACTION_SYNTAXES)
    assert FORMAT_SYNTAX["hiper"] == "action"


@pytest.mark.parametrize(
    "env, fmt",
    [
        ("creditgym/KeyRooms-v0", "action"),
        ("creditgym/KeyRooms-v0", "hiper"),
        ("creditgym/WebShop-v0", "action"),
        ("creditgym/Search-v0", "search"),
        ("creditgym/ToolUse-v0", "tool"),
        ("creditgym.envs:creditgym/ALFWorld-v0", "hiper"),
        (SearchEnv, "search"),
    ],
)
def test_matching_formats_pass(env, fmt):
    check_format(env, fmt)


def test_a_format_the_env_cannot_parse_fails_naming_both():
    with pytest.raises(ValueError) as exc:
        check_format("creditgym/Search-v0", "action")
    msg = str(exc.value)
    assert "creditgym/Search-v0 parses 'search' actions" in msg
    assert "output_format 'action' writes 'action' actions" in msg
    assert "use output_format 'search'" in msg
    with pytest.raises(ValueError, match="use output_format 'action' or 'hiper'"):
        check_format(KeyRoomsEnv(level="small"), "tool")
    with pytest.raises(ValueError, match=r"unknown output_format 'xml'; choose one of \["):
        check_format("creditgym/KeyRooms-v0", "xml")
    with pytest.raises(gymnasium.error.Error):
        check_format("creditgym/Nope-v0", "action")


def test_an_env_made_by_a_factory_cannot_be_checked_and_passes():
    if "test/Factory-v0" not in gymnasium.registry:
        gymnasium.register(id="test/Factory-v0", entry_point=lambda **kw: SearchEnv(**kw))
    check_format("test/Factory-v0", "action")


def test_needs():
    assert agent_needs(OracleAgent()) == {"expert_action"}
    assert agent_needs(RandomAgent()) == frozenset()


def test_random_agent_samples_the_action_space_from_data_as_the_env_would():
    space = TextEnv().action_space
    spec = {
        "min_length": space.min_length,
        "max_length": space.max_length,
        "charset": "".join(space.character_list),
    }
    ctx = Context(task="t", observation="o", admissible_actions=None, action_space=spec)
    got = [t.action for t in RandomAgent(seed=4).act([ctx, ctx])]
    # the pre-seam agent seeded the env's own space from its generator and sampled it
    rng = np.random.default_rng(4)
    want = []
    for _ in range(2):
        space.seed(int(rng.integers(2**31)))
        want.append(space.sample())
    assert got == want
    plain = Context(task="t", observation="o", admissible_actions=None)
    assert RandomAgent().act([plain])[0].action == ""
