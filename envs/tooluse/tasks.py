"""Task families of the tool-use env, each with a verifiable answer or final state.

A task is generated from its id alone (the id seeds it), so panels are plain id lists. Every task
carries the expert's plan: the exact tool calls and final answer that solve it, known in advance
because the apps are deterministic for the seed.

Families:

- ``arithmetic``: evaluate an expression (calculator) or convert units (convert_units);
- ``database``: questions about a company's customers, orders and products (typed SQLite tools);
- ``calendar``: change a calendar / todo list; the final state is checked, not the answer text;
- ``reasoning``: `reasoning-gym` tasks (checked by its own verifier), solved with the calculator
  or the sandboxed Python tool.
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from creditgym.envs.search.text import normalize_answer
from creditgym.envs.tooluse.apps import (
    CALCULATOR,
    CONVERTER,
    CalendarApp,
    CompanyDB,
    convert,
    evaluate,
    format_number,
)
from creditgym.envs.tooluse.tools import Tool, ToolError

FAMILIES = ("arithmetic", "database", "calendar", "reasoning")
SPLIT_SIZES = {"train": 2000, "valid": 100, "test": 100}
SPLIT_OFFSETS = {"train": 0, "valid": 500_000, "test": 600_000}


@dataclass
class Task:
    """One generated task: what the agent is told, its tools, how it is checked, the expert plan."""

    task_id: str
    family: str
    instruction: str
    tools: list[Tool]
    ground_truth: str
    check: Callable[[str], bool]
    plan: list[str]
    app: CalendarApp | CompanyDB | None = None
    goal: dict[str, Any] = field(default_factory=dict)


def task_ids(split: str, families: tuple[str, ...] = FAMILIES) -> list[str]:
    """The panel of a split: families interleaved, so any prefix mixes them evenly."""
    base = SPLIT_OFFSETS[split]
    return [f"{fam}-{base + i:06d}" for i in range(SPLIT_SIZES[split]) for fam in families]


def call(tool: str, /, **arguments: Any) -> str:
    """A ``<tool_call>`` action as the expert writes it."""
    return f"<tool_call>{json.dumps({'name': tool, 'arguments': arguments})}</tool_call>"


def answer(text: str) -> str:
    return f"<answer>{text}</answer>"


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def numeric_checker(target: float, tol: float) -> Callable[[str], bool]:
    """True when the answer's first number is within `tol` of the target ($ and commas allowed)."""

    def check(text: str) -> bool:
        m = _NUMBER.search(text.replace("$", ""))
        if not m:
            return False
        try:
            return abs(float(m.group().replace(",", "")) - target) <= tol
        except ValueError:
            return False

    return check


def text_checker(*golden: str) -> Callable[[str], bool]:
    gold = {normalize_answer(g) for g in golden}
    return lambda text: normalize_answer(text) in gold


# ----------------------------------------------------------------------------- arithmetic
_CONVERSIONS = [
    ("km", "mi", "A hiking trail is {v} km long. How long is it in miles?"),
    ("mi", "km", "A road trip covers {v} miles. How many kilometres is that?"),
    ("lb", "kg", "A parcel weighs {v} pounds. What is its weight in kilograms?"),
    ("kg", "lb", "A suitcase weighs {v} kg. What is its weight in pounds?"),
    ("gal", "l", "A tank holds {v} US gallons. How many litres is that?"),
    ("ft", "m", "A building is {v} feet tall. How tall is it in metres?"),
    ("in", "cm", "A screen is {v} inches wide. How wide is it in centimetres?"),
    ("f", "c", "The oven is set to {v} degrees Fahrenheit. What is that in Celsius?"),
    ("c", "f", "The water is at {v} degrees Celsius. What is that in Fahrenheit?"),
    ("h", "min", "A flight lasts {v} hours. How many minutes is that?"),
]


def _expression(rng: np.random.Generator, depth: int) -> str:
    if depth == 0:
        if rng.random() < 0.3:
            return f"{rng.integers(1, 1000) / 10:g}"
        return str(int(rng.integers(2, 100)))
    op = ["+", "-", "*", "/"][int(rng.integers(4))]
    left, right = _expression(rng, depth - 1), _expression(rng, int(rng.integers(0, depth)))
    return f"({left} {op} {right})"


def arithmetic_task(task_id: str, rng: np.random.Generator, python_tool: Tool) -> Task:
    tools = [CALCULATOR, CONVERTER]
    if rng.random() < 0.5:
        while True:
            expr = _expression(rng, 2)[1:-1]
            try:
                value = evaluate(expr)
            except ToolError:  # division by zero
                continue
            if abs(value) < 1e9:
                break
        target = round(value, 2)
        return Task(
            task_id,
            "arithmetic",
            f"Compute {expr}. Give the result rounded to 2 decimal places.",
            tools,
            f"{target:.2f}",
            numeric_checker(target, 0.0051),
            [call("calculator", expression=expr), answer(f"{target:.2f}")],
        )
    src, dst, text = _CONVERSIONS[int(rng.integers(len(_CONVERSIONS)))]
    v = float(rng.integers(10, 5000)) / 10
    target = round(convert(v, src, dst), 2)
    return Task(
        task_id,
        "arithmetic",
        text.format(v=f"{v:g}") + " Round to 2 decimal places.",
        tools,
        f"{target:.2f}",
        numeric_checker(target, 0.0051),
        [call("convert_units", value=v, from_unit=src, to_unit=dst), answer(f"{target:.2f}")],
    )


# ----------------------------------------------------------------------------- database
def database_task(task_id: str, rng: np.random.Generator, python_tool: Tool) -> Task:
    db = CompanyDB(int(rng.integers(2**31)))
    tools = [*db.tools(), CALCULATOR]
    customers = db.query("SELECT id, name, city FROM customers ORDER BY id")
    kind = int(rng.integers(3))
    cid, name, city = customers[int(rng.integers(len(customers)))]
    find = call("find_customer", name=name)
    if kind == 0:
        return Task(
            task_id,
            "database",
            f"In which city does our customer {name} live?",
            tools,
            city,
            text_checker(city),
            [find, answer(city)],
            app=db,
        )
    if kind == 1:
        status = ["pending", "shipped", "delivered", "cancelled"][int(rng.integers(4))]
        (count,) = db.query(
            "SELECT COUNT(*) FROM orders WHERE customer_id = ? AND status = ?", (cid, status)
        )[0]
        return Task(
            task_id,
            "database",
            f"How many of {name}'s orders have the status '{status}'? Answer with a number.",
            tools,
            str(count),
            numeric_checker(count, 0.0),
            [find, call("list_orders", customer_id=cid, status=status), answer(str(count))],
            app=db,
        )
    # Total spent on delivered orders: pick a customer who has some.
    rows = db.query(
        "SELECT c.id, c.name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o "
        "WHERE o.customer_id = c.id AND o.status = 'delivered') ORDER BY c.id"
    )
    cid, name = rows[int(rng.integers(len(rows)))]
    orders = db.list_orders(cid, "delivered")
    prices = {o["product_id"]: db.get_product(o["product_id"])["price"] for o in orders}
    total = round(sum(prices[o["product_id"]] * o["quantity"] for o in orders), 2)
    expr = " + ".join(f"{prices[o['product_id']]:g} * {o['quantity']}" for o in orders)
    plan = [
        call("find_customer", name=name),
        call("list_orders", customer_id=cid, status="delivered"),
    ]
    plan += [call("get_product", product_id=pid) for pid in prices]
    plan += [call("calculator", expression=expr), answer(f"{total:.2f}")]
    return Task(
        task_id,
        "database",
        f"How much has {name} spent on delivered orders in total (unit price times quantity, "
        "summed over those orders)? Answer in dollars with 2 decimals.",
        tools,
        f"{total:.2f}",
        numeric_checker(total, 0.0051),
        plan,
        app=db,
    )


# ----------------------------------------------------------------------------- calendar
_EVENT_TITLES = [
    "Budget review", "Team standup", "Dentist", "Client call", "Yoga class", "Code review",
    "Lunch with Sam", "Board meeting", "Design sync", "Parent evening", "Gym", "Interview",
]  # fmt: skip
_TODO_TITLES = [
    "Send invoice", "Book flights", "Renew passport", "Water plants", "Pay rent",
    "Call plumber", "Buy groceries", "Update CV", "Back up laptop", "Return library books",
]  # fmt: skip


def _date(rng: np.random.Generator) -> str:
    return f"2025-06-{int(rng.integers(2, 9)):02d}"


def _time(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(8, 18)):02d}:{[0, 15, 30, 45][int(rng.integers(4))]:02d}"


def calendar_task(task_id: str, rng: np.random.Generator, python_tool: Tool) -> Task:
    app = CalendarApp()
    titles = [str(t) for t in rng.permutation(_EVENT_TITLES)]
    todo_titles = [str(t) for t in rng.permutation(_TODO_TITLES)]
    for title in titles[:5]:
        app.add_event(title, _date(rng), _time(rng), int(rng.choice([30, 45, 60, 90])))
    for title in todo_titles[:3]:
        app.add_todo(title, _date(rng))
    goal = copy.deepcopy(app)  # the expert's plan is replayed on this copy to get the goal state
    kind = int(rng.integers(4))
    done = "When you are finished, reply <answer>done</answer>."
    if kind == 0:
        title, date, start = titles[6], _date(rng), _time(rng)
        dur = int(rng.choice([30, 60, 90]))
        instruction = f"Add an event '{title}' on {date} at {start} lasting {dur} minutes. {done}"
        plan = [call("add_event", title=title, date=date, start=start, duration_minutes=dur)]
    elif kind == 1:
        eid = int(rng.integers(1, 6))
        ev = app.events[eid]
        instruction = f"Cancel the event '{ev['title']}' on {ev['date']}. {done}"
        plan = [call("list_events", date=ev["date"]), call("delete_event", event_id=eid)]
    elif kind == 2:
        tid = 6 + int(rng.integers(3))
        new_title, due = todo_titles[4], _date(rng)
        instruction = (
            f"Mark the todo '{app.todos[tid]['title']}' as done and add a new todo "
            f"'{new_title}' due on {due}. {done}"
        )
        plan = [
            call("list_todos"),
            call("complete_todo", todo_id=tid),
            call("add_todo", title=new_title, due_date=due),
        ]
    else:
        eid = int(rng.integers(1, 6))
        ev = app.events[eid]
        new_start = _time(rng)
        while new_start == ev["start"]:
            new_start = _time(rng)
        instruction = (
            f"Move the event '{ev['title']}' on {ev['date']} to start at {new_start} the same "
            f"day, keeping its duration. {done}"
        )
        plan = [
            call("list_events", date=ev["date"]),
            call("delete_event", event_id=eid),
            call(
                "add_event",
                title=ev["title"],
                date=ev["date"],
                start=new_start,
                duration_minutes=ev["duration_minutes"],
            ),
        ]
    tools_by_name = {t.name: t for t in goal.tools()}
    for action in plan:
        payload = json.loads(action[len("<tool_call>") : -len("</tool_call>")])
        tools_by_name[payload["name"]](payload["arguments"])
    target = goal.snapshot()
    return Task(
        task_id,
        "calendar",
        instruction,
        app.tools(),
        "done",
        lambda text: app.snapshot() == target,
        [*plan, answer("done")],
        app=app,
        goal=target,
    )


# ----------------------------------------------------------------------------- reasoning-gym
def _rg_plan(name: str, meta: dict[str, Any]) -> tuple[str, str] | None:
    """(tool, argument) that computes a reasoning-gym answer: an expression or Python code."""
    if name in ("basic_arithmetic", "chain_sum", "products"):
        return "calculator", meta["expression"]
    code = {
        "gcd": lambda m: f"import math\nprint(math.gcd(*{m['numbers']}))",
        "lcm": lambda m: f"import math\nprint(math.lcm(*{m['numbers']}))",
        "count_bits": lambda m: f"print(bin({m['number']}).count('1'))",
        "letter_counting": lambda m: (
            f"text = {' '.join(m['span'])!r}\nprint(text.lower().count({m['target_letter']!r}))"
        ),
        "word_sorting": lambda m: (
            f"words = {m['transformed_words']!r}\n"
            f"print(', '.join(sorted(words, reverse={m['direction'] == 'descending'})))"
        ),
        "prime_factorization": lambda m: (
            f"n = {m['number']}\nfactors, d = [], 2\nwhile d * d <= n:\n    while n % d == 0:\n"
            "        factors.append(d)\n        n //= d\n    d += 1\nif n > 1:\n"
            "    factors.append(n)\nprint(' × '.join(map(str, factors)))"
        ),
        "base_conversion": lambda m: (
            f"n, b = {m['decimal_value']}, {m['target_base']}\n"
            "digits = '0123456789abcdefghijklmnopqrstuvwxyz'\nout = ''\n"
            "while True:\n    out = digits[n % b] + out\n    n //= b\n    if n == 0:\n        break\n"
            "print(out)"
        ),
    }.get(name)
    return ("python", code(meta)) if code else None


RG_TASKS = (
    "basic_arithmetic",
    "chain_sum",
    "products",
    "gcd",
    "lcm",
    "count_bits",
    "letter_counting",
    "word_sorting",
    "prime_factorization",
    "base_conversion",
)


def _rg_checker(dataset: Any, entry: dict[str, Any]) -> Callable[[str], bool]:
    """reasoning-gym's own verifier; some raise on malformed answers, which simply lose."""

    def check(text: str) -> bool:
        try:
            return dataset.score_answer(text, entry) >= 1.0
        except Exception:  # noqa: BLE001 - any failure to parse the answer means it is wrong
            return False

    return check


def reasoning_task(task_id: str, rng: np.random.Generator, python_tool: Tool) -> Task:
    import reasoning_gym

    name = RG_TASKS[int(rng.integers(len(RG_TASKS)))]
    dataset = reasoning_gym.create_dataset(name, size=1, seed=int(rng.integers(2**31)))
    entry = dataset[0]
    tool, arg = _rg_plan(name, entry["metadata"])
    first = call("calculator", expression=arg) if tool == "calculator" else call("python", code=arg)
    return Task(
        task_id,
        "reasoning",
        f"{entry['question'].strip()}\nUse the tools if they help. Give only the final answer "
        "inside <answer></answer>.",
        [CALCULATOR, python_tool],
        str(entry["answer"]),
        _rg_checker(dataset, entry),
        [first, answer(str(entry["answer"]))],
        goal={"reasoning_gym_task": name},
    )


BUILDERS: dict[str, Callable[[str, np.random.Generator, Tool], Task]] = {
    "arithmetic": arithmetic_task,
    "database": database_task,
    "calendar": calendar_task,
    "reasoning": reasoning_task,
}


def make_task(task_id: str, python_tool: Tool) -> Task:
    """Build the task an id names (deterministic: the id seeds everything)."""
    family = task_id.rsplit("-", 1)[0]
    if family not in BUILDERS:
        raise ValueError(f"unknown task family {family!r} in task id {task_id!r}")
    rng = np.random.default_rng(zlib.crc32(task_id.encode()))
    return BUILDERS[family](task_id, rng, python_tool)


__all__ = ["FAMILIES", "Task", "format_number", "make_task", "task_ids"]
