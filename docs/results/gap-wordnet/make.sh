#!/usr/bin/env bash
# The gap study's page data of docs/results/gap-wordnet/ from the sweep of jobs/sweeps/gap-wordnet.toml:
#   docs/results/gap-wordnet/make.sh SWEEPDIR [OUTDIR]   (from the repository root)
# Writes OUTDIR/gap.md (one row per factor: accuracy at rounds 40, 80 and the last, the gap to the strongest backprop
# reference paired by seed, personalised accuracy, cost) and OUTDIR/curves.png. Only complete runs enter, so an
# unfinished sweep gives an interim table that says how many runs it has.
set -euo pipefail
sweep=${1:?usage: make.sh SWEEPDIR [OUTDIR]}
out=${2:-docs/results/gap-wordnet}
mkdir -p "$out"
# the base row of jobs/sweeps/gap-wordnet.toml (Spry at its chosen rates, the preset's K, epochs, rank and head)
base=(method.K=1 method.local_epochs=1 lora.rank=1 lora.alpha=2 method.head_shared=true method.client_lr=0.01
      method.server_lr=0.01)
docs/results/gap-wordnet/gap.py "$sweep" --base "${base[@]}" --png "$out/curves.png" > "$out/gap.md.tmp"
mv "$out/gap.md.tmp" "$out/gap.md"
