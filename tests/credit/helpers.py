"""Builders for hand-written trajectories."""

from __future__ import annotations

from creditgym.credit.trajectory import Step, Trajectory, TrajectoryGroup


def traj(
    path: list[tuple[str, str, float]], end: str = "end", invalid: tuple[int, ...] = ()
) -> Trajectory:
    """A trajectory from (state, action, reward) triples; `end` is the state after the last step."""
    steps = []
    for t, (s, a, r) in enumerate(path):
        nxt = path[t + 1][0] if t + 1 < len(path) else end
        steps.append(
            Step(state_key=s, action=a, reward=r, valid=t not in invalid, next_state_key=nxt)
        )
    return Trajectory(steps=steps, won=bool(path) and path[-1][2] > 0)


def group(*trajs: Trajectory, task_id: str = "t") -> TrajectoryGroup:
    return TrajectoryGroup(trajectories=list(trajs), task_id=task_id, seed=0)
