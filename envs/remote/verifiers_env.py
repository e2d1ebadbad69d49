"""creditgym envs as a verifiers 0.4 environment (``vf.Env``), the env playing the user.

Modelled on verifiers' text-game taskset: a task is one seeded episode of a creditgym env; its
prompt is the env's first observation (with the admissible actions and the answer format), and
`CreditgymEnv.run` steps the real env host-side: each assistant reply becomes an action, the
next observation comes back as the user turn, and the episode's end closes the exchange. The
trace gets the reward ``env_reward`` (the episode's return) and, under ``trace.info["creditgym"]``,
every step (reply, action, reward, ``action_valid``, ``won``, ``state_key``, ``score``).

    import verifiers.v1 as vf
    from creditgym.envs.remote.verifiers_env import TASKSET_ID, env_config, run_episodes

    config = env_config("creditgym/KeyRooms-v0", {"level": "small"}, seeds=[0, 1, 2])
    episodes = asyncio.run(run_episodes(config, base_url="http://127.0.0.1:8000/v1", model="m"))

`CreditgymHarness` is the seat's harness: one chat completion per segment, made in-process
through the rollout's interception endpoint (verifiers' own ``null``/``bash`` harnesses run a
program whose dependencies ``uv`` fetches at run time, which this machine cannot do).

verifiers finds tasksets by an importable top-level name, so this module also answers to
``creditgym_verifiers`` (`TASKSET_ID`) once imported.

verifiers 0.4 pins ``openai<3`` and ``mcp==2.0.0`` while the project venv holds vLLM's newer
ones, so this module runs from ``.venv-verifiers`` (``make install-verifiers``); nothing else in
creditgym imports it. ``python -m creditgym.envs.remote.verifiers_env --help`` runs episodes
against an OpenAI-compatible server and prints them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
from collections.abc import Iterator
from typing import Any, Literal

import verifiers.v1 as vf
from openai import AsyncOpenAI
from verifiers.v1.dialects.chat import message_to_wire

from creditgym import envs
from creditgym.envs.base import ACTION_MATCH, TextEnv
from creditgym.envs.remote.wire import jsonable

__all__ = [
    "ACTION_MATCH",
    "TASKSET_ID",
    "CreditgymData",
    "CreditgymEnv",
    "CreditgymEnvConfig",
    "CreditgymHarness",
    "CreditgymHarnessConfig",
    "CreditgymTask",
    "CreditgymTaskset",
    "CreditgymTasksetConfig",
    "env_config",
    "parse_action",
    "render",
    "run_episodes",
]

#: The taskset id verifiers imports (an alias of this module, registered on import).
TASKSET_ID = "creditgym_verifiers"
if __name__ != "__main__":  # `python -m` imports the real module below, which registers it
    sys.modules.setdefault(TASKSET_ID, sys.modules[__name__])

SYSTEM_PROMPT = (
    "You are an agent acting in a text environment. Each message shows what you observe; "
    "reply with your next move in the format the message asks for."
)
#: The answer format asked for, by the env's action syntax (`TextEnv.action_syntax`).
FORMATS = {
    "action": "Reply with one admissible action inside <action> </action>, e.g. <action>look</action>.",
    "search": (
        "Write <search>query</search> to search, or <answer>text</answer> when you know the answer."
    ),
    "tool": (
        'Write one <tool_call>{"name": ..., "arguments": {...}}</tool_call> to call a tool, or '
        "<answer>text</answer> when you know the answer."
    ),
}
_ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.S)
#: How a reply becomes an action (`parse_action`).


def render(obs: str, info: dict[str, Any], syntax: str) -> str:
    """One user turn: the observation, the admissible actions (when listed) and the format."""
    parts = [obs]
    if info.get("admissible_actions"):
        parts.append("Admissible actions: " + ", ".join(info["admissible_actions"]))
    parts.append(FORMATS[syntax])
    return "\n\n".join(parts)


def parse_action(
    reply: str, syntax: str, admissible: list[str] | None = None, match: str = "strict"
) -> str:
    """The action sent to the env.

    For ``action`` envs: the last ``<action>`` tag's text, or the whole stripped reply without
    one; with ``match="admissible"`` and the env's admissible actions, an action that is not
    one of them (up to case and blanks) becomes the admissible action named first in it, or
    failing that in the whole reply (the longer one on a tie). ``search`` and ``tool`` envs
    parse their own tags, so they get the stripped reply.
    """
    if match not in ACTION_MATCH:
        raise ValueError(f"unknown action match {match!r}; choose one of {ACTION_MATCH}")
    if syntax != "action":
        return reply.strip()
    found = _ACTION_TAG.findall(reply)
    action = (found[-1] if found else reply).strip()
    if match == "strict" or not admissible:
        return action
    by_norm = {_norm(a): a for a in admissible}
    if _norm(action) in by_norm:
        return by_norm[_norm(action)]
    for source in (action, reply):
        hay = _norm(source)
        hits = [(hay.find(n), -len(n), a) for n, a in by_norm.items() if n in hay]
        if hits:
            return min(hits)[2]
    return action


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _make(info: dict[str, Any]) -> TextEnv:
    return envs.make(info["env_id"], split=info["split"], **info["env_kwargs"])


class CreditgymTasksetConfig(vf.TasksetConfig):
    """Which episodes: a registered env id, its constructor kwargs, the split and the seeds
    (one task per seed; ``None`` counts 0, 1, 2, ... without end)."""

    env_id: str = "creditgym/KeyRooms-v0"
    env_kwargs: dict[str, Any] = {}
    split: str = "valid"
    seeds: list[int] | None = None
    max_turns: int | None = None
    """Stop after this many env steps (default: the env's ``max_steps``)."""
    action_match: Literal["strict", "admissible"] = "strict"
    """``admissible``: a reply that names an admissible action plays it (`parse_action`)."""


class CreditgymData(vf.TaskData):
    info: dict[str, Any]
    """What the env reproduces the episode from: env id, kwargs, split, seed, syntax, max turns."""


class CreditgymTask(vf.Task[CreditgymData, vf.State, vf.TaskConfig]):
    pass


class CreditgymTaskset(vf.Taskset[CreditgymTask, CreditgymTasksetConfig]):
    """One task per seed: the prompt is the env's first observation after ``reset(seed=...)``."""

    def load(self) -> Iterator[CreditgymTask]:
        cfg = self.config
        if cfg.env_id not in envs.list_envs():
            raise ValueError(f"unknown env {cfg.env_id!r}; registered: {envs.list_envs()}")
        env = envs.make(cfg.env_id, split=cfg.split, **cfg.env_kwargs)
        syntax = getattr(env, "action_syntax", "action")
        max_turns = int(cfg.max_turns or env.max_steps)
        try:
            for seed in itertools.count() if cfg.seeds is None else cfg.seeds:
                obs, info = env.reset(seed=int(seed))
                yield CreditgymTask(
                    CreditgymData(
                        name=f"{cfg.env_id}#{seed}",
                        prompt=render(obs, info, syntax),
                        system_prompt=SYSTEM_PROMPT,
                        info={
                            "env_id": cfg.env_id,
                            "env_kwargs": dict(cfg.env_kwargs),
                            "split": cfg.split,
                            "seed": int(seed),
                            "task_id": str(info["task_id"]),
                            "syntax": syntax,
                            "max_turns": max_turns,
                            "action_match": cfg.action_match,
                        },
                    ),
                    cfg.task,
                )
        finally:
            env.close()

    @property
    def bounded(self) -> bool:
        return self.config.seeds is not None if self._bounded is None else self._bounded


class CreditgymEnvConfig(vf.EnvConfig):
    """One seat, ``player``, run on this host (verifiers' default runtime is a remote box)."""

    player: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())


class CreditgymEnv(vf.Env[CreditgymEnvConfig]):
    """Plays one task: the env's observations are the user turns, the replies its actions."""

    async def run(self, task: CreditgymTask, agents: vf.Agents) -> None:
        info = task.data.info
        syntax = info["syntax"]
        env = await asyncio.to_thread(_make, info)
        steps: list[dict[str, Any]] = []
        try:
            obs, step_info = await asyncio.to_thread(env.reset, seed=info["seed"])
            if render(obs, step_info, syntax) != task.data.prompt:
                raise RuntimeError(
                    f"{info['env_id']} seed {info['seed']}: reset no longer gives the task's "
                    "prompt (the env or its panel changed since the taskset was loaded)"
                )
            async with agents.player.interaction(task) as interaction:
                segment = await interaction.turn()
                while not segment.terminated:
                    reply = segment.last_reply
                    admissible = step_info.get("admissible_actions")
                    action = parse_action(reply, syntax, admissible, info["action_match"])
                    obs, reward, terminated, truncated, step_info = await asyncio.to_thread(
                        env.step, action
                    )
                    steps.append(
                        {
                            "reply": reply,
                            "action": action,
                            "reward": float(reward),
                            "terminated": bool(terminated),
                            "truncated": bool(truncated),
                            "action_valid": bool(step_info.get("action_valid")),
                            "won": bool(step_info.get("won")),
                            "state_key": str(step_info.get("state_key")),
                            "score": float(step_info.get("score", 0.0)),
                            "error": step_info.get("error"),
                        }
                    )
                    if terminated or truncated or len(steps) >= info["max_turns"]:
                        break
                    segment = await interaction.turn(render(obs, step_info, syntax))
        finally:
            await asyncio.to_thread(env.close)
        trace = interaction.trace
        trace.record_reward("env_reward", sum(s["reward"] for s in steps), 1.0)
        trace.info["creditgym"] = jsonable(
            {
                "env_id": info["env_id"],
                "seed": info["seed"],
                "task_id": info["task_id"],
                "won": bool(steps and steps[-1]["won"]),
                "steps": steps,
            }
        )


class CreditgymHarnessConfig(vf.HarnessConfig):
    pass


class CreditgymHarness(vf.Harness[CreditgymHarnessConfig]):
    """A tool-less chat seat run in-process: each segment is one chat completion through the
    rollout's interception endpoint (so verifiers records it and applies the run's sampling)."""

    APPENDS_SYSTEM_PROMPT = True
    SUPPORTS_RESUME = True
    EXECUTES_CODE = False
    NEEDS_CONTAINER = False

    async def launch(
        self,
        ctx: vf.ModelContext,
        trace: vf.Trace,
        runtime: vf.Runtime,
        endpoint: str,
        secret: str,
        mcp_urls: dict[str, str],
        data: vf.TaskData,
    ) -> vf.ProgramResult:
        system, prompt = self.resolve_prompt(data)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        if isinstance(prompt, str):
            messages.append({"role": "user", "content": prompt})
        else:
            messages.extend(message_to_wire(m) for m in prompt or [])
        client = AsyncOpenAI(base_url=endpoint, api_key=secret, max_retries=0)
        try:
            await client.chat.completions.create(model=ctx.model, messages=messages)
        finally:
            await client.close()
        return vf.ProgramResult(exit_code=0, stdout="", stderr="")


def env_config(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    seeds: list[int] | None = None,
    split: str = "valid",
    max_turns: int | None = None,
    action_match: str = "strict",
) -> CreditgymEnvConfig:
    """The env config of a run over ``env_id``'s episodes on ``seeds``."""
    taskset = CreditgymTasksetConfig(
        id=TASKSET_ID,
        env_id=env_id,
        env_kwargs=dict(env_kwargs or {}),
        split=split,
        seeds=seeds,
        max_turns=max_turns,
        action_match=action_match,
    )
    return CreditgymEnvConfig(taskset=taskset)


async def run_episodes(
    config: CreditgymEnvConfig,
    *,
    base_url: str,
    model: str,
    sampling: dict[str, Any] | None = None,
    api_key_var: str = "OPENAI_API_KEY",
    limit: int | None = None,
) -> list[vf.Episode]:
    """One episode per task of ``config``'s taskset (the first ``limit``), one after another,
    sampled from the OpenAI-compatible server at ``base_url``."""
    env = CreditgymEnv(config)
    taskset = env.taskset if limit is None else env.taskset.take(limit)
    if not taskset.bounded:
        raise ValueError("the taskset has no end: give seeds= or limit=")
    client = vf.EvalClientConfig(base_url=base_url, api_key_var=api_key_var)
    ctx = vf.ModelContext(model=model, client=client, sampling=vf.Sampling(**(sampling or {})))
    episodes = []
    async with env.serving():
        for task in taskset:
            (slot,) = env.slots(task)
            episodes.append(await env.run_slot(slot, ctx))
    return episodes


def _summary(episode: vf.Episode) -> dict[str, Any]:
    """What the command line prints per episode."""
    (trace,) = episode.traces
    return {
        "ok": episode.ok,
        "errors": [e.model_dump(mode="json") for e in [*episode.errors, *trace.errors]],
        "reward": trace.reward,
        "rewards": {k: (v.score if v else None) for k, v in trace.rewards.items()},
        "creditgym": trace.info.get("creditgym"),
        "messages": [m.model_dump(mode="json") for m in trace_messages(trace)],
    }


def trace_messages(trace: vf.Trace) -> list[Any]:
    """The trace's conversation (its last branch)."""
    return list(trace.branches[-1].messages) if trace.branches else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="creditgym/KeyRooms-v0")
    parser.add_argument("--env-kwargs", default="{}", help="JSON constructor kwargs")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated episode seeds")
    parser.add_argument("--max-turns", type=int, default=None)
    parser.add_argument("--action-match", choices=ACTION_MATCH, default="strict")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible server, .../v1")
    parser.add_argument("--model", required=True)
    parser.add_argument("--sampling", default="{}", help="JSON sampling (temperature, ...)")
    parser.add_argument("--out", default="-", help="JSON output file (- for stdout)")
    args = parser.parse_args(argv)
    config = env_config(
        args.env,
        json.loads(args.env_kwargs),
        seeds=[int(s) for s in args.seeds.split(",") if s.strip()],
        split=args.split,
        max_turns=args.max_turns,
        action_match=args.action_match,
    )
    episodes = asyncio.run(
        run_episodes(
            config, base_url=args.base_url, model=args.model, sampling=json.loads(args.sampling)
        )
    )
    text = json.dumps([_summary(e) for e in episodes], indent=1)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    from creditgym.envs.remote.verifiers_env import main as _main

    _main()
