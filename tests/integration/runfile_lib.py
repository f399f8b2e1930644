"""Shared helpers of the run-file tests (runfile_*.py): run spry, read run files, compare them.

Every helper fails loudly (AssertionError / RuntimeError with the command and its output), so a driver that
uses them cannot pass by accident.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import spry_testing  # noqa: E402  (it also puts analysis/ on the path)
# the project's run-file reader: the drivers read run files and checkpoints through it (docs/analysis.md)
from spry_analysis.runfile import RunFile, RunFileError, checkpoint_attrs, compare, same_value  # noqa: E402,F401

# `spry run` on a tiny federation: 2 layers, d = 2176, 8 clients, 5 per round; a round takes ~10 ms.
TINY = ["run", "--set", "data.dataset=synthetic", "--set", "model.base=random", "--set", "lora.rank=8",
        "--set", "lora.alpha=16", "--set", "method.head_shared=false", "--set", "model.n_layer=2", "--set", "model.n_embd=32", "--set", "model.n_head=2",
        "--set", "model.vocab_size=64", "--set", "data.seq_len=16", "--set", "model.n_ctx=16",
        "--set", "data.n_examples=600", "--set", "fl.clients=8", "--set", "fl.clients_per_round=5",
        "--set", "run.rounds=6", "--set", "run.eval_every=2"]


def sets(**kv):
    """--set options from keyword arguments: sets(log__gradients='oracle') -> ['--set', 'log.gradients=oracle']."""
    out = []
    for k, v in kv.items():
        out += ["--set", "%s=%s" % (k.replace("__", "."), v)]
    return out


def fingerprint(out):
    """(weights, metrics) hashes of spry run's `fingerprint:` line (tests/spry_testing.py); AssertionError with the
    output's end when it printed none."""
    fp = spry_testing.fingerprint(out)
    assert fp is not None, "no fingerprint line in:\n" + out[-2000:]
    return fp


class Spry:
    """The spry binary and the MPI launcher given on the command line: DRIVER SPRY MPIEXEC NUMPROC_FLAG."""

    def __init__(self, argv):
        if len(argv) < 4:
            sys.exit("usage: %s SPRY MPIEXEC NUMPROC_FLAG" % argv[0])
        self.spry, self.mpiexec, self.npflag = argv[1], argv[2], argv[3]
        self.env = dict(os.environ, OPENBLAS_NUM_THREADS="1")

    def cmd(self, args, ranks=1):
        if ranks == 1:
            return [self.spry] + list(args)
        return [self.mpiexec, self.npflag, str(ranks), self.spry] + list(args)

    def run(self, args, ranks=1, expect=0, timeout=300):
        """Run spry to completion; check its exit status; return (stdout, stderr)."""
        p = subprocess.run(self.cmd(args, ranks), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=self.env, timeout=timeout)
        if expect is not None and p.returncode != expect:
            raise AssertionError("%s\nexited %d, expected %d\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(self.cmd(args, ranks)), p.returncode, expect, p.stdout[-4000:], p.stderr[-4000:]))
        return p.stdout, p.stderr

    def start(self, args, ranks=1):
        """Start spry in the background (its own process group, so a signal reaches every process of it)."""
        return subprocess.Popen(self.cmd(args, ranks), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, start_new_session=True)


def children(pid):
    """PIDs of the direct children of pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def kill9(proc):
    """kill -9 a run started by Spry.start: the ranks first (mpirun puts each rank in its own process group, so
    killing mpirun alone would leave them running on and writing), then the launcher; wait until all are gone."""
    ranks = children(proc.pid) if os.path.basename(proc.args[0]).startswith("mpi") else []
    for pid in ranks:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while any(os.path.exists("/proc/%d" % pid) and open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "Z"
              for pid in ranks):
        assert time.time() - t0 < 10, "ranks %s survive kill -9" % ranks
        time.sleep(0.01)


def rounds_done(path):
    """The file's finished rounds (the reading rule), through the project's reader (analysis/spry_analysis)."""
    with RunFile(path) as rf:
        return rf.rounds_done


def wait_for_rounds(path, n, proc, timeout=120):
    """Poll the run file until it holds at least n finished rounds (reading it while it is written)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError("spry ended (status %s) before round %d:\n%s" % (proc.returncode, n, proc.stderr.read()))
        try:
            if os.path.exists(path) and rounds_done(path) >= n:
                return
        except (OSError, KeyError, RunFileError):
            pass  # the file is being created
        time.sleep(0.01)
    raise AssertionError("%s did not reach %d rounds in %d s" % (path, n, timeout))


def checked_partition(rf):
    """The /partition datasets of an open RunFile ({name: array}, e.g. "label_counts"; attributes under "attrs"),
    after asserting the identities docs/runfile.md states between them: realised_proportions = label_counts /
    n_train (exact: the same double division), proportion_distance = (1/2) sum_c |realised - proportions| (1e-12:
    summation order) and, for fl.partition = sampled, proportion_distance <= C / (4 n_train) + 1e-12 (the
    largest-remainder bound, docs/federation.md). The one check of these identities; callers add their own."""
    names = ("label_counts", "test_label_counts", "n_train", "proportions", "realised_proportions",
             "proportion_distance", "pool_label_counts")
    g = {k: rf.read("/partition/" + k) for k in names}
    g["attrs"] = rf.attrs_of("/partition")
    cnt, ntr, pi, ph, dist = (g[k] for k in ("label_counts", "n_train", "proportions", "realised_proportions",
                                             "proportion_distance"))
    assert np.array_equal(ph, cnt / ntr[:, None]), "%s: realised_proportions != label_counts / n_train" % rf.path
    tv = 0.5 * np.abs(ph - pi).sum(axis=1)
    assert np.allclose(dist, tv, rtol=1e-12, atol=1e-12), "%s: distance %s, recomputed %s" % (rf.path, dist, tv)
    if g["attrs"]["partition"] == "sampled":
        bound = cnt.shape[1] / (4.0 * ntr)
        assert (dist <= bound + 1e-12).all(), "%s: distance %s above C/(4 n_train) %s" % (rf.path, dist, bound)
    return g


def contents(path):
    """Every dataset (rows past rounds_done dropped) and every attribute, minus the nondeterministic items:
    {'/path': array, '/path@attr': value} (RunFile.contents of the project's reader)."""
    with RunFile(path) as rf:
        return rf.contents()


def assert_same_contents(pa, pb, ignore=()):
    """The two run files hold bitwise the same data and attributes (apart from the nondeterministic ones and
    `ignore`): the reader's compare(). Returns the number of items compared."""
    diffs, n = compare(pa, pb, ignore)
    assert not diffs, "%s vs %s: %d items differ:\n  %s" % (pa, pb, len(diffs), "\n  ".join(diffs[:40]))
    return n
