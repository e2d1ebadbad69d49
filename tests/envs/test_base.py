"""The TextEnv contract, exercised on a minimal env defined here."""

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from creditgym import envs
from creditgym.envs.base import CHARSET, Panel, TextEnv, sanitize_text


class Counter(TextEnv):
    """Count up to 3: 'inc' adds one; anything else is invalid."""

    env_name = "test/Counter-v0"
    default_max_steps = 5

    def task_ids(self, split):
        return [f"{split}-{i}" for i in range({"train": 4, "valid": 2, "test": 2}[split])]

    def _reset_task(self, task_id):
        self.n = 0
        return "n=0", self._info(True)

    def _info(self, valid):
        return {
            "task": "count to 3",
            "admissible_actions": ["inc"],
            "action_valid": valid,
            "won": self.n >= 3,
            "state_key": f"n={self.n}",
        }

    def _step(self, action):
        if action != "inc":
            return "Nothing happens.", 0.0, False, self._info(False)
        self.n += 1
        return f"n={self.n}", float(self.n >= 3), self.n >= 3, self._info(True)


def test_reset_by_task_id_and_by_seed():
    env = Counter(split="valid")
    _, info = env.reset(options={"task_id": 1})
    assert info["task_id"] == "valid-1" and info["split"] == "valid"
    assert info["panel_hash"] == env.panel.hash
    picks = {Counter().reset(seed=s)[1]["task_id"] for s in range(20)}
    assert picks <= set(Counter().panel.ids) and len(picks) > 1
    assert Counter().reset(seed=7)[1]["task_id"] == Counter().reset(seed=7)[1]["task_id"]


def test_bad_reset_options_and_splits_are_clear_errors():
    env = Counter()
    with pytest.raises(ValueError, match=r"task_id.*\[0, 4\)"):
        env.reset(options={"task_id": 9})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"taskid": 1})
    with pytest.raises(ValueError, match="unknown split"):
        Counter(split="dev")


def test_info_defaults_invalid_actions_and_truncation():
    env = Counter()
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step("jump")
    assert obs == "Nothing happens." and info["action_valid"] is False and not term
    for key in (
        "task",
        "admissible_actions",
        "action_valid",
        "won",
        "state_key",
        "task_type",
        "score",
    ):
        assert key in info
    for _ in range(4):
        obs, r, term, trunc, info = env.step("jump")
    assert trunc and not term and info["step"] == 5


def test_panel_hash_depends_on_ids_and_version(tmp_path):
    a = Panel("e", "train", "1", ("x", "y"))
    assert a.hash == Panel("e", "train", "1", ("x", "y")).hash
    assert a.hash != Panel("e", "train", "2", ("x", "y")).hash
    assert a.hash != Panel("e", "train", "1", ("y", "x")).hash
    assert Panel.load(a.save(tmp_path / "p.json")) == a


def test_sanitize_keeps_text_in_the_space():
    text = sanitize_text("héllo 😀" + "x" * 100, 50)
    assert len(text) == 50 and text.endswith("[truncated]") and set(text) <= CHARSET
    assert "?" in text


def test_check_env_passes_without_warnings():
    if "mytests/Counter-v0" not in gymnasium.registry:
        gymnasium.register(id="mytests/Counter-v0", entry_point=Counter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gymnasium.make("mytests/Counter-v0").unwrapped)


def test_missing_state_key_is_a_clear_error():
    class NoKey(Counter):
        def _reset_task(self, task_id):
            obs, info = super()._reset_task(task_id)
            del info["state_key"]
            return obs, info

    with pytest.raises(RuntimeError, match="state_key"):
        NoKey().reset(seed=0)


def test_registry_lists_builtin_and_user_envs():
    if "mytests/Counter-v0" not in gymnasium.registry:
        gymnasium.register(id="mytests/Counter-v0", entry_point=Counter)
    ids = envs.list_envs()
    assert "creditgym/KeyRooms-v0" in ids and "mytests/Counter-v0" in ids
    assert "CartPole-v1" not in ids
    env = gymnasium.make("mytests/Counter-v0", split="test")
    assert env.unwrapped.panel.env == "mytests/Counter-v0"


def test_unknown_id_fails_with_gymnasiums_error():
    with pytest.raises(gymnasium.error.Error):
        gymnasium.make("creditgym/NoSuchEnv-v0")


def test_optional_methods_have_declared_defaults():
    env = Counter()
    assert not Counter.has_expert() and not Counter.has_model()
    with pytest.raises(NotImplementedError, match="Counter has no expert"):
        env.expert_action()
    with pytest.raises(NotImplementedError, match="Counter has no finite model"):
        env.model()
    assert Counter.action_syntax == "action"
    from creditgym.envs.keyrooms import KeyRoomsEnv
    from creditgym.envs.search import SearchEnv
    from creditgym.envs.tooluse import ToolUseEnv

    assert KeyRoomsEnv.has_expert() and KeyRoomsEnv.has_model()
    assert SearchEnv.has_expert() and not SearchEnv.has_model()
    assert (SearchEnv.action_syntax, ToolUseEnv.action_syntax) == ("search", "tool")


class Encoding(Counter):
    """Encodes every action as UTF-8 the way an engine bridge (py4j, HTTP) does."""

    def _step(self, action):
        action.encode("utf-8")
        return super()._step(action)


def test_lone_surrogates_never_reach_the_engine(caplog):
    env = Encoding()
    env.reset(options={"task_id": 0})
    obs, _, _, _, info = env.step("inc\udcff")
    assert obs == "Nothing happens." and not info["action_valid"]
    assert env.step("inc")[0] == "n=1"  # plain text is untouched
    assert envs.base.encodable("é \ud800x\udfff") == "é ?x?"
    assert envs.base.encodable("naïve → ok") == "naïve → ok"


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("creditgym/KeyRooms-v0", {"level": "small"}),
        ("creditgym/Search-v0", {}),
        ("creditgym/ToolUse-v0", {"families": ["arithmetic"]}),
        ("creditgym/ALFWorld-v0", {}),
        ("creditgym/WebShop-v0", {"n_products": 100}),
    ],
)
def test_builtin_envs_take_a_surrogate_action_without_a_traceback(env_id, kwargs, caplog, capfd):
    caplog.set_level("DEBUG")
    env = gymnasium.make(env_id, **kwargs).unwrapped
    try:
        env.reset(seed=0, options={"task_id": 0})
        for action in ("go \udcff north", "<search>\udcff</search>", "search[\ud800]"):
            obs, *_ = env.step(action)
            assert "\udcff" not in obs and "\ud800" not in obs
    finally:
        env.close()
    logged = caplog.text + "".join(capfd.readouterr())
    assert "Traceback" not in logged and "UnicodeEncodeError" not in logged
