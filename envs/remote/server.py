"""Serve any registered creditgym env as an OpenEnv environment (``openenv``'s own server).

`make_app(env_id)` builds the FastAPI app with ``openenv.core.env_server.create_app``: its HTTP
routes (``/reset``, ``/step``, ``/state``, ``/metadata``, ``/schema``, ``/health``, the Task API)
and its WebSocket route ``/ws``, where each connection is one session with its own env instance.
Sessions are capped (``max_sessions``) and an idle session is closed by openenv's reaper after
``session_timeout`` seconds, so a client that vanishes without closing its socket does not hold a
slot for ever (a client whose socket closes frees its slot at once).

Typed models: `CreditgymAction` (``action``: the action text), `CreditgymObservation` (``text``,
``admissible_actions``, ``action_valid``, ``won``, ``score``, ``state_key``, ``task``,
``truncated`` and ``info``: every other `info` key) and `CreditgymState`. ``/metadata`` names the
env id and its panels with their hashes; its ``readme_content`` carries the full spec (panel ids,
``max_steps``, ``family``, ``action_syntax``) that `creditgym/OpenEnv-v0` reads.

Reset takes ``seed``, ``split`` and ``task_id`` (a panel index, as ``options["task_id"]``); the Task
API's ``index`` is accepted as a synonym. Stepping before a reset or after the episode ended, and
unknown reset arguments, are errors with a message; a malformed action is openenv's validation
error. `check_binding` refuses a non-loopback host without a token, and serving ToolUse (its
Python tool runs code) always needs one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import sys
import time
import uuid
from typing import Any

import gymnasium
from openenv.core.env_server import (
    Action,
    ConcurrencyConfig,
    Environment,
    Observation,
    State,
    create_app,
)
from openenv.core.env_server.types import EnvironmentMetadata
from pydantic import Field, StrictStr

from creditgym import envs
from creditgym.envs.base import SPLITS, Panel, TextEnv
from creditgym.envs.remote.wire import jsonable, spec_markdown, split_info

__all__ = [
    "CreditgymAction",
    "CreditgymEnvironment",
    "CreditgymObservation",
    "CreditgymState",
    "check_binding",
    "env_spec",
    "make_app",
    "serve",
]

#: Envs whose actions run code on the host: serving them always needs a token.
CODE_RUNNING_ENVS = ("creditgym/ToolUse-v0",)


class CreditgymAction(Action):
    """One action of a creditgym env: any text (an unparseable one is an invalid step, not an error)."""

    action: StrictStr = Field(description="The action text, e.g. 'go to kitchen'.")


class CreditgymObservation(Observation):
    """A creditgym observation with the `info` keys every env provides."""

    text: str = Field(default="", description="The observation text.")
    admissible_actions: list[str] | None = Field(
        default=None, description="Actions the env accepts now (None: it cannot enumerate them)."
    )
    action_valid: bool = Field(default=True, description="Whether the last action did something.")
    won: bool = Field(default=False, description="The task is solved.")
    score: float = Field(default=0.0, description="Dense task progress in [0, 1] (diagnostic).")
    state_key: str = Field(default="", description="Canonical key of the true env state.")
    task: str = Field(default="", description="The instruction.")
    truncated: bool = Field(default=False, description="The episode hit its step limit.")
    info: dict[str, Any] = Field(default_factory=dict, description="Every other `info` key.")


class CreditgymState(State):
    """Where a session is: env, split, task and whether its episode ended."""

    env_id: str = ""
    split: str | None = None
    task_id: str | None = None
    task_index: int | None = None
    panel_hash: str | None = None
    done: bool = True


def env_spec(env_id: str, env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a client needs to know about `env_id` (made once with `env_kwargs`): panels and limits.

    Raises ValueError for an unknown id, listing the registered ones.
    """
    env_kwargs = dict(env_kwargs or {})
    if env_id not in gymnasium.registry:
        raise ValueError(f"unknown env {env_id!r}; registered text envs: {envs.list_envs()}")
    split = env_kwargs.pop("split", "train")
    env = envs.make(env_id, split=split, **env_kwargs)
    if not isinstance(env, TextEnv):
        env.close()
        raise ValueError(f"{env_id} is not a creditgym TextEnv ({type(env).__name__})")
    try:
        name = env.panel.env
        panels = {}
        for s in SPLITS:
            panel = (
                env.panel
                if s == env.split
                else Panel(name, s, env.generator_version, tuple(env.task_ids(s)))
            )
            panels[s] = {"hash": panel.hash, "version": panel.version, "ids": list(panel.ids)}
        return {
            "env_id": env_id,
            "panel_env": name,
            "env_kwargs": jsonable(env_kwargs),
            "default_split": env.split,
            "generator_version": env.generator_version,
            "panels": panels,
            "max_steps": env.max_steps,
            "family": env.family,
            "action_syntax": getattr(env, "action_syntax", "action"),
            "state_key_source": env.state_key_source,
            "max_observation_length": env.max_observation_length,
            "max_action_length": env.max_action_length,
        }
    finally:
        env.close()


class CreditgymEnvironment(Environment):
    """One session: a creditgym env per split, made on first use, played through `reset`/`step`."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, spec: dict[str, Any], session_timeout: float | None = None):
        super().__init__()
        self._spec = spec
        self._session_timeout = session_timeout
        self._envs: dict[str, TextEnv] = {}
        self._env: TextEnv | None = None
        self._done = True
        self._closed = False
        self._state = CreditgymState(env_id=spec["env_id"])

    # ----------------------------------------------------------------- openenv API
    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        split: str | None = None,
        task_id: int | None = None,
        index: int | None = None,
        **kwargs: Any,
    ) -> CreditgymObservation:
        self._check_open()
        if kwargs:
            raise ValueError(
                f"unknown reset arguments {sorted(kwargs)}; supported: "
                "['seed', 'episode_id', 'split', 'task_id' (or 'index')]"
            )
        if task_id is None:
            task_id = index
        env = self._env_for(split or self._spec["default_split"])
        options = None if task_id is None else {"task_id": task_id}
        obs, info = env.reset(seed=seed, options=options)
        self._env, self._done = env, False
        self._state = CreditgymState(
            env_id=self._spec["env_id"],
            episode_id=episode_id or str(uuid.uuid4()),
            step_count=0,
            split=env.split,
            task_id=info.get("task_id"),
            task_index=info.get("task_index"),
            panel_hash=info.get("panel_hash"),
            done=False,
        )
        return self._observation(obs, None, False, False, info)

    def step(
        self, action: CreditgymAction, timeout_s: float | None = None, **kwargs: Any
    ) -> CreditgymObservation:
        self._check_open()
        if self._env is None:
            raise RuntimeError("no episode: call reset before step")
        if self._done:
            raise RuntimeError("the episode has ended: call reset to start another")
        obs, reward, terminated, truncated, info = self._env.step(action.action)
        self._done = terminated or truncated
        self._state.step_count += 1
        self._state.done = self._done
        return self._observation(obs, reward, terminated, truncated, info)

    @property
    def state(self) -> CreditgymState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        spec = self._spec
        panels = ", ".join(
            f"{s}: {len(p['ids'])} tasks #{p['hash']}" for s, p in spec["panels"].items()
        )
        return EnvironmentMetadata(
            name=spec["env_id"],
            description=f"{spec['env_id']} served by creditgym; panels {panels}",
            readme_content=spec_markdown(spec),
            version=spec["generator_version"],
            author="creditgym",
        )

    def close(self) -> None:
        self._closed = True
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._env = None

    # ----------------------------------------------------------------- Task API
    def list_splits(self) -> list[dict[str, Any]]:
        return [
            {"name": s, "type": "validation" if s == "valid" else s, "hash": p["hash"]}
            for s, p in self._spec["panels"].items()
        ]

    def num_tasks(self, split: str) -> int:
        return len(self._panel(split)["ids"])

    def list_tasks(self, split: str) -> list[dict[str, Any]]:
        return [{"index": i, "id": t} for i, t in enumerate(self._panel(split)["ids"])]

    def get_task(self, split: str, index: int) -> dict[str, Any]:
        ids = self._panel(split)["ids"]
        if not 0 <= index < len(ids):
            raise IndexError(index)
        return {"index": index, "id": ids[index]}

    def get_task_range(
        self, split: str, start: int | None = None, stop: int | None = None
    ) -> list[dict[str, Any]]:
        return self.list_tasks(split)[start:stop]

    # ----------------------------------------------------------------- helpers
    def _panel(self, split: str) -> dict[str, Any]:
        if split not in self._spec["panels"]:
            raise ValueError(f"unknown split {split!r}; choose one of {list(self._spec['panels'])}")
        return self._spec["panels"][split]

    def _check_open(self) -> None:
        if self._closed:
            idle = f" after {self._session_timeout:g} s idle" if self._session_timeout else ""
            raise RuntimeError(f"this session was closed by the server{idle}; reconnect")

    def _env_for(self, split: str) -> TextEnv:
        self._panel(split)
        if split not in self._envs:
            self._envs[split] = envs.make(
                self._spec["env_id"], split=split, **self._spec["env_kwargs"]
            )
        return self._envs[split]

    def _observation(
        self, obs: str, reward: float | None, terminated: bool, truncated: bool, info: dict
    ) -> CreditgymObservation:
        typed, rest = split_info(info)
        return CreditgymObservation(
            text=obs,
            reward=reward,
            done=bool(terminated or truncated),
            truncated=bool(truncated),
            info=rest,
            **typed,
        )


class TokenGate:
    """ASGI middleware: every HTTP request and WebSocket needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            sent = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(sent, self._expected):
                if scope["type"] == "websocket":  # closing before accept answers HTTP 403
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = json.dumps({"detail": "missing or wrong token (Authorization: Bearer ...)"})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(env_id: str, host: str, token: str | None) -> list[str]:
    """Refuse unsafe serving (ValueError); return the warnings to print for what is allowed."""
    warnings = []
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to serve on {host!r} without a token: anyone who reaches it could play "
            "(and, for ToolUse, run code). Pass --token (or CREDITGYM_OPENENV_TOKEN), or bind "
            "127.0.0.1"
        )
    if env_id in CODE_RUNNING_ENVS:
        if not token:
            raise ValueError(
                f"{env_id} runs agent code in its Python sandbox: serving it needs a token "
                "(--token or CREDITGYM_OPENENV_TOKEN), even on 127.0.0.1"
            )
        warnings.append(
            f"WARNING: {env_id} runs agent-written Python in its sandbox; every client holding "
            f"the token can run code on this machine{'' if is_loopback(host) else ' over the network'}."
        )
    return warnings


def make_app(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    max_sessions: int = 16,
    session_timeout: float | None = 300.0,
    token: str | None = None,
) -> Any:
    """The OpenEnv FastAPI app serving `env_id` (see the module docstring)."""
    spec = env_spec(env_id, env_kwargs)

    def factory() -> CreditgymEnvironment:
        return CreditgymEnvironment(spec, session_timeout)

    app = create_app(
        factory,
        CreditgymAction,
        CreditgymObservation,
        env_name=env_id.split("/")[-1],
        concurrency_config=ConcurrencyConfig(
            max_concurrent_envs=max_sessions, session_timeout=session_timeout
        ),
        state_cls=CreditgymState,
    )
    if token:
        app.add_middleware(TokenGate, token=token)
    return app


def serve(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_sessions: int = 16,
    session_timeout: float | None = 300.0,
    token: str | None = None,
) -> None:
    """Check the binding, build the app and run it with uvicorn until interrupted."""
    import uvicorn

    for line in check_binding(env_id, host, token):
        print(line, file=sys.stderr, flush=True)
    start = time.perf_counter()
    app = make_app(
        env_id, env_kwargs, max_sessions=max_sessions, session_timeout=session_timeout, token=token
    )
    print(
        f"serving {env_id} on http://{host}:{port} (ws /ws, {max_sessions} sessions, idle "
        f"timeout {session_timeout} s, ready in {time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
