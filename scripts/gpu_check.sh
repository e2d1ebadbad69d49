#!/usr/bin/env bash
# GPU check for a CUDA machine with no network and no vLLM (see the README, "GPU check").
#
#   make gpu-check-bundle                    # here: builds dist/gpu_check/ (<= 60 MB, offline)
#   scp -r dist/gpu_check gpu-host:          # carry it
#   gpu_check/gpu_check.sh                   # there: prints ONE line of JSON, exit 0 = all passed
#
# On the GPU machine it makes a throwaway venv on top of the image's Python (3.11 or 3.12) with
# --system-site-packages, so the image's own torch and transformers are used; the project and
# the pure-Python dependencies the image lacks come from the bundle's wheels (pip --no-index).
#
# Options (the rest go to gpu_check.py: --device cuda|cpu|auto, --layers N, --tokens T,
# --samples S):
#   --python PY     interpreter to build the venv from (default: python3)
#   --bundle DIR    the bundle folder (default: this script's folder when it holds wheels/,
#                   else <repo>/dist/gpu_check)
#   --no-install    run with PY as it is (a dev checkout: no venv, no wheels); --assets DIR
#                   then names the config + tokenizer folder (default: the bundle's smollm2/)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="python3"
bundle=""
install=1
assets=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) py="$2"; shift 2 ;;
    --bundle) bundle="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --assets) assets="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ -z "$bundle" ]]; then
  if [[ -d "$here/wheels" ]]; then bundle="$here"; else bundle="$here/../dist/gpu_check"; fi
fi
assets="${assets:-$bundle/smollm2}"
check="$here/gpu_check.py"

if [[ "$install" == 1 ]]; then
  if [[ ! -d "$bundle/wheels" ]]; then
    echo "error: no bundle at $bundle (build it with \`make gpu-check-bundle\` where pip can reach an index)" >&2
    exit 2
  fi
  venv="$(mktemp -d)/venv"
  trap 'rm -rf "$(dirname "$venv")"' EXIT
  "$py" -m venv --system-site-packages "$venv" >&2
  pip=("$venv/bin/python" -m pip -q install --no-index --find-links "$bundle/wheels")
  # creditgym without its declared deps (vLLM-era pins, matplotlib, scipy: not needed here),
  # then what the check imports; pip skips whatever the image already has.
  "${pip[@]}" --no-deps creditgym >&2
  "${pip[@]}" pydantic pyyaml networkx gymnasium rich peft accelerate filelock tqdm psutil >&2
  py="$venv/bin/python"
fi
exec "$py" "$check" --assets "$assets" "${args[@]}"
