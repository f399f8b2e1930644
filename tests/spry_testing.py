"""Helpers for the Python test drivers: run the spry command (optionally under mpirun) and parse its output.

Every driver gets the spry binary and the mpiexec command line from CTest (see the CMakeLists.txt files), so
the tests run the build under test, never an installed copy.
"""
import os
import re
import subprocess
import sys

# The project's run-file reader (analysis/spry_analysis/runfile.py, docs/analysis.md): drivers that read run files
# import it from here on as `from spry_analysis.runfile import RunFile` (it needs h5py and numpy, so it is not
# imported by this module).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "analysis"))

# A model and data small enough that a federated run takes well under a second: the built-in synthetic task
# on a random backbone (the defaults are the WordNet experiment on the project's base model).
TINY = [
    "data.dataset=synthetic", "model.base=random", "model.n_layer=2", "model.n_embd=32", "model.n_head=2",
    "model.vocab_size=64", "model.n_ctx=16", "lora.rank=8", "lora.alpha=16", "method.head_shared=false",
    "data.seq_len=16", "data.n_examples=800", "fl.clients=8", "fl.clients_per_round=4",
]


def mpi_env():
    """Environment for mpirun on these machines (root, oversubscription, shared memory transport)."""
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1", "OPENBLAS_NUM_THREADS": "1"})
    env.setdefault("OMPI_MCA_pml", "ob1")
    env.setdefault("OMPI_MCA_btl", "self,vader")
    return env


class Spry:
    """spry = Spry(binary, mpiexec, numproc_flag); spry.run(P, args) -> CompletedProcess."""

    def __init__(self, binary, mpiexec=None, numproc_flag="-n"):
        self.binary, self.mpiexec, self.numproc_flag = binary, mpiexec, numproc_flag

    def run(self, ranks, args, timeout=120, cwd=None):
        cmd = [self.binary] + list(args)
        if ranks is not None:
            cmd = [self.mpiexec, self.numproc_flag, str(ranks)] + cmd
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(), cwd=cwd)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("spry hung (no exit within %d s): %s" % (timeout, " ".join(cmd))) from e


def sets(pairs):
    """['a.b=1', ...] -> ['--set', 'a.b=1', ...]"""
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


def fingerprint(stdout):
    m = re.search(r"fingerprint: weights ([0-9a-f]{16}) metrics ([0-9a-f]{16})", stdout)
    return m.groups() if m else None


def heldout_losses(stdout):
    m = re.search(r"held-out loss: initial ([-0-9.naif]+) final ([-0-9.naif]+)", stdout)
    return (float(m.group(1)), float(m.group(2))) if m else None


def from_argv():
    """Spry built from the driver's command line: BINARY [MPIEXEC NUMPROC_FLAG]."""
    binary = sys.argv[1]
    mpiexec = sys.argv[2] if len(sys.argv) > 2 else None
    flag = sys.argv[3] if len(sys.argv) > 3 else "-n"
    return Spry(binary, mpiexec, flag)


class Checks:
    """Collects failures so a driver reports all of them, then exits non-zero if any."""

    def __init__(self, name):
        self.name, self.failures, self.count = name, [], 0

    def check(self, cond, msg):
        self.count += 1
        if not cond:
            self.failures.append(msg)
            print("FAIL " + msg, flush=True)

    def finish(self):
        if self.failures:
            print("%s: %d of %d checks FAILED" % (self.name, len(self.failures), self.count))
            sys.exit(1)
        print("%s: all %d checks passed" % (self.name, self.count))
