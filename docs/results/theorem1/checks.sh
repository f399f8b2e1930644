#!/usr/bin/env bash
# The per-check verdicts of docs/results/theorem1/README.md: each `spry-analyze theory` verb on the subset of the
# theorem1 sweep its statement is about (points selected by their axes in the sweep's manifest.jsonl).
#   docs/results/theorem1/checks.sh /work/runs/sweeps/theorem1 [OUTDIR]   (from the repository root)
# Writes OUTDIR/verdicts/NAME.txt (the verb's full output, then its exit status) and OUTDIR/NAME.png.
set -uo pipefail
sweep=${1:?usage: checks.sh SWEEPDIR [OUTDIR]}
out=${2:-docs/results/theorem1}
. docs/results/checks_lib.sh  # sel (points by axis values) and check (one verdict)
base="fl.partition=sampled method.split=spry method.head_shared=false fl.clients_per_round=4"
# Theorem 1.4 (E4): bias vs alpha, round-robin and random assignment (30 runs each: 6 alphas x 5 seeds)
check E4-roundrobin E4 $(sel $base method.assignment=roundrobin)
check E4-random E4 $(sel $base method.assignment=random)
# Theorem 1.4 (E4) along s_l at alpha 0.1: M = 2, 3, 4, 6, 8 and the shared head (round-robin)
check E4-s_l E4 $(sel fl.partition=sampled fl.alpha=0.1 method.assignment=roundrobin method.split=spry)
# Theorem 1.1 (E5): homogeneous partition, both assignments
check E5-homogeneous E5 $(sel fl.partition=homogeneous)
# Theorem 1.2 with E5's criterion: no split (s_l = M), alpha 0.1
check E5-no-split E5 $(sel method.split=none)
# contrast: E5's criterion on round-robin Spry at alpha 0.01 must fail
check E5-contrast-alpha0.01 E5 $(sel $base method.assignment=roundrobin fl.alpha=0.01)
# Theorem 1.5 (E6): random assignment averages the bias out; round-robin is the contrast
check E6-random E6 $(sel $base method.assignment=random)
check E6-roundrobin E6 $(sel $base method.assignment=roundrobin)
