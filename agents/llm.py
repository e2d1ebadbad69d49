"""`LLMAgent`: prompts a language model through a generation backend and parses its actions.

One ``act`` call makes one batched ``backend.generate`` call for all contexts. Every `Turn`
carries the exact prompt token ids, the sampled response token ids and the sampler's log-probs,
so the learner trains on precisely the tokens that were sampled (no decode/re-encode).

Two context modes:

- ``"steps"`` (default): each turn's prompt is built afresh from the family template (system +
  task + the last ``history_length`` steps + observation + admissible actions + format). When it
  would exceed ``max_prompt_tokens`` the oldest history steps are dropped, then the observation,
  the admissible list and finally the task are cut with a visible marker; every such event is
  counted in `metrics`, and the limit is never exceeded.
- ``"concat"``: the episode is one growing token sequence (Search-R1 / IGPO style). Turn t's
  prompt is turn t-1's prompt + its sampled response + the env's reply rendered as the next chat
  turn, so earlier tokens are never re-tokenised. If the sequence would exceed the limit, the
  episode restarts from a fresh ``"steps"`` prompt (counted as ``concat_restarts``); the learner
  then treats the two parts as separate sequences.

Malformed output is sent to the env as written (the env marks it invalid); ``format_ok`` records
the parser's verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from creditgym.agents.backends.base import Backend, SamplingConfig
from creditgym.agents.base import Context, Turn
from creditgym.agents.parsing import (
    ACTION_MATCH,
    OUTPUT_FORMATS,
    char_to_token_spans,
    match_admissible,
    parse,
)
from creditgym.agents.prompts import (
    PromptTemplate,
    followup_message,
    messages,
    template_for,
    user_message,
)

CONTEXT_MODES = ("steps", "concat")
_CUT_MARKER = " ...[cut to fit the context] "
_SENTINEL = "\u2401CREDITGYM-SENTINEL\u2401"


@dataclass
class _Episode:
    """Token state of one running episode in concat mode."""

    ids: list[int] = field(default_factory=list)
    step: int = -1


class LLMAgent:
    """An agent that asks a language model (through a `Backend`) for each action."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: Any,
        *,
        history_length: int = 2,
        max_prompt_tokens: int = 1024,
        sampling: SamplingConfig | None = None,
        output_format: str = "action",
        context: str = "steps",
        admissible_limit: int | None = 50,
        templates: dict[str, PromptTemplate] | None = None,
        response_prefix: str = "",
        action_match: str = "strict",
    ):
        """
        Args:
            backend: generation backend (``creditgym.agents.backends.make_backend``).
            tokenizer: the policy's tokenizer; its chat template renders the prompts.
            history_length: how many previous (observation, action) pairs the prompt shows.
            max_prompt_tokens: hard cap on prompt length (the model's context minus the response).
            sampling: sampling options for every turn.
            output_format: "action", "search", "tool" or "hiper" (see `creditgym.agents.parsing`).
            context: "steps" (a fresh prompt per turn) or "concat" (one growing sequence).
            admissible_limit: at most this many admissible actions are listed (None: all).
            templates: family -> template overrides (unknown families use the generic one).
            response_prefix: text placed after the generation prompt as the start of the
                assistant's reply (e.g. "<action>"). Its tokens belong to the prompt, so they are
                never trained on; the parser reads prefix + generated text. Small models that
                cannot yet follow the tag format get the opening tag for free.
            action_match: "strict" sends the parsed action as written. "admissible" maps the
                output to the admissible action it names: the parsed action if it is one
                (ignoring case and surrounding blanks), otherwise the admissible action that
                occurs first in the output text (the longest on a tie). Such recoveries are
                counted in ``metrics()["recovered"]``; output that names none stays malformed.
        """
        if action_match not in ACTION_MATCH:
            raise ValueError(
                f"unknown action_match {action_match!r}; choose one of {list(ACTION_MATCH)}"
            )
        if response_prefix and output_format == "hiper":
            raise ValueError("response_prefix is not supported with output_format='hiper'")
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(
                f"unknown output_format {output_format!r}; choose one of {list(OUTPUT_FORMATS)}"
            )
        if context not in CONTEXT_MODES:
            raise ValueError(f"unknown context {context!r}; choose one of {list(CONTEXT_MODES)}")
        if history_length < 0:
            raise ValueError(f"history_length must be >= 0, got {history_length}")
        if max_prompt_tokens < 16:
            raise ValueError(f"max_prompt_tokens must be >= 16, got {max_prompt_tokens}")
        self.backend = backend
        self.tokenizer = tokenizer
        self.history_length = history_length
        self.max_prompt_tokens = max_prompt_tokens
        self.sampling = sampling or SamplingConfig()
        self.output_format = output_format
        self.context = context
        self.admissible_limit = admissible_limit
        self.templates = dict(templates or {})
        self.response_prefix = response_prefix
        self.action_match = action_match
        self._prefix_ids: list[int] = (
            list(tokenizer.encode(response_prefix, add_special_tokens=False))
            if response_prefix
            else []
        )
        self._episodes: dict[tuple[str, int], _Episode] = {}
        self._metrics: dict[str, float] = {}
        #: `act` may run in several threads (asynchronous rollouts); the tokenizer may not.
        self._lock = threading.RLock()
        self.reset_metrics()

    # ----------------------------------------------------------------------------------- public
    def act(self, contexts: Sequence[Context]) -> list[Turn]:
        """One batched generation for all contexts; returns one `Turn` per context, in order."""
        if not contexts:
            return []
        with self._lock:  # prompts and parsing use the tokenizer: one thread at a time
            prompts = [self.prompt_ids(ctx) for ctx in contexts]
        if getattr(self.backend, "takes_sessions", False):  # routes by episode (replicas)
            sessions = [(ctx.env_id, ctx.episode, ctx.step) for ctx in contexts]
            gens = self.backend.generate(prompts, self.sampling, sessions=sessions)
        else:
            gens = self.backend.generate(prompts, self.sampling)
        if len(gens) != len(contexts):
            raise RuntimeError(f"backend returned {len(gens)} generations for {len(contexts)}")
        with self._lock:
            return self._turns(contexts, prompts, gens)

    def _turns(
        self, contexts: Sequence[Context], prompts: list[list[int]], gens: list[Any]
    ) -> list[Turn]:
        """Parse each generation into a `Turn` and count it in the metrics."""
        turns = []
        for ctx, prompt, gen in zip(contexts, prompts, gens):
            parsed = parse(self.response_prefix + gen.text, self.output_format)
            recovered = False
            if self.action_match == "admissible" and ctx.admissible_actions:
                parsed, recovered = match_admissible(
                    parsed, self.response_prefix + gen.text, ctx.admissible_actions
                )
            spans = None
            if self.output_format == "hiper" and parsed.char_spans:
                spans = char_to_token_spans(parsed.char_spans, self._token_ends(gen.token_ids))
            turns.append(
                Turn(
                    action=parsed.action,
                    text=gen.text,
                    format_ok=parsed.format_ok,
                    prompt_ids=list(prompt),
                    response_ids=list(gen.token_ids),
                    logprobs=list(gen.logprobs),
                    spans=spans,
                    extras={
                        "parsed": parsed.fields,
                        "format_error": parsed.error,
                        "finish_reason": gen.finish_reason,
                        "recovered": recovered,
                    },
                )
            )
            if self.context == "concat":
                ep = self._episodes[(ctx.env_id, ctx.episode)]
                ep.ids = list(prompt) + list(gen.token_ids)
                ep.step = ctx.step
            m = self._metrics
            m["turns"] += 1
            m["format_errors"] += not parsed.format_ok
            m["recovered"] += recovered
            m["length_stops"] += gen.finish_reason == "length"
            m["prompt_tokens_max"] = max(m["prompt_tokens_max"], len(prompt))
            m["prompt_tokens_sum"] += len(prompt)
            m["response_tokens_sum"] += len(gen.token_ids)
        return turns

    def branch_memory(self, env_id: str, episode: int, prefix: Sequence[Any]) -> None:
        """Set episode `episode`'s concat token state to what it was after the recorded `prefix`.

        Called by branching rollouts (`creditgym.trainers.branching`) before a continuation's
        first turn, so a ``concat`` prompt at step ``len(prefix)`` extends the recorded tokens
        exactly; the ``steps`` context keeps no memory and needs nothing.
        """
        if self.context != "concat":
            return
        key = (env_id, episode)
        last = prefix[-1] if prefix else None
        if last is None or last.prompt_ids is None or last.response_ids is None:
            self._episodes.pop(key, None)
            return
        self._episodes[key] = _Episode(
            ids=list(last.prompt_ids) + list(last.response_ids), step=len(prefix) - 1
        )

    def prompt_ids(self, ctx: Context) -> list[int]:
        """The exact token ids ``act`` would generate from for `ctx` (response prefix included).

        Used by behaviour cloning (`creditgym.trainers.warmstart`) so demonstrations are trained in the
        very prompt format the policy later samples in.
        """
        return self._prompt(ctx) + self._prefix_ids

    def metrics(self, reset: bool = False) -> dict[str, float]:
        """Counters since the last reset, named for the ``agent/`` log group."""
        m = dict(self._metrics)
        turns = max(m["turns"], 1.0)
        m["format_error_rate"] = m["format_errors"] / turns
        m["prompt_tokens_mean"] = m["prompt_tokens_sum"] / turns
        m["response_tokens_mean"] = m["response_tokens_sum"] / turns
        if reset:
            self.reset_metrics()
        return m

    def reset_metrics(self) -> None:
        names = (
            "turns format_errors length_stops prompt_tokens_max prompt_tokens_sum "
            "response_tokens_sum history_dropped observations_cut admissible_cut tasks_cut "
            "concat_restarts recovered"
        )
        self._metrics = dict.fromkeys(names.split(), 0.0)

    # ------------------------------------------------------------------------------- prompting
    def template(self, family: str) -> PromptTemplate:
        return self.templates.get(family) or template_for(family)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render(self, msgs: list[dict[str, str]], generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=generation_prompt, tokenize=False
        )

    def _prompt(self, ctx: Context) -> list[int]:
        if self.context == "concat":
            return self._concat_prompt(ctx)
        return self._steps_prompt(ctx)

    def _steps_prompt(self, ctx: Context) -> list[int]:
        """A fresh prompt that fits `max_prompt_tokens` (see the module docstring)."""
        template = self.template(ctx.family)
        history = list(ctx.history[-self.history_length :]) if self.history_length else []
        offset = len(ctx.history) - len(history)
        task, obs = ctx.task, ctx.observation
        admissible = ctx.admissible_actions
        limit = self.admissible_limit

        def build() -> list[int]:
            user = user_message(
                task=task,
                observation=obs,
                admissible_actions=admissible,
                history=history,
                history_offset=offset,
                template=template,
                output_format=self.output_format,
                admissible_limit=limit,
            )
            return self._encode(self._render(messages(template.system, user)))

        ids = build()
        while len(ids) > self.max_prompt_tokens and history:
            history.pop(0)
            offset += 1
            self._metrics["history_dropped"] += 1
            ids = build()
        if len(ids) > self.max_prompt_tokens:
            obs = self._cut(obs, len(ids) - self.max_prompt_tokens)
            self._metrics["observations_cut"] += 1
            ids = build()
        while len(ids) > self.max_prompt_tokens and admissible and (limit is None or limit > 1):
            limit = max(1, (limit or len(admissible)) // 2)
            self._metrics["admissible_cut"] += 1
            ids = build()
        if len(ids) > self.max_prompt_tokens:
            task = self._cut(task, len(ids) - self.max_prompt_tokens)
            self._metrics["tasks_cut"] += 1
            ids = build()
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(
                f"the prompt needs {len(ids)} tokens even with an empty history, observation and "
                f"task; raise max_prompt_tokens ({self.max_prompt_tokens}) or shorten the "
                f"{ctx.family!r} template"
            )
        return ids

    def _cut(self, text: str, overflow: int) -> str:
        """Remove about `overflow` tokens (plus the marker) from the middle of `text`."""
        ids = self._encode(text)
        keep = max(0, len(ids) - overflow - len(self._encode(_CUT_MARKER)) - 4)
        head = keep // 2
        tail = keep - head
        start = self.tokenizer.decode(ids[:head])
        end = self.tokenizer.decode(ids[len(ids) - tail :]) if tail else ""
        return start + _CUT_MARKER + end

    def _concat_prompt(self, ctx: Context) -> list[int]:
        key = (ctx.env_id, ctx.episode)
        ep = self._episodes.get(key)
        if ctx.step == 0 or ep is None or ep.step != ctx.step - 1:
            self._episodes[key] = _Episode()
            return self._steps_prompt(ctx)
        template = self.template(ctx.family)
        reply = followup_message(
            observation=ctx.observation,
            admissible_actions=ctx.admissible_actions,
            template=template,
            admissible_limit=self.admissible_limit,
        )
        ids = ep.ids + self._encode(self._env_turn_text(reply, ep.ids))
        if len(ids) > self.max_prompt_tokens:
            self._metrics["concat_restarts"] += 1
            self._episodes[key] = _Episode()
            return self._steps_prompt(ctx)
        return ids

    def _env_turn_text(self, reply: str, so_far: Sequence[int]) -> str:
        """The text between the end of the sampled response and the next generation prompt.

        Found by rendering the chat template around a sentinel assistant message, so it works
        for any chat template: it closes the assistant turn (unless the response already ended
        with the end-of-turn token), then opens the user turn and the next assistant turn.
        """
        base = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        with_reply = self._render(
            [*base, {"role": "assistant", "content": _SENTINEL}, {"role": "user", "content": reply}]
        )
        after = with_reply.split(_SENTINEL, 1)[1]
        eos = self.tokenizer.eos_token
        if so_far and eos and so_far[-1] == self.tokenizer.eos_token_id and after.startswith(eos):
            after = after[len(eos) :]
        return after

    def _token_ends(self, token_ids: Sequence[int]) -> list[int]:
        """Length of the decoded text after each token (for char -> token span mapping)."""
        return [
            len(self.tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=True))
            for k in range(len(token_ids))
        ]
