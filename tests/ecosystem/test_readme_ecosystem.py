"""The README's ecosystem snippets (python blocks opening with ``# ecosystem: <name>``) run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from creditgym.envs.remote.launch import openenv_python

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = dict(re.findall(r"```python\n# ecosystem: (\w+)\n(.*?)```", README.read_text(), re.S))


def test_every_ecosystem_has_a_snippet():
    assert {"openenv", "skyrl", "trl", "verifiers"} <= set(BLOCKS)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_snippet_runs(name, tmp_path, capsys):
    if name == "verifiers":
        pytest.skip(
            "needs a model server and .venv-verifiers: tests/ecosystem/test_verifiers.py runs it"
        )
    if name == "openenv" and openenv_python() is None:
        pytest.skip("openenv not installed: make install-openenv")
    pytest.importorskip({"openenv": "websockets", "skyrl": "skyrl_gym", "trl": "trl"}[name])
    script = tmp_path / f"{name}.py"
    script.write_text(BLOCKS[name])
    runpy.run_path(str(script))
    out = capsys.readouterr().out
    assert out.strip(), f"the {name} snippet printed nothing"
    if name == "openenv":
        assert out.split()[-1] == "True"
