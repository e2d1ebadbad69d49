"""`creditgym/ALFWorld-v0`: ALFWorld household tasks, on the real engine or the fast backend.

Tasks are generated games (see `generator.py`) unless ``ALFWORLD_DATA`` (or ``data_path``) points
to the downloaded ALFWorld data, whose ``json_2.1.1/{train,valid_seen,valid_unseen}`` games are
then played by the same id. Panels: ``train`` (3,000 games), ``valid`` (alias ``valid_seen``, 140
games: floor plans used in train, new arrangements) and ``test`` (alias ``valid_unseen``, 134
games: floor plans never used in train). Every generated game is checked solvable by the expert
when its panel is built; panels and game files are cached under ``cache_dir("alfworld")``.

Backends: ``"fast"`` (pure Python, `fast.py`) and ``"textworld"`` (alfworld's TextWorld engine,
`engine.py`); both read the same ``game.tw-pddl`` and give the same observations, admissible
actions and rewards.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from creditgym.envs.alfworld import assets
from creditgym.envs.alfworld.expert import expert_action, solve
from creditgym.envs.alfworld.fast import (
    NOTHING_HAPPENS,
    FastAlfred,
    Game,
    UnsupportedGame,
    state_key,
)
from creditgym.envs.alfworld.generator import InfeasibleTask, make_game, write_game
from creditgym.envs.base import TextEnv, cache_dir

#: ALFRED's unseen validation floor plans plus two more per room kind: never used in train/valid.
UNSEEN_FLOOR_PLANS = frozenset({10, 11, 12, 219, 220, 221, 308, 309, 310, 424, 425, 426})
PANEL_SIZES = {"train": 3000, "valid": 140, "test": 134}
_SEED_BASE = {"train": 0, "valid": 1_000_000, "test": 2_000_000}
_REAL_SPLITS = {"train": "train", "valid": "valid_seen", "test": "valid_unseen"}
BACKENDS = ("fast", "textworld")


def split_floor_plans(split: str) -> dict[str, tuple[int, ...]]:
    """Floor plans per room kind available to a split (test: the unseen ones only)."""
    out = {}
    for kind, plans in assets.floor_plans().items():
        if split == "test":
            out[kind] = tuple(p for p in plans if p in UNSEEN_FLOOR_PLANS)
        else:
            out[kind] = tuple(p for p in plans if p not in UNSEEN_FLOOR_PLANS)
    return out


def _panel_entry(split: str, index: int) -> str:
    """The task id of one panel slot: "<task type>/FloorPlan<N>/<seed>", solvable by the expert."""
    c = assets.constants()
    task_type = assets.TASK_TYPES[index % len(assets.TASK_TYPES)]
    rng = random.Random(f"alfworld-panel-{split}-{index}")
    plans = split_floor_plans(split)
    candidates = sorted(p for kind in c.GOALS_VALID[task_type] for p in plans.get(kind, ()))
    seed = _SEED_BASE[split] + index
    for attempt in range(200):
        scene = rng.choice(candidates)
        try:
            game = make_game(scene, task_type, seed * 1000 + attempt)
        except InfeasibleTask:
            continue
        sim = FastAlfred(Game.from_game_file(game.game_file(), game.traj_data))
        if solve(sim) is not None:
            return f"{task_type}/FloorPlan{scene}/{seed * 1000 + attempt}"
    raise RuntimeError(f"no solvable {task_type} game for {split} slot {index}")


def generated_panel(split: str, size: int | None = None) -> list[str]:
    """The generated panel of a split (built once, then read from the cache)."""
    size = PANEL_SIZES[split] if size is None else size
    path = cache_dir("alfworld", "panels") / f"{split}-{size}-v{ALFWorldEnv.generator_version}.json"
    if path.exists():
        return json.loads(path.read_text())
    ids = [_panel_entry(split, i) for i in range(size)]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ids))
    tmp.replace(path)
    return ids


def _has_real_data(path: Path) -> bool:
    """Whether `path` holds ALFWorld's downloaded games (json_2.1.1/<split>/... or <split>/...)."""
    roots = [path / "json_2.1.1", path]
    return any((r / s).is_dir() for r in roots for s in _REAL_SPLITS.values())


def parse_task_id(task_id: str) -> tuple[str, int, int]:
    task_type, plan, seed = task_id.split("/")
    return task_type, int(plan.removeprefix("FloorPlan")), int(seed)


def game_folder(task_id: str) -> Path:
    """Where a generated game's files live (written on first use)."""
    task_type, scene, seed = parse_task_id(task_id)
    folder = cache_dir("alfworld", f"games-v{ALFWorldEnv.generator_version}")
    folder = folder / task_type / f"FloorPlan{scene}" / f"trial_{seed}"
    if not (folder / "game.tw-pddl").exists() or not (folder / "traj_data.json").exists():
        game = make_game(scene, task_type, seed)
        plan = solve(FastAlfred(Game.from_game_file(game.game_file(), game.traj_data)))
        if plan is None:
            raise RuntimeError(f"generated game {task_id} is not solvable by the expert")
        write_game(game, folder, walkthrough=plan)
    return folder


class ALFWorldEnv(TextEnv):
    """ALFWorld (Shridhar et al. 2021): reach a household goal by text commands.

    Args:
        split: "train", "valid" / "valid_seen", "test" / "valid_unseen".
        backend: "fast" (pure Python) or "textworld" (alfworld's TextWorld PDDL engine).
        data_path: folder of the real ALFWorld data (default: ``$ALFWORLD_DATA`` if set).
        panel_size: use the first N games of the generated panel (default: the full panel).
    """

    env_name: ClassVar[str] = "creditgym/ALFWorld-v0"
    generator_version: ClassVar[str] = "2"
    family: ClassVar[str] = "alfworld"
    split_aliases: ClassVar[dict[str, str]] = {"valid_seen": "valid", "valid_unseen": "test"}
    default_max_steps: ClassVar[int] = 50
    #: Native snapshots of the fast backend's state; the engine backend is replayed.
    branching: ClassVar[str] = "snapshot"
    #: Two envs of one process must not be called at once (the TextWorld engine shares state);
    #: remote env shards then call them one at a time.
    thread_safe: ClassVar[bool] = False

    def __init__(
        self,
        split: str = "train",
        backend: str = "fast",
        data_path: str | None = None,
        panel_size: int | None = None,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        assets.package_dir()  # a clear error now if the alfworld extra is missing
        self.backend = backend
        self.data_path: Path | None = None
        if data_path is not None:
            self.data_path = Path(os.path.expandvars(data_path))
            if not self.data_path.is_dir():
                raise ValueError(f"ALFWorld data path {self.data_path} is not a folder")
            if not _has_real_data(self.data_path):
                raise ValueError(
                    f"ALFWorld data path {self.data_path} has no json_2.1.1/{{train,valid_seen,"
                    "valid_unseen}} folders"
                )
        elif os.environ.get("ALFWORLD_DATA"):
            # Importing alfworld sets ALFWORLD_DATA to its (usually empty) cache folder, so the
            # variable alone does not mean the data was downloaded: use it only if it has games.
            path = Path(os.path.expandvars(os.environ["ALFWORLD_DATA"]))
            self.data_path = path if _has_real_data(path) else None
        if panel_size is not None and panel_size < 1:
            raise ValueError(f"panel_size must be >= 1, got {panel_size}")
        self.panel_size = panel_size
        self._games: OrderedDict[str, tuple[Path, Game]] = OrderedDict()
        self._engine: Any = None
        self._sim: FastAlfred | None = None
        self._task_id = ""
        self._goal_text = ""

    # ------------------------------------------------------------------ panel
    def task_ids(self, split: str) -> Sequence[str]:
        if self.data_path is not None:
            root = self.data_path / "json_2.1.1" / _REAL_SPLITS[split]
            if not root.is_dir():
                root = self.data_path / _REAL_SPLITS[split]
            ids = sorted(
                str(p.parent.relative_to(self.data_path))
                for p in root.rglob("game.tw-pddl")
                if "movable" not in str(p) and "Sliced" not in str(p)
            )
            return ids[: self.panel_size] if self.panel_size else ids
        size = PANEL_SIZES[split] if self.panel_size is None else self.panel_size
        full = PANEL_SIZES[split]
        if size <= full:
            # a prefix of the full panel, computed without building the rest
            path = (
                cache_dir("alfworld", "panels") / f"{split}-{full}-v{self.generator_version}.json"
            )
            if path.exists():
                return json.loads(path.read_text())[:size]
        return generated_panel(split, size)

    def _load(self, task_id: str) -> tuple[Path, Game]:
        if task_id in self._games:
            self._games.move_to_end(task_id)
            return self._games[task_id]
        folder = self.data_path / task_id if self.data_path is not None else game_folder(task_id)
        data = json.loads((folder / "game.tw-pddl").read_text())
        traj = json.loads((folder / "traj_data.json").read_text())
        if "UNKNOWN GOAL" in data["grammar"]:
            folder = self._with_goal_text(folder, data, traj)
            data = json.loads((folder / "game.tw-pddl").read_text())
        game = Game.from_game_file(data, traj) if self.backend == "fast" else None
        if game is None:
            try:
                game = Game.from_game_file(data, traj)
            except UnsupportedGame:
                game = None
        self._games[task_id] = (folder, game)  # type: ignore[assignment]
        while len(self._games) > 64:
            self._games.popitem(last=False)
        return folder, game  # type: ignore[return-value]

    @staticmethod
    def _with_goal_text(folder: Path, data: dict, traj: dict) -> Path:
        """A cached copy of a real game whose grammar still says "UNKNOWN GOAL"."""
        params = traj["pddl_params"]
        template = assets.goal_library()[traj["task_type"]]["templates"][0]
        goal = template.format(
            obj=params["object_target"].lower(),
            recep=params["parent_target"].lower(),
            toggle=params["toggle_target"].lower(),
            mrecep=params.get("mrecep_target", "").lower(),
        )
        out = cache_dir("alfworld", "real", *folder.parts[-3:])
        data = dict(data, grammar=data["grammar"].replace("UNKNOWN GOAL", goal))
        (out / "game.tw-pddl").write_text(json.dumps(data))
        (out / "traj_data.json").write_text(json.dumps(traj))
        return out

    # ------------------------------------------------------------------ episode
    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        folder, game = self._load(task_id)
        self._task_id = task_id
        if self.backend == "fast":
            self._sim = FastAlfred(game)
            obs = self._sim.reset()
        else:
            from creditgym.envs.alfworld.engine import EngineAlfred

            game_file = folder / "game.tw-pddl"
            if self._engine is None or self._engine.game_file != str(game_file):
                self._engine = EngineAlfred(game_file)
            obs = self._engine.reset()
            self._sim = FastAlfred(game) if game is not None else None  # shadow: expert, score
        self._task_type = json.loads((folder / "traj_data.json").read_text())["task_type"]
        self._goal_text = obs.rsplit("Your task is to: ", 1)[-1]
        return obs, self._info(valid=True)

    def _admissible(self) -> list[str]:
        if self.backend == "fast":
            assert self._sim is not None
            return self._sim.admissible_commands()
        return self._engine.admissible_commands()

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        valid = action.strip() in set(self._admissible())
        if self.backend == "fast":
            assert self._sim is not None
            obs = self._sim.step(action)
        else:
            obs = self._engine.step(action)
            if self._sim is not None:
                self._sim.step(action)
        if not valid:
            obs = NOTHING_HAPPENS
        info = self._info(valid=valid)
        return obs, 10.0 * float(info["won"]), bool(info["won"]), info

    def _info(self, valid: bool) -> dict[str, Any]:
        if self.backend == "fast":
            assert self._sim is not None
            won, key = self._sim.won(), state_key(self._sim.facts())
        else:
            won, key = self._engine.won(), self._engine.state_key()
        score = self._sim.score() if self._sim is not None else float(won)
        return {
            "task": self._goal_text,
            "admissible_actions": self._admissible(),
            "action_valid": valid,
            "won": won,
            "state_key": key,
            "task_type": self._task_type,
            "score": score,
        }

    # ------------------------------------------------------------------ branching
    def _snapshot_state(self) -> dict[str, Any] | None:
        """The fast backend's game state (the engine backend replays instead)."""
        if self.backend != "fast" or self._sim is None:
            return None
        return {
            "sim": self._sim.get_state(),
            "task_type": self._task_type,
            "goal_text": self._goal_text,
        }

    def _restore_state(self, task_id: str, state: dict[str, Any]) -> str | None:
        if self.backend != "fast":
            return None
        _, game = self._load(task_id)
        self._task_id = task_id
        self._sim = FastAlfred.from_state(game, state["sim"])
        self._task_type, self._goal_text = state["task_type"], state["goal_text"]
        return state_key(self._sim.facts())

    # ------------------------------------------------------------------ oracle
    def expert_action(self) -> str | None:
        """The handcoded expert's next command (None when won or when it has none)."""
        if self._sim is None:
            return None
        return expert_action(self._sim)


def build_panels(sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Build (or load) the generated panels; returns seconds spent per split."""
    out = {}
    for split, size in (sizes or PANEL_SIZES).items():
        start = time.perf_counter()
        generated_panel(split, size)
        out[split] = time.perf_counter() - start
    return out


def export_games(split: str, dest: str | Path, size: int | None = None) -> list[Path]:
    """Copy a generated panel's games into ALFWorld's data layout.

    Writes ``dest/json_2.1.1/<train|valid_seen|valid_unseen>/<task folder>/<trial>/`` with
    ``game.tw-pddl`` and ``traj_data.json``, the layout alfworld's `AlfredTWEnv` (with
    ``dataset.data_path`` pointing at the split folder) and this env's ``ALFWORLD_DATA`` read.
    """
    out = []
    root = Path(dest) / "json_2.1.1" / _REAL_SPLITS[split]
    for task_id in generated_panel(split, size):
        task_type, scene, seed = parse_task_id(task_id)
        src = game_folder(task_id)
        folder = root / f"{task_type}-FloorPlan{scene}" / f"trial_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("game.tw-pddl", "traj_data.json"):
            (folder / name).write_bytes((src / name).read_bytes())
        out.append(folder / "game.tw-pddl")
    return out
