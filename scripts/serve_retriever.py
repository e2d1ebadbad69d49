"""Serve a search corpus over HTTP with Search-R1's ``POST /retrieve`` wire format.

    python scripts/serve_retriever.py --corpus geo --port 8000
    python scripts/serve_retriever.py --corpus synthetic --num-passages 100000 --port 8000
    python scripts/serve_retriever.py --corpus wiki18.jsonl --qa-path nq.jsonl --retriever dense

Then point the env at it: ``gymnasium.make("creditgym/Search-v0",
retriever_url="http://127.0.0.1:8000", corpus=<same corpus args>)``. The service binds to
127.0.0.1 by default; it prints one JSON line (``{"ready": true, "url": ...}``) once it accepts
requests. The corpus arguments are the env's, so both sides build the same corpus.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", default="geo", help="geo | synthetic | path of a corpus JSONL file")
    p.add_argument("--qa-path", default=None, help="QA JSONL file (with a corpus JSONL file)")
    p.add_argument("--num-passages", type=int, default=5_000, help="synthetic corpus size")
    p.add_argument("--num-questions", type=int, default=3_000, help="synthetic question count")
    p.add_argument("--corpus-seed", type=int, default=0)
    p.add_argument("--min-city-population", type=int, default=100_000, help="geo corpus cities")
    p.add_argument("--retriever", choices=["bm25", "dense"], default="bm25")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)

    import uvicorn

    from creditgym.envs.search.datasets import get_dataset, get_retriever
    from creditgym.envs.search.service import create_app

    start = time.perf_counter()
    key = (
        args.corpus,
        args.qa_path,
        args.num_passages,
        args.num_questions,
        args.corpus_seed,
        args.min_city_population,
    )
    try:
        dataset = get_dataset(*key)
    except ValueError as exc:
        p.error(str(exc))
    retriever = get_retriever(key, args.retriever)
    app = create_app(retriever, len(dataset.passages), dataset.tag)
    setup_s = time.perf_counter() - start

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", workers=1)
    server = uvicorn.Server(config)

    # Announce readiness only once the socket accepts connections.
    original_startup = server.startup

    async def startup(sockets=None) -> None:
        await original_startup(sockets=sockets)
        if server.started:
            info = {
                "ready": True,
                "url": f"http://{args.host}:{args.port}",
                "passages": len(dataset.passages),
                "corpus": dataset.tag,
                "retriever": args.retriever,
                "setup_s": round(setup_s, 2),
            }
            print(json.dumps(info), flush=True)

    server.startup = startup
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after a clean shutdown
        return
    if not server.started:
        sys.exit(f"could not start the retrieval service on {args.host}:{args.port}")


if __name__ == "__main__":
    main()
