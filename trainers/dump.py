"""The trajectory dump: one JSON object per step in ``<run>/trajectories/iter_<k>.jsonl``.

This docstring is the schema. Later issues add fields here, and only here: a new field is
added to `_step_row` (writer), to `_step_from_row` / `_trajectory_from_row` (reader) and to the
table below, and `SCHEMA_VERSION` goes up when a field changes meaning or is removed (adding an
optional field keeps the version, and readers ignore fields they do not know).

Rows are ordered by (group, trajectory, step): the order of `creditgym.credit.Advantages.values`.
`load_dump` turns the rows back into `TrajectoryGroup` objects that a credit module can be run on
again, giving the advantages that were dumped (tests/trainers/test_dump.py checks it).

Schema version 2 (``schema_version: 2``; every row carries every field, ``null`` when absent)::

    schema_version        int        2
    iteration             int        the training iteration whose batch this row belongs to
    policy_version        int|null   version of the policy that sampled the step: 1 + the
                                     updates done when its request was sent (sync mode: =
                                     iteration; async: iteration - staleness, see
                                     `creditgym.trainers.async_rollout`)
    group                 int        index of the group in the iteration's batch
    trajectory            int        index of the trajectory in its group
    step                  int        index of the step in its trajectory (turn t)
    env_id                str        the group's env id ("" when unknown)
    group_task_id         str        the group's task id
    group_seed            int|null   the group's reset seed
    task_id               str        the trajectory's task id
    task_type             str        the trajectory's task type
    seed                  int|null   the trajectory's reset seed
    won                   bool       whether the trajectory was won (same on all its rows)
    episode_info          object     the trajectory's summary info (score, truncated)
    state_key             str        key of the state the action was taken in
    next_state_key        str        key of the state the action led to
    observation           str        the observation the agent acted on
    admissible_actions    [str]|null the admissible actions of that state
    text                  str        the raw model output
    action                str        the parsed action the env received
    reward                float      the env reward (no penalties applied)
    action_valid          bool       the env accepted the action and the output parsed
    terminated            bool       the episode ended in this step
    truncated             bool       the episode was cut in this step
    info                  object     the env's step info, without ``admissible_actions``
                                     (IGPO reads ``ground_truth`` here)
    extras                object     the agent's extras (the LLM agent's ``parsed`` fields, e.g.
                                     HiPER's switch / subgoal; ``format_error``, ...)
    prompt_tokens         int        number of prompt tokens (0 for tabular agents)
    response_tokens       int        number of response tokens
    response_token_ids    [int]|null the sampled response token ids
    sampler_logprobs      [float]|null their log-probs under the sampling policy (mu of the
                                     decoupled-PPO weight in async mode)
    entropies             [float]|null per-token entropies under the old policy, where computed
    spans                 object|null token spans of the response parts, name -> [[start, end]]
                                     (HiPER: switch / subgoal / action)
    values                object|null value estimates by head (PPO: v; HiPER: high, low, term)
    answer_logprob_before float|null IGPO: mean log-prob of the ground-truth answer before the turn
    answer_logprob_after  float|null ... and after it
    advantage             float|null the step's advantage (null when nothing was trained)
    span_advantages       object|null per-span advantages of the step (HiPER), name -> float
    token_advantages      [float]|null per-token advantages, where span routing makes them
                                     differ from ``advantage`` broadcast over the response
    advantage_mask        bool|null  `Advantages.mask` of the step (null: the module set none)
    advantage_weight      float|null `Advantages.weight` of the step (null: none)

Optional fields (schema 2; present only where the writer knows them, readers take a missing
one as null)::

    reference_advantage   float|null an exact advantage of the step's (state, action), where
                                     known: ``benchmark_credit.py --dump-iterations`` writes the
                                     exact A^pi of the tabular policy that sampled the batch
                                     (null off the env's model)
    reference_kind        str|null   what ``reference_advantage`` is (e.g. "exact A^π (γ = 0.95)")

Branching fields (optional, schema 2; written only when set, i.e. not null and, for ``role``,
not "base"; see ALGORITHMS-2.md "Interfaces this wave adds")::

    node_id               str        the step's tree node (a shared prefix step has one node id)
    parent_node_id        str        the parent node
    mc_value              float      SPO-chain: MC estimate of V(state before the step)
    tree_id               str        the trajectory's tree (Tree-GRPO, SPO-tree)
    role                  str        the trajectory's role (`creditgym.credit.trajectory.ROLES`)
    pivot                 int        the step the trajectory leaves its source at (R^3L retry)
    pair_id               str        id shared by an R^3L base and its retries

Schema version 1 is the unversioned format written before ``schema_version`` existed (no token
arrays, values, spans or extras; ``valid`` instead of ``action_valid``). `read_rows` still reads
it (renaming ``valid``); `load_dump` refuses it, since credit cannot be recomputed from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup

__all__ = [
    "SCHEMA_VERSION",
    "DumpSchemaError",
    "add_reference",
    "load_dump",
    "read_rows",
    "token_advantages",
    "trajectory_rows",
]

#: The version `trajectory_rows` writes.
SCHEMA_VERSION = 2
#: The fields of a version-2 row, in the order they are written.
FIELDS = (
    "schema_version",
    "iteration",
    "policy_version",
    "group",
    "trajectory",
    "step",
    "env_id",
    "group_task_id",
    "group_seed",
    "task_id",
    "task_type",
    "seed",
    "won",
    "episode_info",
    "state_key",
    "next_state_key",
    "observation",
    "admissible_actions",
    "text",
    "action",
    "reward",
    "action_valid",
    "terminated",
    "truncated",
    "info",
    "extras",
    "prompt_tokens",
    "response_tokens",
    "response_token_ids",
    "sampler_logprobs",
    "entropies",
    "spans",
    "values",
    "answer_logprob_before",
    "answer_logprob_after",
    "advantage",
    "span_advantages",
    "token_advantages",
    "advantage_mask",
    "advantage_weight",
)


class DumpSchemaError(ValueError):
    """A dump row of a schema this code cannot read (or cannot rebuild trajectories from)."""


def token_advantages(step: Step, index: int, advantages: Advantages) -> np.ndarray | None:
    """Per-token advantages of ``step`` (flat position ``index``) when spans route them.

    The step's advantage on every response token, overwritten on each span of ``step.spans``
    by that span's advantage (the learner's routing). None when there is no span routing (the
    tokens then all carry ``advantages.values[index]``) or no response tokens.
    """
    if not advantages.spans or not step.spans or not step.response_ids:
        return None
    k = len(step.response_ids)
    out = np.full(k, float(advantages.values[index]), dtype=np.float64)
    for name, ranges in step.spans.items():
        if name not in advantages.spans:
            continue
        value = float(advantages.spans[name][index])
        for a, b in ranges:
            out[max(0, int(a)) : min(k, int(b))] = value
    return out


def _floats(values: Any) -> list[float] | None:
    return None if values is None else [float(v) for v in np.asarray(values).ravel()]


def _step_row(step: Step, index: int, advantages: Advantages | None) -> dict[str, Any]:
    """The step-level fields of one row (see the schema)."""
    adv = span_adv = tok_adv = mask = weight = None
    if advantages is not None:
        adv = float(advantages.values[index])
        if advantages.spans:
            span_adv = {name: float(v[index]) for name, v in advantages.spans.items()}
        tok_adv = _floats(token_advantages(step, index, advantages))
        if advantages.mask is not None:
            mask = bool(advantages.mask[index])
        if advantages.weight is not None:
            weight = float(advantages.weight[index])
    spans = None
    if step.spans is not None:
        spans = {name: [[int(a), int(b)] for a, b in r] for name, r in step.spans.items()}
    return {
        "state_key": step.state_key,
        "next_state_key": step.next_state_key,
        "observation": step.observation,
        "admissible_actions": step.admissible_actions,
        "text": step.text,
        "action": step.action,
        "reward": float(step.reward),
        "action_valid": bool(step.valid),
        "terminated": bool(step.terminated),
        "truncated": bool(step.truncated),
        "info": {k: v for k, v in step.info.items() if k != "admissible_actions"},
        "extras": step.extras,
        "prompt_tokens": len(step.prompt_ids or ()),
        "response_tokens": len(step.response_ids or ()),
        "response_token_ids": None
        if step.response_ids is None
        else list(map(int, step.response_ids)),
        "sampler_logprobs": _floats(step.sampler_logprobs),
        "entropies": _floats(step.entropies),
        "spans": spans,
        "values": None if step.values is None else {k: float(v) for k, v in step.values.items()},
        "answer_logprob_before": step.answer_logprob_before,
        "answer_logprob_after": step.answer_logprob_after,
        "advantage": adv,
        "span_advantages": span_adv,
        "token_advantages": tok_adv,
        "advantage_mask": mask,
        "advantage_weight": weight,
    }


def trajectory_rows(
    iteration: int,
    groups: Sequence[TrajectoryGroup],
    advantages: Advantages | np.ndarray | None,
) -> list[dict[str, Any]]:
    """One schema-2 row per step, in the (group, trajectory, step) order of the advantages.

    ``advantages`` is the credit module's `Advantages` (a bare array of per-step values is
    accepted too), or None when the iteration trained on nothing.
    """
    if isinstance(advantages, np.ndarray):
        advantages = Advantages(values=advantages)
    rows = []
    pos = 0
    for gi, group in enumerate(groups):
        for ti, traj in enumerate(group.trajectories):
            for si, step in enumerate(traj.steps):
                version = iteration if step.policy_version is None else step.policy_version
                row = {
                    "schema_version": SCHEMA_VERSION,
                    "iteration": iteration,
                    "policy_version": int(version),
                    "group": gi,
                    "trajectory": ti,
                    "step": si,
                    "env_id": group.env_id,
                    "group_task_id": group.task_id,
                    "group_seed": group.seed,
                    "task_id": traj.task_id,
                    "task_type": traj.task_type,
                    "seed": traj.seed,
                    "won": bool(traj.won),
                    "episode_info": traj.info,
                }
                row.update(_step_row(step, pos, advantages))
                row.update(_branch_fields(traj, step))
                rows.append(row)
                pos += 1
    return rows


#: Optional branching fields: (name, owner, default) -- written only when not the default.
BRANCH_FIELDS = (
    ("node_id", "step", None),
    ("parent_node_id", "step", None),
    ("mc_value", "step", None),
    ("tree_id", "traj", None),
    ("role", "traj", "base"),
    ("pivot", "traj", None),
    ("pair_id", "traj", None),
)


def _branch_fields(traj: Trajectory, step: Step) -> dict[str, Any]:
    """The branching fields of a row that differ from their defaults."""
    out = {}
    for name, owner, default in BRANCH_FIELDS:
        value = getattr(step if owner == "step" else traj, name, default)
        if value != default:
            out[name] = float(value) if name == "mc_value" else value
    return out


def add_reference(
    rows: list[dict[str, Any]], reference: Sequence[float] | np.ndarray | None, kind: str
) -> list[dict[str, Any]]:
    """Set the optional ``reference_advantage`` / ``reference_kind`` fields of ``rows`` in place.

    ``reference`` holds one value per row (NaN or None: unknown, written as null).
    """
    if reference is not None and len(reference) != len(rows):
        raise ValueError(f"reference has {len(reference)} values for {len(rows)} rows")
    for i, row in enumerate(rows):
        v = None if reference is None or reference[i] is None else float(reference[i])
        row["reference_advantage"] = v if v is not None and np.isfinite(v) else None
        row["reference_kind"] = None if reference is None else kind
    return rows


def _upgrade_v1(row: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 row with the version-2 names; the fields version 1 lacks are None."""
    out = {name: None for name in FIELDS}
    out.update(row)
    out["schema_version"] = 1
    out["action_valid"] = out.pop("valid", None)
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of one dump file, checked against the schema versions this code knows.

    Schema-1 rows (no ``schema_version``) come back with version-2 field names (``valid`` is
    renamed ``action_valid``; the fields version 1 lacks are None) and ``schema_version: 1``.
    """
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            version = row.get("schema_version", 1)
            if version == 1:
                row = _upgrade_v1(row)
            elif not isinstance(version, int) or version > SCHEMA_VERSION:
                raise DumpSchemaError(
                    f"{path}:{n}: trajectory dump schema_version {version!r}; this creditgym "
                    f"reads versions 1..{SCHEMA_VERSION} (upgrade creditgym to read it)"
                )
            rows.append(row)
    return rows


def _step_from_row(row: dict[str, Any]) -> Step:
    spans = row.get("spans")
    if spans is not None:
        spans = {name: [(int(a), int(b)) for a, b in r] for name, r in spans.items()}
    entropies = row.get("entropies")
    return Step(
        state_key=row["state_key"],
        action=row["action"],
        reward=float(row["reward"]),
        valid=bool(row["action_valid"]),
        next_state_key=row.get("next_state_key") or "",
        observation=row.get("observation") or "",
        admissible_actions=row.get("admissible_actions"),
        text=row.get("text") or "",
        terminated=bool(row.get("terminated")),
        truncated=bool(row.get("truncated")),
        info=dict(row.get("info") or {}),
        response_ids=row.get("response_token_ids"),
        sampler_logprobs=row.get("sampler_logprobs"),
        spans=spans,
        policy_version=row.get("policy_version"),
        entropies=None if entropies is None else np.asarray(entropies, dtype=np.float64),
        values=row.get("values"),
        answer_logprob_before=row.get("answer_logprob_before"),
        answer_logprob_after=row.get("answer_logprob_after"),
        extras=dict(row.get("extras") or {}),
        node_id=row.get("node_id"),
        parent_node_id=row.get("parent_node_id"),
        mc_value=row.get("mc_value"),
    )


def _trajectory_from_row(row: dict[str, Any]) -> Trajectory:
    return Trajectory(
        task_id=row["task_id"],
        seed=row["seed"],
        won=bool(row["won"]),
        task_type=row["task_type"],
        info=dict(row.get("episode_info") or {}),
        tree_id=row.get("tree_id"),
        role=row.get("role") or "base",
        pivot=row.get("pivot"),
        pair_id=row.get("pair_id"),
    )


def load_dump(path: str | Path) -> list[TrajectoryGroup]:
    """Rebuild the iteration's groups from a dump file, ready for a credit module.

    Prompt token ids are not dumped, so `Step.prompt_ids` is None (``prompt_tokens`` in the rows
    gives their number). Raises `DumpSchemaError` for a schema-1 dump.
    """
    rows = read_rows(path)
    if any(r["schema_version"] == 1 for r in rows):
        raise DumpSchemaError(
            f"{path} is a schema-1 trajectory dump (written before schema_version existed): it "
            "holds no token ids, values, spans or agent extras, so its trajectories cannot be "
            "rebuilt for credit; read its rows with read_rows, or re-run to get a schema-2 dump"
        )
    groups: list[TrajectoryGroup] = []
    for row in rows:
        gi, ti, si = row["group"], row["trajectory"], row["step"]
        if gi == len(groups):
            groups.append(
                TrajectoryGroup(
                    task_id=row.get("group_task_id") or "",
                    seed=row.get("group_seed"),
                    env_id=row.get("env_id") or "",
                )
            )
        group = groups[-1] if groups else None
        if group is None or gi != len(groups) - 1:
            raise DumpSchemaError(f"{path}: rows are not in (group, trajectory, step) order")
        if ti == len(group.trajectories):
            group.trajectories.append(_trajectory_from_row(row))
        traj = group.trajectories[-1]
        if ti != len(group.trajectories) - 1 or si != len(traj.steps):
            raise DumpSchemaError(f"{path}: rows are not in (group, trajectory, step) order")
        traj.steps.append(_step_from_row(row))
    return groups
