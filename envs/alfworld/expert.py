"""A handcoded ALFWorld expert that replans from any state of the fast backend.

Like alfworld's own handcoded expert it follows the task recipe (find the object, change its
state with the right appliance, bring it to the goal receptacle; for two objects, twice; for the
lamp task, carry the object to the lamp and switch it on), but it reads the true state instead of
parsing observations, so it also recovers from any detour (a random prefix, an object put in the
wrong place). It is used to check that every generated game is solvable and as the oracle.
"""

from __future__ import annotations

from creditgym.envs.alfworld.fast import FastAlfred

_APPLIANCE = {
    "pick_clean_then_place_in_recep": ("sinkbasintype", "clean", "isclean"),
    "pick_heat_then_place_in_recep": ("microwavetype", "heat", "ishot"),
    "pick_cool_then_place_in_recep": ("fridgetype", "cool", "iscool"),
}


def expert_action(sim: FastAlfred) -> str | None:
    """The expert's next command in the current state, or None when the game is won (or stuck)."""
    if sim.won():
        return None
    g, goal = sim.game, sim.game.goal
    n = sim._n
    tt = goal.task_type

    def reach(r: str, command: str, needs_open: bool = True) -> str:
        if g.recep_loc[r] != sim.loc:
            return f"go to {n(r)}"
        if needs_open and r in g.openable and r not in sim.opened:
            return f"open {n(r)}"
        return command

    flags = {"isclean": sim.clean, "ishot": sim.hot, "iscool": sim.cool}
    targets = sorted(o for o, t in g.otype.items() if t == goal.obj and o in g.pickupable)
    dests = [r for r in g.receptacles if g.rtype[r] == goal.recep]
    if tt == "pick_two_obj_and_place" and dests:
        # keep filling the receptacle that already holds the most targets
        dests.sort(key=lambda r: -sum(sim.parent.get(o) == r for o in targets))

    def done(o: str) -> bool:
        if tt == "look_at_obj_in_light" or not dests:
            return False
        if tt == "pick_two_obj_and_place":
            return sim.parent.get(o) == dests[0]
        return sim.parent.get(o) in dests and changed(o)

    def changed(o: str) -> bool:
        return tt not in _APPLIANCE or o in flags[_APPLIANCE[tt][2]]

    held = sim.held
    if held is not None:
        if held in targets:
            if tt == "look_at_obj_in_light":
                lamps = sorted(
                    o for o, t in g.otype.items() if t == goal.toggle and sim.parent.get(o)
                )
                if not lamps:
                    return None
                lamp = lamps[0]
                return reach(sim.parent[lamp], f"use {n(lamp)}", needs_open=False)
            if not changed(held):
                rtype, verb, _ = _APPLIANCE[tt]
                apps = [r for r in g.receptacles if g.rtype[r] == rtype]
                if not apps:
                    return None
                return reach(apps[0], f"{verb} {n(held)} with {n(apps[0])}", needs_open=False)
            if not dests:
                return None
            return reach(dests[0], f"move {n(held)} to {n(dests[0])}")
        # put a useless object back where it can go, nearest first (here)
        spots = [r for r in g.receptacles if (g.rtype[r], g.otype[held]) in g.can_contain]
        spots.sort(key=lambda r: g.recep_loc[r] != sim.loc)
        if not spots:
            return None
        return reach(spots[0], f"move {n(held)} to {n(spots[0])}")
    todo = [o for o in targets if sim.parent.get(o) is not None and not done(o)]
    if not todo:
        return None
    todo.sort(key=lambda o: (not changed(o), g.recep_loc[sim.parent[o]] != sim.loc))
    o = todo[0]
    r = sim.parent[o]
    return reach(r, f"take {n(o)} from {n(r)}")


def solve(sim: FastAlfred, max_steps: int = 60) -> list[str] | None:
    """Play the expert from the current state; the command list if it wins, else None."""
    plan = []
    for _ in range(max_steps):
        if sim.won():
            return plan
        command = expert_action(sim)
        if command is None or command not in sim.admissible():
            return None
        sim.step(command)
        plan.append(command)
    return plan if sim.won() else None
