"""The reader and the tidy table (analysis/spry_analysis/runfile.py, table.py).

Checks:
1. `spry-analyze table` of a run equals what `spry info` prints for it: rounds, final train loss, the last
   evaluated round's held-out loss and accuracy, local accuracy, the estimator line, median and total seconds,
   peak memory, bytes. Tolerance: the printed precision of `spry info` (the table holds full doubles; each value is
   formatted the way info.c formats it and the strings must be equal).
2. The reading rule: a copy whose rounds_done is lowered and whose next row holds garbage gives a table of exactly
   rounds_done rows with the original values.
3. v1 names: a v1 oracle file's /slots/true_gradient reads as /slots/batch_gradient (bitwise), metrics z2 as
   batch_z2; the full-local-gradient items are absent (has() False, z2 NaN).
4. The nondeterministic list and compare(): contents() of two runs of the same configuration are equal item by
   item and compare() finds no difference; it does find a changed metrics value (the item named), a changed
   attribute of a group, an item present in one file only and a configuration key present in one file only (the
   key named, as a rerun by a newer spry shows it), and ignores a change in a nondeterministic item
   (/rounds/resources) and in a row past rounds_done (the reading rule). same_value is bitwise: NaN equals NaN,
   -0.0 differs from +0.0, and a float32 array differs from the float64 array of the same values.
5. xarray: every group of a run file opens with named dimensions (RunFile.to_xarray, with the round axis cut to
   rounds_done; and the plain xr.open_dataset(run, engine="h5netcdf", group=...) for /axes, /rounds, /slots,
   /partition).
6. A sweep directory (nested folders) gives one table whose differing configuration keys are columns; --clients
   gives one row per (run, round, slot); a jobs/ sweep's verify/ folder (beside manifest.jsonl) is not searched.
7. Bad input: a file that is not a run file, a missing path: exit 2 with the file named. A damaged run file on
   which HDF5 1.10 loops forever (issue 12's fuzz fixture tests/integration/fixtures/runfile-hdf5-loop.h5): exit 2,
   "damaged run file", within SPRY_READ_TIMEOUT = 3 s plus start-up (checked: under 30 s), for `summary` and for a
   sweep directory holding it.

8. Accessors: attrs_of("/partition") gives the group's attributes decoded (partition = "pool", alpha = the
   configured fl.alpha); attrs_of of an absent item is a KeyError naming the file; checkpoint_attrs of RUN.h5.ckpt
   gives its rounds_done (= the run's) and format, and refuses a run file (RunFileError naming it and its format).

usage: analysis_reader.py SPRY
"""
import math
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alib  # noqa: E402
from spry_analysis import table  # noqa: E402
from spry_analysis.runfile import RunFile, RunFileError, checkpoint_attrs, compare, same_value  # noqa: E402


def info_bytes(b):
    u = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while b >= 1024 and i < 4:
        b /= 1024
        i += 1
    return "%.2f %s" % (b, u[i])


def _bumped(row):
    """A copy of a compound row with its first float field changed (an edit compare() must see)."""
    row = row.copy()
    k = next(n for n in row.dtype.names if row.dtype[n].kind == "f")
    row[k] = row[k] + 1.0 if np.isfinite(row[k]) else 1.0
    return row


def check_info(spry, path, csv):
    out = subprocess.run([spry, "info", path], capture_output=True, text=True, env=alib.env()).stdout
    t = table.read_csv(csv)
    R = len(t["round"])
    f = lambda k, i: float(t[k][i]) if t[k][i] != "" else math.nan  # noqa: E731
    expect = ["%d of" % R, "round %d: train loss %.6f" % (R, f("train_loss", R - 1))]
    ev = [i for i in range(R) if t["evaluated"][i] == "1"]
    if ev:
        i = ev[-1]
        expect.append("held-out loss %.6f, accuracy %.2f%% (round %d)" % (f("eval_loss", i), 100 * f("eval_acc", i),
                                                                           i + 1))
        if not math.isnan(f("local_acc", i)):
            expect.append("clients' local accuracy %.2f%%" % (100 * f("local_acc", i)))
    pre = "" if not math.isnan(f("z2", R - 1)) else "batch_"
    if not math.isnan(f(pre + "z2", R - 1)):
        expect.append("||g_hat - g||^2 = %.6g, cos(g_hat, g) = %.4f, Z^2 = %.6g" % (
            f(pre + "sq_error", R - 1), f(pre + "cosine", R - 1), f(pre + "z2", R - 1)))
    sec = sorted(f("seconds", i) for i in range(R))
    expect.append("%.3f s/round (median), %.1f s in all" % (sec[R // 2], sum(f("seconds", i) for i in range(R))))
    expect.append("(max over rounds and ranks) " + info_bytes(max(f("peak_bytes", i) for i in range(R))))
    up = sum(int(x) for x in t["bytes_up"])
    down = sum(int(x) for x in t["bytes_down"])
    expect.append("up %s, down %s in all; per round up %s, down %s" % (info_bytes(up), info_bytes(down),
                                                                       info_bytes(up / R), info_bytes(down / R)))
    missing = [e for e in expect if e not in out]
    assert not missing, "spry info %s does not print what the table says: %s\ninfo:\n%s" % (path, missing, out)
    return len(expect)


def main():
    spry = sys.argv[1]
    n_checks = 0
    with tempfile.TemporaryDirectory() as tmp:
        sweep = os.path.join(tmp, "sweep")
        os.makedirs(os.path.join(sweep, "a", "p0"))
        os.makedirs(os.path.join(sweep, "b"))
        ep = os.path.join(sweep, "a", "p0", "epoch.h5")
        it = os.path.join(sweep, "b", "iter.h5")
        alib.spry(spry, ep, "fl.clients_per_round=4", "run.rounds=6", "run.eval_every=2")
        alib.spry(spry, it, "fl.clients_per_round=4", "run.rounds=5", "run.eval_every=2", "log.gradients=oracle",
                  "method.K=3", *alib.ITER)
        open(os.path.join(sweep, "notes.h5"), "w").write("not hdf5")  # skipped by the sweep search
        # 1. table == spry info
        for p in (ep, it):
            csv = os.path.join(tmp, "one.csv")
            alib.analyze("table", p, "-o", csv)
            n_checks += check_info(spry, p, csv)
        # 2. reading rule
        cut = os.path.join(tmp, "cut.h5")
        shutil.copy(it, cut)
        with h5py.File(cut, "r+") as f:
            f.attrs["rounds_done"] = np.int64(3)
            m = f["/rounds/metrics"][3]
            m["train_loss"] = 1e30
            f["/rounds/metrics"][3] = m
        csv = os.path.join(tmp, "cut.csv")
        alib.analyze("table", cut, "-o", csv)
        t, full = table.read_csv(csv), RunFile(it).metrics()
        assert t["round"] == ["0", "1", "2"], "reading rule: rows %s, expected rounds 0..2" % t["round"]
        assert [float(x) for x in t["train_loss"]] == list(full["train_loss"][:3]), "reading rule: values differ"
        n_checks += 2
        # 3. v1 names (this build writes v1 or v2: check whichever it is)
        with RunFile(it) as rf, h5py.File(it, "r") as raw:
            if rf.version == 1:
                a, b = rf.read("/slots/batch_gradient"), raw["/slots/true_gradient"][:rf.rounds_done]
                assert a.tobytes() == b.tobytes(), "v1 /slots/true_gradient must read as /slots/batch_gradient"
                assert not rf.has("/slots/local_gradient") and not rf.has("/rounds/true_gradient")
                mz = rf.metrics()
                assert np.isnan(mz["z2"]).all() and np.array_equal(mz["batch_z2"], raw["/rounds/metrics"]["z2"][:5])
            else:
                for k in ("/slots/local_gradient", "/slots/batch_gradient", "/rounds/true_gradient"):
                    assert rf.has(k), "v2 oracle file without %s" % k
            n_checks += 1
        if RunFile(it).version >= 2:  # /weights/*: rows whose round t <= rounds_done (not cut at rounds_done rows)
            wp = os.path.join(tmp, "weights.h5")
            alib.spry(spry, wp, "fl.clients_per_round=4", "run.rounds=5", "log.weights_every=2")
            with RunFile(wp) as rf:
                assert list(rf.read("/weights/round")) == [0, 2, 4, 5], rf.read("/weights/round")
                assert rf.read("/weights/w").shape == (4, rf.d)
                assert rf.read("/weights/w")[-1].tobytes() == rf.read("/model/w_final").tobytes()
            n_checks += 1
        # 4. nondeterministic items dropped: a second run of the same configuration compares equal
        again = os.path.join(tmp, "again.h5")
        alib.spry(spry, again, "fl.clients_per_round=4", "run.rounds=6", "run.eval_every=2")
        with RunFile(ep) as a, RunFile(again) as b:
            ca, cb = a.contents(), b.contents()
            assert set(ca) == set(cb), "items differ: %s" % (set(ca) ^ set(cb))
            diff = [k for k in ca if np.asarray(ca[k]).tobytes() != np.asarray(cb[k]).tobytes()]
            assert not diff, "two runs of one configuration differ in %s" % diff
            assert "/rounds/resources" in a.nondeterministic
        diffs, n = compare(ep, again)
        assert not diffs and n == len(ca), "compare() of two runs of one configuration: %s (%d items)" % (diffs, n)
        with h5py.File(ep, "r") as raw:
            alpha0 = raw["/partition"].attrs["alpha"]
        with RunFile(ep) as rf:
            config0 = rf.attrs["config"]
        edits = {  # name -> (edit of a copy of ep, the differences compare() must report)
            "metric": (lambda f: f["/rounds/metrics"].__setitem__(1, _bumped(f["/rounds/metrics"][1])),
                       ["/rounds/metrics: values differ"]),
            "group-attr": (lambda f: f["/partition"].attrs.__setitem__("alpha", 7.0),
                           ["/partition@alpha: %r vs %r" % (alpha0, np.float64(7.0))]),
            "extra": (lambda f: f.create_dataset("/extra", data=np.zeros(2)), ["/extra: only in %s"]),
            # a newer spry's configuration with one more key: the key is named
            "config-key": (lambda f: f.attrs.__setitem__("config", config0 + "\n[zz]\nnew_key = 0\n"),
                           ["/@config: text differs (zz.new_key = 0 only in %s)"]),
            "nondeterministic": (lambda f: f["/rounds/resources"].__setitem__(0, _bumped(f["/rounds/resources"][0])),
                                 []),
        }
        for name, (edit, want) in edits.items():
            cp = os.path.join(tmp, "edit-%s.h5" % name)
            shutil.copy(ep, cp)
            with h5py.File(cp, "r+") as f:
                edit(f)
            diffs, _ = compare(ep, cp)
            want = [w % cp if "%s" in w else w for w in want]
            assert diffs == want, "compare() after editing %s: %s, expected %s" % (name, diffs, want)
        # the reading rule: two copies cut to rounds_done = 4 that differ only in row 4 (not a finished round)
        # compare equal; the same edit in row 3 is found
        for row, want in ((4, []), (3, ["/rounds/metrics: values differ"])):
            a4, b4 = os.path.join(tmp, "cut-a.h5"), os.path.join(tmp, "cut-b.h5")
            for q in (a4, b4):
                shutil.copy(ep, q)
                with h5py.File(q, "r+") as f:
                    f.attrs["rounds_done"] = np.int64(4)
                    if q == b4:
                        f["/rounds/metrics"][row] = _bumped(f["/rounds/metrics"][row])
            diffs, _ = compare(a4, b4)
            assert diffs == want, "rounds_done = 4, row %d edited: compare() says %s, expected %s" % (row, diffs, want)
        z = np.zeros(1)
        assert same_value(np.array([np.nan]), np.array([np.nan])) and not same_value(z, -z)
        assert not same_value(z, z.astype(np.float32)) and same_value("a", "a") and not same_value(np.int64(1), 2)
        n_checks += 2
        # 8. accessors: group attributes, checkpoints
        with RunFile(ep) as rf:
            ga = rf.attrs_of("/partition")
            assert ga["partition"] == "pool" and ga["alpha"] == rf.cfg("fl.alpha", cast=float), ga
            try:
                rf.attrs_of("/nowhere")
                raise AssertionError("attrs_of an absent item returned")
            except KeyError as e:
                assert ep in str(e) and "/nowhere" in str(e), e
        alib.spry(spry, ep + "c.h5", "fl.clients_per_round=4", "run.rounds=3", "run.checkpoint_every=2")
        ck = checkpoint_attrs(ep + "c.h5.ckpt")
        assert ck["format"] == "spry-checkpoint" and ck["rounds_done"] == 3, ck
        try:
            checkpoint_attrs(ep)
            raise AssertionError("checkpoint_attrs accepted a run file")
        except RunFileError as e:
            assert ep in str(e) and "spry-run" in str(e), e
        os.remove(ep + "c.h5")
        os.remove(ep + "c.h5.ckpt")
        n_checks += 2
        # 5. xarray
        import xarray as xr
        with RunFile(it) as rf:
            ds = rf.to_xarray("rounds")
            assert ds["metrics.train_loss"].dims == ("round",) and ds.sizes["round"] == 5
            assert ds["block_count"].dims == ("round", "block")
            sl = rf.to_xarray("slots")
            assert sl["scalars"].dims == ("round", "slot", "step", "k"), sl["scalars"].dims
            assert rf.to_xarray("partition")["label_counts"].dims == ("client", "class")
            ax = xr.open_dataset(it, engine="h5netcdf", group="axes")
            assert set(ax.dims) >= {"round", "slot", "client", "class", "block", "parameter"}, dict(ax.dims)
            ax.close()
            # the plain netCDF-4 call on the data groups (the writer hard-links every scale at the root): named
            # dimensions; xarray does not know the rounds_done rule, so its round axis is the rows written
            for grp, var, dims in (("rounds", "block_count", ("round", "block")),
                                   ("slots", "scalars", ("round", "slot", "step", "k")),
                                   ("partition", "label_counts", ("client", "class"))):
                with xr.open_dataset(it, engine="h5netcdf", group=grp) as xd:
                    assert xd[var].dims == dims, "%s/%s: dims %s, expected %s" % (grp, var, xd[var].dims, dims)
        n_checks += 1
        # 6. sweep directory
        csv = os.path.join(tmp, "sweep.csv")
        alib.analyze("table", sweep, "-o", csv)
        t = table.read_csv(csv)
        assert len(t["round"]) == 11, "sweep: %d rows, expected 6 + 5" % len(t["round"])
        for k in ("method.comm", "log.gradients", "run.rounds", "method.K"):
            assert k in t, "sweep: differing key %s is not a column: %s" % (k, list(t))
        assert "fl.alpha" not in t, "an equal key became a column"
        csv = os.path.join(tmp, "clients.csv")
        alib.analyze("table", sweep, "--clients", "-o", csv)
        t = table.read_csv(csv)
        assert len(t["slot"]) == (6 + 5) * 4, "--clients: %d rows, expected 44" % len(t["slot"])
        # a jobs/ sweep's verify/ folder (copies of points rerun at other rank counts) is not searched; a verify/
        # folder elsewhere (no manifest.jsonl beside it) is
        from spry_analysis.runfile import find_runs
        os.makedirs(os.path.join(sweep, "verify", "x-p2"))
        shutil.copy(ep, os.path.join(sweep, "verify", "x-p2", "run.h5"))
        assert len(find_runs([sweep])) == 3, find_runs([sweep])
        open(os.path.join(sweep, "manifest.jsonl"), "w").close()
        assert sorted(find_runs([sweep])) == sorted([ep, it]), find_runs([sweep])
        os.remove(os.path.join(sweep, "manifest.jsonl"))
        shutil.rmtree(os.path.join(sweep, "verify"))
        n_checks += 3
        # 7. bad input
        bad = alib.analyze("summary", os.path.join(sweep, "notes.h5"), expect=2)
        assert "notes.h5" in bad, bad
        bad = alib.analyze("table", os.path.join(tmp, "nope.h5"), "-o", csv, expect=2)
        assert "nope.h5" in bad and "no such" in bad, bad
        n_checks += 2
        loop = os.path.join(alib.HERE, "..", "integration", "fixtures", "runfile-hdf5-loop.h5")
        if os.path.exists(loop):
            import time
            dmg = os.path.join(tmp, "damaged")
            os.makedirs(dmg)
            shutil.copy(loop, os.path.join(dmg, "run.h5"))
            for args in (("summary", loop), ("table", dmg, "-o", csv)):
                t0 = time.time()
                bad = alib.analyze(*args, expect=2, env={"SPRY_READ_TIMEOUT": "3"})
                assert "damaged run file" in bad and time.time() - t0 < 30, bad
            n_checks += 2
    print("analysis_reader: %d checks passed" % n_checks)


if __name__ == "__main__":
    main()
