"""A pure-Python implementation of ALFWorld's text game (`backend="fast"`).

TextWorld plays ALFWorld by translating the PDDL problem with Fast Downward at every reset and by
deriving every admissible command and every feedback sentence from the `alfred.twl2` grammar at
every step (tens of milliseconds per step). This module implements the same domain
(`alfred.pddl`: goto, open, close, take, move, clean, heat, cool, use, slice, examine, look,
inventory, help) and the same sentences directly on a small state, reading the very same
`game.tw-pddl` file. What must match the engine, and how it is matched:

- Entity names: alfworld's demangler numbers the instances of a name in sorted-id order, the
  first id getting the highest number ("cabinet 8" ... "cabinet 1").
- Lists ("you see a cup 1, a lettuce 1, and a spoon 1") follow TextWorld's order of sorted
  facts, i.e. the sorted (lower-cased) PDDL ids; "nothing" when empty.
- Admissible commands are the sorted, de-duplicated commands of every applicable grounded action;
  "go to" the current location is not applicable (its add and delete effects cancel out).
- An action that is not admissible leaves the state unchanged with "Nothing happens.".

`tests/envs/test_alfworld_equivalence.py` replays expert and random trajectories through both
backends and requires identical observations, admissible actions, rewards and state keys.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from creditgym.envs.alfworld import assets

NOTHING_HAPPENS = "Nothing happens."
#: Predicates whose truth can change during a game; the state key covers these. Left out are the
#: write-only ones that no precondition, goal or sentence reads: `checked`, and `isOn` (which
#: TextWorld's fact view never even shows as true: the toggle's two conditional effects cancel).
DYNAMIC_PREDICATES = frozenset(
    {
        "atlocation",
        "inreceptacle",
        "objectatlocation",
        "holds",
        "holdsany",
        "opened",
        "isclean",
        "ishot",
        "iscool",
        "issliced",
        "istoggled",
    }
)


class UnsupportedGame(ValueError):
    """The game uses a part of the domain the fast backend does not implement."""


# ----------------------------------------------------------------------------- PDDL reading
_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _parse_sexp(text: str) -> list:
    text = re.sub(r";[^\n]*", "", text)
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok.lower())
    return stack[0]


def parse_problem(problem: str) -> tuple[dict[str, str], list[tuple[str, ...]]]:
    """(object name -> type, init facts) of a PDDL problem, names lower-cased as Fast Downward does."""
    (define,) = [x for x in _parse_sexp(problem) if isinstance(x, list)]
    objects: dict[str, str] = {}
    facts: list[tuple[str, ...]] = []
    for part in define:
        if not isinstance(part, list) or not part:
            continue
        if part[0] == ":objects":
            pending: list[str] = []
            items = part[1:]
            i = 0
            while i < len(items):
                if items[i] == "-":
                    for name in pending:
                        objects[name] = items[i + 1]
                    pending = []
                    i += 2
                else:
                    pending.append(items[i])
                    i += 1
        elif part[0] == ":init":
            for fact in part[1:]:
                if isinstance(fact, list) and fact and fact[0] != "=":
                    facts.append(tuple(fact))
    return objects, facts


def demangled_names(ids: list[str]) -> dict[str, str]:
    """alfworld's display names: "<name> <n>", instances numbered from the highest in id order."""
    ids = sorted(ids)
    counts: Counter[str] = Counter()
    for i in ids:
        parts = i.split("_bar_", 1)
        if len(parts) > 1:
            counts[parts[0] + ("basin" if "basin" in i else "")] += 1
    remaining = {name: list(range(1, n + 1)) for name, n in counts.items()}
    names = {}
    for i in ids:
        parts = i.split("_bar_", 1)
        if len(parts) == 1:
            names[i] = i + " "
        else:
            name = parts[0] + ("basin" if "basin" in i else "")
            names[i] = f"{name} {remaining[name].pop()}"
    return names


def listing(items: list[str]) -> str:
    """TextWorld's list rendering: "nothing", "a x", "a x, and a y", "a x, a y, and a z"."""
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


# ----------------------------------------------------------------------------- the game
@dataclass
class Goal:
    """A task's goal in the terms of the goal library (types are lower-cased PDDL type names)."""

    task_type: str
    obj: str
    recep: str = ""
    toggle: str = ""

    @classmethod
    def from_traj_data(cls, traj: dict[str, Any]) -> Goal:
        params = traj["pddl_params"]
        task_type = traj["task_type"]
        if task_type not in assets.TASK_TYPES or params.get("object_sliced"):
            raise UnsupportedGame(
                f"the fast backend plays the six ALFWorld task types without slicing; this game "
                f"is {task_type!r} (object_sliced={params.get('object_sliced')}); use "
                "backend='textworld'"
            )

        def t(name: str) -> str:
            return (name + "Type").lower() if name else ""

        return cls(
            task_type,
            t(params["object_target"]),
            t(params["parent_target"]),
            t(params["toggle_target"]),
        )


@dataclass
class Game:
    """The static part of a game: entities, names, types, locations, capabilities."""

    intro_task: str
    goal: Goal
    names: dict[str, str]
    otype: dict[str, str]
    rtype: dict[str, str]
    recep_loc: dict[str, str]
    loc_receps: dict[str, list[str]]
    openable: frozenset[str]
    pickupable: frozenset[str]
    receptacle_object: frozenset[str]
    capable: dict[str, frozenset[str]]
    can_contain: frozenset[tuple[str, str]]
    init_loc: str
    init_parent: dict[str, str]
    init_flags: dict[str, frozenset[str]]
    help_text: str
    receptacles: list[str] = field(default_factory=list)

    @classmethod
    def from_game_file(cls, data: dict[str, Any], traj: dict[str, Any]) -> Game:
        _, facts = parse_problem(data["pddl_problem"])
        by: dict[str, list[tuple[str, ...]]] = {}
        for f in facts:
            by.setdefault(f[0], []).append(f[1:])
        entity_ids = sorted({a for f in facts for a in f[1:]})
        names = demangled_names(entity_ids)
        recep_loc = {r: loc for r, loc in by.get("receptacleatlocation", [])}
        loc_receps: dict[str, list[str]] = {}
        for r, loc in sorted(recep_loc.items()):
            loc_receps.setdefault(loc, []).append(r)
        (agent_loc,) = [loc for a, loc in by.get("atlocation", [])]
        task = re.search(r'"Your task is to: (.*?)"', data["grammar"])
        if task is None:
            raise UnsupportedGame("the game grammar has no 'Your task is to:' rule")
        shared = [loc for loc, receps in loc_receps.items() if len(receps) > 1]
        if shared:
            # TextWorld then lists objects "next to" a receptacle from its negated-fact history,
            # which this backend does not track (generated games never share a location).
            raise UnsupportedGame(
                f"receptacles share locations {shared[:3]}; use backend='textworld'"
            )
        unsupported = {"inreceptacleobject", "isreceptacleobjectfull", "holdsanyreceptacleobject"}
        if unsupported & set(by):
            raise UnsupportedGame(
                f"the fast backend does not model {sorted(unsupported & set(by))}"
            )
        flags = {
            p: frozenset(a[0] for a in by.get(p, []))
            for p in ("isclean", "ishot", "iscool", "issliced", "ison", "istoggled", "opened")
        }
        return cls(
            intro_task=json.loads('"' + task.group(1) + '"'),
            goal=Goal.from_traj_data(traj),
            names=names,
            otype={o: t for o, t in by.get("objecttype", [])},
            rtype={r: t for r, t in by.get("receptacletype", [])},
            recep_loc=recep_loc,
            loc_receps=loc_receps,
            openable=frozenset(a[0] for a in by.get("openable", [])),
            pickupable=frozenset(a[0] for a in by.get("pickupable", [])),
            receptacle_object=frozenset(a[0] for a in by.get("isreceptacleobject", [])),
            capable={
                p: frozenset(a[0] for a in by.get(p, []))
                for p in ("cleanable", "heatable", "coolable", "sliceable", "toggleable")
            },
            can_contain=frozenset((a[0], a[1]) for a in by.get("cancontain", [])),
            init_loc=agent_loc,
            init_parent={o: r for o, r in by.get("inreceptacle", [])},
            init_flags=flags,
            help_text=_help_text(data["grammar"]),
            receptacles=sorted(recep_loc),
        )


def _help_text(grammar: str) -> str:
    match = re.search(r'"help\.feedback":\s*\[\s*\{\s*"rhs":\s*"((?:[^"\\]|\\.)*)"', grammar)
    if match is None:
        return ""
    # TextWorld drops the leading newline of the rule (its parser skips leading whitespace).
    return json.loads('"' + match.group(1) + '"').lstrip()


class FastAlfred:
    """The game state and its rules; `step(command) -> (feedback, won)`."""

    def __init__(self, game: Game):
        self.game = game
        self.reset()

    def reset(self) -> str:
        g = self.game
        self.loc = g.init_loc
        self.held: str | None = None
        self.parent: dict[str, str | None] = dict(g.init_parent)
        self.contents: dict[str, list[str]] = {r: [] for r in g.receptacles}
        for o, r in sorted(g.init_parent.items()):
            self.contents.setdefault(r, []).append(o)
        self.opened = set(g.init_flags["opened"])
        self.clean = set(g.init_flags["isclean"])
        self.hot = set(g.init_flags["ishot"])
        self.cool = set(g.init_flags["iscool"])
        self.sliced = set(g.init_flags["issliced"])
        self.on = set(g.init_flags["ison"])
        self.toggled = set(g.init_flags["istoggled"])
        self._admissible: dict[str, tuple] | None = None
        return (
            "-= Welcome to TextWorld, ALFRED! =-\n\n"
            + self._look(intro=True)
            + "\n\n"
            + self._task()
        )

    _FLAGS = ("opened", "clean", "hot", "cool", "sliced", "on", "toggled")

    def get_state(self) -> dict[str, Any]:
        """The mutable game state as plain data (for native env snapshots)."""
        state: dict[str, Any] = {
            "loc": self.loc,
            "held": self.held,
            "parent": dict(self.parent),
            "contents": {r: list(v) for r, v in self.contents.items()},
        }
        for name in self._FLAGS:
            state[name] = sorted(getattr(self, name))
        return state

    @classmethod
    def from_state(cls, game: Game, state: dict[str, Any]) -> FastAlfred:
        """A simulator of `game` in `state` (from `get_state`), without a reset."""
        sim = cls.__new__(cls)
        sim.game = game
        sim.loc, sim.held = state["loc"], state["held"]
        sim.parent = dict(state["parent"])
        sim.contents = {r: list(v) for r, v in state["contents"].items()}
        for name in cls._FLAGS:
            setattr(sim, name, set(state[name]))
        sim._admissible = None
        return sim

    # ------------------------------------------------------------------ text
    def _task(self) -> str:
        return f"Your task is to: {self.game.intro_task}"

    def _n(self, entity: str) -> str:
        return self.game.names[entity]

    def _a(self, entity: str) -> str:
        return "a " + self.game.names[entity]

    def _accessible(self, r: str) -> bool:
        return r not in self.game.openable or r in self.opened

    def _examine_receptacle(self, r: str) -> str:
        name = self._n(r)
        if r in self.game.openable:
            if r in self.opened:
                items = listing([self._a(o) for o in self.contents[r]])
                return f"The {name} is open. In it, you see {items}."
            return f"The {name} is closed."
        return f"On the {name}, you see {listing([self._a(o) for o in self.contents[r]])}."

    def _examine_object(self, o: str) -> str:
        name = self._n(o)
        if o in self.game.receptacle_object:
            return f"This is a normal {name}. In it, you see nothing."
        clean, hot, cool, sliced = (o in s for s in (self.clean, self.hot, self.cool, self.sliced))
        if sliced:
            if clean and hot:
                return f"This is a hot and clean sliced {name}."
            if clean and cool:
                return f"This is a cool and clean sliced {name}."
            if clean:
                return f"This is a clean sliced {name}."
            if hot:
                return f"This is a hot sliced {name}."
            if cool:
                return f"This is a cool sliced {name}."
        if clean and hot:
            return f"This is a hot and clean {name}."
        if clean and cool:
            return f"This is a cool and clean {name}."
        if hot:
            return f"This is a hot {name}."
        if clean:
            return f"This is a clean {name}."
        if cool:
            return f"This is a cold {name}."
        if o in self.game.capable["toggleable"] and o in self.toggled:
            return f"This {name} is on."
        if o in self.game.capable["sliceable"] and sliced:
            return f"This is a sliced {name}."
        return f"There's nothing special about {name}."

    def _look(self, intro: bool = False) -> str:
        here = self.game.loc_receps.get(self.loc, [])
        if here:
            names = listing([self._n(r) for r in here])
            return f"You are facing the {names}. Next to it, you see nothing."
        # The intro's grammar context binds no location, so it lists every receptacle; the look
        # action binds the agent's location, which has none.
        around = listing([self._a(r) for r in self.game.receptacles] if intro else [])
        return f"You are in the middle of a room. Looking quickly around you, you see {around}."

    # ------------------------------------------------------------------ rules
    def admissible(self) -> dict[str, tuple]:
        """Command -> (action name, arguments) of every applicable grounded action."""
        if self._admissible is not None:
            return self._admissible
        g = self.game
        n = self._n
        cmds: dict[str, tuple] = {"look": ("look",), "inventory": ("inventory",), "help": ("help",)}
        here = g.loc_receps.get(self.loc, [])
        for r in g.receptacles:
            if g.recep_loc[r] != self.loc:  # going where one stands is a no-op, not an action
                cmds[f"go to {n(r)}"] = ("goto", g.recep_loc[r], r)
        held = self.held
        for r in here:
            cmds[f"examine {n(r)}"] = ("examine_r", r)
            if r in g.openable:
                if r in self.opened:
                    cmds[f"close {n(r)}"] = ("close", r)
                else:
                    cmds[f"open {n(r)}"] = ("open", r)
            accessible = self._accessible(r)
            for o in self.contents[r]:
                if o in g.capable["toggleable"]:
                    cmds[f"use {n(o)}"] = ("use", o, r)
                if accessible and held is None and o in g.pickupable:
                    cmds[f"take {n(o)} from {n(r)}"] = ("take", o, r)
            if held is not None:
                if accessible and (g.rtype[r], g.otype[held]) in g.can_contain:
                    cmds[f"move {n(held)} to {n(r)}"] = ("move", held, r)
                rt = g.rtype[r]
                if rt == "sinkbasintype" and held in g.capable["cleanable"]:
                    cmds[f"clean {n(held)} with {n(r)}"] = ("clean", held, r)
                if rt == "microwavetype" and held in g.capable["heatable"]:
                    cmds[f"heat {n(held)} with {n(r)}"] = ("heat", held, r)
                if rt == "fridgetype" and held in g.capable["coolable"]:
                    cmds[f"cool {n(held)} with {n(r)}"] = ("cool", held, r)
                if g.otype[held] in ("knifetype", "butterknifetype"):
                    for o in self.contents[r]:
                        if o in g.capable["sliceable"]:
                            cmds[f"slice {n(o)} with {n(held)}"] = ("slice", o, held)
        if held is not None:
            cmds[f"examine {n(held)}"] = ("examine_o", held)
        self._admissible = cmds
        return cmds

    def admissible_commands(self) -> list[str]:
        return sorted(self.admissible())

    def step(self, command: str) -> str:
        """Apply a command; returns the feedback ("Nothing happens." if it is not admissible)."""
        action = self.admissible().get(command.strip())
        if action is None:
            return NOTHING_HAPPENS
        self._admissible = None
        kind = action[0]
        n = self._n
        if kind == "goto":
            self.loc = action[1]
            r = action[2]
            return f"You arrive at {n(r)}. {self._examine_receptacle(r)}"
        if kind == "look":
            return self._look()
        if kind == "inventory":
            if self.held is None:
                return "You are not carrying anything."
            return f"You are carrying: {self._a(self.held)}."
        if kind == "help":
            return self.game.help_text
        if kind == "examine_r":
            return self._examine_receptacle(action[1])
        if kind == "examine_o":
            return self._examine_object(action[1])
        if kind == "open":
            self.opened.add(action[1])
            return f"You open the {n(action[1])}. {self._examine_receptacle(action[1])}"
        if kind == "close":
            self.opened.discard(action[1])
            return f"You close the {n(action[1])}."
        if kind == "take":
            _, o, r = action
            self.contents[r].remove(o)
            self.parent[o] = None
            self.held = o
            return f"You pick up the {n(o)} from the {n(r)}."
        if kind == "move":
            _, o, r = action
            bisect.insort(self.contents[r], o)
            self.parent[o] = r
            self.held = None
            return f"You move the {n(o)} to the {n(r)}."
        if kind == "clean":
            self.clean.add(action[1])
            return f"You clean the {n(action[1])} using the {n(action[2])}."
        if kind == "heat":
            self.hot.add(action[1])
            self.cool.discard(action[1])
            return f"You heat the {n(action[1])} using the {n(action[2])}."
        if kind == "cool":
            self.cool.add(action[1])
            self.hot.discard(action[1])
            return f"You cool the {n(action[1])} using the {n(action[2])}."
        if kind == "use":
            o = action[1]
            if o in self.on:
                self.on.discard(o)
            else:
                self.on.add(o)
            self.toggled.add(o)
            return f"You turn on the {n(o)}."
        if kind == "slice":
            self.sliced.add(action[1])
            return f"You sliced the {n(action[1])} with the {n(action[2])}."
        raise AssertionError(kind)

    # ------------------------------------------------------------------ goal
    def goal_conditions(self) -> list[bool]:
        """ALFRED-style goal conditions of the task; all true iff the game is won."""
        g, goal = self.game, self.game.goal

        def in_target(o: str) -> bool:
            r = self.parent.get(o)
            return r is not None and g.rtype[r] == goal.recep

        targets = [o for o, t in g.otype.items() if t == goal.obj]
        tt = goal.task_type
        if tt == "pick_and_place_simple":
            return [any(in_target(o) for o in targets)]
        if tt == "pick_two_obj_and_place":
            per_recep = Counter(self.parent[o] for o in targets if in_target(o))
            best = max(per_recep.values(), default=0)
            return [best >= 1, best >= 2]
        if tt == "look_at_obj_in_light":
            here = set(g.loc_receps.get(self.loc, []))
            lit = any(
                t == goal.toggle
                and o in g.capable["toggleable"]
                and o in self.toggled
                and self.parent.get(o) in here
                for o, t in g.otype.items()
            )
            holds = self.held is not None and g.otype[self.held] == goal.obj
            return [holds, lit]
        flag, cap = {
            "pick_clean_then_place_in_recep": (self.clean, "cleanable"),
            "pick_heat_then_place_in_recep": (self.hot, "heatable"),
            "pick_cool_then_place_in_recep": (self.cool, "coolable"),
        }[tt]
        changed = [o for o in targets if o in g.capable[cap] and o in flag]
        return [bool(changed), any(in_target(o) for o in changed)]

    def won(self) -> bool:
        return all(self.goal_conditions())

    def score(self) -> float:
        conds = self.goal_conditions()
        return sum(conds) / len(conds)

    # ------------------------------------------------------------------ state key
    def facts(self) -> list[str]:
        """The dynamic positive facts of the state, spelled as in the engine (`state_key`)."""
        g = self.game
        out = [f"atlocation(agent1, {self.loc})"]
        for o, r in self.parent.items():
            if r is not None:
                out.append(f"inreceptacle({o}, {r})")
                out.append(f"objectatlocation({o}, {g.recep_loc[r]})")
        if self.held is not None:
            out.append(f"holds(agent1, {self.held})")
            out.append("holdsany(agent1)")
        for pred, items in (
            ("opened", self.opened),
            ("isclean", self.clean),
            ("ishot", self.hot),
            ("iscool", self.cool),
            ("issliced", self.sliced),
            ("istoggled", self.toggled),
        ):
            out.extend(f"{pred}({x})" for x in items)
        return sorted(out)


def state_key(facts: list[str]) -> str:
    """A short canonical key of a fact list (sorted, hashed)."""
    return hashlib.sha1("\n".join(sorted(facts)).encode()).hexdigest()[:20]
