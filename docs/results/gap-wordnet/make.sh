#!/usr/bin/env bash
# The gap study's page data of docs/results/gap-wordnet/ from the sweep of jobs/sweeps/gap-wordnet.toml, and
# optionally more sweeps whose rows join the table (jobs/sweeps/gap-k-wordnet.toml: the K rows at rates re-selected
# per K; a run in both counts once):
#   docs/results/gap-wordnet/make.sh SWEEPDIR [SWEEPDIR...]   (from the repository root; OUT=DIR to write elsewhere)
# Writes OUT/gap.md (one row per factor: accuracy at rounds 40, 80 and the last, the gap to the strongest backprop
# reference paired by seed, personalised accuracy, cost) and OUT/curves.png (OUT defaults to docs/results/gap-wordnet).
# Only complete runs enter, so an unfinished sweep gives an interim table that says how many runs it has.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: make.sh SWEEPDIR [SWEEPDIR...]" >&2; exit 2; }
out=${OUT:-docs/results/gap-wordnet}
mkdir -p "$out"
# the base row of jobs/sweeps/gap-wordnet.toml (Spry at its chosen rates, the preset's K, epochs, rank and head)
base=(method.K=1 method.local_epochs=1 lora.rank=1 lora.alpha=2 method.head_shared=true method.client_lr=0.01
      method.server_lr=0.01)
docs/results/gap-wordnet/gap.py "$@" --base "${base[@]}" --png "$out/curves.png" > "$out/gap.md.tmp"
mv "$out/gap.md.tmp" "$out/gap.md"
