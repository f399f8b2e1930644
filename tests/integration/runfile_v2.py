"""Run-file v2 checks (issue 9) on the tiny federation:

1. The full local gradient is an exact mean over the client's whole train split: with FedSGD without split and
   data.batch_size above every client's train size, a client's one step is ONE reverse-mode pass over its whole
   split at w_t on all blocks, and its logged estimate must equal /slots/local_gradient (computed by the oracle
   in separate batches of its epoch-0 order and averaged in double). Tolerance: relative 1e-5 of the vector's
   largest entry (float32 sums of the same examples in different batchings). Then with batches of 8: the two
   differ (the estimate is a minibatch gradient) while /slots/minibatch_variance > 0.
2. Personalisation: eval.personalize_epochs = 3 leaves training bitwise unchanged (same fingerprint and same
   /rounds/metrics eval_acc, local_acc bits as F = 0); personal_acc is finite exactly on eval rounds and NaN
   elsewhere, equals sum personal_correct / sum personal_count of the slots, and differs from local_acc on at
   least one eval round (3 epochs of AdamW at lr 1e-2 move the local model). With F = 0 it is NaN everywhere.
3. `spry info` still reads the committed version-1 fixture (fixtures/runfile-v1.h5, written by spry at 8c9d9ad)
   and reads a version-2 file. Every number it prints from a version-2 oracle file with stored weights and
   personalisation (initial evaluation, global and personalised accuracy of the last eval round, the oracle
   summary: mean over rounds of sum_l bias_sq / ||g||^2 from the full local and the batch-path gradients, mean
   Z^2, f and ||grad f||^2 at t = 0 and at the last round, the /weights rows, the sampled partition's realised
   vs drawn distance: mean, max and its client) and the version-1 oracle summary are recomputed from the file
   (read through the project's reader, analysis/spry_analysis/runfile.py; the v1 file's batch-path items under
   their v2 names) and must equal the printed text EXACTLY at the printed precision (the sums are redone in spry's order: sequential, in
   double, so the digits cannot differ).

usage: runfile_v2.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "runfile-v1.h5")


def grab(pattern, out):
    m = re.search(pattern, out)
    assert m, "spry info printed no line matching %r:\n%s" % (pattern, out)
    return m.groups()


def seq_sq(x):
    """sum_i x_i^2 of a float32 row in double, sequentially (spry's order)."""
    return float(np.cumsum(np.asarray(x, dtype=np.float64) ** 2)[-1])


def mean_bias_ratio(bias, g2):
    acc = 0.0
    for t in range(len(g2)):
        s = 0.0
        for v in bias[t]:
            s += float(v)
        acc += s / g2[t]
    return acc / len(g2)


def check_info_v1(out, path):
    """The version-1 oracle summary (batch-path only: v1's bias_sq over v1's true_gradient)."""
    with L.RunFile(path) as rf:  # v1: /rounds/true_gradient and bias_sq are the batch-path items
        assert rf.version == 1, "%s: format v%d, expected the v1 fixture" % (path, rf.version)
        R = rf.rounds_done
        g2 = [seq_sq(g) for g in rf.read("/rounds/batch_gradient")]
        want = "%.6g" % mean_bias_ratio(rf.read("/rounds/batch_bias_sq"), g2)
    got, = grab(r"oracle +mean over %d rounds of sum_l bias_sq / \|\|g\|\|\^2: (\S+) \(version 1" % R, out)
    assert got == want, "v1 bias ratio printed %s, file gives %s" % (got, want)


def check_info_v2(out, path):
    """Every v2 number spry info prints, against the file (exact at the printed precision)."""
    with L.RunFile(path) as rf:
        R = rf.rounds_done
        m = rf.read("/rounds/metrics")
        il, ia = grab(r"initial +w_0, before round 1: held-out loss (\S+), accuracy (\S+)%", out)
        assert (il, ia) == ("%.6f" % rf.attrs["initial_eval_loss"], "%.2f" % (100 * rf.attrs["initial_eval_acc"])), \
            "initial evaluation printed %s %s" % (il, ia)
        t = int(np.where(m["evaluated"] == 1)[0][-1])
        ea, la, pa = grab(r"accuracy (\S+)%% \(round %d\); clients' local accuracy (\S+)%% \(global model\); "
                          r"personalised local accuracy (\S+)%% \(after 2 local epochs\)" % (t + 1), out)
        want = tuple("%.2f" % (100 * m[k][t]) for k in ("eval_acc", "local_acc", "personal_acc"))
        assert (ea, la, pa) == want, "accuracies printed %s, file %s" % ((ea, la, pa), want)
        rfull = mean_bias_ratio(rf.read("/rounds/bias_sq"), [float(v) for v in m["grad_sq"]])
        rb = mean_bias_ratio(rf.read("/rounds/batch_bias_sq"), [seq_sq(g) for g in rf.read("/rounds/batch_gradient")])
        zf = zb = 0.0
        for i in range(R):
            zf += float(m["z2"][i])
            zb += float(m["batch_z2"][i])
        got = grab(r"oracle +mean over %d rounds of sum_l bias_sq / \|\|g\|\|\^2: (\S+) \(full local gradients\), "
                   r"(\S+) \(batch-path gradients\); mean Z\^2: (\S+) \(full local\), (\S+) \(batch-path\)" % R, out)
        want = tuple("%.6g" % v for v in (rfull, rb, zf / R, zb / R))
        assert got == want, "oracle summary printed %s, file gives %s" % (got, want)
        got = grab(r"objective +t = 0: f\(w_0\) = (\S+), \|\|grad f\(w_0\)\|\|\^2 = (\S+); at w_t of the last round "
                   r"t = %d: f = (\S+), \|\|grad f\|\|\^2 = (\S+)\n" % (R - 1), out)
        want = tuple("%.6g" % v for v in (m["objective"][0], m["grad_sq"][0], m["objective"][-1], m["grad_sq"][-1]))
        assert got == want, "objective line printed %s, file gives %s" % (got, want)
        rows = rf.read("/weights/round")
        got, = grab(r"weights +/weights/w: %d rows \(w_t at the start of round t\) at t = ([0-9, .]+)\n" % len(rows), out)
        assert got == ", ".join(str(int(r)) for r in rows), "weights rows printed %s, file %s" % (got, rows)
        cnt, pi = rf.read("/partition/label_counts"), rf.read("/partition/proportions")
        N, C = pi.shape
        tot, worst, wm = 0.0, 0.0, 0
        for i in range(N):  # spry's order: tv per client from the counts, then the sum
            n = 0
            for c in range(C):
                n += int(cnt[i, c])
            tv = 0.0
            for c in range(C):
                tv += abs((float(cnt[i, c]) / n if n > 0 else 0.0) - float(pi[i, c]))
            tv *= 0.5
            tot += tv
            if tv > worst:
                worst, wm = tv, i
        assert np.allclose(rf.read("/partition/proportion_distance"),
                           0.5 * np.abs(cnt / cnt.sum(1, keepdims=True) - pi).sum(1))
        got = grab(r"partition +(\w+) \(fl.examples_per_client = (\d+)\); realised vs drawn train label mix, total "
                   r"variation: mean (\S+), max (\S+) \(client (\d+)\) over %d clients\n" % N, out)
        ga = rf.attrs_of("/partition")
        want = (ga["partition"], str(int(ga["examples_per_client"])), "%.4f" % (tot / N), "%.4f" % worst, str(wm))
        assert got == want, "partition line printed %s, file gives %s" % (got, want)
    return rfull, rb


def main():
    spry = L.Spry(sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        # 1. full local gradient vs an independent whole-split backprop
        p = os.path.join(tmp, "sgd.h5")
        spry.run(L.TINY + L.sets(method__preset="fedsgd", data__batch_size=128, log__gradients="oracle",
                                 run__rounds=3) + ["-o", p])
        with L.RunFile(p) as rf:
            n = rf.read("/partition/n_train")
            assert n.max() <= 128, "a client holds %d > 128 examples: not one batch" % n.max()
            est, G = rf.read("/slots/estimate").astype(float), rf.read("/slots/local_gradient").astype(float)
            mbv = rf.read("/slots/minibatch_variance")
        err = np.abs(est - G).max(axis=2) / np.abs(G).max(axis=2)
        assert (err <= 1e-5).all(), "full local gradient vs whole-split backprop: relative error %g" % err.max()
        assert (mbv == 0).all(), "one batch per client: the minibatch variance must be exactly 0, got %g" % mbv.max()
        print("  full local gradient = whole-split backprop (max relative error %.2e over %d clients x rounds)"
              % (err.max(), err.size))
        p = os.path.join(tmp, "sgd8.h5")
        spry.run(L.TINY + L.sets(method__preset="fedsgd", log__gradients="oracle", run__rounds=3) + ["-o", p])
        with L.RunFile(p) as rf:
            est, G = rf.read("/slots/estimate").astype(float), rf.read("/slots/local_gradient").astype(float)
            mbv = rf.read("/slots/minibatch_variance")
        assert np.abs(est - G).max() > 1e-3 * np.abs(G).max() and (mbv > 0).all(), "batches of 8 vs full split"

        # 2. personalisation
        base = L.TINY + L.sets(method__client_lr=0.01, log__gradients="none")
        p0, p3 = os.path.join(tmp, "f0.h5"), os.path.join(tmp, "f3.h5")
        out0, _ = spry.run(base + ["-o", p0])
        out3, _ = spry.run(base + L.sets(eval__personalize_epochs=3) + ["-o", p3])
        assert L.fingerprint(out0) == L.fingerprint(out3), "personalisation changed training"
        assert "personalised local accuracy (3 local epochs" in out3 and "personalised" not in out0
        with L.RunFile(p0) as f0, L.RunFile(p3) as f3:
            m0, m3, info = f0.read("/rounds/metrics"), f3.read("/rounds/metrics"), f3.read("/slots/info")
            for k in ("eval_acc", "local_acc", "eval_loss", "train_loss"):
                assert m0[k].tobytes() == m3[k].tobytes(), "%s differs with personalisation" % k
            assert np.isnan(m0["personal_acc"]).all() and (f0.read("/slots/info")["personal_count"] == 0).all()
            ev = m3["evaluated"] == 1
            assert np.isfinite(m3["personal_acc"][ev]).all() and np.isnan(m3["personal_acc"][~ev]).all()
            assert np.isfinite(m3["personal_loss"][ev]).all() and np.isnan(m3["personal_loss"][~ev]).all()
            assert (info["personal_count"][~ev] == 0).all() and (info["personal_count"][ev] == info["test_count"][ev]).all()
            acc = info["personal_correct"].sum(axis=1)[ev] / info["personal_count"].sum(axis=1)[ev]
            assert (acc == m3["personal_acc"][ev]).all(), "personal_acc is not sum correct / sum count"
            assert (m3["personal_acc"][ev] != m3["local_acc"][ev]).any(), "personalisation did not change accuracy"
            print("  personalisation: eval rounds %s: personal_acc %s vs local_acc (global model) %s" % (
                list(np.where(ev)[0]), np.round(m3["personal_acc"][ev], 4), np.round(m3["local_acc"][ev], 4)))

        # 3. spry info on version 1 and version 2
        po = os.path.join(tmp, "oracle.h5")
        spry.run(L.TINY + L.sets(method__client_lr=0.01, log__gradients="oracle", log__weights_every=2,
                                 eval__personalize_epochs=2, run__rounds=5, fl__partition="sampled",
                                 fl__examples_per_client=40) + ["-o", po])
        for path, ver in ((FIXTURE, 1), (p3, 2), (po, 2)):
            r = subprocess.run([spry.spry, "info", path], capture_output=True, text=True, env=spry.env)
            assert r.returncode == 0, "spry info %s exited %d: %s" % (path, r.returncode, r.stderr)
            assert "spry-run v%d" % ver in r.stdout and "final        round" in r.stdout, r.stdout
            if path == FIXTURE:
                check_info_v1(r.stdout, path)
            if path == po:
                rfull, rb = check_info_v2(r.stdout, path)
        print("  spry info reads the version-1 fixture and version-2 files; its oracle summary (bias ratio %.4g full "
              "local, %.4g batch-path), initial/personalised accuracy, objective and weights rows equal the file's"
              % (rfull, rb))
    print("runfile_v2: full local gradient, personalisation and v1 reading checked")


if __name__ == "__main__":
    main()
