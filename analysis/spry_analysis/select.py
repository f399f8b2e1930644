"""Hyper-parameter selection on a validation split, the same rule for every method.

`spry-analyze select SWEEP_DIR|RUN... [--by method.preset] [--keys method.client_lr,method.server_lr] [-o FILE.json]`

For every group of runs (one group per value of --by, default the preset), the candidate with the highest FINAL
held-out accuracy wins (the last evaluated round of each run; ties: the lower final held-out loss, then the
smaller run id for determinism). A run that stopped with non-finite weights (status `nonfinite`) counts as the
worst candidate. Only runs whose held-out set is a VALIDATION split carved from the training data
(`data.validation_fraction > 0`) are accepted: selecting on the test split would report a tuned test number, so
such runs are refused (exit 2) naming the file. Runs that are not complete are refused too (a partial budget is
not the budget the candidates are compared at; --skip-unfinished leaves them out for an interim look).

Prints the table of every candidate (its keys, final validation accuracy and loss) with the winner marked, and
writes the winners as JSON ({group: {key: value, ..., "val_acc": ..., "run": ..., "edges": {...}}}) when -o is
given, ready to be turned into the zip rows of a sweep spec.

A winner whose value of a tuned key is the lowest or the highest its group tried (of two or more values) sits on
the EDGE of its grid: the optimum may lie beyond it. Each such key is printed as a warning and recorded in the
JSON ("edges": {key: "lowest" | "highest"}), so the grid can be extended before the choice is used.
"""
import json
import math

from .runfile import RunFileError, open_run


def _final(rf):
    m = rf.metrics()
    ev = [i for i in range(len(m["evaluated"])) if m["evaluated"][i]] if "evaluated" in m else []
    if rf.status == "nonfinite" or not ev:
        return -math.inf, math.inf
    i = ev[-1]
    acc, loss = float(m["eval_acc"][i]), float(m["eval_loss"][i])
    return (acc if math.isfinite(acc) else -math.inf), (loss if math.isfinite(loss) else math.inf)


def select(paths, by="method.preset", keys=("method.client_lr", "method.server_lr"), skip_unfinished=False):
    """Returns (winners {group: row}, rows [every candidate, sorted by group then rank], skipped [paths]).
    skip_unfinished: leave out runs still running or stopped (an interim look at a sweep) instead of refusing."""
    rows, skipped = [], []
    for p in paths:
        with open_run(p) as rf:
            frac = rf.cfg("data.validation_fraction", 0.0, float)
            if not frac > 0:
                raise RunFileError("%s: data.validation_fraction = %s: this run was evaluated on the TEST split; "
                                   "select only runs evaluated on a validation split (set data.validation_fraction "
                                   "> 0), or the chosen rates are tuned on the test set" % (p, frac))
            if rf.status not in ("complete", "nonfinite"):
                if skip_unfinished:
                    skipped.append(str(p))
                    continue
                raise RunFileError("%s: status %r, %d of %s rounds: select compares finished runs only (finish it "
                                   "with --resume)" % (p, rf.status, rf.rounds_done, rf.attrs.get("rounds_planned")))
            acc, loss = _final(rf)
            row = {"group": rf.config.get(by, "?"), "run": str(p), "config_hash": str(rf.attrs.get("config_hash")),
                   "val_acc": acc, "val_loss": loss, "status": rf.status}
            for k in keys:
                row[k] = rf.config.get(k)
            rows.append(row)
    if not rows:
        raise RunFileError("no run files found")
    rows.sort(key=lambda r: (r["group"], -r["val_acc"], r["val_loss"], r["config_hash"]))
    winners = {}
    for r in rows:
        if r["group"] not in winners:
            winners[r["group"]] = r
            r["chosen"] = True
        else:
            r["chosen"] = False
    for g, w in winners.items():
        w["edges"] = edges(w, [r for r in rows if r["group"] == g], keys)
    return winners, rows, skipped


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def edges(winner, group_rows, keys):
    """{key: "lowest" | "highest"} for each tuned key whose winning value is an end of the values the group tried
    (numeric keys with two or more distinct values only)."""
    out = {}
    for k in keys:
        w = _num(winner.get(k))
        vals = {_num(r.get(k)) for r in group_rows} - {None}
        if w is None or len(vals) < 2:
            continue
        if w == min(vals):
            out[k] = "lowest"
        elif w == max(vals):
            out[k] = "highest"
    return out


def format_edges(winners):
    """One warning line per (group, key) whose winner sits on the edge of the grid."""
    lines = []
    for g, w in sorted(winners.items()):
        for k, side in sorted(w["edges"].items()):
            lines.append("EDGE %s: %s = %s is the %s value tried; the optimum may lie beyond the grid (extend it "
                         "before using this choice)" % (g, k, w[k], side))
    return "\n".join(lines)


def format_rows(rows, keys):
    head = ["group"] + list(keys) + ["val acc", "val loss", "status", ""]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "%.2f%%" % (100 * r["val_acc"]) if math.isfinite(r["val_acc"]) else "diverged"
        loss = "%.4f" % r["val_loss"] if math.isfinite(r["val_loss"]) else "-"
        out.append("| " + " | ".join([r["group"]] + [str(r[k]) for k in keys] +
                                     [acc, loss, r["status"], "**chosen**" if r["chosen"] else ""]) + " |")
    return "\n".join(out)


def write_json(winners, keys, path):
    data = {g: dict({k: r[k] for k in keys}, val_acc=r["val_acc"], val_loss=r["val_loss"], run=r["run"],
                    edges=r["edges"])
            for g, r in sorted(winners.items())}
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
