"""data.validation_fraction: a stratified share of the train split becomes the evaluation set, never given to a
client, and the test split is not used. Checks, on the tiny synthetic task (800 examples, 4 classes):
- the clients hold exactly the train split minus round(fraction * n_c) examples of each class c (from the run
  file's /partition label counts: exact integers);
- the clients' batches (log.sample_indices) draw no more distinct examples than the clients hold;
- the evaluation differs from the test-split evaluation of the same run, the run is identical at P = 1 and 2
  (fingerprints), and out-of-range values are refused naming the key.
The run files are read through the project's reader (analysis/spry_analysis/runfile.py)."""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from spry_testing import TINY, Checks, fingerprint, from_argv, heldout_losses, sets  # noqa: E402
from spry_analysis.runfile import RunFile  # noqa: E402

spry = from_argv()
checks = Checks("validation_split")
tmp = tempfile.mkdtemp(prefix="spry-val-")
base = TINY + ["run.rounds=30", "fl.clients_per_round=8", "run.eval_every=0", "log.sample_indices=true",
               "log.gradients=none", "fl.test_fraction=0.2", "method.preset=fedavg", "method.local_epochs=1"]
frac = 0.25

r0 = spry.run(None, ["run"] + sets(base) + ["--output", os.path.join(tmp, "test.h5")])
r1 = spry.run(None, ["run"] + sets(base + ["data.validation_fraction=%g" % frac]) + ["--output", os.path.join(tmp, "val.h5")])
r2 = spry.run(2, ["run"] + sets(base + ["data.validation_fraction=%g" % frac]))
checks.check(r0.returncode == 0 and r1.returncode == 0 and r2.returncode == 0,
             "runs failed: %s %s %s" % (r0.stderr[-300:], r1.stderr[-300:], r2.stderr[-300:]))
checks.check(fingerprint(r1.stdout) is not None and fingerprint(r1.stdout) == fingerprint(r2.stdout),
             "P = 1 and P = 2 differ with a validation split: %s vs %s" % (fingerprint(r1.stdout), fingerprint(r2.stdout)))
checks.check(heldout_losses(r0.stdout) != heldout_losses(r1.stdout), "validation evaluation equals the test-split one")
checks.check("validation-set" in r1.stdout, "the final line does not say the accuracy is on the validation set")

with RunFile(os.path.join(tmp, "test.h5")) as a, RunFile(os.path.join(tmp, "val.h5")) as b:
    held_all = a.read("/partition/label_counts") + a.read("/partition/test_label_counts")
    held_val = b.read("/partition/label_counts") + b.read("/partition/test_label_counts")
    pool_c = held_all.sum(axis=0)  # the whole train split per class (pool mode hands out everything)
    # lround rounds half away from zero (np.rint would round half to even)
    want = pool_c - np.floor(frac * pool_c + 0.5).astype(int)
    checks.check(np.array_equal(held_val.sum(axis=0), want),
                 "clients hold %s per class, expected train split %s minus validation = %s"
                 % (held_val.sum(axis=0).tolist(), pool_c.tolist(), want.tolist()))
    idx = b.read("/slots/sample_idx")
    drawn = np.unique(idx[idx >= 0])
    ds_n = 800
    checks.check(drawn.size > 0 and drawn.max() < ds_n, "sample indices out of range")
    n_val = int(np.floor(frac * pool_c + 0.5).sum())
    train_used = int(held_val.sum())
    checks.check(drawn.size <= int(b.read("/partition/n_train").sum()),
                 "clients drew %d distinct examples, more than they hold" % drawn.size)
    checks.check(train_used + n_val == int(held_all.sum()),
                 "train split %d != clients' %d + validation %d" % (held_all.sum(), train_used, n_val))

bad = spry.run(None, ["config"] + sets(["data.validation_fraction=0.7"]))
checks.check(bad.returncode != 0 and "data.validation_fraction" in bad.stderr and "0.7" in bad.stderr,
             "validation_fraction = 0.7 accepted or unclear: %r" % bad.stderr[-200:])
checks.finish()
