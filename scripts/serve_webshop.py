"""Serve the creditgym WebShop for a person to browse (or for envs started with ``server_url``).

    python scripts/serve_webshop.py --port 3000             # then open http://127.0.0.1:3000/
    python scripts/serve_webshop.py --n-products 100000     # a bigger catalog
    python scripts/serve_webshop.py --data-path ~/webshop/data   # the original WebShop files

``/`` starts a session on a random goal (``/?goal=g000123`` picks one); the instruction is shown
on every page and the done page shows WebShop's reward. Envs can share this server:
``gymnasium.make("creditgym/WebShop-v0", server_url="http://127.0.0.1:3000")`` (same catalog
options). The server binds 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import time

from creditgym.envs.webshop.app import serve
from creditgym.envs.webshop.loading import cached_catalog


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n-products", type=int, default=1000, help="generated catalog size")
    p.add_argument("--seed", type=int, default=0, help="catalog seed")
    p.add_argument("--data-path", default=None, help="folder with the original WebShop JSON files")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    args = p.parse_args(argv)
    start = time.perf_counter()
    catalog = cached_catalog(args.n_products, args.seed, args.data_path)
    print(
        f"catalog {catalog.source}: {len(catalog)} products, {len(catalog.goals)} goals, "
        f"fingerprint {catalog.fingerprint} ({time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    print(f"first test goal: {catalog.goals[0].instruction!r}", flush=True)
    print("serving: open http://<host>:<port>/ with the port printed below; Ctrl-C stops")
    serve(catalog, args.host, args.port)


if __name__ == "__main__":
    main()
