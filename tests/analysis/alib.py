"""Shared helpers of the analysis tests: the spry binary from the command line, tiny runs, the analysis CLI.

Every helper fails loudly (AssertionError with the command and its output)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ANALYSIS = os.path.join(HERE, "..", "..", "analysis")
CLI = os.path.join(ANALYSIS, "spry-analyze")
sys.path.insert(0, ANALYSIS)

# A federation small enough that 100 oracle rounds take a few seconds: 2 layers of width 16, LoRA rank 1 on q, v
# (blocks of 64 weights: layer.0, layer.1, head), 8 clients, synthetic 4-class task.
SMALL = ["data.dataset=synthetic", "model.base=random", "lora.rank=1", "lora.alpha=2", "method.head_shared=false",
         "model.n_layer=2", "model.n_embd=16", "model.n_head=2", "model.vocab_size=64", "data.seq_len=16",
         "model.n_ctx=16", "data.n_examples=600", "fl.clients=8", "run.quiet=true"]
ITER = ["method.comm=iteration", "method.local_steps=1"]


def env():
    e = dict(os.environ)
    e.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"})
    return e


def spry(binary, out, *settings, extra=()):
    """spry run with SMALL + settings (key=value) to `out`; returns stdout."""
    cmd = [binary, "run"]
    for s in list(SMALL) + list(settings):
        cmd += ["--set", s]
    cmd += ["--output", out, "--force"] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert p.returncode == 0, "%s\nexited %d\n%s\n%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


def analyze(*args, expect=0, env=None):
    """Run analysis/spry-analyze with /usr/bin/python3; check the exit status; return stdout + stderr."""
    cmd = ["/usr/bin/python3", CLI] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, **env) if env else None)
    if expect is not None and p.returncode != expect:
        raise AssertionError("%s\nexited %d, expected %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(cmd), p.returncode, expect, p.stdout[-6000:], p.stderr[-3000:]))
    return p.stdout + p.stderr


def v2_landed(path):
    """Whether a run file written by this build is format v2 (issue 9's fields)."""
    from spry_analysis.runfile import RunFile
    with RunFile(path) as rf:
        return rf.version >= 2


def accepts(binary, setting):
    """Whether this build's configuration accepts `key=value` (e.g. fl.partition=homogeneous, issue 9)."""
    p = subprocess.run([binary, "config", "--set", setting], capture_output=True, text=True, env=env(), timeout=60)
    return p.returncode == 0
