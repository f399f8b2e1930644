"""`spry-analyze select`: hyper-parameters chosen on a validation split, the same rule for every method.

Checks (small real runs, 6 rounds each):
1. Of three client learning rates, the winner is the run with the highest final validation accuracy, ties broken
   by the lower validation loss: recomputed here from each file's last evaluated row with h5py (exact equality
   of the chosen run; the rule is a comparison, no tolerance); the JSON holds the winner's rates.
2. A run evaluated on the TEST split (data.validation_fraction = 0) is refused: exit 2, the file named, and the
   message says why (tuned on the test set).
3. An unfinished run (rounds_done < rounds_planned, status running) is refused, and left out with
   --skip-unfinished (the output says the selection is interim).
4. Grid edges: the winner's client rate is flagged "lowest" / "highest" exactly when it is the smallest / largest
   of the three tried (recomputed here), in the JSON and as an EDGE line; jobs/sweeps/paper_claims.py refuses a
   chosen file with an edge (exit 1, naming the preset and key), writes the spec with --allow-edges (the header
   says so), and writes it without that line when no rate is on an edge; its cluster size's cost line uses the
   seconds per round measured in the chosen runs' files (/@round_seconds_total / /@rounds_done); its control size
   (personalising with no federated training) carries each method's chosen client rate and a 1e-30 server step;
   its k-select size grids K {1, 4, 16} x Spry's chosen rates' neighbours on the 1-3-10 series (table written
   here), refusing a rate off that series; its gap-k size zips each K with the rates chosen for it, refusing a
   chosen file that lacks a K.

usage: analysis_select.py SPRY
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alib  # noqa: E402

binary = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="spry-select-")
try:
    sweep = os.path.join(tmp, "sweep")
    os.makedirs(sweep)
    common = ["run.rounds=6", "run.eval_every=3", "data.validation_fraction=0.2", "method.preset=fedavg",
              "fl.clients_per_round=4"]
    runs = {}
    for lr in ("1e-4", "3e-3", "3e-2"):
        out = os.path.join(sweep, "lr%s.h5" % lr)
        alib.spry(binary, out, *common, "method.client_lr=" + lr)
        with h5py.File(out, "r") as f:
            m = f["/rounds/metrics"][: int(f.attrs["rounds_done"])]
            last = [i for i in range(len(m)) if m["evaluated"][i]][-1]
            runs[out] = (float(m["eval_acc"][last]), float(m["eval_loss"][last]))
    best = sorted(runs, key=lambda p: (-runs[p][0], runs[p][1]))[0]
    js = os.path.join(tmp, "chosen.json")
    text = alib.analyze("select", sweep, "--keys", "method.client_lr", "-o", js)
    chosen = json.load(open(js))
    assert list(chosen) == ["fedavg"], chosen
    assert os.path.samefile(chosen["fedavg"]["run"], best), "chose %s, the best is %s (%s)\n%s" % (
        chosen["fedavg"]["run"], best, runs, text)
    assert float(chosen["fedavg"]["method.client_lr"]) == float(best.split("lr")[-1][:-3]), chosen
    assert text.count("**chosen**") == 1, text
    # 4. grid edges
    lrs = sorted(float(p.split("lr")[-1][:-3]) for p in runs)
    won = float(chosen["fedavg"]["method.client_lr"])
    want = {lrs[0]: {"method.client_lr": "lowest"}, lrs[-1]: {"method.client_lr": "highest"}}.get(won, {})
    assert chosen["fedavg"]["edges"] == want, (chosen, lrs)
    assert text.count("EDGE fedavg: method.client_lr") == len(want), text
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    claims = [sys.executable, os.path.join(root, "jobs", "sweeps", "paper_claims.py"), "wordnet"]
    presets = ["spry", "fedfgd", "fedavg", "fedyogi", "fedsgd", "fedavg-split", "fedmezo", "baffle", "fwdllm"]
    for edge in ({"method.server_lr": "highest"}, {}):
        js9 = os.path.join(tmp, "chosen9.json")
        with open(js9, "w") as f:
            json.dump({p: dict(chosen["fedavg"], **{"method.server_lr": "0.01",
                                                   "edges": edge if p == "fedsgd" else {}}) for p in presets}, f)
        r = subprocess.run(claims + [js9], capture_output=True, text=True)
        if edge:
            assert r.returncode == 1 and "fedsgd method.server_lr = 0.01 (the highest value tried)" in r.stderr \
                and "--allow-edges" in r.stderr, (r.returncode, r.stdout, r.stderr)
            r = subprocess.run(claims + [js9, "--allow-edges"], capture_output=True, text=True)
            assert r.returncode == 0 and "# ON THE GRID'S EDGE (--allow-edges): fedsgd method.server_lr" in r.stdout, \
                (r.returncode, r.stderr)
        else:
            assert r.returncode == 0 and "EDGE" not in r.stdout and 'name = "paper-claims-wordnet"' in r.stdout, \
                (r.returncode, r.stdout, r.stderr)
            with h5py.File(chosen["fedavg"]["run"], "r") as f:
                spr = float(f.attrs["round_seconds_total"]) / int(f.attrs["rounds_done"])
            r = subprocess.run(claims + [js9, "--size", "cluster"], capture_output=True, text=True)
            assert r.returncode == 0 and "at %.2f s/round" % spr in r.stdout, (spr, r.stdout, r.stderr)
            r = subprocess.run(claims + [js9, "--size", "control"], capture_output=True, text=True)
            lr = chosen["fedavg"]["method.client_lr"]
            assert r.returncode == 0 and 'name = "personalise-control-wordnet"' in r.stdout \
                and '"method.client_lr" = [%s]' % ", ".join([lr] * 5) in r.stdout \
                and '"method.server_lr=1e-30"' in r.stdout, (r.stdout, r.stderr)
            r = subprocess.run(claims + [js9, "--size", "k-select"], capture_output=True, text=True)
            near = {"0.0001": "3e-05, 0.0001, 0.0003", "0.003": "0.001, 0.003, 0.01", "0.03": "0.01, 0.03, 0.1"}
            assert r.returncode == 0 and '"method.K" = [1, 4, 16]' in r.stdout \
                and '"method.client_lr" = [%s]' % near["%g" % float(lr)] in r.stdout \
                and '"method.server_lr" = [0.003, 0.01, 0.03]' in r.stdout and "data.validation_fraction=0.1" \
                in r.stdout, (lr, r.stdout, r.stderr)
            with open(js9, "w") as f:
                json.dump({"spry": dict(chosen["fedavg"], **{"method.server_lr": "0.005", "edges": {}})}, f)
            r = subprocess.run(claims + [js9, "--size", "k-select"], capture_output=True, text=True)
            assert r.returncode == 1 and "0.005 is not on the 1-3-10 series" in r.stderr, (r.stdout, r.stderr)
            jsk = os.path.join(tmp, "chosen-k.json")
            ks = {"1": ("0.01", "0.01"), "4": ("0.03", "0.01"), "16": ("0.1", "0.03")}
            with open(jsk, "w") as f:
                json.dump({k: {"method.client_lr": c, "method.server_lr": s, "edges": {}} for k, (c, s) in ks.items()
                           if k != "16"}, f)
            r = subprocess.run(claims + [jsk, "--size", "gap-k"], capture_output=True, text=True)
            assert r.returncode == 1 and "K = 16" in r.stderr, (r.stdout, r.stderr)
            with open(jsk, "w") as f:
                json.dump({k: {"method.client_lr": c, "method.server_lr": s, "edges": {}} for k, (c, s) in ks.items()},
                          f)
            r = subprocess.run(claims + [jsk, "--size", "gap-k"], capture_output=True, text=True)
            assert r.returncode == 0 and '"method.K" = [1, 4, 16]' in r.stdout \
                and '"method.client_lr" = [0.01, 0.03, 0.1]' in r.stdout \
                and '"method.server_lr" = [0.01, 0.01, 0.03]' in r.stdout and "run.rounds=160" in r.stdout, \
                (r.stdout, r.stderr)
    # 2. the test split is refused
    testrun = os.path.join(tmp, "test.h5")
    alib.spry(binary, testrun, "run.rounds=2", "method.preset=fedavg", "fl.clients_per_round=4")
    text = alib.analyze("select", testrun, expect=2)
    assert "test.h5" in text and "TEST split" in text and "validation_fraction" in text, text
    # 3. unfinished runs
    part = os.path.join(sweep, "partial.h5")
    shutil.copy(best, part)
    with h5py.File(part, "r+") as f:
        f.attrs["rounds_done"] = 3
        f.attrs["status"] = "running"
    text = alib.analyze("select", sweep, expect=2)
    assert "partial.h5" in text and "finished runs only" in text, text
    text = alib.analyze("select", sweep, "--skip-unfinished")
    assert "left out 1 unfinished" in text and "interim" in text, text
    print("analysis_select: all checks passed (winner %s of %d candidates)" % (os.path.basename(best), len(runs)))
finally:
    shutil.rmtree(tmp, ignore_errors=True)
