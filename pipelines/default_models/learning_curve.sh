#!/usr/bin/env bash
# The learning-curve runs behind pipelines/default_models/README.md: a default config
# at one of two network sizes, validated every 1000 steps on the held-out split, one CPU
# thread per run, all in the background (resumable: rerun with RESUME=--resume).
#   bash pipelines/default_models/learning_curve.sh x2-small cssfn_kspace_x2.yaml small \
#       x2-medium cssfn_kspace_x2.yaml medium
#   python pipelines/default_models/learning_curve.py runs/curve/* --out docs/learning_curve.png
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-8000}
RESUME=${RESUME:-}
# more --set options for every run started, e.g. EXTRA="--set augment.lowpass=0.5"
read -r -a extra <<<"${EXTRA:-}"
common=(--set train.max_steps="$STEPS" --set train.val_every=1000 --set train.lr_step=5000
        --set train.precision=bf16 --set data.val=../../data/default/heldout)
small=(--set model.channels=32 --set model.n_blocks=2 --set model.n_units=3)
medium=(--set model.channels=64 --set model.n_blocks=3 --set model.n_units=3)
mkdir -p runs/curve
run() {
    local name=$1 config=$2
    shift 2
    OMP_NUM_THREADS=1 nohup mrsr train "pipelines/default_models/$config" $RESUME "${common[@]}" \
        --set output_dir="../../runs/curve/$name" "$@" "${extra[@]}" -q >"runs/curve/$name.log" 2>&1 &
}
# the runs to start: NAME CONFIG SIZE, e.g. x2-medium cssfn_kspace_x2.yaml medium
while [ $# -ge 3 ]; do
    name=$1 config=$2 size=$3
    shift 3
    case $size in
        small) run "$name" "$config" "${small[@]}" ;;
        medium) run "$name" "$config" "${medium[@]}" ;;
        *) echo "size $size: small or medium" >&2; exit 2 ;;
    esac
done
wait
