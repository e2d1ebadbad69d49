"""`creditgym/TWX-<game>-v0`: the TextWorld-Express games (Jansen & Côté 2022).

TextWorld-Express (`textworld-express` on PyPI, a Java engine reached through py4j; the machines
have Java 17) reimplements CookingWorld, TextWorld Commonsense (twc), Coin Collector, Map
Reader, Arithmetic and Sorting at about a millisecond per step. Tasks are the engine's own
seeds of each fold (train / dev / test), so panels are disjoint the way the benchmark defines
them. Observations, valid actions, score and the gold path come from the engine. The engine exposes no world state
for these games (its `getObjectTree` returns ``{}``), so ``state_key_source = "observation"``:
the key hashes the observation together with the valid-action set (a finer key than the text
alone, but two states that read and act the same can still share it). Any command goes to the engine's own
parser (TWX answers unknown ones itself, and its gold paths contain a few commands outside the
valid-action list, e.g. opening what is open); ``action_valid`` says whether it was listed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from creditgym.envs.base import TextEnv

GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting")
PANEL_SIZES = {"train": 200, "valid": 50, "test": 50}
_FOLDS = {"train": "train", "valid": "dev", "test": "test"}


class TWXEnv(TextEnv):
    """One TextWorld-Express game family.

    Args:
        game: one of `GAMES`.
        game_params: TWX generation parameters, e.g. ``"numLocations=5,includeDoors=1"``.
        split: "train", "valid" (TWX's dev fold) or "test".
        panel_size: number of seeds of the fold in the panel (default 200 / 50 / 50).
    """

    env_name: ClassVar[str] = "creditgym/TWX-v0"
    generator_version: ClassVar[str] = "1"
    family: ClassVar[str] = "textworld"
    state_key_source: ClassVar[str] = "observation"
    #: TWX's own default step limit (CookingWorld's gold paths reach 60 steps).
    default_max_steps: ClassVar[int] = 100

    def __init__(
        self,
        game: str = "cookingworld",
        game_params: str = "",
        split: str = "train",
        panel_size: int | None = None,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        if game not in GAMES:
            raise ValueError(
                f"unknown TextWorld-Express game {game!r}; choose one of {list(GAMES)}"
            )
        if panel_size is not None and panel_size < 1:
            raise ValueError(f"panel_size must be >= 1, got {panel_size}")
        self.game = game
        self.game_params = game_params
        self.panel_size = panel_size
        self._twx: Any = None
        self._infos: dict[str, Any] = {}
        self._gold: list[str] = []
        self._taken: list[str] = []

    @property
    def engine(self) -> Any:
        """The TextWorld-Express engine (a JVM started on first use)."""
        if self._twx is None:
            try:
                from textworld_express import TextWorldExpressEnv
            except ImportError as exc:  # pragma: no cover - only without the extra
                raise ImportError("TWX envs need textworld-express: run `make install`") from exc
            self._twx = TextWorldExpressEnv(envStepLimit=10**6)
            self._twx.load(self.game, self.game_params)
        return self._twx

    def task_ids(self, split: str) -> Sequence[str]:
        getter = {
            "train": self.engine.getValidSeedsTrain,
            "valid": self.engine.getValidSeedsDev,
            "test": self.engine.getValidSeedsTest,
        }[split]
        seeds = sorted(int(s) for s in getter())
        size = self.panel_size or PANEL_SIZES[split]
        return [f"{self.game}/{_FOLDS[split]}/{s}" for s in seeds[:size]]

    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        _, fold, seed = task_id.split("/")
        obs, self._infos = self.engine.reset(
            seed=int(seed),
            gameFold=fold,
            gameName=self.game,
            gameParams=self.game_params,
            generateGoldPath=True,
        )
        self._gold = [a for a in self.engine.getGoldActionSequence() if a]
        self._taken = []
        # TWX's gold path starts with the "look around" the reset already performed
        if self._gold and self._gold[0] == "look around":
            self._gold = self._gold[1:]
        return obs, self._info(valid=True)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        command = " ".join(action.split())  # one line: the engine reads a single command
        valid = command in self._infos["validActions"]
        try:
            obs, reward, _, infos = self.engine.step(command)
        except Exception as exc:  # py4j reports a Java-side failure; the game state is unchanged
            obs = f"The game could not process {command[:80]!r} ({type(exc).__name__})."
            return obs, 0.0, False, self._info(valid=False)
        self._infos = infos
        self._taken.append(command)
        done = bool(infos["tasksuccess"] or infos["taskfailure"])
        return obs, float(reward), done, self._info(valid=valid)

    def _info(self, valid: bool) -> dict[str, Any]:
        seen = json.dumps([self._infos["observation"], sorted(self._infos["validActions"])])
        return {
            "task": self._infos.get("taskDescription", ""),
            "admissible_actions": sorted(self._infos["validActions"]),
            "action_valid": valid,
            "won": bool(self._infos["tasksuccess"]),
            "lost": bool(self._infos["taskfailure"]),
            "state_key": hashlib.sha1(seen.encode()).hexdigest()[:20],
            "task_type": self.game,
            "score": min(1.0, max(0.0, float(self._infos["score"]))),
        }

    def expert_action(self) -> str | None:
        """The next gold action while the agent has followed the gold path; None after a detour."""
        if self._infos.get("tasksuccess") or self._taken != self._gold[: len(self._taken)]:
            return None
        if len(self._taken) >= len(self._gold):
            return None
        return self._gold[len(self._taken)]

    def close(self) -> None:
        """Stop the JVM and release its pipes and temp file (TWX's own close leaves them open)."""
        if self._twx is not None:
            twx, self._twx = self._twx, None
            twx.close()
            proc = twx._gateway.java_process
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            twx._obj_tree_tempfile.close()
        super().close()
