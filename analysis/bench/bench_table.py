#!/usr/bin/python3
"""Benchmark: 100 run files of 1,000 rounds into the tidy table (spry-analyze table), streaming.

How the files are made: ONE run of 1,000 rounds by spry itself (the SMALL federation of tests/analysis/alib.py,
log.gradients = none), then copied 99 times with h5py, each copy's `seed` attribute and the `seed` line of its
config text changed (so each is a distinct run with a `seed` column; the data are the first run's). Copies are
generated in a scratch directory (default: a temporary one).

Measured: wall seconds of write_csv over the 100 files (rows, columns), and the process's peak resident memory
(ru_maxrss) after tabulating 10 files vs 100 files in separate processes: streaming means the two are about the
same (memory bounded by one run, not by the sweep).

usage: bench_table.py SPRY [--runs 100] [--rounds 1000] [--dir SCRATCH]
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "analysis"))
import alib  # noqa: E402
from spry_analysis import table  # noqa: E402


def make(spry, scratch, runs, rounds):
    first = os.path.join(scratch, "p000", "run.h5")
    os.makedirs(os.path.dirname(first), exist_ok=True)
    t0 = time.time()
    alib.spry(spry, first, "log.gradients=none", "run.rounds=%d" % rounds, "run.eval_every=50",
              "fl.clients_per_round=4")
    t_spry = time.time() - t0
    for i in range(1, runs):
        p = os.path.join(scratch, "p%03d" % i, "run.h5")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        shutil.copy(first, p)
        with h5py.File(p, "r+") as f:
            f.attrs["seed"] = np.int64(1 + i)
            cfg = f.attrs["config"]
            cfg = cfg.decode() if isinstance(cfg, bytes) else cfg
            f.attrs["config"] = re.sub(r"(?m)^seed(\s*)= \d+(\s*)", lambda m: "seed%s= %d%s" % (
                m.group(1), 1 + i, m.group(2)), cfg, count=1)
    return t_spry


def child(paths, out):
    t0 = time.time()
    n, rows, cols = table.write_csv(paths, out)
    dt = time.time() - t0
    return {"runs": n, "rows": rows, "columns": len(cols), "seconds": dt,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spry")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--dir")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[1:], a.child[0])))
        return
    scratch = a.dir or tempfile.mkdtemp(prefix="spry-bench-table-")
    t_spry = make(a.spry, scratch, a.runs, a.rounds)
    paths = table.find_runs([scratch])
    res = {}
    for n in (10, a.runs):
        out = os.path.join(scratch, "table%d.csv" % n)
        p = subprocess.run([sys.executable, __file__, a.spry, "--child", out] + paths[:n], capture_output=True,
                           text=True, check=True)
        res[n] = json.loads(p.stdout)
    size = sum(os.path.getsize(p) for p in paths)
    print("made %d run files of %d rounds (%.1f MiB; spry ran the first in %.1f s, the rest are h5py copies with "
          "changed seeds)" % (a.runs, a.rounds, size / 2 ** 20, t_spry))
    for n, r in res.items():
        print("table of %3d runs: %d rows x %d columns in %.2f s (%.0f rows/s); peak RSS %.0f MiB" % (
            r["runs"], r["rows"], r["columns"], r["seconds"], r["rows"] / r["seconds"], r["maxrss_mib"]))
    if not a.dir:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
