"""Oracle test: every statistic the run file logs at log.gradients = oracle is recomputed in numpy (float64) from
the dense datasets, following the definitions of docs/runfile.md "Oracle": g = sum p_m g_m, the squared bias per
block, Z^2, ||g_hat - g||^2, cos(g_hat, g), V_l. Also: the aggregate is the per-block weighted mean of the client
estimates; for a backprop client (FedSGD with Spry's split) the estimate IS the true gradient on its blocks; the
oracle never changes training (same final weights as log.gradients = none); Theorem 1.3 (sum ||b^l||^2 <= Z^2)
and Theorem 1.2 (no split => zero bias) hold on the logged data.

Tolerances: statistics are sums of squares of float32 data accumulated in double in both places, in possibly
different orders: relative 1e-9 (plus 1e-18 absolute for values that are zero). Float32 vectors rebuilt from
float32 inputs in double: relative 1e-6 of the vector's largest entry; per-epoch aggregates (server: mean of
float32 client weights minus w_t) against the mean of the logged deltas: 4e-7 absolute (a few float32 ulps of
weights below 1 in magnitude).

usage: runfile_oracle.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L


def close(a, b, rtol=1e-9, atol=1e-18, what=""):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isclose(a, b, rtol=rtol, atol=atol) | (np.isnan(a) & np.isnan(b))
    assert ok.all(), "%s: logged %s, recomputed %s" % (what, a[~ok][:5], b[~ok][:5])


def bias_z2(G, w, assigned_t, blocks):
    """g = sum p_m G_m, ||b^l||^2 per block and Z^2 (docs/runfile.md "Oracle") for one round's gradients G [M, d]."""
    p = w / w.sum()
    g = (p[:, None] * G).sum(axis=0)
    z2, bias = 0.0, []
    for l, b in enumerate(blocks):
        sl = slice(b["offset"], b["offset"] + b["size"])
        Ml = np.where(assigned_t[:, l])[0]
        q = w[Ml] / w[Ml].sum()
        mean = (q[:, None] * G[Ml, sl]).sum(axis=0)
        bias.append(((mean - g[sl]) ** 2).sum())
        z2 += (q * ((G[Ml, sl] - g[sl]) ** 2).sum(axis=1)).sum()
    return g, np.array(bias), z2


def check(path, iteration):
    with L.RunFile(path) as f:  # the project's reader: rows < rounds_done only
        R = f.rounds_done
        blocks = f.read("/model/blocks")
        info, assigned = f.read("/slots/info"), f.read("/slots/assigned").astype(bool)
        G = f.read("/slots/local_gradient").astype(float)         # [R, M, d] full local gradients at w_t
        Gb = f.read("/slots/batch_gradient").astype(float)        # [R, M, d] batch-path gradients
        mbv, res = f.read("/slots/minibatch_variance"), f.read("/slots/residual_sq")
        est, agg = f.read("/slots/estimate").astype(float), f.read("/rounds/aggregate").astype(float)
        g_log, gb_log = f.read("/rounds/true_gradient").astype(float), f.read("/rounds/batch_gradient").astype(float)
        cls = f.read("/rounds/class_gradients").astype(float)    # [R, C, d]
        met = f.read("/rounds/metrics")
        bias_log, bbias_log = f.read("/rounds/bias_sq"), f.read("/rounds/batch_bias_sq")
        var_log = f.read("/rounds/class_variance")
        lc = f.read("/partition/label_counts")
        # the train pool = every client's train + local test examples (the class gradients run over all of them)
        counts = lc.sum(axis=0) + f.read("/partition/test_label_counts").sum(axis=0)
        pihat = lc / lc.sum(axis=1, keepdims=True)                # realised train label proportions [N, C]
        for t in range(R):
            w = info["weight"][t]
            g, bias, z2 = bias_z2(G[t], w, assigned[t], blocks)
            gb, bbias, bz2 = bias_z2(Gb[t], w, assigned[t], blocks)
            close(g_log[t], g, rtol=0, atol=1e-6 * np.abs(g).max(), what="round %d g" % t)
            close(gb_log[t], gb, rtol=0, atol=1e-6 * np.abs(gb).max(), what="round %d batch g" % t)
            close(bias_log[t], bias, what="round %d bias" % t)
            close(bbias_log[t], bbias, what="round %d batch bias" % t)
            close(met["z2"][t], z2, what="round %d Z^2" % t)
            close(met["batch_z2"][t], bz2, what="round %d batch Z^2" % t)
            assert bias.sum() <= z2 * (1 + 1e-12), "Theorem 1.3 violated in round %d" % t
            close(met["grad_sq"][t], g @ g, what="round %d ||grad f||^2" % t)
            # the pool: grad F = sum_c (n_c/n) G_c
            share = counts / counts.sum()
            pg = (share[:, None] * cls[t]).sum(axis=0)
            close(met["pool_grad_sq"][t], pg @ pg, what="round %d ||grad F||^2" % t)
            assert np.isfinite(met["objective"][t]) and np.isfinite(met["pool_objective"][t])
            for j in range(G.shape[1]):
                mix = (pihat[info["client"][t, j]][:, None] * cls[t]).sum(axis=0)
                r = [((G[t, j, b["offset"]:b["offset"] + b["size"]] - mix[b["offset"]:b["offset"] + b["size"]]) ** 2)
                     .sum() for b in blocks]
                close(res[t, j], r, what="round %d slot %d residual" % (t, j))
            assert (mbv[t] >= 0).all() and np.isfinite(mbv[t]).all(), "minibatch variance"
            for l, b in enumerate(blocks):
                sl = slice(b["offset"], b["offset"] + b["size"])
                Ml = np.where(assigned[t, :, l])[0]
                q = w[Ml] / w[Ml].sum()
                # the aggregate is the per-block weighted mean of the estimates (iteration: estimates; epoch: deltas)
                amean = (q[:, None] * est[t, Ml, sl]).sum(axis=0)
                # (epoch: the server averages float32 weights, then subtracts w_t: a few ulps of |w| < 1 apart)
                tol = 1e-6 * max(np.abs(amean).max(), 1e-30) if iteration else 4e-7
                close(agg[t, sl], amean, rtol=0, atol=tol, what="round %d aggregate" % t)
                # V_l over the classes with examples (the train pool's class counts equal the clients' summed)
                Fc = cls[t][counts > 0][:, sl]
                V = (Fc ** 2).sum(axis=1).mean() - (Fc.mean(axis=0) ** 2).sum()
                close(var_log[t, l], V, what="round %d V_%d" % (t, l))
            if iteration:
                e2 = ((agg[t] - g) ** 2).sum()
                cos = (agg[t] @ g) / np.sqrt((agg[t] @ agg[t]) * (g @ g))
                close(met["sq_error"][t], e2, what="round %d ||g_hat - g||^2" % t)
                close(met["cosine"][t], cos, what="round %d cosine" % t)
            else:
                assert np.isnan(met["sq_error"][t]) and np.isnan(met["cosine"][t]), "epoch: sq_error must be NaN"
        if f.has("/weights/w"):  # secant from the logged weights and class gradients
            rounds, W = list(f.read("/weights/round")), f.read("/weights/w").astype(float)
            share = counts / counts.sum()
            for t in range(1, R):
                if t in rounds and t - 1 in rounds:
                    pg = [(share[:, None] * cls[u]).sum(axis=0).astype(np.float32).astype(float) for u in (t - 1, t)]
                    sec = np.linalg.norm(pg[1] - pg[0]) / np.linalg.norm(W[rounds.index(t)] - W[rounds.index(t - 1)])
                    close(met["secant"][t], sec, rtol=1e-6, what="round %d secant" % t)
            assert np.isnan(met["secant"][0])
        return R, bias_log, G, est, assigned, blocks, Gb


def main():
    spry = L.Spry(sys.argv)
    iteration = L.sets(method__comm="iteration", method__local_steps=1)
    with tempfile.TemporaryDirectory() as tmp:
        # Spry per iteration, K = 4, random assignment: all statistics incl. error and cosine
        p = os.path.join(tmp, "it.h5")
        out, _ = spry.run(L.TINY + iteration + L.sets(method__K=4, method__assignment="random",
                                                      log__gradients="oracle", log__weights_every=1) + ["-o", p])
        R, bias, *_ = check(p, True)
        assert (bias > 0).any(), "a split run under label skew should show some bias"
        none, _ = spry.run(L.TINY + iteration + L.sets(method__K=4, method__assignment="random",
                                                       log__gradients="none"))
        assert L.fingerprint(out) == L.fingerprint(none), "the oracle changed training"
        # Spry per epoch (several local steps per client)
        p = os.path.join(tmp, "ep.h5")
        out, _ = spry.run(L.TINY + L.sets(log__gradients="oracle") + ["-o", p])
        check(p, False)
        # FedSGD with Spry's split: backprop estimates are the true gradient on the client's blocks
        p = os.path.join(tmp, "sgd.h5")
        spry.run(L.TINY + L.sets(method__preset="fedsgd", method__split="spry", log__gradients="oracle") + ["-o", p])
        R, bias, G, est, assigned, blocks, Gb = check(p, True)
        for t in range(R):
            for j in range(G.shape[1]):
                for l, b in enumerate(blocks):
                    sl = slice(b["offset"], b["offset"] + b["size"])
                    if assigned[t, j, l]:
                        close(est[t, j, sl], Gb[t, j, sl], rtol=0, atol=1e-5 * np.abs(Gb[t, j, sl]).max(),
                              what="fedsgd estimate vs true gradient")
                    else:
                        assert (est[t, j, sl] == 0).all(), "an estimate is non-zero off its blocks"
        # no split (FedSGD): every block is trained by all with q = p, so the bias is zero (Theorem 1.2)
        p = os.path.join(tmp, "nosplit.h5")
        spry.run(L.TINY + L.sets(method__preset="fedsgd", log__gradients="oracle") + ["-o", p])
        R, bias, G, *_ = check(p, True)
        scale = max((G ** 2).sum(axis=2).max(), 1e-30)
        assert (bias <= 1e-10 * scale).all(), "no split, yet a bias of %g (scale %g)" % (bias.max(), scale)
    print("runfile_oracle: statistics of 4 oracle runs recomputed from the dense datasets: all match")


if __name__ == "__main__":
    main()
