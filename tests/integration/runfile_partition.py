"""Partitions end to end (fl.partition, docs/federation.md "Client data"): runs at alpha = 1e-4 complete (v1
aborted at 1e-3), and the run file's /partition group agrees with itself and with `spry info`.

For each case (TINY, 2 rounds):
  - pool at alpha 1e-4; sampled (40 examples each) at alpha 1e-4 and 0.1; homogeneous (40 each);
  - /partition/realised_proportions == label_counts / n_train (exact: the same double division);
  - /partition/proportion_distance == 0.5 sum |realised - proportions| (1e-12: summation order);
    (these two and the sampled bound below: runfile_lib.checked_partition)
  - /partition/pool_label_counts == the labels of the train pool, i.e. the column sums of label_counts +
    test_label_counts for pool (every example used once), and >= every client's class count for sampled;
  - attributes `partition` and `examples_per_client` as configured;
  - sampled: every distance <= C / (4 n_train) (largest-remainder bound, partition.h) + 1e-12;
    homogeneous: every client's label counts identical and every distance exactly 0;
  - `spry info` prints the mode and the mean and max distance equal to the file's (to its 4 printed decimals).

usage: runfile_partition.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L

CASES = {
    "pool-alpha1e-4": dict(fl__alpha="1e-4"),
    "sampled-alpha1e-4": dict(fl__alpha="1e-4", fl__partition="sampled", fl__examples_per_client=40),
    "sampled-alpha0.1": dict(fl__alpha="0.1", fl__partition="sampled", fl__examples_per_client=40),
    "homogeneous": dict(fl__partition="homogeneous", fl__examples_per_client=40),
}


def check(path, mode, per, info_text):
    with L.RunFile(path) as rf:
        g = L.checked_partition(rf)  # realised = counts / n_train, distance = TV, sampled: distance bound
    ga = g["attrs"]
    assert ga["partition"] == mode, "%s: attribute partition = %r" % (path, ga["partition"])
    assert int(ga["examples_per_client"]) == per, "%s: examples_per_client attribute" % path
    counts, test_counts = g["label_counts"].astype(np.float64), g["test_label_counts"]
    dist, pool = g["proportion_distance"], g["pool_label_counts"]
    tv = 0.5 * np.abs(g["realised_proportions"] - g["proportions"]).sum(axis=1)
    C = counts.shape[1]
    assert pool.shape == (C,) and pool.dtype == np.int32
    used = counts + test_counts
    if mode == "pool":
        assert np.array_equal(used.sum(axis=0), pool), "%s: pool counts %s, dealt out %s" % (path, pool, used.sum(0))
    else:
        assert (used <= pool[None, :]).all(), "%s: a client holds more of a class than the pool has" % path
    if mode == "homogeneous":
        assert (counts == counts[0]).all() and (test_counts == test_counts[0]).all(), "%s: clients differ" % path
        assert (dist == 0).all(), "%s: homogeneous distance %s" % (path, dist)
    m = re.search(r"partition +(\w+).*total variation: mean ([0-9.]+), max ([0-9.]+)", info_text)
    assert m, "spry info printed no partition line:\n%s" % info_text
    assert m.group(1) == mode, "spry info: mode %s" % m.group(1)
    assert abs(float(m.group(2)) - tv.mean()) <= 5e-5 and abs(float(m.group(3)) - tv.max()) <= 5e-5, \
        "spry info: mean %s max %s, file %.6f %.6f" % (m.group(2), m.group(3), tv.mean(), tv.max())
    return tv.mean(), tv.max()


def main():
    spry = L.Spry(sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name, kv in CASES.items():
            path = os.path.join(tmp, name + ".h5")
            spry.run(L.TINY + L.sets(run__rounds=2, **kv) + ["-o", path])
            info = subprocess.run([spry.spry, "info", path], capture_output=True, text=True, env=spry.env)
            assert info.returncode == 0, "spry info %s exited %d: %s" % (path, info.returncode, info.stderr)
            mean, mx = check(path, kv.get("fl__partition", "pool"), kv.get("fl__examples_per_client", 0), info.stdout)
            print("  %-18s ran; realised vs drawn TV mean %.4f max %.4f; file and spry info agree" % (name, mean, mx))
    print("runfile_partition: all checks passed")


if __name__ == "__main__":
    main()
