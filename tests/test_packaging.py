"""The distribution installs one top-level package, `creditgym`, and works from its wheel."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("envs", "agents", "credit", "trainers")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel with the venv's setuptools (no pip, no resolution, no index)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    code = f"import sys; from setuptools import build_meta as b; print(b.build_wheel({str(out)!r}))"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    wheels = list(out.glob("creditgym-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_has_only_the_creditgym_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"creditgym"}
    # creditgym is an implicit namespace package: no __init__ claims it.
    assert "creditgym/__init__.py" not in names
    for folder in FOLDERS:
        assert f"creditgym/{folder}/__init__.py" in names
    # Every subpackage of the source tree made it into the wheel.
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.relative_to(ROOT)
        if rel.parts[0] in FOLDERS:
            assert f"creditgym/{rel.as_posix()}" in names, rel


def test_wheel_imports_and_makes_an_env(wheel, tmp_path):
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    # -S: site-packages' .pth files (the editable install's finder) are not run; the wheel's
    # folder comes first and the venv's site-packages only supply the dependencies.
    site = sysconfig.get_paths()["purelib"]
    code = """
import importlib.metadata, gymnasium
import creditgym.envs as e
assert e.__file__.startswith(UNPACKED), e.__file__
env = gymnasium.make("creditgym.envs:creditgym/KeyRooms-v0")
obs, info = env.reset(seed=0)
assert isinstance(obs, str) and info["state_key"]
print(importlib.metadata.version("creditgym"), len(e.list_envs()))
""".replace("UNPACKED", repr(str(unpacked)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(unpacked), site])
    run = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    version, count = run.stdout.split()
    assert version == importlib_version()
    assert int(count) >= 1


def importlib_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("creditgym")


def test_no_module_imports_a_bare_top_level_name():
    """Nothing imports `envs`, `agents`, `credit` or `trainers` except as `creditgym.<name>`."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in {"runs", "build"} or any(p.startswith(".") for p in parts):
            continue  # virtual environments (.venv, .venv-openenv, ...), caches, run folders
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FOLDERS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, offenders
