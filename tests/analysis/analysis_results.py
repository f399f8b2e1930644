"""The scripts of docs/results/ that turn sweeps into the committed tables: control_table.py (the personalisation
control) and claims_headline.py (the claims table and the methods table, both alphas); and the cluster spec's
seconds per round from verify reruns (jobs/sweeps/paper_claims.py).

Checks (two tiny sweeps planned and run with jobs/spry-sweep, 8 points each: spry and fedavg x alpha {0.1, 1.0} x
seeds {1, 2}):
1. control_table.py CONTROL CLAIMS: each (method, alpha) row's control cell is the mean of the control runs'
   personalised accuracy and its gain cell the claims runs' mean minus the control's, both recomputed here with
   h5py from /rounds/metrics (to the 2 printed decimals); each row lists its seeds' values. Without CLAIMS the
   table has the control's columns only.
2. A control run whose global model moved (its held-out accuracy after the round edited away from the initial one)
   is refused: exit 1, the file named, "not a control run".
3. jobs/sweeps/paper_claims.py --size cluster --seconds-from verify: refused (naming the `spry-sweep verify` command)
   until the chosen run has its 1-rank rerun; the rerun is IDENTICAL to the sweep's file, and the cost line's seconds
   per round are the rerun's (/@round_seconds_total / /@rounds_done).
4. claims_headline.py CLAIMS: exit 0, the claims table (the accuracy-vs-backprop claim row) and a methods-table row
   per method whose global accuracy cell at each alpha is the mean final held-out accuracy recomputed here.
5. claims_headline.py on an unfinished sweep (one method without a complete run at one alpha): exit 0, that
   method's cells at that alpha "0 | - | -" (it raised from numpy before).
6. docs/results/gap-wordnet/gap.py given the same runs twice (a sweep and a copy of it): each run counts once.

usage: analysis_results.py SPRY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alib  # noqa: E402
from spry_analysis.runfile import RunFile  # noqa: E402

binary = os.path.abspath(sys.argv[1])
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sweep_tool = os.path.join(root, "jobs", "spry-sweep")
tmp = tempfile.mkdtemp(prefix="spry-results-")


def run(cmd, expect=0):
    p = subprocess.run(cmd, capture_output=True, text=True, env=alib.env(), timeout=600, cwd=root)
    assert p.returncode == expect, "%s\nexited %d, expected %d\n%s\n%s" % (" ".join(cmd), p.returncode, expect,
                                                                          p.stdout[-4000:], p.stderr[-4000:])
    return p.stdout + p.stderr


def sweep(name, settings):
    spec = os.path.join(tmp, name + ".toml")
    with open(spec, "w") as f:
        f.write('name = "%s"\nspry = "%s"\nworkdir = "%s"\nseeds = [1, 2]\nset = [%s]\n\n[grid]\n'
                '"method.preset" = ["spry", "fedavg"]\n"fl.alpha" = [0.1, 1.0]\n'
                % (name, binary, tmp, ", ".join('"%s"' % s for s in alib.SMALL + settings)))
    d = os.path.join(tmp, name)
    run([sys.executable, sweep_tool, "run-local", spec, "-d", d])
    files = run([sys.executable, sweep_tool, "files", d, "--complete"]).split()
    assert len(files) == 8, files
    return d, files


def last(path, field):
    with h5py.File(path, "r") as f:
        m = f["/rounds/metrics"][: int(f.attrs["rounds_done"])]
        return float(m[field][np.nonzero(m["evaluated"])[0][-1]])


def groups(files):
    out = {}
    for p in files:
        with RunFile(p) as rf:
            out.setdefault((rf.cfg("method.preset"), rf.cfg("fl.alpha")), []).append(p)
    return out


try:
    common = ["run.eval_every=1", "eval.personalize_epochs=1", "fl.clients_per_round=4", "log.gradients=none"]
    ctl_dir, ctl = sweep("control", common + ["run.rounds=1", "method.server_lr=1e-30"])
    fed_dir, fed = sweep("claims", common + ["run.rounds=3"])
    script = os.path.join(root, "docs", "results", "control_table.py")
    # 1. the control table
    text = run(["/usr/bin/python3", script, ctl_dir, fed_dir])
    gc, gf = groups(ctl), groups(fed)
    assert len(gc) == 4 and set(gc) == set(gf), (gc, gf)
    for (preset, alpha), ps in gc.items():
        c = [last(p, "personal_acc") for p in ps]
        f = [last(p, "personal_acc") for p in gf[(preset, alpha)]]
        row = [r for r in text.splitlines() if r.startswith("| %s | %s |" % (preset, alpha))]
        assert len(row) == 1, (preset, alpha, text)
        cells = [x.strip() for x in row[0].strip("|").split("|")]
        assert cells[2].startswith("%.2f [" % (100 * np.mean(c))), (cells, c)
        assert cells[4].startswith("%.2f [" % (100 * np.mean(f))), (cells, f)
        assert cells[5].startswith("%.2f" % (100 * (np.mean(f) - np.mean(c)))), (cells, c, f)
        assert sorted(cells[3].split(" / ")) == sorted("%.1f" % (100 * x) for x in c), (cells, c)
    assert "global model unchanged in every one" in text, text
    text = run(["/usr/bin/python3", script, ctl_dir])
    assert "| method | alpha | personalised, untrained base model (control) | seeds |\n|---|---|---|---|\n" in text \
        and "no claims sweep given" in text and text.count("\n| ") == 5, text
    # 2. a control run whose global model moved is refused
    moved = ctl[0]
    with h5py.File(moved, "r+") as f:
        m = f["/rounds/metrics"][...]
        m["eval_acc"][-1] = float(f.attrs["initial_eval_acc"]) + 0.25
        f["/rounds/metrics"][...] = m
    text = run(["/usr/bin/python3", script, ctl_dir], expect=1)
    assert moved in text and "not a control run" in text, text
    # 3. the cluster spec's seconds from a verify rerun (paper_claims.py --seconds-from verify)
    claims = [sys.executable, os.path.join(root, "jobs", "sweeps", "paper_claims.py"), "wordnet"]
    point = ctl[1]
    presets = ["spry", "fedfgd", "fedavg", "fedyogi", "fedsgd", "fedavg-split", "fedmezo", "baffle", "fwdllm"]
    js = os.path.join(tmp, "chosen.json")
    with open(js, "w") as f:
        json.dump({p: {"method.client_lr": "0.01", "method.server_lr": "0.01", "val_acc": 0.5, "run": point,
                       "edges": {}} for p in presets}, f)
    text = run([sys.executable] + claims[1:] + [js, "--size", "cluster", "--seconds-from", "verify"], expect=1)
    rid = os.path.basename(os.path.dirname(point))
    assert "jobs/spry-sweep verify %s %s --ranks 1" % (ctl_dir, rid) in text, text
    text = run([sys.executable, sweep_tool, "verify", ctl_dir, rid, "--ranks", "1"])
    assert "IDENTICAL" in text, text
    with h5py.File(os.path.join(ctl_dir, "verify", rid + "-p1", "run.h5"), "r") as f:
        spr = float(f.attrs["round_seconds_total"]) / int(f.attrs["rounds_done"])
    text = run([sys.executable] + claims[1:] + [js, "--size", "cluster", "--seconds-from", "verify"])
    assert "at %.2f s/round (the mean over the methods' chosen points of the selection sweep, rerun by spry-sweep " \
        "verify" % spr in text and "--size cluster --seconds-from verify\n" in text, (spr, text)
    # 4. the claims headline
    text = run(["/usr/bin/python3", os.path.join(root, "docs", "results", "claims_headline.py"), fed_dir])
    assert "| accuracy within" in text, text
    for preset in ("spry", "fedavg"):
        r = [x for x in text.splitlines() if x.startswith("| %s |" % preset)]
        assert len(r) == 1, (preset, text)
        cells = [x.strip() for x in r[0].strip("|").split("|")]
        for i, alpha in enumerate(("0.1", "1")):
            g = [last(p, "eval_acc") for p in gf[(preset, alpha)]]
            assert cells[1 + 3 * i] == "2" and cells[2 + 3 * i].startswith("%.2f [" % (100 * np.mean(g))), \
                (r, preset, alpha, g)
    # 5. an unfinished sweep (fedavg has no complete run at alpha 1.0 yet): the methods table says so, no crash
    aside = gf[("fedavg", "1")]
    for q in aside:
        os.rename(q, q + ".aside")
    text = run(["/usr/bin/python3", os.path.join(root, "docs", "results", "claims_headline.py"), fed_dir])
    for q in aside:
        os.rename(q + ".aside", q)
    r = [x for x in text.splitlines() if x.startswith("| fedavg |")]
    assert len(r) == 1 and r[0].endswith("| 0 | - | - |") and "| 2 | " in r[0], text
    # 6. the gap table from two sweeps that share runs (gap-k's K rows copied from the gap study): each counts once
    gap = os.path.join(root, "docs", "results", "gap-wordnet", "gap.py")
    copy = os.path.join(tmp, "copy")
    shutil.copytree(fed_dir, copy)
    a01 = gf[("spry", "0.1")] + gf[("fedavg", "0.1")]
    twice = a01 + [os.path.join(copy, os.path.relpath(q, fed_dir)) for q in a01]
    text = run(["/usr/bin/python3", gap] + twice)
    assert text.startswith("4 complete run(s)") and text.count("| spry base | 2 |") == 1, text
    print("analysis_results: all checks passed (%d control and %d claims runs)" % (len(ctl), len(fed)))
finally:
    shutil.rmtree(tmp, ignore_errors=True)
