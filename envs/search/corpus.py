"""Passages, questions and datasets for the search env, plus loaders for a user's own JSONL files.

A `SearchDataset` is a corpus (a tuple of `Passage`) and the questions asked over it. Generated
questions carry their hop chain (`Hop`: the query an expert would send and the passage it needs),
which is what the oracle plays and what `gold_recall` in the env's `info` measures. Questions
loaded from a user's QA file have no hop chain; their oracle searches the question itself.

File formats are those of Search-R1's data: a corpus JSONL with one ``{"id", "title", "text"}``
object per line (or ``{"id", "contents"}`` with contents ``"Title"\\ntext``, as in Wiki-18), and a
QA JSONL with ``{"question", "golden_answers"}`` per line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Passage:
    """One retrievable document."""

    id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """Search-R1's wire form of a document: the quoted title, a newline, then the text."""
        return f'"{self.title}"\n{self.text}'


@dataclass(frozen=True)
class Hop:
    """One retrieval step of a question's reasoning chain: the query and the passage it needs."""

    query: str
    doc_id: str


@dataclass(frozen=True)
class Question:
    """A question, every answer accepted for it, its type and (for generated ones) its hop chain."""

    question: str
    golden_answers: tuple[str, ...]
    qtype: str
    hops: tuple[Hop, ...] = ()


@dataclass
class SearchDataset:
    """A corpus and its questions. `tag` names the data source in task ids and panel hashes."""

    tag: str
    passages: tuple[Passage, ...]
    questions: tuple[Question, ...]
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """Content hash of the corpus: keys the on-disk index cache."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for p in self.passages:
                h.update(p.id.encode())
                h.update(b"\x00")
                h.update(p.title.encode())
                h.update(b"\x00")
                h.update(p.text.encode())
                h.update(b"\x01")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no records")
    return rows


def load_corpus_jsonl(path: str | Path) -> tuple[Passage, ...]:
    """Read a corpus JSONL: ``{"id", "title", "text"}`` or ``{"id", "contents"}`` per line."""
    path = Path(path)
    passages = []
    seen: set[str] = set()
    for lineno, row in enumerate(_read_jsonl(path), 1):
        if "id" not in row:
            raise ValueError(f"{path}: record {lineno} has no 'id' field")
        doc_id = str(row["id"])
        if doc_id in seen:
            raise ValueError(f"{path}: duplicate passage id {doc_id!r} (record {lineno})")
        seen.add(doc_id)
        if "text" in row:
            title, text = str(row.get("title", "")), str(row["text"])
        elif "contents" in row:
            head, _, rest = str(row["contents"]).partition("\n")
            title, text = head.strip().strip('"'), rest
        else:
            raise ValueError(f"{path}: record {lineno} needs 'text' (with 'title') or 'contents'")
        passages.append(Passage(doc_id, title, text))
    return tuple(passages)


def load_qa_jsonl(path: str | Path) -> tuple[Question, ...]:
    """Read a QA JSONL: ``{"question", "golden_answers"}`` per line (NQ / HotpotQA style)."""
    path = Path(path)
    questions = []
    for lineno, row in enumerate(_read_jsonl(path), 1):
        question = row.get("question")
        answers = row.get("golden_answers")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{path}: record {lineno} has no 'question' string")
        if isinstance(answers, str):
            answers = [answers]
        if (
            not isinstance(answers, list)
            or not answers
            or not all(isinstance(a, str) for a in answers)
        ):
            raise ValueError(f"{path}: record {lineno} needs 'golden_answers', a list of strings")
        qtype = str(row.get("data_source") or row.get("type") or "qa")
        questions.append(Question(question.strip(), tuple(answers), qtype))
    return tuple(questions)


def load_jsonl_dataset(corpus_path: str | Path, qa_path: str | Path) -> SearchDataset:
    """A dataset from a user's corpus and QA files; its tag carries a hash of both files."""
    passages = load_corpus_jsonl(corpus_path)
    questions = load_qa_jsonl(qa_path)
    h = hashlib.sha256(Path(qa_path).read_bytes())
    # A corpus such as Wiki-18 is many gigabytes: its size, head and tail identify it well enough.
    corpus_path = Path(corpus_path)
    size = corpus_path.stat().st_size
    with corpus_path.open("rb") as fh:
        h.update(str(size).encode() + fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        h.update(fh.read())
    return SearchDataset(f"jsonl{h.hexdigest()[:8]}", passages, questions)
