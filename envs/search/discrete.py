"""`creditgym/SearchDiscrete-v0`: Search-v0 with a labelled candidate set a tabular agent can play.

Search-v0's actions are free text (``admissible_actions`` is None), so a tabular policy has no
action set to put a softmax over. This variant keeps Search-v0's corpus, retriever, rewards and
state keys and offers, in every state, a fixed set of candidate turns:

- ``expert_query``: the expert's next ``<search>`` (the next hop of the question's chain; absent
  once every hop is searched);
- ``distractor_query``: ``num_distractor_queries`` hop queries of other questions;
- ``golden_answer``: ``<answer>`` with the first golden answer;
- ``distractor_answer``: ``num_distractor_answers`` golden answers of other questions (of the
  same question type where there are enough).

The distractors of a question are drawn once per task from a seeded generator (the task index
and ``distractor_seed``), so a state has the same candidates in every episode; the candidates are
listed in a seeded order, not by label. ``info["action_labels"]`` maps each candidate to its
label. Any other text is still accepted as in Search-v0 (the env contract is unchanged); an LLM
agent can play it too. Task types are the question types (``task_type``), the distributions
DUMP samples over.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from creditgym.envs.search.env import SearchEnv

ACTION_LABELS = ("expert_query", "distractor_query", "golden_answer", "distractor_answer")


class SearchDiscreteEnv(SearchEnv):
    """Search-v0 with a discrete, labelled candidate set per state (module docstring).

    Extra keyword arguments: ``num_distractor_queries`` (2), ``num_distractor_answers`` (2),
    ``distractor_seed`` (0); everything else as `SearchEnv` (the defaults here: the synthetic
    corpus of 2,000 passages and 600 questions, which builds in about a second).
    """

    env_name: ClassVar[str] = "creditgym/SearchDiscrete-v0"
    generator_version: ClassVar[str] = "1"

    def __init__(
        self,
        split: str = "train",
        corpus: str = "synthetic",
        num_passages: int = 2_000,
        num_questions: int = 600,
        num_distractor_queries: int = 2,
        num_distractor_answers: int = 2,
        distractor_seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(
            split=split,
            corpus=corpus,
            num_passages=num_passages,
            num_questions=num_questions,
            **kwargs,
        )
        if num_distractor_queries < 0 or num_distractor_answers < 0:
            raise ValueError("the numbers of distractors must be >= 0")
        self.num_distractor_queries = int(num_distractor_queries)
        self.num_distractor_answers = int(num_distractor_answers)
        self.distractor_seed = int(distractor_seed)
        self._distractors: tuple[list[str], list[str]] = ([], [])
        self._qindex = -1

    # ----------------------------------------------------------------- candidates
    def _draw_distractors(self, qi: int) -> tuple[list[str], list[str]]:
        """Distractor queries and answers of question ``qi`` (seeded by the question index)."""
        questions = self.dataset.questions
        q = questions[qi]
        rng = np.random.default_rng([self.distractor_seed, qi])
        own = {h.query for h in q.hops}
        golden = {a.lower() for a in q.golden_answers}
        queries: list[str] = []
        answers: list[str] = []
        order = rng.permutation(len(questions))
        same_type = [int(j) for j in order if j != qi and questions[j].qtype == q.qtype]
        others = [int(j) for j in order if j != qi]
        for j in others:
            if len(queries) >= self.num_distractor_queries:
                break
            for hop in questions[j].hops:
                if hop.query not in own and hop.query not in queries:
                    queries.append(hop.query)
                    break
        for j in same_type + others:
            if len(answers) >= self.num_distractor_answers:
                break
            a = questions[j].golden_answers[0]
            if a.lower() not in golden and a not in answers:
                answers.append(a)
        return queries, answers

    def _candidates(self) -> dict[str, str]:
        """Candidate turn -> label for the current state (empty once the episode ended)."""
        q = self._question
        if q is None or self._answer is not None:
            return {}
        labelled: dict[str, str] = {}
        if self._hops_done < len(q.hops):
            labelled[f"<search>{q.hops[self._hops_done].query}</search>"] = "expert_query"
        elif not q.hops and not self._retrieved:
            labelled[f"<search>{q.question}</search>"] = "expert_query"
        queries, answers = self._distractors
        for text in queries:
            labelled.setdefault(f"<search>{text}</search>", "distractor_query")
        labelled.setdefault(f"<answer>{q.golden_answers[0]}</answer>", "golden_answer")
        for text in answers:
            labelled.setdefault(f"<answer>{text}</answer>", "distractor_answer")
        keys = list(labelled)
        rng = np.random.default_rng([self.distractor_seed, self._qindex, self._hops_done, 7])
        return {keys[i]: labelled[keys[i]] for i in rng.permutation(len(keys))}

    # ----------------------------------------------------------------- episode
    def _reset_task(self, task_id: str) -> tuple[str, dict[str, Any]]:
        self._qindex = int(task_id.rsplit("-", 1)[1])
        self._distractors = self._draw_distractors(self._qindex)
        return super()._reset_task(task_id)

    def _info(self, valid: bool) -> dict[str, Any]:
        info = super()._info(valid)
        labelled = self._candidates()
        info["admissible_actions"] = list(labelled) if labelled else None
        info["action_labels"] = labelled
        return info

    def expert_action(self) -> str | None:
        """Search-v0's expert: each hop's query once, then the golden answer (a candidate)."""
        return super().expert_action()
