"""Tangents regenerated outside C, from the text of docs/runfile.md "Regenerating tangents" alone: a numpy
Philox4x32-10 with the documented key/counter layout, Box-Muller in double with Python's math (glibc) functions,
the Rademacher bit, and the documented float32 accumulation of g_hat = (1/K) sum_k j_k v_k. For per-iteration
runs at log.gradients = dense (Gaussian, K = 3; Rademacher, K = 2; TINY, 2 rounds), every client's rebuilt estimate
must equal /slots/estimate BITWISE (tolerance 0: the doc claims exactness; a last-bit libm difference would show
here as a failure to investigate, not noise).

Deliberately raw: the file is read with h5py from the item names docs/runfile.md gives, NOT through the project's
reader or its tangent reference (analysis/spry_analysis/{runfile,tangents}.py): the test checks that the docs' own
text suffices to rebuild the estimates (the reader-based rebuild is tests/analysis/analysis_tangents.py).

usage: runfile_tangents.py SPRY MPIEXEC NUMPROC_FLAG
"""
import math
import os
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L


M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 arrays holding 32-bit values."""
    c0, c1, c2, c3 = (np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3))
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(MASK)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(MASK)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + np.uint64(W0)) & np.uint64(MASK)
        k1 = (k1 + np.uint64(W1)) & np.uint64(MASK)
    return c0, c1, c2, c3


def tangent(seed, rnd, client, step, k, first, n, kind="gaussian", purpose=1):
    """Elements first .. first+n-1 of the stream (seed, purpose, rnd, client, step, k), float32."""
    blocks = np.arange(first // 4, (first + n - 1) // 4 + 1, dtype=np.uint64)
    w = philox(blocks, np.full_like(blocks, (k << 8) | purpose), np.full_like(blocks, client),
               np.full_like(blocks, rnd), seed, step)
    if kind == "gaussian":
        out = np.empty((len(blocks), 4), dtype=np.float32)
        for a, b, j in ((0, 1, 0), (2, 3, 2)):
            u = (w[a].astype(np.float64) + 0.5) * (1.0 / 4294967296.0)
            v = (w[b].astype(np.float64) + 0.5) * (1.0 / 4294967296.0)
            r = np.array([math.sqrt(-2.0 * math.log(x)) for x in u])
            t = 6.283185307179586476925 * v
            out[:, j] = (r * np.array([math.cos(x) for x in t])).astype(np.float32)
            out[:, j + 1] = (r * np.array([math.sin(x) for x in t])).astype(np.float32)
    else:
        out = np.stack([np.where((x >> np.uint64(31)) == 1, 1.0, -1.0) for x in w], axis=1).astype(np.float32)
    flat = out.reshape(-1)
    return flat[first % 4: first % 4 + n]


def rebuild(path, kind):
    """Number of slots whose rebuilt estimate differs from /slots/estimate."""
    with h5py.File(path, "r") as f:
        seed, d = int(f.attrs["seed"]), int(f.attrs["d"])
        blocks, info, assigned = f["/model/blocks"][()], f["/slots/info"][()], f["/slots/assigned"][()]
        scalars, est, rounds = f["/slots/scalars"][()], f["/slots/estimate"][()], int(f.attrs["rounds_done"])
    bad = 0
    for t in range(rounds):
        for j in range(info.shape[1]):
            client, K = int(info[t, j]["client"]), int(info[t, j]["K"])
            g = np.zeros(d, dtype=np.float32)
            inv_K = np.float32(1.0) / np.float32(K)
            for l, b in enumerate(blocks):
                if not assigned[t, j, l]:
                    continue
                off, size = int(b["offset"]), int(b["size"])
                for k in range(K):
                    g[off:off + size] += np.float32(scalars[t, j, 0, k] * inv_K) * tangent(seed, t, client, 0, k, off,
                                                                                          size, kind)
            if not np.array_equal(g.view(np.uint32), est[t, j].view(np.uint32)):
                bad += 1
                print("  %s round %d slot %d client %d: differs, max abs %.3g" % (kind, t, j, client,
                                                                                np.abs(g - est[t, j]).max()))
    return bad, rounds * info.shape[1]


def main():
    spry = L.Spry(sys.argv)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for kind, K in (("gaussian", 3), ("rademacher", 2)):
            path = os.path.join(tmp, kind + ".h5")
            spry.run(L.TINY + L.sets(run__rounds=2, method__comm="iteration", method__local_steps=1, method__K=K,
                                     method__tangent=kind, log__gradients="dense") + ["-o", path])
            bad, n = rebuild(path, kind)
            failed += bad
            print("  %-10s K = %d: %d of %d client estimates rebuilt bitwise in numpy" % (kind, K, n - bad, n))
    assert failed == 0, "%d estimates differ" % failed
    print("runfile_tangents: all checks passed")


if __name__ == "__main__":
    main()
