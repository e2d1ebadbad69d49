"""Prompt templates: one per env family plus a generic one that serves any env.

A template turns a `Context` into chat messages (system + user). The LLM agent renders them with
the tokenizer's own chat template, so any chat model works. The user message always has the same
parts, in order: the task, the last ``history_length`` (observation, action) pairs, the current
observation, the admissible actions (when the env lists them) and the output-format instruction.
A family template only changes the wording (the system prompt and how an observation is named),
so a newly registered env with ``family = "generic"`` trains with no other change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The instruction appended to every prompt, by output format (see `creditgym.agents.parsing`).
FORMAT_INSTRUCTIONS: dict[str, str] = {
    "action": (
        "First reason briefly inside <think> </think>. Then give exactly one action inside "
        "<action> </action>, for example: <think>...</think><action>{example}</action>"
    ),
    "search": (
        "Reason inside <think> </think>. To look something up, write <search>your query</search> "
        "and the results will appear between <information> and </information>. When you know "
        "the answer, write it inside <answer> </answer>, without explanation."
    ),
    "tool": (
        "Reason inside <think> </think>. To call a tool, write exactly one "
        '<tool_call>{{"name": "tool name", "arguments": {{...}}}}</tool_call>; the result will '
        "appear inside <tool_response> </tool_response>. When you know the answer, write it "
        "inside <answer> </answer>."
    ),
    "hiper": (
        "Answer in three parts, in this order: <switch>KEEP</switch> to keep your current "
        "subgoal or <switch>SWITCH</switch> to start a new one; <subgoal>the subgoal you are "
        "working on</subgoal>; and exactly one action: <action>{example}</action>"
    ),
}


@dataclass(frozen=True)
class PromptTemplate:
    """Wording of the prompt for one env family."""

    #: The system message.
    system: str
    #: How the current observation is introduced.
    observation_label: str = "Current observation"
    #: How past observations are introduced in the history.
    history_label: str = "Observation"
    #: An example action for the format instruction.
    example_action: str = "your action"


GENERIC = PromptTemplate(
    system=(
        "You are an agent acting in a text environment. Read the task and the observation, then "
        "choose the next action."
    ),
)

TEMPLATES: dict[str, PromptTemplate] = {
    "generic": GENERIC,
    "keyrooms": PromptTemplate(
        system=(
            "You are an agent in a house of rooms joined by doors. Some doors are locked and open "
            "only with the key of their colour. Complete the task in as few steps as you can."
        ),
        example_action="go to hall",
    ),
    "alfworld": PromptTemplate(
        system=(
            "You are an expert agent operating in the ALFRED embodied household. You move "
            "between receptacles, pick up, clean, heat, cool and place objects to complete the "
            "task."
        ),
        observation_label="Current observation",
        example_action="go to countertop 1",
    ),
    "webshop": PromptTemplate(
        system=(
            "You are an expert autonomous agent shopping on a website. Search for products, open "
            "them, choose options and buy the item that best matches the instruction."
        ),
        observation_label="Current web page",
        history_label="Web page",
        example_action="search[red cotton t-shirt]",
    ),
    "search": PromptTemplate(
        system=(
            "You answer questions by searching a knowledge base. Think, search as often as you "
            "need, then answer with a short phrase."
        ),
        observation_label="Latest search results",
        history_label="Search results",
    ),
    "tooluse": PromptTemplate(
        system=(
            "You solve tasks by calling tools. Think, call one tool at a time, read its "
            "response, then give the final answer."
        ),
        observation_label="Latest tool response",
        history_label="Tool response",
    ),
    "textworld": PromptTemplate(
        system=(
            "You are playing a text adventure game. Explore, collect what you need and complete "
            "the quest."
        ),
        example_action="open door",
    ),
}


def template_for(family: str) -> PromptTemplate:
    """The family's template, or the generic one for unknown families."""
    return TEMPLATES.get(family, GENERIC)


def format_instruction(output_format: str, template: PromptTemplate) -> str:
    if output_format not in FORMAT_INSTRUCTIONS:
        raise ValueError(
            f"unknown output_format {output_format!r}; choose one of {list(FORMAT_INSTRUCTIONS)}"
        )
    return FORMAT_INSTRUCTIONS[output_format].format(example=template.example_action)


def admissible_block(actions: Sequence[str] | None, limit: int | None = None) -> str:
    """The admissible-actions line, cut to `limit` actions with a visible count of the rest."""
    if not actions:
        return ""
    shown = list(actions if limit is None else actions[:limit])
    more = len(actions) - len(shown)
    body = ", ".join(f"'{a}'" for a in shown)
    if more > 0:
        body += f", ... ({more} more)"
    return f"Admissible actions: [{body}]"


def user_message(
    *,
    task: str,
    observation: str,
    admissible_actions: Sequence[str] | None,
    history: Sequence[tuple[str, str]],
    history_offset: int,
    template: PromptTemplate,
    output_format: str,
    admissible_limit: int | None = None,
) -> str:
    """The user message of one step.

    ``history_offset`` is the episode step number of ``history[0]`` so steps are numbered as in
    the episode even when older ones were dropped.
    """
    parts = [f"Task: {task}"]
    if history:
        lines = [f"Your previous {len(history)} step(s), oldest first:"]
        for k, (obs, act) in enumerate(history):
            step = history_offset + k + 1
            lines.append(
                f"[Step {step}] {template.history_label}: {obs}\n[Step {step}] Action: {act}"
            )
        parts.append("\n".join(lines))
    parts.append(f"{template.observation_label}:\n{observation}")
    block = admissible_block(admissible_actions, admissible_limit)
    if block:
        parts.append(block)
    parts.append(format_instruction(output_format, template))
    return "\n\n".join(parts)


def followup_message(
    *,
    observation: str,
    admissible_actions: Sequence[str] | None,
    template: PromptTemplate,
    admissible_limit: int | None = None,
) -> str:
    """The env's turn in ``concat`` mode: the new observation and the admissible actions."""
    parts = [f"{template.observation_label}:\n{observation}"]
    block = admissible_block(admissible_actions, admissible_limit)
    if block:
        parts.append(block)
    return "\n\n".join(parts)


def messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
