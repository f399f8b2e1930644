#!/usr/bin/env bash
# The claims reports of docs/results/claims-TASK/ from a machine-size claims sweep, one per heterogeneity:
#   docs/results/make-claims.sh TASK SWEEPDIR [OUTDIR]   (from the repository root; TASK: wordnet or fortunes)
# SWEEPDIR is the sweep of jobs/sweeps/paper-claims-TASK.toml (jobs/spry-sweep run-local ... -d SWEEPDIR); OUTDIR
# defaults to docs/results/claims-TASK. Writes OUTDIR/alpha-A.html (the full report), OUTDIR/alpha-A.md (headline
# claims table, methods table) and OUTDIR/alpha-A-curves.png for A in 0.1 and 1.0, and OUTDIR/headline.md (both
# alphas side by side). Only complete runs enter (an unfinished sweep gives an interim report that says how many
# runs it has).
set -euo pipefail
task=${1:?usage: make-claims.sh TASK SWEEPDIR [OUTDIR]}
sweep=${2:?usage: make-claims.sh TASK SWEEPDIR [OUTDIR]}
case $task in
  wordnet) name=WordNet ;;
  fortunes) name=fortunes ;;
  *) echo "make-claims.sh: TASK = '$task' is not supported (allowed: wordnet, fortunes)" >&2; exit 2 ;;
esac
out=${3:-docs/results/claims-$task}
mkdir -p "$out"
for a in 0.1 1.0; do
  mapfile -t runs < <(jobs/spry-sweep files "$sweep" fl.alpha=$a --complete)
  if [ ${#runs[@]} -eq 0 ]; then
    echo "make-claims.sh: no complete run at fl.alpha=$a in $sweep" >&2
    continue
  fi
  analysis/spry-analyze report "${runs[@]}" -o "$out/alpha-$a.html" --markdown "$out/alpha-$a.md" \
    --title "The seed paper's claims on $name, Dirichlet alpha = $a (40 rounds, machine size)"
done
# both alphas side by side: the claims table and the methods' accuracies (docs/results/claims-TASK/README.md)
docs/results/claims_headline.py "$sweep" > "$out/headline.md.tmp"
mv "$out/headline.md.tmp" "$out/headline.md"
