"""The ALFWorld assets we use, read from the installed `alfworld` package (never downloaded).

The wheel ships the PDDL domain (`alfred.pddl`), the text grammar (`alfred.twl2`), the goal
templates (`alfworld/gen/goal_library.py`), the object/receptacle compatibility tables
(`alfworld/gen/constants.py`) and, per ALFRED floor plan, the receptacle ids with their navigation
points (`alfworld/gen/layouts/FloorPlan<N>-openable.json`) and the object types present
(`FloorPlan<N>-objects.json`). Everything here is located through `importlib` so that importing
this module does not import `alfworld` itself (which pulls TextWorld).
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

#: ALFRED scene numbers of each room kind (constants.SCENE_TYPE).
ROOM_KINDS = ("Kitchen", "LivingRoom", "Bedroom", "Bathroom")


class AlfworldMissing(ImportError):
    """Raised when the `alfworld` package (the `alfworld` extra) is not installed."""


@cache
def package_dir() -> Path:
    """Folder of the installed `alfworld` package."""
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise AlfworldMissing(
            "the ALFWorld env needs the `alfworld` package: run `make install` "
            "(or `pip install -e '.[alfworld]'`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _load_module(relpath: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, package_dir() / relpath)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def constants() -> ModuleType:
    """`alfworld/gen/constants.py`, loaded as a plain module (no alfworld import side effects)."""
    return _load_module("gen/constants.py", "_creditgym_alfred_constants")


@cache
def goal_library() -> dict:
    """`alfworld/gen/goal_library.py`'s `gdict`: per task type, PDDL goal and text templates."""
    return _load_module("gen/goal_library.py", "_creditgym_alfred_goals").gdict


@cache
def domain_text() -> str:
    return (package_dir() / "data" / "alfred.pddl").read_text()


@cache
def grammar_text() -> str:
    return (package_dir() / "data" / "alfred.twl2").read_text()


def room_kind(scene_num: int) -> str:
    """Room kind of an ALFRED floor plan number (1-30 kitchen, 201-230 living room, ...)."""
    for kind, numbers in constants().SCENE_TYPE.items():
        if scene_num in numbers:
            return kind
    raise ValueError(f"FloorPlan{scene_num} is not an ALFRED scene")


@cache
def floor_plans() -> dict[str, tuple[int, ...]]:
    """Floor plan numbers per room kind, those with layout files in the wheel."""
    layouts = package_dir() / "gen" / "layouts"
    nums = sorted(
        int(p.name[len("FloorPlan") : -len("-openable.json")])
        for p in layouts.glob("FloorPlan*-openable.json")
    )
    out: dict[str, list[int]] = {k: [] for k in ROOM_KINDS}
    for n in nums:
        out[room_kind(n)].append(n)
    return {k: tuple(v) for k, v in out.items()}


@cache
def layout(scene_num: int) -> tuple[dict[str, list[float]], tuple[str, ...]]:
    """(receptacle id -> navigation point [x, z, rotation, horizon], object types in the scene)."""
    layouts = package_dir() / "gen" / "layouts"
    points = json.loads((layouts / f"FloorPlan{scene_num}-openable.json").read_text())
    types = json.loads((layouts / f"FloorPlan{scene_num}-objects.json").read_text())
    return points, tuple(types)
