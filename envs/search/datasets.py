"""Named datasets and shared retrievers, built once per process.

Many env instances (a batch of rollouts, a group of resets) share one corpus and one index: both
are immutable after construction, so they are cached here by their arguments.
"""

from __future__ import annotations

import functools
from pathlib import Path

from creditgym.envs.search.corpus import SearchDataset, load_jsonl_dataset
from creditgym.envs.search.retriever import (
    BM25Retriever,
    DenseRetriever,
    RemoteRetriever,
    Retriever,
)

CORPORA = ("geo", "synthetic")
RETRIEVERS = ("bm25", "dense")


@functools.lru_cache(maxsize=8)
def get_dataset(
    corpus: str = "geo",
    qa_path: str | None = None,
    num_passages: int = 5_000,
    num_questions: int = 3_000,
    seed: int = 0,
    min_city_population: int = 100_000,
) -> SearchDataset:
    """``corpus``: "geo" (real facts), "synthetic" (fictional, any size) or a corpus JSONL path
    (then ``qa_path`` names the QA JSONL)."""
    if corpus == "geo":
        from creditgym.envs.search.geo import build_geo_dataset

        return build_geo_dataset(min_city_population=min_city_population, seed=seed)
    if corpus == "synthetic":
        from creditgym.envs.search.synthetic import build_synthetic_dataset

        return build_synthetic_dataset(num_passages, num_questions, seed)
    path = Path(corpus)
    if not path.is_file():
        raise ValueError(
            f"corpus must be one of {list(CORPORA)} or the path of a corpus JSONL file; "
            f"{corpus!r} is neither"
        )
    if qa_path is None:
        raise ValueError("a corpus JSONL file needs qa_path, the matching QA JSONL file")
    if not Path(qa_path).is_file():
        raise ValueError(f"qa_path {qa_path!r} is not a file")
    return load_jsonl_dataset(path, qa_path)


@functools.lru_cache(maxsize=8)
def _local_retriever(dataset_key: tuple, kind: str) -> Retriever:
    dataset = get_dataset(*dataset_key)
    if kind == "bm25":
        return BM25Retriever.for_dataset(dataset)
    return DenseRetriever.for_dataset(dataset)


def get_retriever(dataset_key: tuple, kind: str = "bm25", url: str | None = None) -> Retriever:
    """The retriever for a dataset: a service client when ``url`` is given, else in-process."""
    if url:
        return RemoteRetriever(url)
    if kind not in RETRIEVERS:
        raise ValueError(f"retriever must be one of {list(RETRIEVERS)}, got {kind!r}")
    return _local_retriever(dataset_key, kind)
