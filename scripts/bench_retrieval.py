"""Retrieval figures: corpus and index build time, top-k latency in-process and over HTTP.

    python scripts/bench_retrieval.py --corpus synthetic --num-passages 100000 --queries 500

Builds the corpus, builds a fresh BM25 index (timed, then written to the cache), measures top-k
latency of single-query calls in-process, then starts `scripts/serve_retriever.py` as a real
process on a free port and measures the same queries through ``POST /retrieve``. Queries are the
expert's hop queries of the corpus's questions. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from creditgym.envs.base import cache_dir  # noqa: E402
from creditgym.envs.search.datasets import get_dataset  # noqa: E402
from creditgym.envs.search.retriever import BM25Retriever, RemoteRetriever  # noqa: E402


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", default="synthetic", help="geo | synthetic | corpus JSONL path")
    p.add_argument("--qa-path", default=None)
    p.add_argument("--num-passages", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--no-http", action="store_true", help="skip the service measurement")
    args = p.parse_args(argv)

    t = time.perf_counter()
    key = (args.corpus, args.qa_path, args.num_passages, 3000, 0, 100_000)
    ds = get_dataset(*key)
    corpus_s = time.perf_counter() - t
    queries = [h.query for q in ds.questions for h in q.hops] or [q.question for q in ds.questions]
    queries = queries[: args.queries]
    golds = [h.doc_id for q in ds.questions for h in q.hops][: len(queries)]

    t = time.perf_counter()
    bm25 = BM25Retriever(ds.passages, ds.fingerprint, use_cache=False)
    build_s = time.perf_counter() - t
    # Publish this index to the cache (the service below loads it) and measure its size.
    final = cache_dir("search", "bm25") / ds.fingerprint
    if not final.exists():
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        bm25.index.save(str(tmp))
        bm25.tokenizer.save_vocab(str(tmp))
        bm25.tokenizer.save_stopwords(str(tmp))
        os.rename(tmp, final)
    size_mb = sum(f.stat().st_size for f in final.iterdir()) / 1e6
    t = time.perf_counter()
    BM25Retriever(ds.passages, ds.fingerprint)
    load_s = time.perf_counter() - t

    lat, hits = [], 0
    for q, g in zip(queries, golds or [None] * len(queries)):
        t = time.perf_counter()
        res = bm25.search([q], args.topk)[0]
        lat.append(time.perf_counter() - t)
        hits += g in {h.id for h in res}
    result = {
        "corpus": ds.tag,
        "passages": len(ds.passages),
        "corpus_build_s": round(corpus_s, 2),
        "bm25_index_build_s": round(build_s, 2),
        "bm25_index_load_s": round(load_s, 2),
        "bm25_index_mb": round(size_mb, 1),
        "queries": len(queries),
        "topk": args.topk,
        "in_process": _pct(lat),
        "gold_in_topk": round(hits / max(len(queries), 1), 4) if golds else None,
    }

    if not args.no_http:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable, str(ROOT / "scripts" / "serve_retriever.py"), "--corpus", args.corpus,
            "--num-passages", str(args.num_passages), "--port", str(port),
        ]  # fmt: skip
        if args.qa_path:
            cmd += ["--qa-path", args.qa_path]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            ready = json.loads(proc.stdout.readline())
            startup_s = time.perf_counter() - t
            client = RemoteRetriever(ready["url"])
            client.search(queries[:5], args.topk)  # warm up the connection path
            lat = []
            for q in queries:
                t = time.perf_counter()
                client.search([q], args.topk)
                lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.search(queries, args.topk)
            batch_s = time.perf_counter() - t
            result["http"] = {
                **_pct(lat),
                "startup_s": round(startup_s, 2),
                f"batch_of_{len(queries)}_s": round(batch_s, 3),
            }
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
