#!/usr/bin/env bash
# The KeyRooms-small learning benchmark: a behaviour-cloning warm start shared by every seed, then
# 20 GiGPO iterations per seed, then success on the first 64 valid tasks before (the warm-started
# model) and after RL, and a comparison table and plot.
# Usage: bash scripts/bench_learning.sh [SEEDS...]   (default: 0 1). Runs land in runs/.
# Takes about 50 minutes per seed on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=scripts/configs/keyrooms_small.yaml
BC=runs/keyrooms_small_bc
TASKS=${TASKS:-64}
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1)
if [ ! -f "$BC/warmstart.json" ]; then
    "$PY" scripts/warmstart.py --config "$CONFIG" --out "$BC" --episodes 8 --epochs 1
fi
# The untrained model in the same format, for reference.
[ -f runs/keyrooms_small_base_valid.json ] || "$PY" scripts/evaluate.py --model smollm2-135m \
    --config "$CONFIG" --backend vllm --tasks "$TASKS" --out runs/keyrooms_small_base_valid.json
runs=()
for s in "${seeds[@]}"; do
    run=runs/keyrooms_small_s$s
    [ -f "$run/summary.json" ] || "$PY" scripts/train.py --config "$CONFIG" \
        model.name="$BC/model" seed="$s" name="keyrooms_small_s$s"
    "$PY" scripts/evaluate.py --run "$run" --start --tasks "$TASKS"
    "$PY" scripts/evaluate.py --run "$run" --tasks "$TASKS"
    runs+=("$run")
done
"$PY" scripts/compare_runs.py "${runs[@]}" --out runs/keyrooms_small_learning.png \
    --json runs/keyrooms_small_learning.json
