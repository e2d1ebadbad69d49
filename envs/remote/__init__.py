"""creditgym envs across process boundaries and other frameworks' env interfaces.

- `creditgym.envs.remote.server` serves any registered env as an OpenEnv environment (the
  ``openenv`` package's own server: HTTP and WebSocket routes, sessions, an idle reaper);
  ``scripts/serve_openenv.py`` is its command line.
- `creditgym.envs.remote.client` is ``creditgym/OpenEnv-v0``: a `TextEnv` that plays an OpenEnv
  server (ours, or anyone's), so the trainer, credit modules and viewer run on remote envs.
- `creditgym.envs.remote.skyrl`, `.trl_tools` and `.verifiers_env` adapt creditgym envs to SkyRL-gym's
  ``BaseTextEnv``, TRL's ``environment_factory`` and verifiers' ``vf.Env``.

Each module imports its framework only when imported itself; none is imported by
`creditgym.envs`, so the frameworks stay optional (pyproject extras ``openenv``, ``skyrl``,
``trl``, ``verifiers``).
"""
