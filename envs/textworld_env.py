"""`creditgym/TextWorld-v0`: games made by TextWorld's own generator, played by its engine.

Four kinds of games from TextWorld's challenges (the generator behind `tw-make`), made offline
and seeded: ``simple`` (tw-simple: dense / balanced / sparse rewards, detailed or brief goal),
``coin_collector`` (tw-coin_collector, levels 1-30), ``treasure_hunter`` (tw-treasure_hunter,
levels 1-20) and ``cooking`` (tw-cooking: recipe size, rooms, open / cook / cut skills; its own
train / valid / test ingredient splits). A task id is ``"<kind>/<settings>/<seed>"``; its game is
compiled on first use (a few seconds) and cached under ``cache_dir("textworld")``.

Observations, admissible commands, score and the walkthrough (`expert_action`) come from the
engine. The reward of a step is the engine's score increase (TextWorld's intermediate rewards);
``info["intermediate_reward"]`` carries TextWorld's distance-to-goal shaping signal as well.
``state_key`` hashes the engine's fact state. A command that is not admissible is not sent to
the game (Inform's parser would answer "quit" or "restart" with questions): the observation says
so and ``action_valid`` is False.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from creditgym.envs.base import TextEnv, cache_dir

log = logging.getLogger(__name__)

KINDS = ("simple", "coin_collector", "treasure_hunter", "cooking")
PANEL_SIZES = {"train": 64, "valid": 16, "test": 16}
_SEED_BASE = {"train": 0, "valid": 100_000, "test": 200_000}


def _settings(kind: str, split: str, rng: random.Random) -> str:
    """A difficulty setting string for one game of `kind`, drawn with `rng`."""
    if kind == "simple":
        return f"rewards={rng.choice(['dense', 'balanced', 'sparse'])},goal={rng.choice(['detailed', 'brief'])}"
    if kind == "coin_collector":
        return f"level={rng.randint(1, 30)}"
    if kind == "treasure_hunter":
        return f"level={rng.randint(1, 20)}"
    if kind == "cooking":
        return (
            f"recipe={rng.randint(1, 3)},take={rng.randint(0, 2)},go={rng.choice([1, 6])},"
            f"open={rng.randint(0, 1)},cook={rng.randint(0, 1)},cut={rng.randint(0, 1)},split={split}"
        )
    raise ValueError(f"unknown TextWorld game kind {kind!r}; choose from {KINDS}")


def _challenge_settings(kind: str, settings: str) -> tuple[str, dict[str, Any]]:
    values: dict[str, Any] = dict(item.split("=", 1) for item in settings.split(","))
    if kind == "simple":
        return "tw-simple", {"rewards": values["rewards"], "goal": values["goal"], "test": False}
    if kind in ("coin_collector", "treasure_hunter"):
        return f"tw-{kind}", {"level": int(values["level"])}
    out: dict[str, Any] = {k: int(values[k]) for k in ("recipe", "take", "go")}
    out.update({k: bool(int(values[k])) for k in ("open", "cook", "cut")})
    out.update(drop=False, recipe_seed=0, split=values["split"])
    return "tw-cooking", out


@contextlib.contextmanager
def _quiet_jericho() -> Iterator[None]:
    """Jericho warns that TextWorld's games are not in its list of scored games; TextWorld
    tracks the score itself (from its quest facts), so that one warning is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Game .* is not fully supported")
        yield


#: Task id -> the `GenerationWarning` messages its game's generation gave (this process only).
GENERATION_WARNINGS: dict[str, list[str]] = {}


@contextlib.contextmanager
def _absorb_generation_warnings(task_id: str) -> Iterator[None]:
    """Record TextWorld's `GenerationWarning`s instead of raising or printing them.

    TextWorld's text grammar warns when a template has too few variants and it falls back to a
    plainer word ("Not enough variation for '#work_(r)#'..."): harmless for the game, but under
    warnings-as-errors it would fail whichever task hits it. They are kept in
    `GENERATION_WARNINGS` and logged at DEBUG; every other warning goes through as usual.
    """
    from textworld.generator import GenerationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GenerationWarning)
        yield
    others = []
    for w in caught:
        if issubclass(w.category, GenerationWarning):
            GENERATION_WARNINGS.setdefault(task_id, []).append(str(w.message))
            log.debug("TextWorld generation of %s: %s", task_id, w.message)
        else:
            others.append(w)
    for w in others:  # outside the block: the caller's filters apply again
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def make_game_file(task_id: str) -> Path:
    """Compile the game of a task id with TextWorld's generator (cached; atomic on disk)."""
    import textworld
    import textworld.challenges
    from textworld.generator.game import GameOptions

    kind, settings, seed = task_id.split("/")
    folder = cache_dir("textworld", f"v{TextWorldEnv.generator_version}")
    name = hashlib.sha1(task_id.encode()).hexdigest()[:16]
    final = folder / f"{kind}-{name}.z8"
    if final.exists():
        return final
    challenge, values = _challenge_settings(kind, settings)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        options = GameOptions()
        options.seeds = int(seed)
        options.path = str(Path(tmp) / f"{kind}-{name}.z8")
        options.file_ext = ".z8"
        options.force_recompile = True
        # the generator plays its walkthrough to check it (jericho's noise)
        with _absorb_generation_warnings(task_id), _quiet_jericho():
            game = textworld.challenges.CHALLENGES[challenge][1](values, options)
            path = Path(textworld.generator.compile_game(game, options))
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            shutil.move(str(sidecar), final.with_suffix(".json"))
        os.replace(path, final)
    return final


class TextWorldEnv(TextEnv):
    """TextWorld games (Côté et al. 2018) of several kinds and difficulties.

    Args:
        split: "train", "valid" or "test" (disjoint seeds; cooking also uses TextWorld's own
            ingredient splits).
        kinds: which game kinds to include (default: all of `KINDS`).
        panel_size: number of games in the panel (default: 64 / 16 / 16).
    """

    env_name: ClassVar[str] = "creditgym/TextWorld-v0"
    generator_version: ClassVar[str] = "1"
    family: ClassVar[str] = "textworld"
    default_max_steps: ClassVar[int] = 50

    def __init__(
        self,
        split: str = "train",
        kinds: Sequence[str] = KINDS,
        panel_size: int | None = None,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown TextWorld game kinds {bad}; choose from {list(KINDS)}")
        if panel_size is not None and panel_size < 1:
            raise ValueError(f"panel_size must be >= 1, got {panel_size}")
        self.kinds = kinds
        self.panel_size = panel_size
        self._game: Any = None
        self._game_path: Path | None = None
        self._state: Any = None
        self._kind = ""

    def task_ids(self, split: str) -> Sequence[str]:
        size = self.panel_size or PANEL_SIZES[split]
        ids = []
        for i in range(size):
            kind = self.kinds[i % len(self.kinds)]
            rng = random.Random(f"textworld-{split}-{kind}-{i}")
            ids.append(f"{kind}/{_settings(kind, split, rng)}/{_SEED_BASE[split] + i}")
        return ids

    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        import textworld

        path = make_game_file(task_id)
        if self._game is None or self._game_path != path:
            if self._game is not None:
                self._game.close()
            infos = textworld.EnvInfos(
                admissible_commands=True,
                facts=True,
                policy_commands=True,
                intermediate_reward=True,
                won=True,
                lost=True,
                score=True,
                max_score=True,
                objective=True,
            )
            with _quiet_jericho():
                self._game = textworld.start(str(path), request_infos=infos)
            self._game_path = path
        self._kind = task_id.split("/", 1)[0]
        with _quiet_jericho():
            self._state = self._game.reset()
        return self._state["feedback"], self._info(valid=True)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        command = action.strip()
        if command not in self._state["admissible_commands"]:
            obs = (
                f"That is not something you can do here: {command[:80]!r} is not one of the "
                "admissible commands."
            )
            return obs, 0.0, False, self._info(valid=False)
        before = self._state["score"]
        with _quiet_jericho():
            self._state, _, done = self._game.step(command)
        reward = float(self._state["score"] - before)
        return self._state["feedback"], reward, bool(done), self._info(valid=True)

    def _info(self, valid: bool) -> dict[str, Any]:
        st = self._state
        facts = sorted(str(f) for f in st["facts"])
        max_score = st["max_score"] or 1
        return {
            "task": st["objective"],
            "admissible_actions": list(st["admissible_commands"]),
            "action_valid": valid,
            "won": bool(st["won"]),
            "lost": bool(st["lost"]),
            "state_key": hashlib.sha1("\n".join(facts).encode()).hexdigest()[:20],
            "task_type": self._kind,
            "score": min(1.0, max(0.0, st["score"] / max_score)),
            "intermediate_reward": float(st["intermediate_reward"] or 0),
        }

    def expert_action(self) -> str | None:
        """The engine's walkthrough from the current state (TextWorld's `policy_commands`)."""
        if self._state is None or self._state["won"] or self._state["lost"]:
            return None
        plan = self._state["policy_commands"]
        return plan[0] if plan else None

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
            self._game = None
        super().close()
