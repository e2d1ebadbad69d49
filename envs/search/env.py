"""`creditgym/Search-v0`: answer a question by searching a corpus, following Search-R1's protocol.

Each turn the agent writes either ``<search>query</search>``, answered with the top-k passages as
``<information>Doc 1 (Title: ...) text ...</information>``, or ``<answer>text</answer>``, which
ends the episode. A turn with neither tag, both tags, or an empty tag is invalid: it gets a clear
message, does not change the state, and still uses up one of the (by default 4) turns.

Reward: normalised exact match of the answer against the golden answers (1.0 or 0.0);
``info["f1"]`` carries the token F1 and ``info["ground_truth"]`` the first golden answer (for IGPO).
``state_key``: the question plus the set of passages retrieved so far (plus the answer, once given).
``score`` (diagnostic): half the share of the question's gold passages retrieved, plus half the F1
of the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from creditgym.envs.base import ActionSyntax, TextEnv
from creditgym.envs.search.corpus import Question
from creditgym.envs.search.datasets import get_dataset, get_retriever
from creditgym.envs.search.geo import question_split
from creditgym.envs.search.retriever import Hit, RetrieverError
from creditgym.envs.search.text import exact_match, f1_score

_SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

INSTRUCTION = (
    "Answer the question. You may search a knowledge source: write <search>your query</search> "
    "and the top results come back between <information> and </information>. Search as often as "
    "you need, then give the answer, without explanation, as <answer>your answer</answer>."
)


def format_hits(hits: Sequence[Hit]) -> str:
    """Search-R1's rendering of retrieved passages."""
    lines = [f"Doc {i} (Title: {h.title}) {h.text}" for i, h in enumerate(hits, 1)]
    return "<information>" + "\n".join(lines) + "</information>"


class SearchEnv(TextEnv):
    """Multi-turn retrieval QA (see the module docstring for the protocol and rewards).

    Keyword arguments (all optional):

    - ``corpus``: "geo" (real facts, default), "synthetic" (fictional encyclopedia) or the path
      of a corpus JSONL file, with ``qa_path`` the matching QA JSONL file;
    - ``num_passages``, ``num_questions``, ``corpus_seed``: size and seed of the synthetic corpus;
      ``min_city_population``: which cities the geo corpus includes;
    - ``retriever``: "bm25" (default) or "dense" (MiniLM), in this process; or
      ``retriever_url``: a retrieval service (`scripts/serve_retriever.py`) serving the same corpus;
    - ``topk``: passages per search (3); ``max_steps``: turns per episode (4).
    """

    env_name: ClassVar[str] = "creditgym/Search-v0"
    generator_version: ClassVar[str] = "1"
    family: ClassVar[str] = "search"
    action_syntax: ClassVar[ActionSyntax] = "search"
    default_max_steps: ClassVar[int] = 4

    def __init__(
        self,
        split: str = "train",
        corpus: str = "geo",
        qa_path: str | None = None,
        num_passages: int = 5_000,
        num_questions: int = 3_000,
        corpus_seed: int = 0,
        min_city_population: int = 100_000,
        retriever: str = "bm25",
        retriever_url: str | None = None,
        topk: int = 3,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self._dataset_key = (
            str(corpus),
            None if qa_path is None else str(qa_path),
            int(num_passages),
            int(num_questions),
            int(corpus_seed),
            int(min_city_population),
        )
        self.dataset = get_dataset(*self._dataset_key)
        self.retriever = get_retriever(self._dataset_key, retriever, retriever_url)
        self.topk = int(topk)
        self._split_index: dict[str, list[int]] | None = None
        self._question: Question | None = None
        self._retrieved: set[str] = set()
        self._answer: str | None = None
        self._hops_done = 0

    # ----------------------------------------------------------------- panels
    def task_ids(self, split: str) -> Sequence[str]:
        if self._split_index is None:
            index: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
            for i, q in enumerate(self.dataset.questions):
                index[question_split(q)].append(i)
            self._split_index = index
        return [f"{self.dataset.tag}-{i:06d}" for i in self._split_index[split]]

    # ----------------------------------------------------------------- episode
    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        self._question = self.dataset.questions[int(task_id.rsplit("-", 1)[1])]
        self._retrieved = set()
        self._answer = None
        self._hops_done = 0
        obs = f"{INSTRUCTION}\nQuestion: {self._question.question}"
        return obs, self._info(valid=True)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        searches = _SEARCH.findall(action)
        answers = _ANSWER.findall(action)
        if searches and answers:
            return self._invalid(
                "Invalid turn: it has both <search> and <answer>. Write exactly one of them: "
                "<search>query</search> to search, or <answer>text</answer> to answer."
            )
        if not searches and not answers:
            return self._invalid(
                "Invalid turn: no <search>query</search> or <answer>text</answer> found. "
                "Write one of them (with its closing tag)."
            )
        if answers:
            answer = answers[0].strip()
            if not answer:
                return self._invalid(
                    "Invalid turn: the answer is empty. Write <answer>text</answer>."
                )
            self._answer = answer
            em = exact_match(answer, self._question.golden_answers)
            info = self._info(valid=True)
            info["f1"] = f1_score(answer, self._question.golden_answers)
            info["em"] = em
            return f"Answer submitted: {answer}", em, True, info
        query = " ".join(searches[0].split())
        if not query:
            return self._invalid(
                "Invalid turn: the search query is empty. Write <search>query</search>."
            )
        try:
            hits = self.retriever.search([query], self.topk)[0]
        except RetrieverError as exc:
            info = self._info(valid=False)
            info["error"] = str(exc)
            return f"The search service failed: {exc}", 0.0, True, info
        self._retrieved.update(h.id for h in hits)
        gold = {h.doc_id for h in self._question.hops}
        if self._hops_done < len(self._question.hops):
            self._hops_done += 1
        info = self._info(valid=True)
        info["retrieved"] = [h.id for h in hits]
        info["retrieved_gold"] = sorted(gold & {h.id for h in hits})
        return format_hits(hits), 0.0, False, info

    def _invalid(self, message: str) -> tuple[str, float, bool, dict[str, Any]]:
        return message, 0.0, False, self._info(valid=False)

    def _info(self, valid: bool) -> dict[str, Any]:
        q = self._question
        gold = {h.doc_id for h in q.hops}
        recall = len(gold & self._retrieved) / len(gold) if gold else 0.0
        f1 = f1_score(self._answer, q.golden_answers) if self._answer is not None else 0.0
        won = self._answer is not None and exact_match(self._answer, q.golden_answers) == 1.0
        key: dict[str, Any] = {"q": q.question, "docs": sorted(self._retrieved)}
        if self._answer is not None:
            key["answer"] = self._answer
        return {
            "task": q.question,
            "task_type": q.qtype,
            "admissible_actions": None,
            "action_valid": valid,
            "won": won,
            "ground_truth": q.golden_answers[0],
            "golden_answers": list(q.golden_answers),
            "gold_recall": recall,
            "score": 0.5 * recall + 0.5 * f1 if gold else f1,
            "state_key": json.dumps(key, ensure_ascii=False, separators=(",", ":")),
        }

    # ----------------------------------------------------------------- oracle
    def expert_action(self) -> str | None:
        """Search each hop of the question's chain once, then answer with the golden answer.

        For questions without a chain (a user's QA file) the expert searches the question text.
        """
        q = self._question
        if q is None or self._answer is not None:
            return None
        hops = q.hops or ()
        if not hops and not self._retrieved:
            return f"<search>{q.question}</search>"
        if self._hops_done < len(hops):
            return f"<search>{hops[self._hops_done].query}</search>"
        return f"<answer>{q.golden_answers[0]}</answer>"
