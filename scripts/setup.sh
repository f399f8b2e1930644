#!/usr/bin/env bash
# Installs every system package spry needs on Debian 12 (as root). Idempotent: when everything is already
# installed it only runs dpkg queries and exits in well under a second.
#   scripts/setup.sh            core build + test packages (MPI, HDF5, OpenBLAS, inih, Python analysis stack)
#   scripts/setup.sh --torch    also python3-torch (the PyTorch reference peer used by tests and benchmarks)
#   scripts/setup.sh --slurm    also slurm-wlm (the Slurm tests start a throw-away cluster on loopback)
#   scripts/setup.sh --data     also the Debian text packages the datasets are built from
#   scripts/setup.sh --browser  also chromium (headless screenshots of analysis/ HTML reports in the tests)
#   scripts/setup.sh --all      everything
set -euo pipefail

core=(build-essential cmake pkg-config git
      libopenmpi-dev openmpi-bin
      libhdf5-openmpi-dev libhdf5-dev hdf5-tools
      libopenblas-dev libinih-dev
      python3 python3-h5py python3-numpy python3-scipy python3-matplotlib
      python3-pandas python3-xarray python3-h5netcdf)
torch=(python3-torch)
slurm=(slurm-wlm)
browser=(chromium)
data=(wordnet-base fortunes fortunes-min fortune-mod bible-kjv bible-kjv-text nodejs npm python3-regex)

want=("${core[@]}")
for arg in "$@"; do
  case "$arg" in
    --torch) want+=("${torch[@]}") ;;
    --slurm) want+=("${slurm[@]}") ;;
    --data)  want+=("${data[@]}") ;;
    --browser) want+=("${browser[@]}") ;;
    --all)   want+=("${torch[@]}" "${slurm[@]}" "${data[@]}" "${browser[@]}") ;;
    *) echo "setup.sh: unknown option '$arg' (allowed: --torch --slurm --data --browser --all)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# nodejs/npm may come from outside Debian (e.g. nvm); accept any working node + npm on PATH.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]:-}"
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: missing Debian packages: ${missing[*]}; run this script as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
