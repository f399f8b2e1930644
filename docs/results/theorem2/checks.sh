#!/usr/bin/env bash
# The per-check verdicts of docs/results/theorem2/README.md: each `spry-analyze theory` verb on the subset of the
# theorem2 sweep its statement is about (points selected by their axes in the sweep's manifest.jsonl).
#   docs/results/theorem2/checks.sh /work/runs/sweeps/theorem2 [OUTDIR]   (from the repository root)
# Writes OUTDIR/verdicts/NAME.txt (the verb's full output, then its exit status) and OUTDIR/NAME.png.
set -uo pipefail
sweep=${1:?usage: checks.sh SWEEPDIR [OUTDIR]}
out=${2:-docs/results/theorem2}
. docs/results/checks_lib.sh  # sel (points by axis values) and check (one verdict)
h="fl.partition=homogeneous"
s="fl.partition=sampled"
# Theorem 2 (E8) at the theorem's step eta_K = 1/(4 L^ (1+rho_K)), L^ = 40 from the pilot: K = 1, 4, 16
check E8-theorem-step-homogeneous E8 $(sel $h method.K=1 method.server_lr=4.8e-05) \
  $(sel $h method.K=4 method.server_lr=0.00019) $(sel $h method.K=16 method.server_lr=0.00069)
check E8-theorem-step-sampled E8 $(sel $s method.K=1 method.server_lr=4.8e-05) \
  $(sel $s method.K=4 method.server_lr=0.00019) $(sel $s method.K=16 method.server_lr=0.00069)
# K = 16 at eta = 0.002 (3x the pilot step)
check E8-eta0.002-homogeneous E8 $(sel $h method.server_lr=0.002)
check E8-eta0.002-sampled E8 $(sel $s method.server_lr=0.002)
# K = 16 at eta = 0.02: too large, the theorem must not apply
check E8-too-large-homogeneous E8 $(sel $h method.server_lr=0.02)
check E8-too-large-sampled E8 $(sel $s method.server_lr=0.02)
# the estimator facts on the same per-iteration runs (THEORY 4): E1 unbiasedness, E2 variance law by (K, d)
check E1 E1 $(sel)
check E2 E2 $(sel)
