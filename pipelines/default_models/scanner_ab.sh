#!/usr/bin/env bash
# The scanner-model comparison behind pipelines/default_models/README.md ("Unseen sites"): three
# third stages of 3000 steps from the shipped x2 weights, 4 patches per degraded slice, one CPU
# thread each, then each scored on the held-out and the site-out volumes.
#   control: the augmentation and data of the shipped model
#   coils:   every training site drawn site by site, the scanner model, input from the coils
#   magnitude: the same, input truncated from the target's magnitude (augment.lr_from)
set -euo pipefail
cd "$(dirname "$0")/../.."
common=(--set train.init=cssfn-kspace-x2 --set train.seed=2 --set train.lr=1.0e-4
        --set train.max_steps=3000 --set train.lr_step=2000 --set train.patches_per_slice=4
        --set train.val_every=1000
        --set "data.val=[../../data/default/heldout, ../../data/default/siteout]")
sites=(--set "data.train=[../../data/default/train, ../../data/default/train_more, ../../data/default/train_sites]"
       --set data.sites=../../data/default/sites.json --set augment.phase=3.0
       --set augment.coils=4 --set augment.partial_fourier=0.3)
run() {
    local name=$1
    shift
    OMP_NUM_THREADS=1 mrsr train pipelines/default_models/cssfn_kspace_x2.yaml "${common[@]}" "$@" \
        --set output_dir="../../runs/ab/$name" -q
    OMP_NUM_THREADS=1 python pipelines/default_models/score.py "runs/ab/$name" \
        --folders data/default/heldout data/default/siteout --csv "runs/ab/$name.csv"
}
mkdir -p runs/ab
run control
run coils "${sites[@]}"
run magnitude "${sites[@]}" --set augment.lr_from=magnitude
