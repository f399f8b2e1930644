"""Python reference of spry's tangent generator (src/core/rng.c, include/spry/rng.h) and of the forward-gradient
rebuild (spry_forward_gradient, src/nn/gpt.c), so a `scalars`-level run file (small) yields every client's
estimate g_hat_m = (1/K) sum_k j_k v_k.

Generator (bit for bit as the C code):
- Philox4x32-10 with key = (seed, step) and counter = (i >> 2, (k << 8) | purpose, client, round); element i of
  a stream is lane i & 3 of block i >> 2.
- Gaussian: Box-Muller in double on word pairs (w0, w1) -> lanes 0, 1 and (w2, w3) -> lanes 2, 3:
  u = (a + 0.5) / 2^32, r = sqrt(-2 log u), t = 2 pi v, lanes = float32(r cos t), float32(r sin t).
- Rademacher: +1 when the top bit of the lane's word is set, else -1.
- Tangent k of step s of client m in round t: purpose TANGENT = 1, key.k = k (FwdLLM: /slots/k_index).
- Rebuild: g = 0 (float32); for each active block in order, for k = 0..K-1: g[block] += (j_k * (1/K)) * v_k
  in float32 (scale = float32(j_k * float32(1/K)); product and sum rounded to float32; no fused multiply-add:
  the C code is built with -std=c17, where GCC does not contract).

Bitwise: numpy's float64 log/cos/sin may come from SIMD kernels (SVML) that differ from glibc's by an ulp; a
float64 result that close to a float32 rounding boundary is recomputed with Python's math module (glibc, the
C code's libm), so the float32 values equal the C code's.
"""
import math

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)
TANGENT = 1
TWO_PI = 6.283185307179586476925
INV_2_32 = 1.0 / 4294967296.0


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on counter arrays (uint32-valued, any shape) and a scalar key; returns 4 uint32 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & MASK32 for c in (c0, c1, c2, c3))
    c1, c2, c3 = (np.broadcast_to(c, c0.shape) for c in (c1, c2, c3))
    k0, k1 = int(k0) & 0xFFFFFFFF, int(k1) & 0xFFFFFFFF
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + W0) & 0xFFFFFFFF
        k1 = (k1 + W1) & 0xFFFFFFFF
    return [c.astype(np.uint32) for c in (c0, c1, c2, c3)]


def _box_muller(a, b):
    u = (a.astype(np.float64) + 0.5) * INV_2_32
    v = (b.astype(np.float64) + 0.5) * INV_2_32
    r = np.sqrt(-2.0 * np.log(u))
    t = TWO_PI * v
    x0, x1 = r * np.cos(t), r * np.sin(t)
    z0, z1 = x0.astype(np.float32), x1.astype(np.float32)
    # values within a few double ulps of a float32 rounding boundary: redo with libm (what the C code calls)
    for x, z, fn in ((x0, z0, math.cos), (x1, z1, math.sin)):
        ulp32 = np.spacing(np.abs(z).astype(np.float32)).astype(np.float64)
        frac = np.abs(x - z.astype(np.float64)) / np.maximum(ulp32, 1e-300)
        risky = np.nonzero(np.abs(frac - 0.5) < 1e-6)[0]
        for i in risky:
            uu = (float(a.flat[i]) + 0.5) * INV_2_32
            vv = (float(b.flat[i]) + 0.5) * INV_2_32
            z.flat[i] = np.float32(math.sqrt(-2.0 * math.log(uu)) * fn(TWO_PI * vv))
    return z0, z1


def stream(seed, purpose, round_, client, step, k, first, n, kind="gaussian"):
    """Elements first .. first+n-1 of the stream keyed (seed, purpose, round, client, step, k): float32[n]."""
    if n <= 0:
        return np.zeros(0, np.float32)
    if not (k < (1 << 24) and purpose < 256):
        raise ValueError("rng key out of range: k=%d purpose=%d (k < 2^24, purpose < 256)" % (k, purpose))
    b0, b1 = first >> 2, (first + n - 1) >> 2
    blk = np.arange(b0, b1 + 1, dtype=np.uint64)
    w = philox4x32_10(blk, (int(k) << 8) | int(purpose), int(client), int(round_), seed, step)
    vals = np.empty((blk.size, 4), np.float32)
    if kind == "gaussian":
        vals[:, 0], vals[:, 1] = _box_muller(w[0], w[1])
        vals[:, 2], vals[:, 3] = _box_muller(w[2], w[3])
    elif kind == "rademacher":
        for j in range(4):
            vals[:, j] = np.where(w[j] >> np.uint32(31), np.float32(1.0), np.float32(-1.0))
    else:
        raise ValueError("tangent kind %r (gaussian or rademacher)" % kind)
    off = first - (b0 << 2)
    return vals.reshape(-1)[off: off + n]


def tangent(seed, round_, client, step, k, blocks, active, d, kind="gaussian"):
    """Tangent v_k over w (float32[d]): the stream on the active blocks, zero elsewhere."""
    v = np.zeros(d, np.float32)
    for (_, off, size), a in zip(blocks, active):
        if a:
            v[off: off + size] = stream(seed, TANGENT, round_, client, step, k, off, size, kind)
    return v


def forward_gradient(seed, round_, client, step, scalars, blocks, active, d, kind="gaussian", k_list=None):
    """g_hat = (1/K) sum_k j_k v_k over the active blocks, float32[d], summed as spry_forward_gradient does.
    scalars: the K scalars of the step (float32); k_list: stream indices (FwdLLM), default 0..K-1."""
    scalars = np.asarray(scalars, np.float32)
    K = scalars.size
    ks = list(range(K)) if k_list is None else [int(x) for x in k_list]
    inv_K = np.float32(1.0) / np.float32(K)
    g = np.zeros(d, np.float32)
    for (_, off, size), a in zip(blocks, active):
        if not a:
            continue
        seg = g[off: off + size]
        for j in range(K):
            scale = np.float32(scalars[j] * inv_K)
            seg += scale * stream(seed, TANGENT, round_, client, step, ks[j], off, size, kind)
    return g


def client_estimates(rf, t, step=0):
    """Every slot's forward gradient of round t, local step `step`, rebuilt from /slots/scalars: float32[M, d].
    FwdLLM files: the scalars of the step's K (/slots/step_K) with their stream indices (/slots/k_index)."""
    kind = rf.config.get("method.tangent", "gaussian")
    blocks = rf.blocks()
    info = rf.read("/slots/info", rows=[t])[0]
    assigned = rf.read("/slots/assigned", rows=[t])[0].astype(bool)
    sc = rf.read("/slots/scalars", rows=[t])[0]
    kidx = rf.read("/slots/k_index", rows=[t])[0] if rf.has("/slots/k_index") else None
    stepK = rf.read("/slots/step_K", rows=[t])[0] if rf.has("/slots/step_K") else None
    out = np.zeros((rf.M, rf.d), np.float32)
    for j in range(rf.M):
        K = int(stepK[j, step]) if stepK is not None else sc.shape[-1]
        kl = kidx[j, step, :K] if kidx is not None else None
        out[j] = forward_gradient(rf.seed, t, int(info["client"][j]), step, sc[j, step, :K], blocks, assigned[j],
                                  rf.d, kind, kl)
    return out
