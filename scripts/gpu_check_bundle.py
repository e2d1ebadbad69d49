"""Build the offline bundle that ``scripts/gpu_check.sh`` carries to a CUDA machine.

    python scripts/gpu_check_bundle.py            # -> dist/gpu_check/  (make gpu-check-bundle)

The bundle holds what such a machine may lack and cannot download (it has no network):

- ``wheels/``: creditgym itself and the pure-Python dependencies the check imports (pydantic,
  PyYAML, networkx, gymnasium, rich, peft, accelerate, ...), at the versions of this venv, with
  binary wheels for CPython 3.11 and 3.12 (manylinux x86_64). torch, transformers, safetensors and
  numpy are *not* carried: the image brings its own, and the check runs against them;
- ``smollm2/``: SmolLM2-135M-Instruct's config and tokenizer files (a few MB); the check builds a
  randomly initialised model from them (the GGUF weights are too large to carry);
- ``gpu_check.sh``, ``gpu_check.py`` and ``MANIFEST.json`` (files, sizes, sha256).

It is built here (with pip's ordinary download from the package index) and never committed: it
is about 15 MB, rebuilt in a minute, and pinned to this venv. The build fails above 60 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60 * 2**20
#: Imported by the check (directly or by a package it imports), pure Python.
PURE = [
    "pydantic",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "networkx",
    "gymnasium",
    "cloudpickle",
    "farama-notifications",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "peft",
    "accelerate",
    "filelock",
    "tqdm",
]
#: Compiled: one wheel per CPython version.
BINARY = ["pydantic-core", "pyyaml", "psutil"]
PYTHONS = ("3.11", "3.12")
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def build(out: Path) -> dict:
    """Write the bundle into ``out`` (replaced) and return its manifest."""
    from creditgym.agents.models import resolve_model

    shutil.rmtree(out, ignore_errors=True)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT))
    pins = [f"{name}=={metadata.version(name)}" for name in PURE]
    _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *pins)
    binary = [f"{name}=={metadata.version(name)}" for name in BINARY]
    for py in PYTHONS:
        _pip(
            "download", "--no-deps", "--only-binary=:all:", "--python-version", py,
            "--platform", "manylinux2014_x86_64", "-d", str(wheels), *binary,
        )  # fmt: skip
    model = Path(resolve_model("smollm2-135m"))
    (out / "smollm2").mkdir()
    for name in MODEL_FILES:
        if (model / name).exists():
            shutil.copy2(model / name, out / "smollm2" / name)
    for name in ("gpu_check.sh", "gpu_check.py"):
        shutil.copy2(ROOT / "scripts" / name, out / name)
    files = {
        str(p.relative_to(out)): {
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }
    total = sum(f["bytes"] for f in files.values())
    manifest = {"total_bytes": total, "pythons": list(PYTHONS), "files": files}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    if total > LIMIT:
        raise SystemExit(f"bundle is {total / 2**20:.1f} MB, over the {LIMIT / 2**20:.0f} MB limit")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "dist" / "gpu_check"), help="bundle folder")
    args = p.parse_args(argv)
    manifest = build(Path(args.out))
    print(f"{args.out}: {len(manifest['files'])} files, {manifest['total_bytes'] / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
