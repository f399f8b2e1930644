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
   and reads a version-2 file.

usage: runfile_v2.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "runfile-v1.h5")


def fingerprint(out):
    return re.search(r"fingerprint: weights ([0-9a-f]{16}) metrics ([0-9a-f]{16})", out).groups()


def main():
    spry = L.Spry(sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        # 1. full local gradient vs an independent whole-split backprop
        p = os.path.join(tmp, "sgd.h5")
        spry.run(L.TINY + L.sets(method__preset="fedsgd", data__batch_size=128, log__gradients="oracle",
                                 run__rounds=3) + ["-o", p])
        with h5py.File(p, "r") as f:
            n = f["/partition/n_train"][()]
            assert n.max() <= 128, "a client holds %d > 128 examples: not one batch" % n.max()
            est, G = f["/slots/estimate"][()].astype(float), f["/slots/local_gradient"][()].astype(float)
            mbv = f["/slots/minibatch_variance"][()]
        err = np.abs(est - G).max(axis=2) / np.abs(G).max(axis=2)
        assert (err <= 1e-5).all(), "full local gradient vs whole-split backprop: relative error %g" % err.max()
        assert (mbv == 0).all(), "one batch per client: the minibatch variance must be exactly 0, got %g" % mbv.max()
        print("  full local gradient = whole-split backprop (max relative error %.2e over %d clients x rounds)"
              % (err.max(), err.size))
        p = os.path.join(tmp, "sgd8.h5")
        spry.run(L.TINY + L.sets(method__preset="fedsgd", log__gradients="oracle", run__rounds=3) + ["-o", p])
        with h5py.File(p, "r") as f:
            est, G = f["/slots/estimate"][()].astype(float), f["/slots/local_gradient"][()].astype(float)
            mbv = f["/slots/minibatch_variance"][()]
        assert np.abs(est - G).max() > 1e-3 * np.abs(G).max() and (mbv > 0).all(), "batches of 8 vs full split"

        # 2. personalisation
        base = L.TINY + L.sets(method__client_lr=0.01, log__gradients="none")
        p0, p3 = os.path.join(tmp, "f0.h5"), os.path.join(tmp, "f3.h5")
        out0, _ = spry.run(base + ["-o", p0])
        out3, _ = spry.run(base + L.sets(eval__personalize_epochs=3) + ["-o", p3])
        assert fingerprint(out0) == fingerprint(out3), "personalisation changed training"
        assert "personalised local accuracy (3 local epochs" in out3 and "personalised" not in out0
        with h5py.File(p0, "r") as f0, h5py.File(p3, "r") as f3:
            m0, m3, info = f0["/rounds/metrics"][()], f3["/rounds/metrics"][()], f3["/slots/info"][()]
            for k in ("eval_acc", "local_acc", "eval_loss", "train_loss"):
                assert m0[k].tobytes() == m3[k].tobytes(), "%s differs with personalisation" % k
            assert np.isnan(m0["personal_acc"]).all() and (f0["/slots/info"]["personal_count"][()] == 0).all()
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
        for path, ver in ((FIXTURE, 1), (p3, 2)):
            r = subprocess.run([spry.spry, "info", path], capture_output=True, text=True, env=spry.env)
            assert r.returncode == 0, "spry info %s exited %d: %s" % (path, r.returncode, r.stderr)
            assert "spry-run v%d" % ver in r.stdout and "final        round" in r.stdout, r.stdout
        print("  spry info reads the version-1 fixture and a version-2 file")
    print("runfile_v2: full local gradient, personalisation and v1 reading checked")


if __name__ == "__main__":
    main()
