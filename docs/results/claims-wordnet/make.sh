#!/usr/bin/env bash
# The claims reports of docs/results/claims-wordnet/ from the machine-size claims sweep, one per heterogeneity:
#   docs/results/claims-wordnet/make.sh SWEEPDIR [OUTDIR]   (from the repository root)
# SWEEPDIR is the sweep of jobs/sweeps/paper-claims-wordnet.toml (jobs/spry-sweep run-local ... -d SWEEPDIR).
# Writes OUTDIR/alpha-A.html (the full report), OUTDIR/alpha-A.md (headline claims table, methods table) and
# OUTDIR/alpha-A-curves.png for A in 0.1 and 1.0, and OUTDIR/headline.md (both alphas side by side); only complete runs enter (an unfinished sweep gives an interim
# report that says how many runs it has).
set -euo pipefail
sweep=${1:?usage: make.sh SWEEPDIR [OUTDIR]}
out=${2:-docs/results/claims-wordnet}
mkdir -p "$out"
for a in 0.1 1.0; do
  mapfile -t runs < <(jobs/spry-sweep files "$sweep" fl.alpha=$a --complete)
  if [ ${#runs[@]} -eq 0 ]; then
    echo "make.sh: no complete run at fl.alpha=$a in $sweep" >&2
    continue
  fi
  analysis/spry-analyze report "${runs[@]}" -o "$out/alpha-$a.html" --markdown "$out/alpha-$a.md" \
    --title "The seed paper's claims on WordNet, Dirichlet alpha = $a (40 rounds, machine size)"
done
# both alphas side by side: the claims table and the methods' accuracies (docs/results/claims-wordnet/README.md)
docs/results/claims-wordnet/headline.py "$sweep" > "$out/headline.md"
