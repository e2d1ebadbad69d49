"""`creditgym/OpenEnv-v0`: an OpenEnv server played as a creditgym `TextEnv`.

    env = gymnasium.make("creditgym/OpenEnv-v0", base_url="http://127.0.0.1:8011", split="valid")

One env is one WebSocket session on the server (OpenEnv's ``/ws`` protocol: ``reset`` / ``step`` /
``close`` messages), opened on the first reset. It speaks the wire protocol itself with
``websockets``, so this side needs no ``openenv`` install.

- **Our server** (`scripts/serve_openenv.py`): no options. Panels, ``max_steps``, ``family`` and
  ``action_syntax`` come from the ``/metadata`` route, and the panels keep the served env's id, so
  their hashes equal the native env's; `reset` forwards the seed and task index, so an episode
  replays the native one step for step.
- **Someone else's server**: ``text_field`` names the observation's text field, ``action_field``
  the action model's text field (``action_extra`` adds fixed fields), ``state_key_field`` the
  state key (absent: the observation text, ``state_key_source = "observation"``) and
  ``admissible_field`` the list of legal actions. Tasks come from the server's Task API when it
  has one (reset with ``split`` and ``index``), otherwise ``num_tasks`` seeds (reset with
  ``seed``).

A server that dies or drops the session mid-episode ends the episode with ``info["error"]``; the
next reset reconnects. ``token`` (or ``CREDITGYM_OPENENV_TOKEN``) is sent as a bearer token.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from creditgym.envs.base import Panel, TextEnv
from creditgym.envs.remote.wire import TYPED_INFO_KEYS, parse_spec

__all__ = ["OpenEnvEnv", "OpenEnvError"]

_CONNECTION_ERRORS = (OSError, ConnectionClosed, InvalidHandshake, TimeoutError)


class OpenEnvError(RuntimeError):
    """The server refused a request or could not be reached."""


class OpenEnvEnv(TextEnv):
    """A `TextEnv` whose episodes run on an OpenEnv server (see the module docstring)."""

    env_name: ClassVar[str] = "creditgym/OpenEnv-v0"
    #: No branching: episodes live in a server session (a foreign server's determinism is
    #: unknown, and this client's own reset/step keep no replayable trace). Branch the served
    #: env natively instead (same panels and seeds).
    branching: ClassVar[str] = "none"

    def __init__(
        self,
        base_url: str | None = None,
        split: str = "train",
        max_steps: int | None = None,
        render_mode: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        text_field: str = "text",
        action_field: str = "action",
        action_extra: dict[str, Any] | None = None,
        state_key_field: str | None = None,
        admissible_field: str | None = "admissible_actions",
        num_tasks: int = 100,
    ):
        base_url = base_url or os.environ.get("CREDITGYM_OPENENV_URL")
        if not base_url:
            raise ValueError(
                "creditgym/OpenEnv-v0 needs base_url= (or CREDITGYM_OPENENV_URL): the http:// "
                "address of an OpenEnv server, e.g. one started by scripts/serve_openenv.py"
            )
        self.base_url = base_url.rstrip("/")
        self._token = token or os.environ.get("CREDITGYM_OPENENV_TOKEN")
        self._timeout = float(timeout)
        self._fields = {
            "text": text_field,
            "action": action_field,
            "state_key": state_key_field,
            "admissible": admissible_field,
        }
        self._action_extra = dict(action_extra or {})
        metadata = self._get("/metadata")
        self.server_metadata = metadata
        self.spec_remote = parse_spec(metadata.get("readme_content"))
        self._remote_name = str(metadata.get("name") or "remote")
        spec = self.spec_remote
        if spec is not None:  # our own server: mirror the served env
            for attr in (
                "family",
                "action_syntax",
                "state_key_source",
                "max_observation_length",
                "max_action_length",
            ):
                setattr(self, attr, spec[attr])
            self.generator_version = spec["generator_version"]
            max_steps = spec["max_steps"] if max_steps is None else max_steps
        else:
            self.state_key_source = "state" if state_key_field else "observation"
            self.generator_version = "remote"
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        self._task_api: str | None = None
        if spec is None:
            self._remote_ids = self._foreign_task_ids(int(num_tasks))
        self._ws: ClientConnection | None = None
        self._episode_open = False
        self._info: dict[str, Any] = {}

    # ----------------------------------------------------------------- panels
    def task_ids(self, split: str) -> list[str]:
        if self.spec_remote is not None:
            return list(self.spec_remote["panels"][split]["ids"])
        return list(self._remote_ids[split])

    @property
    def panel(self) -> Panel:
        """The server's panel for this split (for our server: the served env's, same hash)."""
        if self._panel is None:
            if self.spec_remote is not None:
                remote = self.spec_remote["panels"][self.split]
                name = self.spec_remote["panel_env"]
                self._panel = Panel(name, self.split, remote["version"], tuple(remote["ids"]))
                if self._panel.hash != remote["hash"]:
                    raise OpenEnvError(
                        f"panel {self.split} from {self.base_url} has hash {self._panel.hash}, "
                        f"but the server reports {remote['hash']}"
                    )
            else:
                name = f"openenv:{self._remote_name}"
                self._panel = Panel(name, self.split, "remote", tuple(self.task_ids(self.split)))
        return self._panel

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        gym.Env.reset(self, seed=seed)
        options = dict(options or {})
        panel = self.panel
        index = options.pop("task_id", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; supported: ['task_id']")
        if index is not None and (
            not isinstance(index, (int, np.integer)) or not 0 <= index < len(panel)
        ):
            raise ValueError(
                f"options['task_id'] must be an int in [0, {len(panel)}) for split "
                f"{self.split!r}, got {index!r}"
            )
        if self.spec_remote is not None:  # the server draws the task from the seed, as natively
            data: dict[str, Any] = {"seed": seed, "split": self.split}
            if index is not None:
                data["task_id"] = int(index)
        else:
            if index is None:
                index = int(self.np_random.integers(len(panel)))
            data = self._foreign_reset_data(int(index), seed)
        # One session serves every episode of this env (its env instance persists, as a native
        # env's does); a dropped session is reopened once.
        for attempt in (0, 1):
            try:
                if self._ws is None:
                    self._ws = connect(
                        self._ws_url(),
                        additional_headers=self._headers(),
                        open_timeout=self._timeout,
                        max_size=None,
                        proxy=None,
                        legacy=True,  # a long-lived connection, closed by `close`
                    )
                payload = self._request({"type": "reset", "data": data})
                break
            except (*_CONNECTION_ERRORS, OpenEnvError) as e:
                self._close_socket()  # e.g. the server closed an idle session: reopen it
                if attempt and isinstance(e, OpenEnvError):
                    raise
                if attempt:
                    raise OpenEnvError(
                        f"cannot reset on the OpenEnv server {self.base_url}: {e}"
                    ) from e
        self._steps = 0
        self._episode_open = True
        if self.spec_remote is None:
            self._base_info = {
                "task_id": panel.ids[int(index)],
                "task_index": int(index),
                "split": self.split,
                "panel_hash": panel.hash,
            }
        obs, info = self._unpack(payload, reset=True)
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            action = str(action)
        if not self._episode_open or self._ws is None:
            raise RuntimeError("call reset before step (the episode has ended or never began)")
        self._steps += 1
        message = {"type": "step", "data": {self._fields["action"]: action, **self._action_extra}}
        try:
            payload = self._request(message)
        except (*_CONNECTION_ERRORS, OpenEnvError) as e:
            return self._dead(str(e))
        obs, info = self._unpack(payload, reset=False)
        reward = float(payload.get("reward") or 0.0)
        done = bool(payload.get("done", False))
        remote_truncated = bool(payload.get("observation", {}).get("truncated", False))
        terminated = done and not remote_truncated
        truncated = (done and remote_truncated) or (
            not terminated and self._steps >= self.max_steps
        )
        if terminated or truncated:
            self._episode_open = False
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._close_socket()
        super().close()

    # ----------------------------------------------------------------- helpers
    def _unpack(self, payload: dict[str, Any], reset: bool) -> tuple[str, dict[str, Any]]:
        remote = dict(payload.get("observation") or {})
        if self.spec_remote is not None:
            info = dict(remote.get("info") or {})
            info.update({k: remote[k] for k in TYPED_INFO_KEYS if k in remote})
            obs = str(remote.get("text", ""))
            self._info = info
            self._last_obs = obs
            return obs, info
        text_field = self._fields["text"]
        if text_field not in remote:
            raise OpenEnvError(
                f"the server's observation has no field {text_field!r} (fields: {sorted(remote)}); "
                "name the text field with text_field="
            )
        info: dict[str, Any] = {"remote_observation": remote}
        admissible = self._fields["admissible"]
        if admissible and isinstance(remote.get(admissible), list):
            info["admissible_actions"] = [str(a) for a in remote[admissible]]
        if "won" in remote:
            info["won"] = bool(remote["won"])
        key_field = self._fields["state_key"]
        if key_field:
            info["state_key"] = json.dumps(remote.get(key_field), sort_keys=True, default=str)
        obs, info = self._finish(str(remote[text_field]), info, reset=reset)
        self._info = info
        return obs, info

    def _dead(self, message: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._close_socket()
        self._episode_open = False
        info = {**self._info, "action_valid": False, "error": message, "step": self._steps}
        obs = f"The OpenEnv server is unavailable ({message}). This episode has ended."
        self._last_obs = obs
        return obs, 0.0, True, False, info

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self._ws is not None
        # A refused session (e.g. at capacity) sends an error frame, then closes: read that frame.
        with contextlib.suppress(ConnectionClosed):
            self._ws.send(json.dumps(message))
        reply = json.loads(self._ws.recv(timeout=self._timeout))
        if reply.get("type") == "error":
            data = reply.get("data") or {}
            raise OpenEnvError(
                f"server error {data.get('code', '?')}: {data.get('message', reply)}"
                + (f" {data['errors']}" if data.get("errors") else "")
            )
        return reply.get("data") or {}

    def _close_socket(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.send(json.dumps({"type": "close"}))
                ws.close()
            except _CONNECTION_ERRORS:
                pass

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _ws_url(self) -> str:
        url = self.base_url
        for http, ws in (("https://", "wss://"), ("http://", "ws://")):
            if url.startswith(http):
                url = ws + url[len(http) :]
        return url + "/ws"

    def _get(self, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            headers={**self._headers(), "Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise OpenEnvError(f"{self.base_url}{path} answered {e.code}: {detail}") from e
        except OSError as e:
            raise OpenEnvError(f"cannot reach the OpenEnv server at {self.base_url}: {e}") from e

    def _foreign_task_ids(self, num_tasks: int) -> dict[str, list[str]]:
        """Task ids per split from a foreign server's Task API, or `num_tasks` seeds."""
        try:
            names = self._get("/list_environments")
            splits = {s["name"]: s for s in self._get(f"/{names[0]}/splits")}
            ids = {}
            for split in ("train", "valid", "test"):
                remote = split if split in splits else {"valid": "validation"}.get(split, split)
                count = self._get(f"/{names[0]}/num_tasks", {"split": remote})["num_tasks"]
                ids[split] = [f"{remote}/{i}" for i in range(int(count))]
            self._task_api = names[0]
            return ids
        except (OpenEnvError, KeyError, IndexError, TypeError):
            seeds = [str(i) for i in range(num_tasks)]
            return {split: seeds for split in ("train", "valid", "test")}

    def _foreign_reset_data(self, index: int, seed: int | None) -> dict[str, Any]:
        task_id = self.panel.ids[index]
        if self._task_api is not None:
            split, i = task_id.rsplit("/", 1)
            data: dict[str, Any] = {"split": split, "index": int(i)}
            if seed is not None:
                data["seed"] = seed
            return data
        return {"seed": int(task_id)}
