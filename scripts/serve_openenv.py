"""Serve a registered creditgym env as an OpenEnv environment (HTTP + WebSocket).

    python scripts/serve_openenv.py --env creditgym/KeyRooms-v0 --env-kwargs '{"level": "small"}' --port 8011

It binds 127.0.0.1 unless told otherwise; any other host needs ``--token`` (or
``CREDITGYM_OPENENV_TOKEN``), which clients send as ``Authorization: Bearer <token>``. Serving
ToolUse always needs a token. Run it with the venv that holds ``openenv`` (`make install-openenv`
makes ``.venv-openenv``; see the README's OpenEnv section).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--env", required=True, help="registered env id, e.g. creditgym/ALFWorld-v0"
    )
    parser.add_argument("--env-kwargs", default="{}", help="JSON object of env constructor kwargs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-sessions", type=int, default=16, help="concurrent sessions")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=300.0,
        help="seconds before an idle session is closed",
    )
    parser.add_argument("--token", default=os.environ.get("CREDITGYM_OPENENV_TOKEN"))
    args = parser.parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"--env-kwargs is not JSON: {e}")
    if not isinstance(env_kwargs, dict):
        parser.error("--env-kwargs must be a JSON object")
    try:
        from creditgym.envs.remote.server import serve
    except ModuleNotFoundError as e:
        print(
            f"error: {e}. The OpenEnv server needs the `openenv` package: run `make install-openenv` "
            "and start this script with .venv-openenv/bin/python",
            file=sys.stderr,
        )
        return 2
    try:
        serve(
            args.env,
            env_kwargs,
            host=args.host,
            port=args.port,
            max_sessions=args.max_sessions,
            session_timeout=args.session_timeout,
            token=args.token,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
