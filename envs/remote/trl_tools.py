"""creditgym envs as TRL environments: ``GRPOTrainer(environment_factory=trl_environment(...))``.

TRL's contract (``trl.GRPOTrainer``, ``environment_factory``): a no-argument constructor, a
``reset(**row) -> str`` whose text is appended to the prompt, public methods that become the
model's tools (typed, with Google-style docstrings, as ``transformers.utils.get_json_schema``
reads them) and ``get_reward()`` for the finished rollout. `trl_environment(env_id, **kwargs)`
returns such a class; each family gets its natural tools:

- Search: ``search(query)`` and ``answer(text)``; WebShop: ``search(query)`` and ``click(button)``;
- ALFWorld and KeyRooms: one tool per command verb of their action templates (``go_to(target)``,
  ``take(target)``, ..., ``look()``), so ``take("apple 1 from countertop 1")`` sends
  ``take apple 1 from countertop 1``;
- ToolUse: its own tools, one typed method per tool with the tool's JSON-schema arguments as
  parameters (``calculator(expression)``, ``find_customer(name)``, ...; the union over the task
  families, so a task's reset text says which of them it offers), and ``answer(text)``;
- any other env: one ``act(action)`` tool whose reply lists the admissible actions. TRL advises
  against one generic step tool (the model learns less from one opaque tool than from typed
  ones), so this is the fallback only.

Each tool returns the env's next observation. Once the episode has ended, tools answer that it
has and change nothing; ``get_reward()`` is the episode's total env reward. ``reset`` reads
``seed``, ``task_id`` and ``split`` from the dataset row and ignores its other fields.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from creditgym import envs
from creditgym.envs.base import TextEnv

__all__ = ["CreditgymToolEnv", "VERB_TEMPLATES", "trl_environment"]

#: Command templates of the envs with a verb grammar: (verb, example command).
VERB_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "keyrooms": (
        ("go to", "go to kitchen"),
        ("take", "take lamp from chest"),
        ("open", "open red door with red key"),
        ("put", "put red gem in chest"),
        ("drop", "drop lamp"),
        ("examine", "examine table"),
        ("look", "look"),
        ("inventory", "inventory"),
    ),
    "alfworld": (
        ("go to", "go to countertop 1"),
        ("take", "take apple 1 from countertop 1"),
        ("move", "move apple 1 to fridge 1"),
        ("open", "open fridge 1"),
        ("close", "close fridge 1"),
        ("use", "use desklamp 1"),
        ("clean", "clean apple 1 with sinkbasin 1"),
        ("heat", "heat apple 1 with microwave 1"),
        ("cool", "cool apple 1 with fridge 1"),
        ("slice", "slice apple 1 with knife 1"),
        ("examine", "examine apple 1"),
        ("look", "look"),
        ("inventory", "inventory"),
    ),
}


class CreditgymToolEnv:
    """Base of the classes `trl_environment` makes: one creditgym env played through tools."""

    env_id: str = ""
    env_kwargs: dict[str, Any] = {}

    def __init__(self) -> None:
        self._env: TextEnv | None = None
        self._split: str | None = None
        self.reward = 0.0
        self.done = False
        self.info: dict[str, Any] = {}

    def reset(self, **kwargs: Any) -> str:
        split = kwargs.get("split") or self.env_kwargs.get("split", "train")
        if self._env is None or split != self._split:
            if self._env is not None:
                self._env.close()
            rest = {k: v for k, v in self.env_kwargs.items() if k != "split"}
            self._env, self._split = envs.make(self.env_id, split=split, **rest), split
        task_id = kwargs.get("task_id")
        options = None if task_id is None else {"task_id": int(task_id)}
        obs, self.info = self._env.reset(seed=kwargs.get("seed"), options=options)
        self.reward, self.done = 0.0, False
        return self._reply(obs)

    def get_reward(self) -> float:
        return self.reward

    def _act(self, action: str) -> str:
        if self._env is None:
            raise RuntimeError("reset the environment before calling a tool")
        if self.done:
            return "The episode has ended; this call changed nothing."
        obs, reward, terminated, truncated, self.info = self._env.step(action)
        self.reward += reward
        self.done = terminated or truncated
        if self.done:
            obs += f"\nThe episode has ended (won: {bool(self.info.get('won'))})."
        return self._reply(obs)

    def _reply(self, obs: str) -> str:
        return obs


def _search(self, query: str) -> str:
    """Search for documents (Search) or products (WebShop).

    Args:
        query: The search query, e.g. "capital of France" or "gluten free snack bar".
    """
    if self._env.family == "webshop":
        return self._act(f"search[{query}]")
    return self._act(f"<search>{query}</search>")


def _answer(self, text: str) -> str:
    """Give the final answer; this ends the episode.

    Args:
        text: The answer, as short as possible, e.g. "Paris".
    """
    return self._act(f"<answer>{text}</answer>")


def _click(self, button: str) -> str:
    """Click a button or link on the current shop page.

    Args:
        button: The button's text as the page shows it, e.g. "Buy Now", "< Prev" or a product id.
    """
    return self._act(f"click[{button}]")


def _act_tool(self, action: str) -> str:
    """Send one action to the environment; the reply lists the actions it accepts next.

    Args:
        action: The action text, one of the admissible actions listed in the last reply.
    """
    return self._act(action)


def _with_admissible(self, obs: str) -> str:
    admissible = self.info.get("admissible_actions")
    if admissible and not self.done:
        obs += "\nAdmissible actions: " + ", ".join(admissible)
    return obs


for _tool, _name in (
    (_search, "search"),
    (_answer, "answer"),
    (_click, "click"),
    (_act_tool, "act"),
):
    _tool.__name__ = _tool.__qualname__ = _name  # TRL names a tool by its function's name


def _verb_tool(verb: str, example: str) -> Any:
    name = verb.replace(" ", "_")
    if verb == example:

        def tool(self) -> str:
            return self._act(verb)

        tool.__doc__ = f'Run the command "{verb}".'
    else:
        rest = example[len(verb) + 1 :]

        def tool(self, target: str) -> str:
            return self._act(f"{verb} {target.strip()}")

        tool.__doc__ = (
            f'Run the command "{verb} <target>", e.g. "{example}".\n\n'
            f'Args:\n    target: What follows "{verb}" in the command, e.g. "{rest}".'
        )
    tool.__name__ = tool.__qualname__ = name
    return tool


#: JSON-schema types of tool arguments -> the Python annotation TRL's schema reader turns back.
_JSON_TYPES = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _schema_tool(schema: dict[str, Any]) -> Any:
    """A typed method for one ToolUse tool: its JSON-schema arguments become parameters."""
    name = schema["name"]
    params = schema.get("parameters", {})
    props: dict[str, Any] = params.get("properties", {})
    required = set(params.get("required", []))
    order = [k for k in props if k in required] + [k for k in props if k not in required]

    def tool(self, **arguments: Any) -> str:
        given = {k: v for k, v in arguments.items() if v is not None}
        return self._act(f"<tool_call>{json.dumps({'name': name, 'arguments': given})}</tool_call>")

    signature = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    docs = []
    for key in order:
        kind = _JSON_TYPES.get(props[key].get("type", "string"), str)
        optional = key not in required
        annotations[key] = (kind | None) if optional else kind
        signature.append(
            inspect.Parameter(
                key,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=None if optional else inspect.Parameter.empty,
                annotation=annotations[key],
            )
        )
        text = props[key].get("description") or f"The {key.replace('_', ' ')}."
        docs.append(f"    {key}: {text}{' (optional)' if optional else ''}")
    tool.__signature__ = inspect.Signature(signature, return_annotation=str)
    tool.__annotations__ = annotations
    description = schema.get("description") or f"Call the {name} tool."
    tool.__doc__ = description + ("\n\nArgs:\n" + "\n".join(docs) if docs else "")
    tool.__name__ = tool.__qualname__ = name
    return tool


def _tooluse_schemas(probe: TextEnv) -> list[dict[str, Any]]:
    """Every tool a ToolUse task can offer: the union over one task of each task family."""
    from creditgym.envs.tooluse.tasks import FAMILIES, make_task, task_ids

    seen: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        for tool in make_task(task_ids("train", (family,))[0], probe._python).tools:
            seen.setdefault(tool.name, tool.schema())
    return list(seen.values())


def trl_environment(env_id: str, **env_kwargs: Any) -> type[CreditgymToolEnv]:
    """A TRL environment class (no-argument constructor) for `env_id` made with `env_kwargs`."""
    probe = envs.make(env_id, **env_kwargs)
    family, syntax = probe.family, getattr(probe, "action_syntax", "action")
    tool_schemas = _tooluse_schemas(probe) if family == "tooluse" else []
    probe.close()
    members: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs)}
    if family in VERB_TEMPLATES:
        members.update({t.__name__: t for t in (_verb_tool(*v) for v in VERB_TEMPLATES[family])})
    elif family == "webshop":
        members.update(search=_search, click=_click)
    elif syntax == "search" or family == "search":
        members.update(search=_search, answer=_answer)
    elif syntax == "tool" or family == "tooluse":
        members.update({t.__name__: t for t in map(_schema_tool, tool_schemas)})
        members.update(answer=_answer)
    else:
        members.update(act=_act_tool, _reply=_with_admissible)
    name = "".join(c for c in env_id.split("/")[-1].split("-")[0] if c.isalnum()) + "ToolEnv"
    return type(name, (CreditgymToolEnv,), members)
