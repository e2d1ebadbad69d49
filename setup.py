"""Package layout: the top-level folders install under the `creditgym` namespace.

The repository keeps the layout DESIGN.md fixes (``envs/``, ``agents/``, ``credit/``,
``trainers/`` at the top), but nothing is installed under those generic names: each folder and
its subpackages become ``creditgym.<folder>...``. ``creditgym`` itself is an implicit namespace
package. Everything else about the distribution is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("envs", "agents", "credit", "trainers")

packages = [f"creditgym.{name}" for name in find_packages() if name.split(".")[0] in FOLDERS]
setup(
    packages=packages,
    package_dir={f"creditgym.{folder}": folder for folder in FOLDERS},
)
