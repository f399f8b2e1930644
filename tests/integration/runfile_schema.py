"""Schema test: every dataset of docs/runfile.md exists with its documented shape and dtype (and nothing
undocumented does), compound fields match the documented ones, and the values agree with what the run printed:
per-round losses and accuracies, the final weights' and the metrics' FNV-1a fingerprints (bitwise), plus
internal consistency (label counts vs sizes, s_l vs the assignment).

Deliberately raw: this test reads the file with h5py, NOT through the project's reader
(analysis/spry_analysis/runfile.py), because the raw layout is what it checks against docs/runfile.md (every stored
dataset, shape, dtype and compound field, as written; the reader maps v1 names, cuts rows and hides layout).

usage: runfile_schema.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import re
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "runfile.md")


def doc_tables():
    """(datasets, compounds) parsed from the tables of docs/runfile.md."""
    text = open(DOC).read()
    datasets, compounds = {}, {}
    section = None
    for line in text.splitlines():
        if "SCHEMA-TABLE" in line:
            section = "schema"
        elif "COMPOUND-TABLE" in line:
            section = "compound"
        elif not line.startswith("|"):
            if line.strip() == "":
                continue
            section = None if section and not line.startswith("<!--") else section
        if not line.startswith("|") or line.startswith("|---") or section is None:
            continue
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if section == "schema" and cells[0] != "path":
            datasets[cells[0]] = dict(shape=[s.strip() for s in cells[1].split(",")], dtype=cells[2], level=cells[3])
        elif section == "compound" and cells[0] != "type":
            compounds.setdefault(cells[0], {})[cells[1]] = cells[2]
    assert len(datasets) > 30 and len(compounds) == 5, "could not parse %s: %d datasets, %d compounds" % (
        DOC, len(datasets), len(compounds))
    return datasets, compounds


def dtype_ok(dt, spec):
    if spec == "string":
        return dt.kind == "S"
    m = re.fullmatch(r"(\w+)\[(\d+)\]", spec)
    if m:
        return dt.subdtype is not None and dt.subdtype[0] == np.dtype(m.group(1)) and dt.subdtype[1] == (int(m.group(2)),)
    return dt == np.dtype(spec)


def check_compound(path, dt, fields):
    names = set(dt.names or ())
    assert names == set(fields), "%s: fields %s, documented %s" % (path, sorted(names), sorted(fields))
    for name, spec in fields.items():
        assert dtype_ok(dt.fields[name][0], spec), "%s.%s: dtype %s, documented %s" % (path, name, dt.fields[name][0], spec)


def fnv1a(data, h=0):
    h = h or 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def check_file(path, stdout, present_levels, datasets, compounds):
    with h5py.File(path, "r") as f:
        a = f.attrs
        sym = dict(R=int(a["rounds_done"]), M=int(a["clients_per_round"]), N=int(a["n_clients"]), C=int(a["n_class"]),
                   L=int(a["n_blocks"]), d=int(a["d"]), S=int(a["steps_max"]), K=int(a["K"]), B=int(a["batch_size"]),
                   P=f["/model/params"].shape[0], Rw=f["/weights/round"].shape[0] if "weights" in f else 0)
        assert a["format"] == "spry-run" and a["format_version"] == 2 and a["status"] == "complete"
        assert np.isfinite(a["initial_eval_loss"]) and 0 <= a["initial_eval_acc"] <= 1, "initial_eval_* not stored"
        m0 = re.search(r"initial model: eval loss ([\d.]+) acc ([\d.]+)%", stdout)
        assert "%.4f" % a["initial_eval_loss"] == m0.group(1) and "%.2f" % (100 * a["initial_eval_acc"]) == m0.group(2)
        found = set()
        f.visititems(lambda n, o: found.add("/" + n) if isinstance(o, h5py.Dataset) else None)
        undocumented = found - set(datasets)
        assert not undocumented, "%s: undocumented datasets %s" % (path, sorted(undocumented))
        for p, spec in datasets.items():
            should = spec["level"] in present_levels
            assert (p in found) == should, "%s: %s is %s, level %s" % (path, p, "present" if p in found else "missing",
                                                                     spec["level"])
            if not should:
                continue
            ds = f[p]
            shape = tuple(sym[s] for s in spec["shape"])
            assert ds.shape == shape, "%s: %s has shape %s, documented %s = %s" % (path, p, ds.shape, spec["shape"], shape)
            if spec["dtype"].startswith("compound:"):
                check_compound(p, ds.dtype, compounds[spec["dtype"].split(":")[1]])
            else:
                assert dtype_ok(ds.dtype, spec["dtype"]), "%s: %s dtype %s, documented %s" % (path, p, ds.dtype, spec["dtype"])
            if ds.maxshape[0] is None and p != "/axes/round" and not p.startswith("/weights/"):
                assert ds.compression == "gzip" and ds.shuffle and ds.chunks[0] == 1, "%s: %s not chunked+compressed" % (path, p)
                assert len(ds.dims[0]) == 1 and ds.dims[0][0].name == "/axes/round", "%s: %s has no round scale" % (path, p)

        # values against what the run printed (progress lines: 4 decimals of losses, 2 of accuracy percentages)
        m = f["/rounds/metrics"][()]
        rows = re.findall(r"^round +(\d+)/\d+  train loss ([\d.]+)(?:  eval loss ([\d.]+) acc ([\d.]+)%)?", stdout, re.M)
        assert len(rows) == sym["R"], "%d progress lines for %d rounds" % (len(rows), sym["R"])
        for t, tl, el, acc in rows:
            r = m[int(t) - 1]
            assert "%.4f" % r["train_loss"] == tl, "round %s: train loss %r in the file, %s printed" % (t, r["train_loss"], tl)
            assert bool(el) == bool(r["evaluated"]), "round %s: evaluated flag" % t
            if el:
                assert "%.4f" % r["eval_loss"] == el and "%.2f" % (100 * r["eval_acc"]) == acc, "round %s: eval" % t
        fp = re.search(r"fingerprint: weights ([0-9a-f]{16}) metrics ([0-9a-f]{16})", stdout)
        w = f["/model/w_final"][()]
        assert "%016x" % fnv1a(w.astype("<f4").tobytes()) == fp.group(1), "w_final differs from the printed fingerprint"
        h = fnv1a(b"")
        for r in m:
            h = fnv1a(np.array([r["train_loss"], r["eval_loss"], r["eval_acc"]], "<f8").tobytes(), h)
        assert "%016x" % h == fp.group(2), "metrics differ from the printed fingerprint"

        # internal consistency
        lc, ntr = f["/partition/label_counts"][()], f["/partition/n_train"][()]
        assert (lc.sum(axis=1) == ntr).all(), "label counts do not sum to n_train"
        assigned = f["/slots/assigned"][()]
        assert (assigned.sum(axis=1) == f["/rounds/block_count"][()]).all(), "s_l differs from the assignment"
        info = f["/slots/info"][()]
        assert (info["n_blocks"] == assigned.sum(axis=2)).all(), "n_blocks differs from the assignment"
        assert (np.diff(info["client"], axis=1) > 0).all(), "slots are not in increasing client order"
        assert (info["n_examples"] == ntr[info["client"]]).all(), "n_examples differs from the partition"
        assert (f["/rounds/metrics"]["bytes_up"] == info["bytes_up"].sum(axis=1)).all(), "bytes_up is not the sum"
        bl = f["/model/blocks"][()]
        assert (bl["size"] == f["/model/block_size"][()]).all() and bl["offset"][-1] + bl["size"][-1] <= sym["d"]
        pr = f["/model/params"][()]
        tr = pr[pr["trainable"] == 1]
        assert tr["count"].sum() == bl["size"].sum(), "trainable parameters do not fill the blocks"
        if "/slots/scalars" in found:
            sc = f["/slots/scalars"][()]
            for j in range(sym["M"]):
                for t in range(sym["R"]):
                    n = info["n_steps"][t, j]
                    assert np.isfinite(sc[t, j, :n]).all() and np.isnan(sc[t, j, n:]).all(), "scalars padding"
        print("  %s: %d datasets checked, %d rounds" % (os.path.basename(path), len(found), sym["R"]))


def main():
    spry = L.Spry(sys.argv)
    datasets, compounds = doc_tables()
    with tempfile.TemporaryDirectory() as tmp:
        # 1: Spry (per-epoch) at oracle with sample indices
        p1 = os.path.join(tmp, "oracle.h5")
        out, _ = spry.run(L.TINY + L.sets(log__gradients="oracle", log__sample_indices="true", log__weights_every=4)
                          + ["-o", p1])
        check_file(p1, out, {"always", "scalars", "dense", "oracle", "sample_indices", "weights", "complete"},
                   datasets, compounds)
        with h5py.File(p1, "r") as f:  # w_0, w_4 and the weights after the last (6th) round
            assert list(f["/weights/round"][()]) == [0, 4, 6], f["/weights/round"][()]
            assert f["/weights/w"][0].tobytes() == f["/model/w_init"][()].tobytes(), "/weights/w[0] is not w_init"
            assert f["/weights/w"][2].tobytes() == f["/model/w_final"][()].tobytes(), "last /weights/w is not w_final"
        # 2: FwdLLM at scalars: step_K and k_index, no dense data
        p2 = os.path.join(tmp, "fwdllm.h5")
        out, _ = spry.run(L.TINY + L.sets(method__preset="fwdllm", method__fwdllm_max_K=4) + ["-o", p2])
        check_file(p2, out, {"always", "scalars", "fwdllm", "complete"}, datasets, compounds)
        # 3: FedAvg (backprop) at none: no scalars at all
        p3 = os.path.join(tmp, "none.h5")
        out, _ = spry.run(L.TINY + L.sets(method__preset="fedavg", log__gradients="none") + ["-o", p3])
        check_file(p3, out, {"always", "complete"}, datasets, compounds)
    print("runfile_schema: 3 run files match docs/runfile.md and the printed metrics")


if __name__ == "__main__":
    main()
