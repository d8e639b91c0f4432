#!/bin/bash
# PNIL seeds 0 and 2 (which reached GPU run 3's 30-epoch cap) trained to the patience rule
# with a 60-epoch cap, on the CPU; NFGSM rows are GPU run 3's (pre-filled, not rerun).
cd /work/main
export MPLBACKEND=Agg FASTNOISE_EXT_DIR=$PWD/build/ext
.venv/bin/python benchmarks/reproduce_pnil_table1.py --data-root /work/shared/data --datasets fashion-mnist --epochs 60 --patience 5 --train-limit 20000 --holdout 1000 --protocol pnil --pgd-samples 300 --spsa-samples 100 --spsa-steps 100 --spsa-batch 128 --seeds 0 2 --full-spsa-seeds --compile --out runs/pnil_cap60 --results runs/pnil_cap60/results.md
