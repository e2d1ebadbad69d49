"""Behaviour cloning (`creditgym.trainers.warmstart`) on the tiny model: exact formats and a falling NLL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from creditgym.agents.llm import LLMAgent
from creditgym.agents.models import resolve_model, tiny_model
from creditgym.credit.trajectory import flat_steps
from creditgym.trainers.config import from_dict
from creditgym.trainers.learner import Learner, LearnerConfig
from creditgym.trainers.rollout import EnvPool
from creditgym.trainers.warmstart import DemonstrationAgent, demonstrations, warm_start

ENV_KWARGS = {"level": "small", "max_steps": 12}


@pytest.fixture(scope="module")
def learner() -> Learner:
    return Learner(
        LearnerConfig(finetune="full", kl_coef=0.0, lr=3e-3, mini_batches=2), tiny_model()
    )


def _agent(learner: Learner, **kw) -> DemonstrationAgent:
    llm = LLMAgent(None, learner.tokenizer, history_length=1, **kw)
    return DemonstrationAgent(llm)


def test_response_text_continues_the_response_prefix(learner) -> None:
    assert _agent(learner).response_text("go to den") == "<action>go to den</action>"
    prefixed = _agent(learner, response_prefix="<action>")
    assert prefixed.response_text("go to den") == "go to den</action>"
    with pytest.raises(ValueError, match="not a prefix"):
        _agent(learner, response_prefix="Answer:").response_text("look")
    with pytest.raises(ValueError, match="output_format='action'"):
        _agent(learner, output_format="search")


def test_demonstrations_are_expert_wins_in_the_policys_prompt_format(learner) -> None:
    agent = _agent(learner, response_prefix="<action>")
    with EnvPool("creditgym/KeyRooms-v0", 3, env_kwargs=ENV_KWARGS) as pool:
        groups, stats = demonstrations(pool, agent, episodes=3, seed=0, batch=3)
    assert stats["expert_success"] == 1.0 and stats["episodes"] == 3
    assert len({g.task_id for g in groups}) == 3  # distinct tasks
    tok = learner.tokenizer
    for step in flat_steps(groups):
        assert step.valid
        # The prompt ends with the response prefix; the response is the expert action + close tag.
        assert tok.decode(step.prompt_ids).endswith("<action>")
        assert tok.decode(step.response_ids) == f"{step.action}</action>"
    with (
        EnvPool("creditgym/KeyRooms-v0", 1, env_kwargs=ENV_KWARGS) as pool,
        pytest.raises(ValueError, match="panel has"),
    ):
        demonstrations(pool, agent, episodes=len(pool.panel) + 1, seed=0, batch=1)


@pytest.mark.slow
def test_supervised_update_lowers_the_nll_and_raises_greedy_accuracy(learner) -> None:
    agent = _agent(learner, response_prefix="<action>")
    with EnvPool("creditgym/KeyRooms-v0", 2, env_kwargs=ENV_KWARGS) as pool:
        groups, _ = demonstrations(pool, agent, episodes=2, seed=1, batch=2)
    before = learner.greedy_match(groups)
    history = [learner.supervised_update(groups, seed=0)["sft/nll"]]
    while history[-1] > 0.2 and len(history) < 60:
        history.append(learner.supervised_update(groups, seed=0)["sft/nll"])
    assert history[-1] <= 0.2, history
    after = learner.greedy_match(groups)
    assert 0.0 <= before < 0.5 < after <= 1.0, (before, after)


@pytest.mark.slow
def test_warm_start_writes_a_loadable_model_and_a_report(tmp_path: Path) -> None:
    config = from_dict(
        {
            "model": {"name": "tiny"},
            "env": {"id": "creditgym/KeyRooms-v0", "kwargs": ENV_KWARGS},
            "agent": {"response_prefix": "<action>", "history_length": 1},
            "learner": {"finetune": "lora"},
        }
    )
    report = warm_start(config, tmp_path, episodes=2, epochs=2, eval_episodes=1, progress=False)
    saved = json.loads((tmp_path / "warmstart.json").read_text())
    assert saved["demonstrations"]["expert_success"] == 1.0
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    assert 0.0 <= saved["held_out_greedy_match_after"] <= 1.0
    folder = resolve_model(report["model"])
    reloaded = Learner(LearnerConfig(finetune="full", kl_coef=0.0), folder)
    assert reloaded.trainable_parameters() > 0
    with pytest.raises(FileExistsError):
        warm_start(config, tmp_path, episodes=1, epochs=1, eval_episodes=0, progress=False)


@pytest.mark.slow
def test_a_run_with_a_warmstart_section_trains_the_cloned_model(tmp_path: Path) -> None:
    from creditgym.trainers.train import Trainer, train
    from tests.trainers.test_train import tiny_config

    extra = ["warmstart.episodes=2", "warmstart.eval_episodes=1", "train.iterations=1"]
    cfg = tiny_config(
        tmp_path,
        "agent.response_prefix=<action>",
        "env.kwargs={level: small, max_steps: 10}",
        *extra,
    )
    result = train(cfg, argv=["test"])
    clone = Path(result.run_dir) / "warmstart"
    assert (clone / "model" / "config.json").exists()
    meta = json.loads((Path(result.run_dir) / "meta.json").read_text())
    assert meta["created"]["model_path"] == str((clone / "model").resolve())
    assert meta["created"]["warmstart"]["demonstrations"]["episodes"] == 2
    # A resume reuses the cloned model instead of cloning again.
    stamp = (clone / "model" / "model.safetensors").stat().st_mtime_ns
    trainer = Trainer(cfg, run_dir=result.run_dir, resume=True)
    trainer.build(pools=False)
    assert trainer.model_path == str((clone / "model").resolve())
    assert (clone / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_an_expert_cut_short_is_refused_with_the_reason(learner) -> None:
    agent = _agent(learner)
    with (
        EnvPool("creditgym/KeyRooms-v0", 1, env_kwargs={"level": "small", "max_steps": 2}) as pool,
        pytest.raises(RuntimeError, match="max_steps"),
    ):
        demonstrations(pool, agent, episodes=1, seed=0, batch=1)
