"""The README's environment example runs as written and passes Gymnasium's checker."""

import re
import runpy
from pathlib import Path

import gymnasium
from gymnasium.utils.env_checker import check_env

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_env(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "gymnasium.register" in b)
    assert len(example.strip().splitlines()) <= 45
    script = tmp_path / "example.py"
    script.write_text(example)
    if "mylab/Lamp-v0" in gymnasium.registry:
        del gymnasium.registry["mylab/Lamp-v0"]
    runpy.run_path(str(script))
    assert "You are in the hall." in capsys.readouterr().out
    env = gymnasium.make("mylab/Lamp-v0").unwrapped
    check_env(env, skip_render_check=True)
    env.reset(options={"task_id": 0})  # target: kitchen
    assert env.step("fly")[4]["action_valid"] is False
    env.step("go to kitchen")
    _, reward, terminated, _, info = env.step("switch on lamp")
    assert reward == 10.0 and terminated and info["won"]
