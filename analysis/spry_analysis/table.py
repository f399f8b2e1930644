"""Tidy long tables of run files: one row per (run, round), or per (run, round, slot) with clients=True.

Columns, in order: `run` (path), `method` (runfile.method_labels over the runs of the table), `seed`, the
configuration keys whose values differ across the runs (named `section.key`), `round` (t, 0-based: the row of
/rounds/*), then
- per round: every metrics field (v2 names, NaN when absent; docs/runfile.md), `seconds`, `peak_bytes`
  (/rounds/resources) and `wall_seconds` (seconds summed over rounds 0..t);
- per slot: `slot` and every /slots/info field, plus `n_assigned` (blocks in /slots/assigned).
Only finished rounds (< rounds_done) appear. The CSV is written run by run (memory: one run's table).
"""
import csv
import io

import numpy as np

from .runfile import METRIC_FIELDS, RunFile, find_runs, method_labels

ROUND_TAIL = ("seconds", "peak_bytes", "wall_seconds")


def differing_keys(paths):
    """Configuration keys whose values differ across the runs (run.seed excluded: it is the `seed` column)."""
    values = {}
    for p in paths:
        with RunFile(p) as rf:
            for k, v in rf.config.items():
                values.setdefault(k, []).append(v)
    n = len(paths)
    return sorted(k for k, vs in values.items() if k != "run.seed" and (len(vs) < n or len(set(vs)) > 1))


def run_columns(rf, keys, clients=False, label=None):
    """(names, {name: array}) of one run's rows; `label` names the method (default RunFile.method)."""
    R = rf.rounds_done
    cols = {}
    if clients:
        info = rf.slot_info()
        M = info["slot"].shape[1] if R else rf.M
        n = R * M
        cols["round"] = np.repeat(np.arange(R), M)
        names = ["slot"] + [k for k in info if k != "slot"]
        for k in names:
            cols[k] = np.asarray(info[k]).reshape(n)
        cols["n_assigned"] = rf.read("/slots/assigned").sum(axis=2).reshape(n) if R else np.zeros(0, int)
        body = ["round"] + names + ["n_assigned"]
    else:
        n = R
        cols["round"] = np.arange(R)
        m = rf.metrics()
        res = rf.resources()
        fields = list(METRIC_FIELDS) + sorted(k for k in m if k not in METRIC_FIELDS)
        for k in fields:
            cols[k] = m[k]
        cols["seconds"] = res["seconds"]
        cols["peak_bytes"] = res["peak_bytes"]
        cols["wall_seconds"] = np.cumsum(res["seconds"])
        body = ["round"] + fields + list(ROUND_TAIL)
    head = {"run": rf.path, "method": label or rf.method, "seed": rf.seed}
    for k in keys:
        head[k] = rf.config.get(k, "")
    for k, v in head.items():
        cols[k] = np.full(n, v, dtype=object)
    return list(head) + body, cols


def _strings(a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        s = a.astype(str)  # shortest repr that reads back to the same double
        s[np.isnan(a)] = ""
        return s.tolist()
    return [str(x) for x in a.tolist()]


def write_csv(paths, out, clients=False):
    """Write the tidy table of `paths` (files or directories) to `out` (path or file object); returns
    (runs, rows, columns)."""
    runs = find_runs(paths)
    keys = differing_keys(runs)
    labels = method_labels(runs)
    header, rows = None, 0
    fh = open(out, "w", newline="") if isinstance(out, str) else out
    try:
        for p in runs:
            with RunFile(p) as rf:
                names, cols = run_columns(rf, keys, clients, labels[p])
            if header is None:
                header = names
                fh.write(",".join(header) + "\n")
            elif names != header:  # a run with extra fields: keep the first run's columns (union is v2's set)
                extra = [k for k in names if k not in header]
                if extra:
                    raise ValueError("%s has columns the first run lacks: %s" % (p, extra))
            strs = []
            for k in header:
                if k in ("run", "method") or (k in keys):
                    buf = io.StringIO()
                    csv.writer(buf).writerow([cols[k][0]] if len(cols[k]) else [""])
                    v = buf.getvalue().rstrip("\r\n")
                    strs.append([v] * len(cols["round"]))
                else:
                    strs.append(_strings(cols[k]) if k in cols else [""] * len(cols["round"]))
            if strs and strs[0]:
                fh.write("\n".join(map(",".join, zip(*strs))) + "\n")
            rows += len(cols["round"])
    finally:
        if isinstance(out, str):
            fh.close()
    return len(runs), rows, header or []


def read_csv(path):
    """The CSV back as {column: list of strings} (for tests and small tables)."""
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        cols = {k: [] for k in header}
        for row in r:
            for k, v in zip(header, row):
                cols[k].append(v)
    return cols


def summarize(path, label=None):
    """A dict of one run's headline numbers (the ones `spry info` prints, same definitions); `label` names the
    method (default RunFile.method; callers with a set of runs pass runfile.method_labels')."""
    with RunFile(path) as rf:
        m, res = rf.metrics(), rf.resources()
        R = rf.rounds_done
        out = {"run": path, "method": label or rf.method, "seed": rf.seed, "status": rf.status,
               "format_version": rf.version, "rounds_done": R, "rounds_planned": int(rf.attrs.get("rounds_planned", 0)),
               "d": rf.d, "L": rf.L, "N": rf.N, "M": rf.M, "C": rf.C, "K": rf.K, "log_gradients": rf.level,
               "alpha": rf.config.get("fl.alpha", "")}
        if R:
            out["final_train_loss"] = float(m["train_loss"][-1])
            ev = np.nonzero(m["evaluated"] == 1)[0]
            if ev.size:
                t = int(ev[-1])
                out.update(eval_round=t + 1, eval_loss=float(m["eval_loss"][t]), eval_acc=float(m["eval_acc"][t]),
                           local_acc=float(m["local_acc"][t]), personal_acc=float(m["personal_acc"][t]),
                           best_eval_acc=float(np.nanmax(m["eval_acc"][ev])))
            sec = np.sort(res["seconds"])
            out.update(median_seconds=float(sec[R // 2]), total_seconds=float(res["seconds"].sum()),
                       peak_bytes=int(res["peak_bytes"].max()), bytes_up=int(m["bytes_up"].sum()),
                       bytes_down=int(m["bytes_down"].sum()))
            if np.isfinite(m["z2"][-1]) or np.isfinite(m["batch_z2"][-1]):
                out.update(sq_error=float(m["sq_error"][-1]), cosine=float(m["cosine"][-1]), z2=float(m["z2"][-1]),
                           batch_sq_error=float(m["batch_sq_error"][-1]), batch_cosine=float(m["batch_cosine"][-1]),
                           batch_z2=float(m["batch_z2"][-1]))
        return out
