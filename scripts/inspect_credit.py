"""Roll out one batch with an LLM policy and show, turn by turn, what a credit module computed.

    flock /tmp/cg-bigmem.lock python scripts/inspect_credit.py \
        --config scripts/configs/bench/igpo.yaml --trajectories 4 --out runs/inspect-igpo.md

Builds the trainer of the config (model, learner, agent, env pool), collects one iteration's
groups, runs the learner's `prepare` for what the module needs (answer log-probs, values,
entropies) and the module itself, then prints a table per trajectory and writes it as Markdown:

- IGPO: the answer log-probs before/after each turn, the raw turn reward (information gain, or
  the final answer's F1 / format penalty) and the advantage;
- HiPER: switch, subgoal, segment index, the raw and z-scored A_high / A_low / A_term and the
  three value estimates;
- any other module: reward and advantage.

Nothing is trained (no `update`); the model, task and seed are the config's.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from creditgym.credit.base import Advantages
from creditgym.credit.igpo import turn_rewards
from creditgym.credit.trajectory import TrajectoryGroup
from creditgym.trainers.config import load_config
from creditgym.trainers.train import Trainer, group_seeds


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def igpo_table(groups: list[TrajectoryGroup], adv, module, limit: int) -> list[str]:
    lines = []
    per = adv.per_trajectory(groups)
    shown = 0
    for gi, g in enumerate(groups):
        for ti, traj in enumerate(g.trajectories):
            if shown >= limit:
                return lines
            shown += 1
            rewards, is_ig = turn_rewards(traj, module.config)
            gt = next(
                (s.info.get("ground_truth") for s in traj.steps if s.info.get("ground_truth")), ""
            )
            lines += [
                f"### group {gi} trajectory {ti} (ground truth: {gt!r}, won: {traj.won})",
                "",
                "| t | action | log P before | log P after | P after - P before | turn reward | advantage |",
                "|---|---|---|---|---|---|---|",
            ]
            for t, step in enumerate(traj.steps):
                b, a = step.answer_logprob_before, step.answer_logprob_after
                diff = (
                    math.exp(a) - math.exp(b) if a is not None and b is not None else float("nan")
                )
                kind = "IG" if is_ig[t] else "final"
                lines.append(
                    f"| {t} | `{_short(step.action)}` | {b:.3f} | {a:.3f} | {diff:+.4f} | "
                    f"{rewards[t]:+.4f} ({kind}) | {per[gi][ti][t]:+.3f} |"
                )
            lines.append("")
    return lines


def hiper_table(groups: list[TrajectoryGroup], adv, module, limit: int) -> list[str]:
    from creditgym.credit.hiper import group_parts, parsed_field

    lines = []
    spans = {
        k: Advantages(values=adv.spans[k]).per_trajectory(groups)
        for k in ("switch", "subgoal", "action")
    }
    shown = 0
    for gi, g in enumerate(groups):
        for ti, traj in enumerate(g.trajectories):
            if shown >= limit:
                return lines
            shown += 1
            part = group_parts(g, module.config)[
                ti
            ]  # the values and raw advantages the module used
            r, starts = part.rewards, part.starts
            v = {"high": part.v_high, "low": part.v_low, "term": part.v_term}
            raw = (part.a_high, part.a_low, part.a_term)
            seg = np.cumsum(starts) - 1
            lines += [
                f"### group {gi} trajectory {ti} (won: {traj.won}, segments: {int(starts.sum())})",
                "",
                "| t | seg | switch | subgoal | action | r | V_high | V_low | V_term | A_high raw | "
                "A_low raw | A_term raw | z subgoal | z action | z switch |",
                "|" + "---|" * 15,
            ]
            for t, step in enumerate(traj.steps):
                lines.append(
                    f"| {t} | {seg[t]} | {parsed_field(step, 'switch')} | "
                    f"`{_short(parsed_field(step, 'subgoal') or '', 30)}` | `{_short(step.action, 30)}` | "
                    f"{r[t]:+.2f} | {v['high'][t]:+.3f} | {v['low'][t]:+.3f} | {v['term'][t]:+.3f} | "
                    f"{raw[0][t]:+.3f} | {raw[1][t]:+.3f} | {raw[2][t]:+.3f} | "
                    f"{spans['subgoal'][gi][ti][t]:+.3f} | {spans['action'][gi][ti][t]:+.3f} | "
                    f"{spans['switch'][gi][ti][t]:+.3f} |"
                )
            lines.append("")
    return lines


def generic_table(groups: list[TrajectoryGroup], adv, limit: int) -> list[str]:
    lines = []
    per = adv.per_trajectory(groups)
    shown = 0
    for gi, g in enumerate(groups):
        for ti, traj in enumerate(g.trajectories):
            if shown >= limit:
                return lines
            shown += 1
            lines += [
                f"### group {gi} trajectory {ti} (won: {traj.won})",
                "",
                "| t | action | reward | advantage |",
                "|---|---|---|---|",
            ]
            for t, step in enumerate(traj.steps):
                lines.append(
                    f"| {t} | `{_short(step.action)}` | {step.reward:+.2f} | {per[gi][ti][t]:+.3f} |"
                )
            lines.append("")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, as scripts/train.py")
    p.add_argument("--trajectories", type=int, default=4, help="how many to print")
    p.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else None
    trainer = Trainer(cfg, run_dir=Path("runs") / f"inspect-{cfg.name}")
    trainer.build()
    try:
        b, g = cfg.rollout.tasks_per_iteration, cfg.rollout.group_size
        from creditgym.trainers.rollout import collect

        batch = collect(
            trainer.pool, trainer.agent, trainer.sampler.next(b), g, group_seeds(cfg.seed, 1, b)
        )
        groups = [grp for grp in batch.groups if grp.trajectories]
        module = trainer.credit
        prep = trainer.learner.prepare(groups, set(module.needs))
        adv = module(groups)
        if module.name == "igpo":
            lines = igpo_table(groups, adv, module, args.trajectories)
        elif module.name == "hiper":
            lines = hiper_table(groups, adv, module, args.trajectories)
        else:
            lines = generic_table(groups, adv, args.trajectories)
        head = [
            f"# {module!r} on {cfg.env.id} with {cfg.model.name}",
            "",
            f"rollout: {', '.join(f'{k}={v:.3g}' for k, v in batch.stats.items() if isinstance(v, float))}",
            "",
            f"prepare: {', '.join(f'{k}={v:.3g}' for k, v in prep.items())}",
            "",
            f"credit diagnostics: {', '.join(f'{k}={v:.4g}' for k, v in adv.diagnostics.items())}",
            "",
        ]
        text = "\n".join(head + lines)
        print(text)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
