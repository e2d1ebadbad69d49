"""Two real vLLM CPU servers with SmolLM2 behind `ReplicaSet`; one is killed mid-rollout.

About 6 GB and two minutes of start-up per server, so it is slow-marked and nothing else heavy
runs in it. Run it under the big-memory lock::

    flock /tmp/cg-bigmem.lock .venv/bin/pytest -m slow tests/agents/test_replicas_vllm.py
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from transformers import AutoTokenizer  # noqa: E402

from creditgym.agents.backends.base import SamplingConfig  # noqa: E402
from creditgym.agents.backends.replicas import NoReplicaLeft, ReplicaSet  # noqa: E402
from creditgym.agents.llm import LLMAgent  # noqa: E402
from creditgym.agents.models import resolve_model  # noqa: E402
from creditgym.trainers.shards import EnvPool  # noqa: E402
from creditgym.trainers.strategies import LockstepStrategy  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_two_vllm_replicas_survive_a_killed_one() -> None:
    model = resolve_model("smollm2-135m")
    rs = ReplicaSet(model, num_replicas=2, max_model_len=1024, kv_cache_gb=0.25)
    pgids = [r.server.process.pid for r in rs.replicas]
    pool = EnvPool("creditgym/KeyRooms-v0", 4, env_kwargs={"level": "small", "max_steps": 4})
    try:
        rs.health_interval_s = 0.0  # check before every call: the kill is seen at once
        tokenizer = AutoTokenizer.from_pretrained(model)
        sampling = SamplingConfig(max_new_tokens=12, seed=0)
        agent = LLMAgent(rs, tokenizer, sampling=sampling, max_prompt_tokens=768)
        served_before: list[int] = []

        def on_turn(turn: int, active: int) -> None:
            if turn == 1:  # after the first turn: kill replica 1's whole process group
                served_before.extend(r.requests for r in rs.replicas)
                os.killpg(pgids[1], signal.SIGKILL)

        batch = LockstepStrategy().collect(pool, agent, [0, 1], 2, [7, 8], on_turn=on_turn)
        assert served_before == [2, 2]  # four new episodes, two per replica
        assert batch.stats["turns"] >= 2  # the rollout went on after the kill
        assert not batch.dropped and sum(len(g.trajectories) for g in batch.groups) == 4
        status = rs.status()
        assert [r["live"] for r in status] == [True, False]
        assert status[1]["reason"]
        assert status[0]["requests"] > 2  # replica 0 served the later turns
        assert all(
            s.sampler_logprobs for g in batch.groups for t in g.trajectories for s in t.steps
        )

        # Weight sync on the survivor: vLLM reloads, then reports the version it was given.
        rs.sync_weights(model)
        assert [r["version"] for r in rs.status()] == [1, 0]
        assert rs.generate([[1, 2, 3]], sampling)[0].token_ids

        # The last one gone: a clear error, not a hang.
        os.killpg(pgids[0], signal.SIGKILL)
        with pytest.raises(NoReplicaLeft, match="no generation replica is left"):
            rs.generate([[1, 2, 3]], sampling)
    finally:
        pool.close()
        rs.close()
    assert not any(_group_alive(p) for p in pgids)  # no server process outlives the set
