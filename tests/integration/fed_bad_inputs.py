"""Bad input: each case must end every rank with a non-zero exit code (2 for a bad command line or
configuration, found up front on rank 0; 1 for a fatal error found later, which aborts the whole MPI job), a
message naming the key or file and the bad value, and no hang (each run has a 60 s limit), at P = 1 and P = 3."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from spry_testing import TINY, Checks, from_argv, sets  # noqa: E402

spry = from_argv()
checks = Checks("fed_bad_inputs")
tmp = tempfile.mkdtemp(prefix="spry-bad-")
syntax = os.path.join(tmp, "syntax.ini")
with open(syntax, "w") as f:
    f.write("[run\nrounds = 3\n")
foreign = os.path.join(tmp, "foreign.h5")
with open(foreign, "w") as f:
    f.write("this is not an HDF5 file\n")

run = lambda extra: ["run"] + sets(TINY + ["run.rounds=2", "run.quiet=true"] + extra)  # noqa: E731
# (what, argv, expected exit code, fragments the message must contain)
cases = [
    ("unknown key", run(["run.foo=1"]), 2, ["run.foo"]),
    ("unknown section", run(["bogus.x=1"]), 2, ["bogus"]),
    ("int not a number", run(["run.rounds=abc"]), 2, ["run.rounds", "abc"]),
    ("int given a fraction", run(["fl.clients=2.5"]), 2, ["fl.clients", "2.5"]),
    ("bool not a bool", run(["run.quiet=maybe"]), 2, ["run.quiet", "maybe"]),
    ("out of range", run(["run.rounds=0"]), 2, ["run.rounds", "0"]),
    ("enum not allowed", run(["method.preset=sgd++"]), 2, ["method.preset", "sgd++"]),
    ("more per round than clients", run(["fl.clients=4", "fl.clients_per_round=5"]), 2,
     ["clients_per_round", "5"]),
    ("head size not integer", run(["model.n_embd=30", "model.n_head=4"]), 2, ["n_head", "30"]),
    ("sequences longer than n_ctx", run(["data.seq_len=32"]), 2, ["seq_len", "32"]),
    ("zero perturbations", run(["method.K=0"]), 2, ["method.K", "0"]),
    ("alpha not positive", run(["fl.alpha=0"]), 2, ["fl.alpha", "0"]),
    ("sampled without examples_per_client", run(["fl.partition=sampled"]), 2,
     ["fl.partition = sampled", "fl.examples_per_client"]),
    # TINY's train pool has 160 examples per class; a one-hot client (alpha 1e-4) of 500 needs 400 of one class
    ("sampled class pool too small", run(["fl.partition=sampled", "fl.examples_per_client=500", "fl.alpha=1e-4"]), 1,
     ["fl.examples_per_client", "500", "smallest class pool"]),
    ("pool dealt out beyond the pool", run(["fl.examples_per_client=100"]), 1,
     ["fl.examples_per_client", "100", "fl.partition = sampled"]),
    ("missing config file", ["run", "--config", os.path.join(tmp, "missing.ini")], 2, ["missing.ini"]),
    ("INI syntax error", ["run", "--config", syntax], 2, ["syntax.ini", "line 1"]),
    ("missing dataset file", run(["data.dataset=" + os.path.join(tmp, "nothere.h5")]), 1, ["nothere.h5"]),
    ("foreign dataset file", run(["data.dataset=" + foreign]), 1, ["foreign.h5", "not an HDF5"]),
    ("missing base model", run(["model.base=" + os.path.join(tmp, "nobase.h5")]), 1, ["nobase.h5"]),
    ("unknown option", ["run", "--frobnicate"], 2, ["--frobnicate"]),
    ("unknown command", ["frobnicate"], 2, ["frobnicate"]),
]
for P in (1, 3):
    for what, argv, code, fragments in cases:
        r = spry.run(P, argv, timeout=60)
        out = r.stdout + r.stderr
        checks.check(r.returncode == code, "P=%d %s: exit %d, expected %d; output: %s" % (P, what, r.returncode, code,
                                                                                         out[-300:]))
        missing = [f for f in fragments if f not in out]
        checks.check(not missing, "P=%d %s: message lacks %s; output: %s" % (P, what, missing, out[-300:]))
        first = next((l for l in out.splitlines() if fragments[0] in l), "")
        print("P=%d %-30s exit %d  %s" % (P, what, r.returncode, first[:110]))
checks.finish()
