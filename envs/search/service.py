"""The retrieval service: a FastAPI app speaking Search-R1's ``/retrieve`` wire format.

Request: ``POST /retrieve`` with ``{"queries": [...], "topk": 3, "return_scores": true}``; clients
in the field also send ``"query"`` (a string or a list), which is accepted too. Response:
``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` with one list per query, or
lists of bare documents when ``return_scores`` is false, as Search-R1's server answers.
``GET /health`` reports the corpus size. `scripts/serve_retriever.py` runs it with uvicorn.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from creditgym.envs.search.retriever import Retriever

MAX_TOPK = 100
MAX_QUERIES = 512


class RetrieveRequest(BaseModel):
    """Body of ``POST /retrieve`` (unknown fields are rejected, so typos are not ignored)."""

    model_config = ConfigDict(extra="forbid")
    queries: list[str] | None = None
    query: str | list[str] | None = None
    topk: int = 3
    return_scores: bool = False


def create_app(retriever: Retriever, num_passages: int, name: str = "") -> Any:
    """A FastAPI app serving `retriever` (imported lazily: only the service needs FastAPI)."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="creditgym retrieval service")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "passages": num_passages, "corpus": name}

    @app.post("/retrieve")
    def retrieve(req: RetrieveRequest) -> dict:
        if req.queries is not None and req.query is not None:
            raise HTTPException(422, "send either 'queries' or 'query', not both")
        queries = req.queries if req.queries is not None else req.query
        if queries is None:
            raise HTTPException(422, "missing 'queries' (a list of strings) or 'query'")
        if isinstance(queries, str):
            queries = [queries]
        if not 1 <= len(queries) <= MAX_QUERIES:
            raise HTTPException(
                422, f"send between 1 and {MAX_QUERIES} queries, got {len(queries)}"
            )
        if not 1 <= req.topk <= MAX_TOPK:
            raise HTTPException(422, f"topk must be in [1, {MAX_TOPK}], got {req.topk}")
        result = []
        for hits in retriever.search(queries, req.topk):
            docs = [{"id": h.id, "contents": f'"{h.title}"\n{h.text}'} for h in hits]
            if req.return_scores:
                result.append([{"document": d, "score": h.score} for d, h in zip(docs, hits)])
            else:
                result.append(docs)
        return {"result": result}

    return app
