"""Task samplers: which panel tasks each training iteration plays, chosen by name.

A sampler hands out task indices of the train panel (``next(k)``) and checkpoints its position
(``state_dict`` / ``load_state_dict``), so a resumed run trains on exactly the tasks an
uninterrupted one would. ``sampler.name`` names one; `available()` lists them and
``make(name, num_tasks=..., seed=..., **options)`` builds one. A sampler that learns from
results (a curriculum) also gets ``observe(task_indices, batch)`` after every rollout; the
default does nothing.

``uniform`` (the default): seeded shuffled passes over the panel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from creditgym.trainers.registry import Registry

__all__ = ["TaskSampler", "UniformSampler", "available", "make", "register_sampler"]


class TaskSampler(ABC):
    """Picks the task indices of each iteration; its whole state is in `state_dict`."""

    #: Registry name.
    name: ClassVar[str] = ""

    def __init__(self, num_tasks: int, seed: int):
        if num_tasks < 1:
            raise ValueError("a task panel needs at least one task")
        self.num_tasks = int(num_tasks)
        self.seed = int(seed)

    @abstractmethod
    def next(self, k: int) -> list[int]:
        """The next `k` task indices."""

    def observe(self, task_indices: Sequence[int], batch: Any) -> None:  # noqa: B027
        """Results of the tasks just played (a `RolloutBatch`); curricula override this."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def _check_state(self, state: dict[str, Any]) -> None:
        """Refuse a state saved by another sampler or for another panel size."""
        saved = state.get("name", "uniform")  # checkpoints before samplers were named
        if saved != self.name:
            raise ValueError(
                f"the checkpoint's task sampler is {saved!r}, this run's is {self.name!r}"
            )
        if int(state["num_tasks"]) != self.num_tasks:
            raise ValueError(
                f"the checkpoint's task panel has {state['num_tasks']} tasks, this one "
                f"{self.num_tasks}: the env or its generator changed since the checkpoint"
            )


# Curricula (issue 19: sspo_priority, dump) register from their own module.
_SAMPLERS: Registry[type[TaskSampler]] = Registry(
    "task sampler", attr="name", builtins=("creditgym.trainers.curricula",)
)

#: Class decorator: register a `TaskSampler` under a name (``sampler.name``).
register_sampler = _SAMPLERS.register
#: Registered task samplers (``sampler.name`` values).
available = _SAMPLERS.available


def make(name: str, *, num_tasks: int, seed: int, **options: Any) -> TaskSampler:
    """Build the sampler registered as `name` for a panel of `num_tasks` tasks."""
    cls = _SAMPLERS.get(name)
    return cls(num_tasks, seed, **options)


@register_sampler("uniform")
class UniformSampler(TaskSampler):
    """Walks a task panel in seeded shuffled passes; its position is two integers.

    Pass ``e`` visits the panel in the order ``permutation_{seed, e}``; `next(k)` returns the next
    k task indices, continuing into the next pass when one ends. The state ``(epoch, position)``
    is saved in checkpoints, so a resumed run trains on the same tasks as an uninterrupted one.
    """

    def __init__(self, num_tasks: int, seed: int, epoch: int = 0, position: int = 0):
        super().__init__(num_tasks, seed)
        self.epoch = int(epoch)
        self.position = int(position)

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_tasks)

    def next(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            order = self._order(self.epoch)
            take = min(k - len(out), self.num_tasks - self.position)
            out.extend(int(i) for i in order[self.position : self.position + take])
            self.position += take
            if self.position >= self.num_tasks:
                self.epoch += 1
                self.position = 0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
