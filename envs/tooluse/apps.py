"""The apps behind the tools: a calculator, unit conversion, a company database and a calendar.

Each app is plain Python (SQLite for the database) built fresh for every episode from a seed, so
an episode's tool results are deterministic and one episode never sees another's changes.
"""

from __future__ import annotations

import ast
import math
import operator
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from creditgym.envs.tooluse.tools import Tool, ToolError

# ----------------------------------------------------------------------------- calculator
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTS = {"pi": math.pi, "e": math.e}


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e12):
            raise ToolError("exponent or base too large (|exponent| <= 64, |base| <= 1e12).")
        return _BINOPS[type(node.op)](left, right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        return _FUNCS[node.func.id](*[_eval(a) for a in node.args])
    raise ToolError(
        f"unsupported expression element {ast.dump(node)[:40]!r}: use numbers, + - * / // % **, "
        f"parentheses, {', '.join(sorted(_CONSTS))} and {', '.join(sorted(_FUNCS))}()."
    )


def format_number(x: float | int) -> str:
    """Integers without a decimal point, other numbers with up to 10 significant decimals."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return f"{x:.10g}"


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression safely (no names, attributes or statements)."""
    if len(expression) > 500:
        raise ToolError("expression too long (at most 500 characters).")
    return format_number(evaluate(expression))


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression (``×``, ``÷`` and ``^`` accepted); ToolError if bad."""
    expr = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"cannot parse the expression: {exc.msg}.") from None
    try:
        return _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero.") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot evaluate the expression: {exc}.") from None


CALCULATOR = Tool(
    "calculator",
    "Evaluate an arithmetic expression, e.g. '(12.5 * 4 - 3) / 7' or 'sqrt(2) * 3'.",
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "the expression"}},
        "required": ["expression"],
    },
    calculate,
)

# ----------------------------------------------------------------------------- units
# Factor to the base unit of each dimension (metre, kilogram, litre, second).
UNITS: dict[str, tuple[str, float]] = {
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "cm": ("length", 0.01),
    "mm": ("length", 0.001),
    "mi": ("length", 1609.344),
    "yd": ("length", 0.9144),
    "ft": ("length", 0.3048),
    "in": ("length", 0.0254),
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
    "l": ("volume", 1.0),
    "ml": ("volume", 0.001),
    "gal": ("volume", 3.785411784),
    "cup": ("volume", 0.2365882365),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "day": ("time", 86400.0),
    "c": ("temperature", 0.0),
    "f": ("temperature", 0.0),
    "k": ("temperature", 0.0),
}
UNIT_NAMES = {
    "meter": "m", "metre": "m", "kilometer": "km", "kilometre": "km", "centimeter": "cm",
    "centimetre": "cm", "millimeter": "mm", "millimetre": "mm", "mile": "mi", "yard": "yd",
    "foot": "ft", "feet": "ft", "inch": "in", "inches": "in", "kilogram": "kg", "gram": "g",
    "pound": "lb", "lbs": "lb", "ounce": "oz", "liter": "l", "litre": "l", "milliliter": "ml",
    "millilitre": "ml", "gallon": "gal", "second": "s", "sec": "s", "minute": "min",
    "hour": "h", "hr": "h", "days": "day", "celsius": "c", "fahrenheit": "f", "kelvin": "k",
    "°c": "c", "°f": "f",
}  # fmt: skip


def unit_key(unit: str) -> str:
    u = unit.strip().lower()
    if u in UNITS:
        return u
    if u in UNIT_NAMES:
        return UNIT_NAMES[u]
    if u.endswith("s") and u[:-1] in UNIT_NAMES:
        return UNIT_NAMES[u[:-1]]
    raise ToolError(f"unknown unit {unit!r}; known units: {', '.join(UNITS)}.")


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert between units of one dimension (temperatures included)."""
    a, b = unit_key(from_unit), unit_key(to_unit)
    (da, fa), (db, fb) = UNITS[a], UNITS[b]
    if da != db:
        raise ToolError(f"cannot convert {da} ({from_unit}) to {db} ({to_unit}).")
    if da == "temperature":
        kelvin = {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[a]
        return {"c": kelvin - 273.15, "f": (kelvin - 273.15) * 9 / 5 + 32, "k": kelvin}[b]
    return value * fa / fb


CONVERTER = Tool(
    "convert_units",
    "Convert a value between units of length, mass, volume, time or temperature.",
    {
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string", "description": "e.g. km, mi, lb, kg, gal, l, C, F"},
            "to_unit": {"type": "string"},
        },
        "required": ["value", "from_unit", "to_unit"],
    },
    lambda value, from_unit, to_unit: format_number(round(convert(value, from_unit, to_unit), 6)),
)

# ----------------------------------------------------------------------------- company database
_FIRST = [
    "Ada",
    "Bruno",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farah",
    "Goran",
    "Hana",
    "Ivo",
    "Jonas",
    "Kira",
    "Luis",
    "Mina",
    "Noor",
    "Omar",
    "Petra",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yara",
    "Zane",
]
_LAST = [
    "Abara",
    "Brandt",
    "Castillo",
    "Dahl",
    "Eriksen",
    "Fischer",
    "Gomez",
    "Haddad",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Rossi",
    "Sato",
    "Tanaka",
    "Varga",
    "Weber",
    "Young",
    "Zhou",
]
_CITIES = [
    "Lisbon",
    "Oslo",
    "Denver",
    "Osaka",
    "Lagos",
    "Quito",
    "Perth",
    "Graz",
    "Tunis",
    "Malmo",
    "Porto",
    "Leeds",
]
_PRODUCTS = [
    ("Desk Lamp", "home"), ("Office Chair", "furniture"), ("Standing Desk", "furniture"),
    ("Coffee Grinder", "kitchen"), ("Kettle", "kitchen"), ("Headphones", "electronics"),
    ("Keyboard", "electronics"), ("Monitor", "electronics"), ("Backpack", "accessories"),
    ("Water Bottle", "accessories"), ("Notebook Pack", "stationery"), ("Fountain Pen", "stationery"),
    ("Bookshelf", "furniture"), ("Blender", "kitchen"), ("Webcam", "electronics"),
    ("Umbrella", "accessories"),
]  # fmt: skip
ORDER_STATUSES = ["pending", "shipped", "delivered", "cancelled"]


class CompanyDB:
    """A small SQLite company database (customers, products, orders), seeded per episode."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        c = self.conn
        c.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT UNIQUE, city TEXT, email TEXT);
            CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, product_id INTEGER,
                                 quantity INTEGER, status TEXT, order_date TEXT);
            """
        )
        names = [f"{f} {la}" for f in _FIRST for la in _LAST]
        picks = rng.choice(len(names), size=24, replace=False)
        for i, k in enumerate(picks, 1):
            name = names[int(k)]
            email = name.lower().replace(" ", ".") + "@example.com"
            c.execute(
                "INSERT INTO customers VALUES (?, ?, ?, ?)",
                (100 + i, name, _CITIES[int(rng.integers(len(_CITIES)))], email),
            )
        for i, (name, cat) in enumerate(_PRODUCTS, 1):
            price = round(float(rng.integers(500, 40000)) / 100, 2)
            c.execute("INSERT INTO products VALUES (?, ?, ?, ?)", (i, name, cat, price))
        order_id = 5000
        for cust in range(101, 125):
            for _ in range(int(rng.integers(1, 7))):
                order_id += int(rng.integers(1, 9))
                c.execute(
                    "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        order_id,
                        cust,
                        int(rng.integers(1, len(_PRODUCTS) + 1)),
                        int(rng.integers(1, 5)),
                        ORDER_STATUSES[int(rng.integers(len(ORDER_STATUSES)))],
                        f"2025-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
                    ),
                )
        c.commit()

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    # tools
    def find_customer(self, name: str) -> dict[str, Any]:
        rows = self.query(
            "SELECT id, name, city, email FROM customers WHERE lower(name) = lower(?)",
            (name.strip(),),
        )
        if not rows:
            raise ToolError(f"no customer named {name!r}.")
        cid, cname, city, email = rows[0]
        return {"customer_id": cid, "name": cname, "city": city, "email": email}

    def list_orders(self, customer_id: int, status: str | None = None) -> list[dict[str, Any]]:
        if not self.query("SELECT 1 FROM customers WHERE id = ?", (customer_id,)):
            raise ToolError(f"no customer with id {customer_id}.")
        sql = (
            "SELECT id, product_id, quantity, status, order_date FROM orders WHERE customer_id = ?"
        )
        params: tuple = (customer_id,)
        if status is not None:
            sql += " AND status = ?"
            params += (status,)
        rows = self.query(sql + " ORDER BY id", params)
        keys = ("order_id", "product_id", "quantity", "status", "order_date")
        return [dict(zip(keys, r)) for r in rows]

    def get_product(self, product_id: int) -> dict[str, Any]:
        rows = self.query(
            "SELECT id, name, category, price FROM products WHERE id = ?", (product_id,)
        )
        if not rows:
            raise ToolError(f"no product with id {product_id}.")
        return dict(zip(("product_id", "name", "category", "price"), rows[0]))

    def tools(self) -> list[Tool]:
        return [
            Tool(
                "find_customer",
                "Look up a customer by full name; returns their id, city and email.",
                {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
                self.find_customer,
            ),
            Tool(
                "list_orders",
                "List a customer's orders (optionally only those with one status).",
                {
                    "type": "object",
                    "properties": {
                        "customer_id": {"type": "integer"},
                        "status": {"type": "string", "enum": ORDER_STATUSES},
                    },
                    "required": ["customer_id"],
                },
                self.list_orders,
            ),
            Tool(
                "get_product",
                "Get a product's name, category and unit price by id.",
                {
                    "type": "object",
                    "properties": {"product_id": {"type": "integer"}},
                    "required": ["product_id"],
                },
                self.get_product,
            ),
        ]


# ----------------------------------------------------------------------------- calendar
_DATE = {"type": "string", "pattern": r"\d{4}-\d{2}-\d{2}", "description": "YYYY-MM-DD"}
_TIME = {"type": "string", "pattern": r"([01]\d|2[0-3]):[0-5]\d", "description": "HH:MM (24 h)"}


@dataclass
class CalendarApp:
    """A calendar of events and a todo list; its final state is what calendar tasks check."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    todos: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def add_event(self, title: str, date: str, start: str, duration_minutes: int) -> dict[str, Any]:
        if not title.strip():
            raise ToolError("the event title is empty.")
        event_id = self._new_id()
        self.events[event_id] = {
            "title": title.strip(),
            "date": date,
            "start": start,
            "duration_minutes": duration_minutes,
        }
        return {"event_id": event_id, **self.events[event_id]}

    def list_events(self, date: str) -> list[dict[str, Any]]:
        rows = [{"event_id": k, **v} for k, v in self.events.items() if v["date"] == date]
        return sorted(rows, key=lambda r: (r["start"], r["event_id"]))

    def delete_event(self, event_id: int) -> str:
        if event_id not in self.events:
            raise ToolError(f"no event with id {event_id}.")
        del self.events[event_id]
        return f"event {event_id} deleted"

    def add_todo(self, title: str, due_date: str) -> dict[str, Any]:
        if not title.strip():
            raise ToolError("the todo title is empty.")
        todo_id = self._new_id()
        self.todos[todo_id] = {"title": title.strip(), "due_date": due_date, "done": False}
        return {"todo_id": todo_id, **self.todos[todo_id]}

    def list_todos(self) -> list[dict[str, Any]]:
        return [{"todo_id": k, **v} for k, v in sorted(self.todos.items())]

    def complete_todo(self, todo_id: int) -> str:
        if todo_id not in self.todos:
            raise ToolError(f"no todo with id {todo_id}.")
        self.todos[todo_id]["done"] = True
        return f"todo {todo_id} marked done"

    def snapshot(self) -> dict[str, list]:
        """The state that tasks check: events and todos as sorted tuples (ids left out)."""
        events = sorted(
            (e["title"], e["date"], e["start"], e["duration_minutes"]) for e in self.events.values()
        )
        todos = sorted((t["title"], t["due_date"], t["done"]) for t in self.todos.values())
        return {"events": [list(e) for e in events], "todos": [list(t) for t in todos]}

    def tools(self) -> list[Tool]:
        obj = "object"
        return [
            Tool(
                "list_events",
                "List the events on a date.",
                {"type": obj, "properties": {"date": _DATE}, "required": ["date"]},
                self.list_events,
            ),
            Tool(
                "add_event",
                "Add an event to the calendar.",
                {
                    "type": obj,
                    "properties": {
                        "title": {"type": "string"},
                        "date": _DATE,
                        "start": _TIME,
                        "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 720},
                    },
                    "required": ["title", "date", "start", "duration_minutes"],
                },
                self.add_event,
                read_only=False,
            ),
            Tool(
                "delete_event",
                "Delete an event by id.",
                {
                    "type": obj,
                    "properties": {"event_id": {"type": "integer"}},
                    "required": ["event_id"],
                },
                self.delete_event,
                read_only=False,
            ),
            Tool(
                "list_todos",
                "List all todos with their ids, due dates and whether they are done.",
                {"type": obj, "properties": {}},
                self.list_todos,
            ),
            Tool(
                "add_todo",
                "Add a todo with a due date.",
                {
                    "type": obj,
                    "properties": {"title": {"type": "string"}, "due_date": _DATE},
                    "required": ["title", "due_date"],
                },
                self.add_todo,
                read_only=False,
            ),
            Tool(
                "complete_todo",
                "Mark a todo as done.",
                {
                    "type": obj,
                    "properties": {"todo_id": {"type": "integer"}},
                    "required": ["todo_id"],
                },
                self.complete_todo,
                read_only=False,
            ),
        ]
