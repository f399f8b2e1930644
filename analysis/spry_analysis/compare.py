"""Method comparison: every pair of methods (A, B), each quantity with a 95% CI over seeds (Welch's t for
differences, the delta method for ratios; stats.py), and the seed paper's claims against the runs.

Per run (seed): final accuracy = the accuracy at the last evaluated round; best = the maximum over evaluated
rounds; rounds (seconds) to target = the first evaluated round t + 1 (wall seconds up to it) whose accuracy is
>= the target (runs that never reach it are left out of that row and counted); peak client memory = max of
/rounds/resources peak_bytes; bytes = sum over rounds of bytes_up + bytes_down. Accuracy kinds, as separate
named rows: `global` = metrics eval_acc (held-out set, the global model) and `personal` = metrics personal_acc
(v2, the participants' local test splits after personalisation) when the runs have it.
Default target: 90% of the lowest mean best accuracy among the methods (so every method can reach it).
"""
import itertools
import math
import warnings

import numpy as np

from . import stats
from .plots import group_runs, series
from .runfile import RunFile

ACC_KINDS = (("global", "eval_acc"), ("personal", "personal_acc"))


def per_seed(runs, key, target=None):
    """Per-run dict of the quantities above for accuracy field `key`."""
    out = []
    for r in runs:
        ev = np.nonzero(r["evaluated"] & np.isfinite(r[key]))[0]
        acc = r[key][ev]
        q = {"final": float(acc[-1]) if ev.size else math.nan, "best": float(acc.max()) if ev.size else math.nan,
             "peak": float(r["peak"].max()) if r["R"] else math.nan,
             "bytes": float(r["bytes"].sum()) if r["R"] else math.nan}
        if target is not None and ev.size:
            hit = np.nonzero(acc >= target)[0]
            q["rounds_to"] = float(ev[hit[0]] + 1) if hit.size else math.nan
            q["seconds_to"] = float(r["wall"][ev[hit[0]]]) if hit.size else math.nan
        out.append(q)
    return out


def method_class(path):
    """'backprop', 'zeroth', 'spry', 'fedfgd', 'fwdllm' from a run's resolved method keys."""
    with RunFile(path) as rf:
        est, split = rf.cfg("method.estimator"), rf.cfg("method.split")
    if est == "backprop":
        return "backprop"
    if est == "zeroth":
        return "zeroth"
    if est == "fwdllm":
        return "fwdllm"
    return "spry" if split == "spry" else "fedfgd"


def compare(paths, target=None, by=None):
    """(rows, target_by_kind, groups): rows = dicts {a, b, kind, quantity, estimate, lo, hi, n_a, n_b, note}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nan means of methods without that accuracy kind
        return _compare(paths, target, by)


def _compare(paths, target, by):
    groups = group_runs(paths, by)
    data = {g: series(ps) for g, ps in groups.items()}
    rows, targets = [], {}
    for kind, key in ACC_KINDS:
        if not any(np.isfinite(r[key]).any() for rs in data.values() for r in rs):
            continue
        bests = [np.nanmean([q["best"] for q in per_seed(rs, key)]) for rs in data.values()]
        tgt = target if target is not None else 0.9 * np.nanmin(bests)
        targets[kind] = tgt
        qs = {g: per_seed(rs, key, tgt) for g, rs in data.items()}
        for a, b in itertools.combinations(sorted(groups), 2):
            A, B = qs[a], qs[b]

            def col(Q, k):
                return np.array([q.get(k, math.nan) for q in Q], float)
            for name, k, fn, unit in (("final accuracy gap A-B", "final", stats.diff_ci, "pp"),
                                      ("best accuracy gap A-B", "best", stats.diff_ci, "pp"),
                                      ("rounds to target A/B", "rounds_to", stats.ratio_ci, "x"),
                                      ("seconds to target A/B", "seconds_to", stats.ratio_ci, "x")):
                ca, cb = col(A, k), col(B, k)
                est, lo, hi = fn(ca, cb)
                scale = 100.0 if unit == "pp" else 1.0
                note = ""
                if k.endswith("_to"):
                    note = "reached target: %d/%d vs %d/%d seeds" % (np.isfinite(ca).sum(), len(ca),
                                                                     np.isfinite(cb).sum(), len(cb))
                rows.append(dict(a=a, b=b, kind=kind, quantity=name, estimate=est * scale, lo=lo * scale,
                                 hi=hi * scale, unit=unit, n_a=len(A), n_b=len(B), note=note))
    # memory and bytes do not depend on the accuracy kind
    for a, b in itertools.combinations(sorted(groups), 2):
        for name, k in (("peak client memory A/B", "peak"), ("bytes communicated A/B", "bytes")):
            ca = np.array([q[k] for q in per_seed(data[a], "eval_acc")])
            cb = np.array([q[k] for q in per_seed(data[b], "eval_acc")])
            est, lo, hi = stats.ratio_ci(ca, cb)
            rows.append(dict(a=a, b=b, kind="-", quantity=name, estimate=est, lo=lo, hi=hi, unit="x", n_a=len(ca),
                             n_b=len(cb), note=""))
    return rows, targets, groups


CLAIMS = (
    ("accuracy within 0.6-6.2% of backprop (backprop - Spry, final global accuracy)", "backprop", "spry", "acc_gap",
     0.6, 6.2),
    ("accuracy 5-13.5% above zeroth order (Spry - zeroth order, final global accuracy)", "spry", "zeroth", "acc_gap",
     5.0, 13.5),
    ("1.2-20x faster convergence than zeroth order (rounds to target, zeroth / Spry)", "zeroth", "spry", "rounds_ratio",
     1.2, 20.0),
    ("1.4-7.1x less memory than backprop (peak client memory, backprop / Spry)", "backprop", "spry", "mem_ratio",
     1.4, 7.1),
)


def paper_claims(paths, target=None):
    """[(claim, measured text, verdict)] for the seed paper's four claims. Within a class of methods (e.g. several
    backprop baselines, or Spry per epoch and per iteration) the method with the most runs (seeds) stands for the
    class (ties: the first label in sorted order); the measured text names it."""
    by_class = {}
    for p in paths:
        with RunFile(p) as rf:
            label = rf.method
        by_class.setdefault(method_class(p), {}).setdefault(label, []).append(p)
    classes, chosen = {}, {}
    for c, groups in by_class.items():
        label = sorted(groups, key=lambda g: (-len(groups[g]), g))[0]
        classes[c], chosen[c] = groups[label], label
    out = []
    for text, ca, cb, what, lo_c, hi_c in CLAIMS:
        miss = [c for c in (ca, cb) if c not in classes]
        if miss:
            out.append((text, "-", "not measurable from these runs: no %s run" % " and no ".join(miss)))
            continue
        A, B = (series(classes[c]) for c in (ca, cb))
        if what == "acc_gap":
            est, lo, hi = stats.diff_ci([q["final"] for q in per_seed(A, "eval_acc")],
                                        [q["final"] for q in per_seed(B, "eval_acc")])
            est, lo, hi = 100 * est, 100 * lo, 100 * hi
            unit = " pp"
        elif what == "rounds_ratio":
            bests = [np.nanmean([q["best"] for q in per_seed(X, "eval_acc")]) for X in (A, B)]
            tgt = target if target is not None else 0.9 * min(bests)
            ra = [q["rounds_to"] for q in per_seed(A, "eval_acc", tgt)]
            rb = [q["rounds_to"] for q in per_seed(B, "eval_acc", tgt)]
            if not np.isfinite(rb).any():
                out.append((text, "Spry never reached the target %.1f%%" % (100 * tgt), "not measurable: no Spry run "
                            "reaches the target"))
                continue
            if not np.isfinite(ra).any():
                out.append((text, "zeroth order never reached the target %.1f%% (Spry: %.0f rounds)" % (
                    100 * tgt, np.nanmean(rb)), "consistent (zeroth order slower than any finite ratio)"))
                continue
            est, lo, hi = stats.ratio_ci(ra, rb)
            unit = "x (target %.1f%%)" % (100 * tgt)
        else:
            est, lo, hi = stats.ratio_ci([q["peak"] for q in per_seed(A, "eval_acc")],
                                         [q["peak"] for q in per_seed(B, "eval_acc")])
            unit = "x"
        measured = "%.3g%s, 95%% CI [%.3g, %.3g] (%s: %d runs vs %s: %d runs)" % (est, unit, lo, hi, chosen[ca], len(A),
                                                                             chosen[cb], len(B))
        if not math.isfinite(est):
            verdict = "not measurable from these runs"
        elif not (math.isfinite(lo) and math.isfinite(hi)):
            verdict = "not measurable from these runs: fewer than 2 seeds per method give a value (no CI)"
        elif hi < lo_c:
            verdict = "below the claimed range"
        elif lo > hi_c:
            verdict = "above the claimed range"
        else:
            verdict = "consistent (the CI meets the claimed range)"
        out.append((text, measured, verdict))
    return out


def format_rows(rows, targets):
    lines = []
    for k, t in targets.items():
        lines.append("target accuracy (%s): %.2f%%" % (k, 100 * t))
    lines.append("%-28s %-28s %-9s %-26s %s" % ("A", "B", "accuracy", "quantity", "estimate [95% CI over seeds]"))
    for r in rows:
        lines.append("%-28s %-28s %-9s %-26s %s %s%s" % (r["a"], r["b"], r["kind"], r["quantity"],
                                                        stats.fmt_ci((r["estimate"], r["lo"], r["hi"])), r["unit"],
                                                        ("  (" + r["note"] + ")") if r["note"] else ""))
    return "\n".join(lines)
