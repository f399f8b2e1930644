#!/usr/bin/env bash
# K = 16 on the gap study's WordNet configuration (its K = 16 row, seed 1: Spry at the chosen rates 1e-2 / 1e-2,
# alpha 0.1, 100 clients, 10 per round) for a few rounds, with the K tangents stacked in one pass
# (method.tangent_chunk = 0), in passes of 4 and in passes of 1: the peak client memory and the median seconds per
# round of each (spry info), and whether the held-out loss stays the same (it must, to fp32 rounding).
#   docs/results/gap-wordnet/tangent-chunk.sh [OUTDIR] [ROUNDS]     (from the repository root; default /tmp, 3;
# it replaces its own OUTDIR/chunk-{0,4,1}.h5)
# Times come from runs made one after another: on a shared machine compare them as ratios within one invocation.
set -euo pipefail
out=${1:-/tmp}
rounds=${2:-3}
mkdir -p "$out"
sets=(run.rounds=$rounds run.eval_every=1000 eval.personalize_epochs=0 fl.alpha=0.1 log.gradients=none run.seed=1
      method.preset=spry method.client_lr=0.01 method.server_lr=0.01 method.K=16)
args=()
for s in "${sets[@]}"; do args+=(--set "$s"); done
printf "| tangent_chunk | peak client MiB | median s/round | final held-out loss |\n|---|---|---|---|\n"
for c in 0 4 1; do
  OPENBLAS_NUM_THREADS=1 build/spry run configs/wordnet-spry.ini "${args[@]}" --set method.tangent_chunk=$c \
    --set run.quiet=true --output "$out/chunk-$c.h5" --force > "$out/chunk-$c.out"
  info=$(build/spry info "$out/chunk-$c.h5")
  peak=$(sed -n 's/.*peak per client step (max over rounds and ranks) \([0-9.]*\) MiB.*/\1/p' <<< "$info")
  sec=$(sed -n 's/^time *\([0-9.]*\) s\/round (median).*/\1/p' <<< "$info")
  loss=$(sed -n 's/^held-out loss: initial [0-9.]* final \([0-9.]*\)/\1/p' "$out/chunk-$c.out")
  printf "| %s | %s | %s | %s |\n" "$c" "$peak" "$sec" "$loss"
done
