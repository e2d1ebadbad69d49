"""ALFWorld household tasks: procedural game generator, TextWorld engine backend, fast backend.

`ALFWorldEnv` is registered as ``creditgym/ALFWorld-v0``. Submodules: `generator` (games in
ALFWorld's file format), `engine` (alfworld's TextWorld engine), `fast` (pure-Python backend),
`expert` (handcoded oracle), `assets` (files read from the installed `alfworld` wheel).
"""

from creditgym.envs.alfworld.env import ALFWorldEnv, build_panels

__all__ = ["ALFWorldEnv", "build_panels"]
