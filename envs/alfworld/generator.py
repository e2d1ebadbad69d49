"""Procedural generator of ALFWorld games (`game.tw-pddl` + `traj_data.json`).

The real ALFWorld games are made from ALFRED trajectories recorded in AI2-THOR, which cannot be
downloaded here. This generator writes games in the same format from what the `alfworld` wheel
ships: the receptacles of a real ALFRED floor plan (ids and navigation points from
`gen/layouts`), the object types of that floor plan, placed into receptacles that ALFRED's
compatibility table (`constants.VAL_RECEPTACLE_OBJECTS`) allows, and a goal of one of the six
task types written with ALFWorld's own PDDL goal and text templates (`gen/goal_library.py`).
Ids use ALFRED's mangled spelling (``Apple_bar__plus_01_dot_00_bar_...``), so alfworld's own
demangler names them ``apple 1``, ``sinkbasin 1``, ...

A game is a pure function of ``(floor plan, task type, seed)``. `make_game` returns it in memory;
`write_game` writes the two files that alfworld's `AlfredTWEnv` expects.
"""

from __future__ import annotations

import json
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditgym.envs.alfworld import assets

#: Receptacle types a lamp may stand on (lamps are not in ALFRED's compatibility table).
LAMP_SURFACES = ("SideTable", "Desk", "Dresser", "DiningTable", "CoffeeTable", "TVStand", "Shelf")
LAMP_TYPES = ("DeskLamp", "FloorLamp")
#: Number of instances of the receptacles the layouts omit but the scene has (e.g. stove burners).
_EXTRA_RECEPTACLE_COUNT = {"StoveBurner": 4}
_SLICED = ("Sliced",)


class InfeasibleTask(ValueError):
    """The floor plan has no object/receptacle combination for the requested task type."""


def mangle(name: str) -> str:
    """ALFRED's PDDL spelling of a THOR id ("Apple|+01.00|..." -> "Apple_bar__plus_01_dot_00...")."""
    table = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}
    return "".join(table.get(c, c) for c in name)


def _coord(v: float) -> str:
    return f"{v:+06.2f}"


@dataclass
class Scene:
    """One room: receptacles with their locations, objects placed in receptacles."""

    scene_num: int
    receptacles: dict[str, str] = field(default_factory=dict)  # THOR id -> type
    recep_loc: dict[str, str] = field(default_factory=dict)  # THOR id -> location id
    objects: dict[str, str] = field(default_factory=dict)  # THOR id -> type
    obj_in: dict[str, str] = field(default_factory=dict)  # object id -> receptacle id
    agent_loc: str = ""

    def rtypes(self) -> set[str]:
        return set(self.receptacles.values())


def _receptacle_type(thor_id: str) -> str:
    parts = thor_id.split("|")
    return parts[-1] if len(parts) > 4 else parts[0]


def _loc_id(point: list[float]) -> tuple[int, int, int, int]:
    x, z, rot, hor = point
    return (round(x / 0.25), round(z / 0.25), int(rot) // 90 % 4, int(hor))


def build_receptacles(scene_num: int, rng: random.Random) -> Scene:
    """The floor plan's receptacles (layout ids), each at its own location."""
    c = assets.constants()
    points, types = assets.layout(scene_num)
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    scene = Scene(scene_num)
    used: set[tuple[int, int, int, int]] = set()

    def place(rid: str, point: list[float]) -> None:
        rtype = _receptacle_type(rid)
        if rtype in ("SinkBasin", "BathtubBasin") and len(rid.split("|")) == 4:
            # ALFRED names basins "Sink|x|y|z|SinkBasin"; "SinkBasin|x|y|z" would be demangled
            # as "sinkbasinbasin".
            rid = rtype.removesuffix("Basin") + "|" + "|".join(rid.split("|")[1:]) + "|" + rtype
        loc = _loc_id(point)
        while loc in used:  # one receptacle per location (see fast.py: the "floor" rule)
            loc = (loc[0], loc[1], loc[2], loc[3] + 15)
        used.add(loc)
        scene.receptacles[rid] = rtype
        scene.recep_loc[rid] = "loc|" + "|".join(str(v) for v in loc)

    for rid in sorted(points):
        if _receptacle_type(rid) in static:
            place(rid, points[rid])
    present = scene.rtypes()
    xs = [p[0] for p in points.values()] or [0.0]
    zs = [p[1] for p in points.values()] or [0.0]
    for t in sorted(set(types)):
        if t in static and t not in present and t in c.VAL_RECEPTACLE_OBJECTS:
            for _ in range(_EXTRA_RECEPTACLE_COUNT.get(t, 1)):
                x = rng.uniform(min(xs), max(xs))
                z = rng.uniform(min(zs), max(zs))
                rid = f"{t}|{_coord(x)}|{_coord(rng.uniform(0.0, 1.2))}|{_coord(z)}"
                point = [round(x * 4) / 4, round(z * 4) / 4, rng.choice([0, 90, 180, 270]), 30]
                place(rid, point)
    x = rng.uniform(min(xs), max(xs))
    z = rng.uniform(min(zs), max(zs))
    start = (round(x / 0.25), round(z / 0.25), rng.randrange(4), 30)
    while start in used:
        start = (start[0] + 1, start[1], start[2], start[3])
    scene.agent_loc = "loc|" + "|".join(str(v) for v in start)
    return scene


def object_types(scene: Scene) -> list[str]:
    """Types of the scene that can be placed in one of its receptacles (plus lamps)."""
    c = assets.constants()
    _, types = assets.layout(scene.scene_num)
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    rtypes = scene.rtypes()
    out = []
    for t in sorted(set(types)):
        if t in static or t not in c.OBJECTS_SET or t.endswith(_SLICED):
            continue
        if t in LAMP_TYPES:
            if rtypes & set(LAMP_SURFACES):
                out.append(t)
        elif any(t in c.VAL_RECEPTACLE_OBJECTS[r] for r in rtypes):
            out.append(t)
    return out


def _compatible(scene: Scene, otype: str) -> list[str]:
    c = assets.constants()
    if otype in LAMP_TYPES:
        return [r for r, t in sorted(scene.receptacles.items()) if t in LAMP_SURFACES]
    return [r for r, t in sorted(scene.receptacles.items()) if otype in c.VAL_RECEPTACLE_OBJECTS[t]]


def choose_task(scene: Scene, task_type: str, rng: random.Random) -> dict[str, str]:
    """Pick (object, parent receptacle, toggle) targets for `task_type` that the scene supports."""
    c = assets.constants()
    otypes = [t for t in object_types(scene) if t not in LAMP_TYPES]
    rtypes = sorted(scene.rtypes())
    action = {
        "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
        "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
        "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
    }
    options: list[tuple[str, str, str]] = []
    if task_type == "look_at_obj_in_light":
        lamps = [t for t in object_types(scene) if t in LAMP_TYPES]
        options = [(o, "", lamp) for lamp in lamps for o in otypes]
    else:
        for o in otypes:
            if task_type in action:
                kind, appliance = action[task_type]
                if o not in c.VAL_ACTION_OBJECTS[kind] or appliance not in rtypes:
                    continue
            for r in rtypes:
                if o not in c.VAL_RECEPTACLE_OBJECTS[r]:
                    continue
                if task_type in action and r == action[task_type][1]:
                    continue
                # the object must start somewhere other than the goal receptacle type
                others = [x for x in _compatible(scene, o) if scene.receptacles[x] != r]
                if task_type == "pick_cool_then_place_in_recep":
                    others = [x for x in others if scene.receptacles[x] != "Fridge"]
                if others:
                    options.append((o, r, ""))
    if not options:
        raise InfeasibleTask(f"FloorPlan{scene.scene_num} supports no {task_type} task")
    obj, recep, toggle = rng.choice(options)
    return {"object_target": obj, "parent_target": recep, "toggle_target": toggle}


def place_objects(
    scene: Scene, targets: dict[str, str], task_type: str, rng: random.Random
) -> None:
    """Put 1-3 instances of each object type into compatible receptacles (targets constrained)."""
    obj_t, recep_t, toggle_t = (
        targets[k] for k in ("object_target", "parent_target", "toggle_target")
    )
    used_ids: set[str] = set()
    for otype in object_types(scene):
        if otype in LAMP_TYPES:
            if otype != toggle_t:
                continue
            count = 1
        elif otype == obj_t:
            count = (
                rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 3)
            )
        else:
            count = rng.randint(1, 2)
        places = _compatible(scene, otype)
        if otype == obj_t:
            places = [r for r in places if scene.receptacles[r] != recep_t]
            if task_type == "pick_cool_then_place_in_recep":
                places = [r for r in places if scene.receptacles[r] != "Fridge"]
        if not places:
            continue
        for _ in range(count):
            parent = rng.choice(places)
            px, py, pz = (float(v) for v in parent.split("|")[1:4])
            while True:
                oid = (
                    f"{otype}|{_coord(px + rng.uniform(-0.4, 0.4))}|"
                    f"{_coord(py + rng.uniform(0.0, 0.3))}|{_coord(pz + rng.uniform(-0.4, 0.4))}"
                )
                if oid not in used_ids:
                    break
            used_ids.add(oid)
            scene.objects[oid] = otype
            scene.obj_in[oid] = parent


def goal_text(task_type: str, targets: dict[str, str], rng: random.Random) -> str:
    """The task sentence from ALFWorld's goal templates (as `get_templated_task_desc` fills them)."""
    template = rng.choice(assets.goal_library()[task_type]["templates"])
    return template.format(
        obj=targets["object_target"].lower(),
        recep=targets["parent_target"].lower(),
        toggle=targets["toggle_target"].lower(),
        mrecep="",
    )


def pddl_problem(scene: Scene, task_type: str, targets: dict[str, str], name: str) -> str:
    """The PDDL problem of the scene, with the goal library's goal for `task_type`."""
    c = assets.constants()
    m = mangle
    objs, receps = sorted(scene.objects), sorted(scene.receptacles)
    locs = sorted(set(scene.recep_loc.values()) | {scene.agent_loc})
    # The domain names these types in preconditions; they must be declared even when absent.
    otypes = set(scene.objects.values()) | {"Knife", "ButterKnife"}
    otypes = sorted((otypes | {targets["object_target"], targets["toggle_target"]}) - {""})
    rtypes = set(scene.receptacles.values()) | {"SinkBasin", "Microwave", "Fridge"}
    rtypes = sorted((rtypes | {targets["parent_target"]}) - {""})
    lines = [f"(define (problem {name})", "(:domain alfred)", "(:objects", "agent1 - agent"]
    lines += [f"{t}Type - otype" for t in otypes]
    lines += [f"{t}Type - rtype" for t in rtypes]
    lines += [f"{m(o)} - object" for o in objs]
    lines += [f"{m(r)} - receptacle" for r in receps]
    lines += [f"{m(loc)} - location" for loc in locs]
    lines += [")", "(:init", "(= (total-cost) 0)", f"(atLocation agent1 {m(scene.agent_loc)})"]
    for r in receps:
        t = scene.receptacles[r]
        lines.append(f"(receptacleType {m(r)} {t}Type)")
        lines.append(f"(receptacleAtLocation {m(r)} {m(scene.recep_loc[r])})")
        if t in c.OPENABLE_CLASS_LIST:
            lines.append(f"(openable {m(r)})")
    for o in objs:
        t = scene.objects[o]
        lines.append(f"(objectType {m(o)} {t}Type)")
        if t in LAMP_TYPES:
            lines.append(f"(toggleable {m(o)})")
        else:
            lines.append(f"(pickupable {m(o)})")
        if t in c.MOVABLE_RECEPTACLES_SET:
            lines.append(f"(isReceptacleObject {m(o)})")
        for kind, pred in (
            ("Cleanable", "cleanable"),
            ("Heatable", "heatable"),
            ("Coolable", "coolable"),
            ("Sliceable", "sliceable"),
        ):
            if t in c.VAL_ACTION_OBJECTS[kind]:
                lines.append(f"({pred} {m(o)})")
        parent = scene.obj_in[o]
        lines.append(f"(inReceptacle {m(o)} {m(parent)})")
        lines.append(f"(objectAtLocation {m(o)} {m(scene.recep_loc[parent])})")
    for rt in rtypes:
        for ot in otypes:
            if ot in c.VAL_RECEPTACLE_OBJECTS.get(rt, ()):
                lines.append(f"(canContain {rt}Type {ot}Type)")
    lines.append(")")
    goal = assets.goal_library()[task_type]["pddl"].replace("#", "-")
    goal = goal.format(
        obj=targets["object_target"],
        recep=targets["parent_target"],
        toggle=targets["toggle_target"],
        mrecep="",
    )
    # The library's goal ends with the ")" that closes `define`; the metric goes before it.
    goal = goal.strip()
    assert goal.endswith(")")
    return "\n".join(lines) + "\n" + goal[:-1].rstrip() + "\n(:metric minimize (total-cost))\n)\n"


@dataclass
class GeneratedGame:
    """A generated game: its PDDL problem, goal text and `traj_data.json` content."""

    task_type: str
    scene_num: int
    seed: int
    goal: str
    problem: str
    traj_data: dict[str, Any]

    def game_file(self, walkthrough: list[str] | None = None) -> dict[str, Any]:
        """The `game.tw-pddl` JSON: domain, grammar with the goal text, problem, solvable flag."""
        grammar = assets.grammar_text().replace("UNKNOWN GOAL", self.goal)
        return {
            "pddl_domain": assets.domain_text(),
            "grammar": grammar,
            "pddl_problem": self.problem,
            "solvable": True,
            "walkthrough": walkthrough or [],
        }


def make_game(scene_num: int, task_type: str, seed: int) -> GeneratedGame:
    """Generate the game of `(floor plan, task type, seed)`; raises `InfeasibleTask`."""
    if task_type not in assets.TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; choose one of {assets.TASK_TYPES}")
    rng = random.Random(f"alfworld-{scene_num}-{task_type}-{seed}")
    scene = build_receptacles(scene_num, rng)
    targets = choose_task(scene, task_type, rng)
    place_objects(scene, targets, task_type, rng)
    goal = goal_text(task_type, targets, rng)
    name = f"plan_trial_{scene_num}_{task_type}_{seed}"
    problem = pddl_problem(scene, task_type, targets, name)
    traj = {
        "task_type": task_type,
        "task_id": f"trial_cg_{scene_num:03d}_{seed:06d}",
        "scene": {
            "floor_plan": f"FloorPlan{scene_num}",
            "scene_num": scene_num,
            "random_seed": seed,
        },
        "pddl_params": {
            "object_target": targets["object_target"],
            "parent_target": targets["parent_target"],
            "toggle_target": targets["toggle_target"],
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {"anns": [{"task_desc": goal, "votes": [], "high_descs": []}]},
        "generator": "creditgym",
    }
    return GeneratedGame(task_type, scene_num, seed, goal, problem, traj)


def write_game(game: GeneratedGame, folder: Path, walkthrough: list[str] | None = None) -> Path:
    """Write `traj_data.json` and `game.tw-pddl` into `folder`; return the game file path."""
    folder.mkdir(parents=True, exist_ok=True)
    # Atomic writes (unique temp names): parallel workers may materialise the same game at once.
    for name, text in (
        ("traj_data.json", json.dumps(game.traj_data, indent=1)),
        ("game.tw-pddl", json.dumps(game.game_file(walkthrough))),
    ):
        tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)
    return folder / "game.tw-pddl"
