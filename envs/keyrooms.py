"""`creditgym/KeyRooms-v0`: a text world of rooms, locked doors and keys with an exact model.

A task is a small house: rooms joined by doors, some doors locked, each lock opened by the key of
its colour, a chest in one room, a target object, and distractor objects. The goal reads like
ALFWorld's ("put the red gem in the chest in the hall") and needs a chain of subgoals: find the
key, open its door, go through, find the next key, ..., fetch the target, carry it back and put it
in the chest. The agent carries at most two items.

Why this env exists: its complete transition model is exposed. ``env.unwrapped.model()`` returns
a `TabularModel` of every state reachable in the current task, so V^pi, Q^pi and the true
advantage A^pi(s, a) of any tabular policy are computed exactly, and a credit module's step
advantages can be scored against them. ``expert_action()`` follows a shortest path to success.

Layout of a task. Rooms are split into zones 0..k. Zone 0 is open from the start; zone j is
reached through one locked door (colour c_j) from a room of zone j-1, and the c_j key lies in a
room of zone j-1. Rooms inside a zone are joined by plain doors as a random tree. The chest and
the agent start in zone 0 and the target lies in the last zone. Every room has a piece of
furniture (examine only); one takeable distractor lies anywhere, half the time a look-alike of
the target (same kind, other colour: "blue gem" when the goal asks for the red gem). Keys stay in the lock once used, so a door's state is the state of its key.
Transitions have no randomness: the same task always starts in the same state, and states recur
across episodes of a task, so GiGPO's anchor groups form.

Levels (``level=`` kwarg). Measured over the 200 tasks of each test panel with ``python -m
envs.keyrooms`` (generator version 1; times on a shared 2-core CPU, mean / max):

======  =====  =====  ======================  ==================  =========  ==============
level   rooms  locks  optimal steps           reachable states    max_steps  mean time of
                      min / mean / max         min / mean / max              model / V^pi
======  =====  =====  ======================  ==================  =========  ==============
small   2-3    1      6 / 6.9 / 9             31 / 62 / 97        20         1 / 0.8 ms
medium  4-6    2      10 / 12.8 / 18          149 / 382 / 664     40         5 / 4 ms
hard    9-11   4      18 / 25.1 / 30          1161 / 2677 / 3705  80         43 / 22 ms
======  =====  =====  ======================  ==================  =========  ==============

Optimal-length histograms: small {6: 106, 7: 32, 8: 47, 9: 15}; medium {10: 9, 11: 36, 12: 66,
13: 26, 14: 29, 15: 17, 16: 13, 17: 3, 18: 1}; hard {18: 1, 20: 3, 21: 4, 22: 11, 23: 29, 24: 33,
25: 42, 26: 27, 27: 18, 28: 22, 29: 6, 30: 4}. Worst cases on a loaded machine: model build 0.29 s,
exact evaluation 0.12 s. A uniformly random agent over the admissible actions wins about 1.5%
of small episodes within 20 steps and none of medium (40) or hard (80); it needs about 160 steps
for 5% on medium.

Text. Observations: "You are in the kitchen. You see a table, a blue key, a lamp. Doors: a locked
red door to the hall, a door to the study." Actions: "go to hall", "take blue key", "take lamp
from chest", "open red door with red key", "put red gem in chest", "drop lamp", "look",
"inventory", "examine table", "examine chest". ``info["admissible_actions"]`` lists every action
that does something in the current state, including useless ones (look, inventory, examine), so
credit matters. Any other string (case and surrounding blanks are ignored) gets "Nothing
happens." with ``action_valid=False`` and no state change.

Reward 10 when the target goes into the chest (the episode terminates), 0 otherwise.
``info["state_key"]``: task id, agent room, door states and every item's location (the
inventory is the items located "inv"); ``info["score"]``: fraction of subgoals done (locks
opened, target in hand or chest, target delivered); ``info["task_type"]``: the level;
``info["subgoals"]``: the subgoal list in order.

Branching: native snapshots (``branching = "snapshot"``) hold the state tuple, so a snapshot
taken on one instance restores on any other instance of the same level (state ids are interned
per instance and are never stored).
"""

from __future__ import annotations

import gc
import hashlib
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from creditgym.envs.base import TextEnv
from creditgym.envs.tabular_model import TabularModel

__all__ = ["LEVELS", "KeyRoomsEnv", "LevelSpec", "World", "generate_world"]

ROOMS = (
    "hall", "kitchen", "pantry", "bedroom", "study", "library", "cellar", "attic", "bathroom",
    "garage", "garden", "office", "nursery", "workshop", "gallery", "porch", "laundry", "den",
)  # fmt: skip
COLORS = (
    "red", "blue", "green", "yellow", "white", "black", "silver", "golden", "purple", "orange",
)  # fmt: skip
TARGET_KINDS = ("gem", "coin", "ring", "crown", "vase", "scroll", "statue", "candle", "goblet")
DISTRACTORS = ("lamp", "mug", "pillow", "clock", "shoe", "bottle", "brush", "towel", "book", "hat")
FURNITURE = ("table", "sofa", "bed", "shelf", "rug", "mirror", "desk", "stove", "bench", "cabinet")

CAPACITY = 2
WIN_REWARD = 10.0
NOTHING = "Nothing happens."


@dataclass(frozen=True)
class LevelSpec:
    """Generator parameters of one level."""

    #: Per zone, the (min, max) number of rooms; zone j > 0 sits behind locked door j.
    zone_rooms: tuple[tuple[int, int], ...]
    #: (min, max) number of takeable distractor objects.
    distractors: tuple[int, int]
    #: Step limit of an episode (a few times the optimal length).
    max_steps: int


LEVELS: dict[str, LevelSpec] = {
    "small": LevelSpec(zone_rooms=((1, 2), (1, 1)), distractors=(1, 1), max_steps=20),
    "medium": LevelSpec(zone_rooms=((2, 3), (1, 2), (1, 1)), distractors=(1, 1), max_steps=40),
    "hard": LevelSpec(
        zone_rooms=((2, 3), (2, 2), (2, 2), (2, 2), (1, 2)), distractors=(1, 1), max_steps=80
    ),
}

#: Panel sizes; ids are "<level>-<6 digits>", numbered consecutively train, valid, test.
SPLIT_SIZES = {"train": 2000, "valid": 200, "test": 200}


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _listing(names: Sequence[str]) -> str:
    return ", ".join(_article(n) for n in names)


def task_seed(task_id: str, version: str) -> int:
    """A stable 64-bit seed for a task id (sha256; Python's `hash` is salted per process)."""
    digest = hashlib.sha256(f"creditgym/KeyRooms/{version}/{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


# A node caches everything about one state as a plain tuple of atomic values, indexed by these
# constants. Plain tuples (not a class or NamedTuple) matter: the garbage collector stops tracking
# them, and a world holds thousands of nodes that full collections would otherwise scan.
ACTIONS, NEXT, KEY, SCORE, TERMINAL = range(5)
_Node = tuple  # (actions: tuple[str, ...], next: tuple[int, ...], key, score, terminal)


class World:
    """One generated task: the static layout plus a cache of the states seen so far.

    A state is a tuple ``(room, loc_0, ..., loc_{m-1})`` of ints: the agent's room and each
    item's location (a room index, `inv`, `chest`, or `used` for a key left in its lock). Items
    are ordered keys (door order), target, distractors. States are interned to ids (0 is the
    initial state) and each id gets a node tuple with its admissible actions, successor ids and
    cached texts, so a step is a few dict and list lookups.
    """

    def __init__(
        self,
        task_id: str,
        level: str,
        rooms: list[str],
        furniture: list[str],
        doors: list[tuple[int, int, int]],
        items: list[str],
        n_keys: int,
        start: list[int],
        agent: int,
        chest_room: int,
    ):
        self.task_id = task_id
        self.level = level
        self.rooms = rooms
        self.furniture = furniture
        #: (room a, room b, key item index or -1 for a plain door)
        self.doors = doors
        self.items = items
        self.n_keys = n_keys
        self.target = n_keys
        self.chest_room = chest_room
        R = len(rooms)
        self.INV, self.CHEST, self.USED = R, R + 1, R + 2
        self.door_color = [items[k].split()[0] if k >= 0 else "" for _, _, k in doors]
        self.room_doors: list[list[int]] = [[] for _ in rooms]
        for d, (a, b, _) in enumerate(doors):
            self.room_doors[a].append(d)
            self.room_doors[b].append(d)
        self.task = f"put the {items[self.target]} in the chest in the {rooms[chest_room]}."
        subgoals = []
        for d, (_, _, k) in enumerate(doors):
            if k >= 0:
                c = self.door_color[d]
                subgoals += [f"take the {c} key", f"open the {c} door"]
        subgoals += [f"take the {items[self.target]}", f"put the {items[self.target]} in the chest"]
        self.subgoals = tuple(subgoals)
        self._loc_names = [*rooms, "inv", "chest", "used"]
        self.initial = (agent, *start)
        self._ids: dict[tuple[int, ...], int] = {self.initial: 0}
        self._states: list[tuple[int, ...]] = [self.initial]
        self._nodes: list[_Node | None] = [None]
        #: Observation after (state id, action number), keyed by ``sid << 8 | j``.
        self._feedback: dict[int, str] = {}
        self._model: TabularModel | None = None

    # ------------------------------------------------------------------ states
    def _intern(self, state: tuple[int, ...]) -> int:
        sid = self._ids.get(state)
        if sid is None:
            sid = self._ids[state] = len(self._states)
            self._states.append(state)
            self._nodes.append(None)
        return sid

    def key(self, sid: int) -> str:
        """The ``state_key`` of state id `sid`."""
        return self.node(sid)[KEY]

    def node(self, sid: int) -> _Node:
        node = self._nodes[sid]
        if node is None:
            node = self._nodes[sid] = self._build(sid)
        return node

    def is_open(self, state: tuple[int, ...], door: int) -> bool:
        k = self.doors[door][2]
        return k < 0 or state[1 + k] == self.USED

    def _build(self, sid: int) -> _Node:
        s = self._states[sid]
        room, locs = s[0], s[1:]
        terminal = locs[self.target] == self.CHEST
        if terminal:
            return ((), (), self._key(s), self._score(s), True)
        held = [i for i, x in enumerate(locs) if x == self.INV]
        moves: list[tuple[str, tuple[int, ...]]] = []
        for d in self.room_doors[room]:
            a, b, k = self.doors[d]
            other = b if a == room else a
            if self.is_open(s, d):
                moves.append((f"go to {self.rooms[other]}", (other, *locs)))
            elif locs[k] == self.INV:
                c = self.door_color[d]
                moves.append((f"open {c} door with {c} key", _put(s, k, self.USED)))
        if len(held) < CAPACITY:
            for i, x in enumerate(locs):
                if x == room:
                    moves.append((f"take {self.items[i]}", _put(s, i, self.INV)))
                elif x == self.CHEST and room == self.chest_room:
                    moves.append((f"take {self.items[i]} from chest", _put(s, i, self.INV)))
        for i in held:
            moves.append((f"drop {self.items[i]}", _put(s, i, room)))
            if room == self.chest_room:
                moves.append((f"put {self.items[i]} in chest", _put(s, i, self.CHEST)))
        moves.append(("look", s))
        moves.append(("inventory", s))
        moves.append((f"examine {self.furniture[room]}", s))
        if room == self.chest_room:
            moves.append(("examine chest", s))
        moves.sort()
        return (
            tuple(a for a, _ in moves),
            tuple(self._intern(t) for _, t in moves),
            self._key(s),
            self._score(s),
            False,
        )

    def _key(self, s: tuple[int, ...]) -> str:
        room, locs = s[0], s[1:]
        names = self._loc_names
        doors = ",".join(
            f"{self.door_color[d]}:{'open' if self.is_open(s, d) else 'locked'}"
            for d, (_, _, k) in enumerate(self.doors)
            if k >= 0
        )
        where = ",".join(
            f"{self.items[i]}@{names[x]}" for i, x in enumerate(locs) if x != self.USED
        )
        return f"{self.task_id}|at={self.rooms[room]}|doors={doors}|items={where}"

    def _score(self, s: tuple[int, ...]) -> float:
        locs = s[1:]
        done = sum(2 for k in range(self.n_keys) if locs[k] == self.USED)
        done += sum(1 for k in range(self.n_keys) if locs[k] == self.INV)
        t = locs[self.target]
        done += (t in (self.INV, self.CHEST)) + (t == self.CHEST)
        return done / len(self.subgoals)

    # ------------------------------------------------------------------ text
    def describe(self, sid: int) -> str:
        """The room description ("look") of a state."""
        s = self._states[sid]
        room, locs = s[0], s[1:]
        seen = [self.furniture[room]]
        if room == self.chest_room:
            inside = [self.items[i] for i, x in enumerate(locs) if x == self.CHEST]
            seen.append("chest" + (f" (containing {_listing(inside)})" if inside else " (empty)"))
        seen += [self.items[i] for i, x in enumerate(locs) if x == room]
        doors = []
        for d in self.room_doors[room]:
            a, b, k = self.doors[d]
            other = self.rooms[b if a == room else a]
            if k < 0:
                doors.append(f"a door to the {other}")
            elif self.is_open(s, d):
                doors.append(f"an unlocked {self.door_color[d]} door to the {other}")
            else:
                doors.append(f"a locked {self.door_color[d]} door to the {other}")
        return (
            f"You are in the {self.rooms[room]}. You see {_listing(seen)}. "
            f"Doors: {', '.join(doors)}."
        )

    def feedback(self, sid: int, j: int) -> str:
        """The observation after taking action j of state sid (cached)."""
        text = self._feedback.get(sid << 8 | j)
        if text is None:
            text = self._feedback[sid << 8 | j] = self._feedback_text(sid, j)
        return text

    def _feedback_text(self, sid: int, j: int) -> str:
        node = self.node(sid)
        action, nxt = node[ACTIONS][j], node[NEXT][j]
        s = self._states[sid]
        verb = action.split(" ", 1)[0]
        if verb in ("go", "look"):
            return self.describe(nxt)
        if verb == "inventory":
            held = [self.items[i] for i, x in enumerate(s[1:]) if x == self.INV]
            return f"You are carrying {_listing(held)}." if held else "You are carrying nothing."
        if verb == "examine":
            thing = action[len("examine ") :]
            if thing == "chest":
                inside = [self.items[i] for i, x in enumerate(s[1:]) if x == self.CHEST]
                return (
                    f"The chest contains {_listing(inside)}." if inside else "The chest is empty."
                )
            return f"You examine the {thing}. There is nothing special about it."
        if verb == "open":
            c = action.split()[1]
            return f"You unlock the {c} door with the {c} key. The key stays in the lock."
        if verb == "take":
            if action.endswith(" from chest"):
                return f"You take the {action[5:-11]} from the chest."
            return f"You take the {action[5:]}."
        if verb == "drop":
            return f"You drop the {action[5:]}."
        # put <item> in chest
        item = action[4:-9]
        if self.node(nxt)[TERMINAL]:
            return f"You put the {item} in the chest. Task complete!"
        return f"You put the {item} in the chest."

    # ------------------------------------------------------------------ model
    def model(self) -> TabularModel:
        """The full reachable model of this task (built once, then cached)."""
        if self._model is None:

            def expand(sid: int) -> tuple[bool, list[tuple[str, int, float]]]:
                node = self.node(sid)
                rewards = [WIN_REWARD if self.node(x)[TERMINAL] else 0.0 for x in node[NEXT]]
                return node[TERMINAL], list(zip(node[ACTIONS], node[NEXT], rewards))

            # The enumeration allocates many small acyclic containers; pausing the cyclic garbage
            # collector (as `timeit` does) avoids repeated full scans of every cached world.
            paused = gc.isenabled()
            gc.disable()
            try:
                self._model = TabularModel.explore(0, expand, key=self.key)
            finally:
                if paused:
                    gc.enable()
        return self._model


def _put(s: tuple[int, ...], item: int, loc: int) -> tuple[int, ...]:
    """State `s` with `item` moved to location `loc`."""
    i = item + 1
    return (*s[:i], loc, *s[i + 1 :])


def generate_world(task_id: str, level: str, version: str) -> World:
    """Generate the task `task_id` deterministically (seeded by a stable hash of the id)."""
    spec = LEVELS[level]
    rng = random.Random(task_seed(task_id, version))
    sizes = [rng.randint(lo, hi) for lo, hi in spec.zone_rooms]
    n_rooms = sum(sizes)
    rooms = rng.sample(ROOMS, n_rooms)
    furniture = [rng.choice(FURNITURE) for _ in rooms]
    zones: list[list[int]] = []
    r = 0
    for size in sizes:
        zones.append(list(range(r, r + size)))
        r += size
    n_locks = len(zones) - 1
    colors = rng.sample(COLORS, n_locks + 1)
    key_names = [f"{c} key" for c in colors[:n_locks]]
    target_color = colors[n_locks] if rng.random() < 0.5 else rng.choice(colors[:n_locks] or colors)
    kind = rng.choice(TARGET_KINDS)
    target = f"{target_color} {kind}"
    n_distractors = rng.randint(*spec.distractors)
    # Sometimes a look-alike of the target (same kind, other colour) is one of the distractors.
    lookalike = f"{rng.choice([c for c in COLORS if c != target_color])} {kind}"
    distractors = rng.sample(DISTRACTORS, n_distractors)
    if n_distractors and rng.random() < 0.5:
        distractors[0] = lookalike
    items = [*key_names, target, *distractors]

    doors: list[tuple[int, int, int]] = []
    for z, zone in enumerate(zones):
        for i in range(1, len(zone)):  # a random tree inside the zone
            doors.append((zone[rng.randrange(i)], zone[i], -1))
        if z > 0:
            doors.append((rng.choice(zones[z - 1]), zone[0], z - 1))
    start: list[int] = []
    for k in range(n_locks):
        start.append(rng.choice(zones[k]))  # key k opens the door into zone k+1
    start.append(rng.choice(zones[-1]))
    for _ in distractors:
        start.append(rng.randrange(n_rooms))
    agent = rng.choice(zones[0])
    chest_room = rng.choice(zones[0])
    return World(task_id, level, rooms, furniture, doors, items, n_locks, start, agent, chest_room)


class KeyRoomsEnv(TextEnv):
    """Rooms, locked doors and keys; exact model via `model()`, optimal `expert_action()`.

    Kwargs: ``level`` ("small", "medium", "hard"), ``split``, ``max_steps`` (default per level:
    20 / 40 / 80). See the module docstring for the text and the info keys.
    """

    env_name: ClassVar[str] = "creditgym/KeyRooms-v0"
    generator_version: ClassVar[str] = "1"
    family: ClassVar[str] = "keyrooms"
    default_max_steps: ClassVar[int] = LEVELS["medium"].max_steps
    max_observation_length: ClassVar[int] = 2048
    max_action_length: ClassVar[int] = 256
    #: How many generated tasks (with their state caches) an env instance keeps.
    cache_size: ClassVar[int] = 64
    #: Native snapshots: the state tuple (agent room, item locations), valid in any instance.
    branching: ClassVar[str] = "snapshot"

    def __init__(
        self,
        level: str = "medium",
        split: str = "train",
        max_steps: int | None = None,
        render_mode: str | None = None,
    ):
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; choose one of {sorted(LEVELS)}")
        self.level = level
        if max_steps is None:
            max_steps = LEVELS[level].max_steps
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        self._worlds: OrderedDict[str, World] = OrderedDict()
        self._world: World | None = None
        self._sid = 0

    # ------------------------------------------------------------------ TextEnv API
    def task_ids(self, split: str) -> Sequence[str]:
        """Ids "<level>-<n>" numbered train 0..1999, valid 2000..2199, test 2200..2399."""
        start = 0
        for name in ("train", "valid", "test"):
            if name == split:
                return [f"{self.level}-{i:06d}" for i in range(start, start + SPLIT_SIZES[name])]
            start += SPLIT_SIZES[name]
        raise ValueError(f"unknown split {split!r}")

    def world(self, task_id: str) -> World:
        """The generated task `task_id` (cached per instance, least recently used evicted)."""
        w = self._worlds.get(task_id)
        if w is None:
            w = self._worlds[task_id] = generate_world(task_id, self.level, self.generator_version)
            while len(self._worlds) > self.cache_size:
                self._worlds.popitem(last=False)
        else:
            self._worlds.move_to_end(task_id)
        return w

    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        self._world = self.world(task_id)
        self._sid = 0
        obs = f"{self._world.describe(0)}\nYour task is to: {self._world.task}"
        return obs, self._info(self._world.node(0), True)

    def _info(self, node: _Node, valid: bool) -> dict[str, Any]:
        w = self._world
        return {
            "task": w.task,
            "admissible_actions": list(node[ACTIONS]),
            "action_valid": valid,
            "won": node[TERMINAL],
            "state_key": node[KEY],
            "task_type": self.level,
            "score": node[SCORE],
            "subgoals": w.subgoals,
        }

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        w = self._require_world()
        sid = self._sid
        node = w.node(sid)
        actions = node[ACTIONS]
        if action not in actions:
            action = " ".join(action.lower().split()).rstrip(".")
            if action not in actions:
                return NOTHING, 0.0, node[TERMINAL], self._info(node, False)
        j = actions.index(action)
        obs = w.feedback(sid, j)
        self._sid = nxt = node[NEXT][j]
        new = w.node(nxt)
        done = new[TERMINAL]
        return obs, (WIN_REWARD if done else 0.0), done, self._info(new, True)

    def _require_world(self) -> World:
        if self._world is None:
            raise RuntimeError("call reset() before step()")
        return self._world

    # ------------------------------------------------------------------ branching
    def _snapshot_state(self) -> tuple[int, ...]:
        return self._require_world()._states[self._sid]

    def _restore_state(self, task_id: str, state: tuple[int, ...]) -> str:
        self._world = w = self.world(task_id)
        self._sid = w._intern(tuple(int(x) for x in state))
        return w.key(self._sid)

    # ------------------------------------------------------------------ model and expert
    def model(self) -> TabularModel:
        """The exact model of the current task: every state reachable from its initial state."""
        return self._require_world().model()

    @property
    def state_key(self) -> str:
        """The key of the current state (as in ``info["state_key"]``)."""
        return self._require_world().node(self._sid)[KEY]

    def expert_action(self) -> str | None:
        """An action on a shortest path to success from the current state (None when done)."""
        w = self._require_world()
        model = w.model()
        actions = model.shortest_path_actions(model.index[w.node(self._sid)[KEY]])
        return actions[0] if actions else None


def level_stats(level: str, split: str = "test", n_tasks: int | None = None) -> dict[str, Any]:
    """Measure a level over a panel: optimal lengths, reachable states, model and DP times.

    The numbers in the module docstring come from ``python -m creditgym.envs.keyrooms`` (all levels, test
    panel). ``model_build_s`` is the enumeration plus the shortest-path distances,
    ``evaluate_s`` one exact evaluation of the uniform policy at gamma = 0.95, and
    ``value_iteration_s`` one `optimal_values` call.
    """
    import time

    import numpy as np

    env = KeyRoomsEnv(level=level, split=split)
    ids = range(len(env.panel) if n_tasks is None else min(n_tasks, len(env.panel)))
    lengths, sizes, build, dp, vi = [], [], [], [], []
    for i in ids:
        env.reset(options={"task_id": i})
        t0 = time.perf_counter()
        model = env.world(env.panel.ids[i]).model()
        d = model.distance[model.initial]
        t1 = time.perf_counter()
        model.evaluate(model.uniform_policy(), gamma=0.95)
        t2 = time.perf_counter()
        model.optimal_values(0.95)
        t3 = time.perf_counter()
        lengths.append(int(d))
        sizes.append(model.n_states)
        build.append(t1 - t0)
        dp.append(t2 - t1)
        vi.append(t3 - t2)

    def summary(xs: list[float]) -> dict[str, float]:
        return {"min": float(np.min(xs)), "mean": float(np.mean(xs)), "max": float(np.max(xs))}

    return {
        "level": level,
        "split": split,
        "tasks": len(lengths),
        "max_steps": LEVELS[level].max_steps,
        "optimal_steps": summary(lengths),
        "optimal_steps_hist": {str(k): lengths.count(k) for k in sorted(set(lengths))},
        "states": summary(sizes),
        "model_build_s": summary(build),
        "evaluate_s": summary(dp),
        "value_iteration_s": summary(vi),
    }


if __name__ == "__main__":
    import json
    import sys

    for name in sys.argv[1:] or list(LEVELS):
        print(json.dumps(level_stats(name)), flush=True)
