"""ToolUse-v0: tool schemas and errors, the apps, each family's checker, the oracle's plans."""

import json
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs  # noqa: F401  (registers the ids)
from creditgym.envs.tooluse import FAMILIES, ToolError, ToolUseEnv, make_task, parse_tool_call
from creditgym.envs.tooluse.apps import (
    CALCULATOR,
    CONVERTER,
    CalendarApp,
    CompanyDB,
    calculate,
    convert,
)
from creditgym.envs.tooluse.sandbox import isolation_problem

ENV_ID = "creditgym/ToolUse-v0"
NO_RG = [
    "arithmetic",
    "database",
    "calendar",
]  # families that need neither reasoning-gym nor unshare


def tool_call(tool, /, **arguments):
    return f"<tool_call>{json.dumps({'name': tool, 'arguments': arguments})}</tool_call>"


def play(env, actions):
    out = []
    for a in actions:
        out.append(env.step(a))
        if out[-1][2] or out[-1][3]:
            break
    return out


# ----------------------------------------------------------------------------- tools
def test_parse_tool_call_errors_are_specific():
    assert parse_tool_call('{"name": "calculator", "arguments": {"expression": "1+1"}}') == (
        "calculator",
        {"expression": "1+1"},
    )
    assert parse_tool_call('{"name": "f", "arguments": "{\\"x\\": 1}"}') == ("f", {"x": 1})
    for text, needle in [
        ('{"name": "calculator", "arguments": {"expression": "1+1"}', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"arguments": {}}', "needs a 'name'"),
        ('{"name": "f", "arguments": [1]}', "'arguments' must be a JSON object, got a array"),
        ('{"name": "f", "args": {}}', "unexpected keys ['args']"),
    ]:
        with pytest.raises(ToolError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            parse_tool_call(text)


def test_argument_checking_against_schemas():
    with pytest.raises(
        ToolError, match="argument 'value' of convert_units must be a number, got string"
    ):
        CONVERTER({"value": "3", "from_unit": "km", "to_unit": "mi"})
    with pytest.raises(ToolError, match=r"missing required argument\(s\) \['to_unit'\]"):
        CONVERTER({"value": 3, "from_unit": "km"})
    with pytest.raises(ToolError, match=r"unknown argument\(s\) \['precision'\]"):
        CALCULATOR({"expression": "1", "precision": 2})
    db = CompanyDB(1)
    list_orders = {t.name: t for t in db.tools()}["list_orders"]
    with pytest.raises(ToolError, match="must be an integer, got string"):
        list_orders({"customer_id": "101"})
    with pytest.raises(ToolError, match="must be an integer, got boolean"):
        list_orders({"customer_id": True})
    with pytest.raises(ToolError, match=r"must be one of \["):
        list_orders({"customer_id": 101, "status": "lost"})
    add_event = {t.name: t for t in CalendarApp().tools()}["add_event"]
    with pytest.raises(ToolError, match="must look like YYYY-MM-DD"):
        add_event({"title": "x", "date": "June 3", "start": "10:00", "duration_minutes": 30})
    with pytest.raises(ToolError, match="must be <= 720"):
        add_event({"title": "x", "date": "2025-06-03", "start": "10:00", "duration_minutes": 9999})


def test_calculator_is_safe_and_exact():
    assert calculate("(12.5 * 4 - 3) / 7") == f"{47 / 7:.10g}"
    assert calculate("2 ^ 10") == "1024" and calculate("7 × 6") == "42"
    assert calculate("sqrt(16) + abs(-2)") == "6"
    for bad, needle in [
        ("__import__('os').system('true')", "unsupported expression"),
        ("().__class__", "unsupported expression"),
        ("1/0", "division by zero"),
        ("9 ** 9999", "exponent or base too large"),
        ("1 +", "cannot parse"),
    ]:
        with pytest.raises(ToolError, match=needle):
            calculate(bad)


def test_unit_conversion():
    assert convert(42.195, "km", "mi") == pytest.approx(26.2188, abs=1e-4)
    assert convert(212, "F", "celsius") == pytest.approx(100)
    assert convert(1, "hours", "minutes") == 60
    with pytest.raises(ToolError, match="cannot convert length"):
        convert(1, "km", "kg")
    with pytest.raises(ToolError, match="unknown unit 'parsec'"):
        convert(1, "parsec", "km")


def test_company_db_is_seeded():
    a, b = CompanyDB(5), CompanyDB(5)
    assert a.query("SELECT * FROM orders") == b.query("SELECT * FROM orders")
    assert a.query("SELECT * FROM customers") != CompanyDB(6).query("SELECT * FROM customers")
    name = a.query("SELECT name FROM customers LIMIT 1")[0][0]
    assert a.find_customer(name.upper())["name"] == name
    with pytest.raises(ToolError, match="no customer named"):
        a.find_customer("Nobody Here")


# ----------------------------------------------------------------------------- env
def test_check_env_without_warnings():
    env = gymnasium.make(ENV_ID, families=NO_RG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_panels_interleave_families_and_are_disjoint():
    env = envs.make(ENV_ID, split="valid")
    assert isinstance(env, ToolUseEnv) and env.family == "tooluse"
    ids = env.panel.ids
    assert len(ids) == 400 and [i.split("-")[0] for i in ids[:4]] == list(FAMILIES)
    train = set(ToolUseEnv(split="train").panel.ids)
    assert not train & set(ids) and not set(ToolUseEnv(split="test").panel.ids) & set(ids)
    assert ToolUseEnv(split="valid", families=["calendar"]).panel.hash != env.panel.hash
    with pytest.raises(ValueError, match="families must be a non-empty subset"):
        ToolUseEnv(families=["chess"])
    with pytest.raises(ValueError, match="python_limits"):
        ToolUseEnv(python_limits={"seconds": 3})


def test_protocol_errors_keep_the_episode_going():
    env = ToolUseEnv(split="valid", families=["database"])
    obs, info = env.reset(options={"task_id": 0})
    assert "Tools:" in obs and '"name": "find_customer"' in obs and "<tool_call>" in obs
    key0 = info["state_key"]
    bad_turns = [
        ("<tool_call>{not json}</tool_call>", "not valid JSON"),
        (tool_call("drop_tables"), "unknown tool 'drop_tables'; available tools: find_customer"),
        (tool_call("list_orders", customer_id="101"), "must be an integer, got string"),
        (tool_call("find_customer"), "missing required argument"),
        (tool_call("find_customer", name="Nobody Here"), "no customer named 'Nobody Here'"),
        ("Let me think about it.", "no <tool_call>...</tool_call> or <answer>...</answer> found"),
        (
            tool_call("calculator", expression="1") + "<answer>1</answer>",
            "both <tool_call> and <answer>",
        ),
    ]
    for action, needle in bad_turns:
        obs, r, term, trunc, info = env.step(action)
        assert needle in obs, obs
        assert not info["action_valid"] and not term and not trunc and r == 0.0
        assert info["state_key"] == key0
    # The episode still goes on: the expert's plan solves it from here.
    env._plan_pos = 0
    steps = play(env, env.task.plan)
    assert steps[-1][1] == 1.0 and steps[-1][2]


def test_state_key_tracks_information_and_app_state():
    env = ToolUseEnv(split="valid", families=["calendar"])
    _, info = env.reset(options={"task_id": 1})
    k0 = json.loads(info["state_key"])
    _, _, _, _, info = env.step(tool_call("list_todos"))
    k1 = json.loads(info["state_key"])
    assert k1["app"] == k0["app"] and len(k1["calls"]) == 1
    _, _, _, _, info = env.step(tool_call("list_todos"))
    assert json.loads(info["state_key"]) == k1, "repeating a lookup reveals nothing new"
    _, _, _, _, info = env.step(tool_call("add_todo", title="Feed cat", due_date="2025-06-03"))
    k2 = json.loads(info["state_key"])
    assert k2["app"] != k1["app"] and k2["calls"] == k1["calls"]


def test_calendar_checks_the_final_state_not_the_words():
    env = ToolUseEnv(split="valid", families=["calendar"])
    env.reset(options={"task_id": 0})
    _, r, term, _, info = env.step("<answer>done</answer>")
    assert term and r == 0.0 and info["ground_truth"] == "done" and "goal" in info
    env.reset(options={"task_id": 0})
    steps = play(env, env.task.plan)
    assert steps[-1][1] == 1.0 and steps[-1][4]["won"]
    # Doing the plan plus an extra change is not the goal state.
    env.reset(options={"task_id": 0})
    play(env, env.task.plan[:-1] + [tool_call("add_todo", title="Extra", due_date="2025-06-04")])
    _, r, *_ = env.step("<answer>done</answer>")
    assert r == 0.0


@pytest.mark.parametrize("family", NO_RG)
def test_wrong_answers_lose(family):
    env = ToolUseEnv(split="valid", families=[family])
    for i in range(6):
        _, info = env.reset(options={"task_id": i})
        if family != "calendar":
            _, r, term, _, _ = env.step("<answer>-123456.78 flamingo</answer>")
            assert term and r == 0.0
        assert info["ground_truth"]


@pytest.mark.slow
def test_oracle_solves_every_family():
    env = ToolUseEnv(split="valid")
    wins = {f: 0 for f in FAMILIES}
    n_each = 10
    for i in range(4 * n_each):
        _, info = env.reset(options={"task_id": i})
        done = False
        while not done:
            obs, r, term, trunc, info = env.step(env.expert_action())
            if not term:
                assert info["action_valid"] and "Error" not in obs, obs
            done = term or trunc
        wins[info["task_type"]] += r
        assert env.expert_action() is None
    assert wins == {f: n_each for f in FAMILIES}


@pytest.mark.slow
@pytest.mark.skipif(isolation_problem() is not None, reason="no namespaces for the python tool")
def test_reasoning_plans_compute_the_answer_with_the_tools():
    """The expert's tool call alone produces reasoning-gym's answer (the plan is not a lookup)."""
    env = ToolUseEnv(split="test", families=["reasoning"])
    seen = set()
    for i in range(24):
        _, info = env.reset(options={"task_id": i})
        seen.add(info["goal"]["reasoning_gym_task"])
        obs, *_ = env.step(env.task.plan[0])
        assert obs == f"<tool_response>{info['ground_truth']}</tool_response>", (obs, info)
        assert env.task.check(info["ground_truth"]) and not env.task.check("no idea")
    assert len(seen) >= 6


def test_tasks_are_deterministic():
    from creditgym.envs.tooluse.env import python_tool
    from creditgym.envs.tooluse.sandbox import PythonSandbox

    tool = python_tool(PythonSandbox())
    for tid in ("arithmetic-500003", "database-500007", "calendar-000042"):
        a, b = make_task(tid, tool), make_task(tid, tool)
        assert (a.instruction, a.plan, a.ground_truth) == (b.instruction, b.plan, b.ground_truth)
    with pytest.raises(ValueError, match="unknown task family"):
        make_task("poker-000001", tool)


def test_random_text_never_raises_and_never_wins():
    env = ToolUseEnv(split="valid", families=NO_RG)
    env.action_space.seed(1)
    for ep in range(6):
        env.reset(seed=ep)
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            assert r == 0.0
            done = term or trunc
