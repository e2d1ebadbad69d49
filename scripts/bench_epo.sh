#!/usr/bin/env bash
# The EPO LLM benchmark (issue 19): KeyRooms small, SmolLM2 after the warm start of
# scripts/bench_learning.sh (8 expert episodes, 1 epoch, shared by every run), then per seed
# GiGPO (loss terms kl, entropy) and GiGPO + EPO (kl, entropy, epo) for ITERATIONS iterations
# each with the same seed, then the entropy and success curves of both arms in one plot.
# Usage: bash scripts/bench_epo.sh [SEEDS...]   (default: 0 1; ITERATIONS=6, OUT=runs/epo,
# EVAL_TASKS=8 valid tasks before and after training, BACKEND=vllm or hf). A run already
# finished is not re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=scripts/configs/keyrooms_small.yaml
BC=runs/keyrooms_small_bc
ITERATIONS=${ITERATIONS:-6}
OUT=${OUT:-runs/epo}
EVAL_TASKS=${EVAL_TASKS:-8}
BACKEND=${BACKEND:-vllm}
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1)
if [ ! -f "$BC/warmstart.json" ]; then
    "$PY" scripts/warmstart.py --config "$CONFIG" --out "$BC" --episodes 8 --epochs 1
fi
baseline=()
epo=()
for s in "${seeds[@]}"; do
    for arm in gigpo epo; do
        run=$OUT/${arm}_s$s
        if [ "$arm" = epo ]; then terms='loss.terms=[kl,entropy,epo]'; else terms='loss.terms=[kl,entropy]'; fi
        [ -f "$run/summary.json" ] || "$PY" scripts/train.py --config "$CONFIG" \
            model.name="$BC/model" seed="$s" train.iterations="$ITERATIONS" "$terms" \
            eval.tasks="$EVAL_TASKS" train.checkpoint_every=0 backend.name="$BACKEND" run_dir="$run"
        if [ "$arm" = epo ]; then epo+=("$run"); else baseline+=("$run"); fi
    done
done
"$PY" scripts/plot_epo.py --baseline "${baseline[@]}" --epo "${epo[@]}" --out "$OUT/epo.png"
