#!/usr/bin/env bash
# The KeyRooms-small learning benchmark: behaviour-clone warm start, then GiGPO RL for each seed.
# Usage: bash scripts/bench_learning.sh [SEEDS...]   (default: 0 1). Runs land in runs/.
# Each run's eval/ folder holds valid-panel success before (iteration 0) and after training.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=scripts/configs/keyrooms_small.yaml
BC=runs/keyrooms_small_bc
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1)
if [ ! -f "$BC/model/config.json" ]; then
    "$PY" scripts/warmstart.py --config "$CONFIG" --out "$BC" --episodes 8 --epochs 1
fi
for s in "${seeds[@]}"; do
    "$PY" scripts/train.py --config "$CONFIG" model.name="$BC/model" seed="$s" \
        name="keyrooms_small_s$s"
done
