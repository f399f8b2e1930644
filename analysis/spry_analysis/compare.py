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
from .runfile import RunFile, method_labels

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
        if target is not None:  # a run without this accuracy kind has no time to target either
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
        if not any(_has(rs, key) for rs in data.values()):
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


PROTOCOLS = {"global": "generalised: Spry's global model vs the baseline's global model",
             "paper": "the paper's protocol: Spry personalised (eval.personalize_epochs) vs the baseline's global model",
             "personalised": "like for like: Spry personalised vs the baseline personalised the same way"}

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


def claim_verdict(est, lo, hi, lo_c, hi_c):
    """The verdict of one measured quantity against a claimed range [lo_c, hi_c], from its 95% CI [lo, hi]:
    - "reproduced": the whole CI lies inside the range;
    - "not reproduced: below/above the range": the whole CI lies outside it;
    - "consistent, not conclusive": the estimate is inside the range but the CI also reaches outside it;
    - "not reproduced at this precision": the estimate is outside the range but the CI still touches it;
    - "not measurable ...": no estimate, or one sample (no CI)."""
    if not math.isfinite(est):
        return "not measurable from these runs"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not measurable from these runs: fewer than 2 seeds per method give a value (no CI)"
    if lo >= lo_c and hi <= hi_c:
        return "reproduced (the 95% CI lies inside the claimed range)"
    if hi < lo_c:
        return "not reproduced: below the claimed range (the whole CI)"
    if lo > hi_c:
        return "not reproduced: above the claimed range (the whole CI)"
    if lo_c <= est <= hi_c:
        return "consistent, not conclusive (estimate inside the range, CI reaches outside)"
    return "not reproduced at this precision (estimate outside the range, CI touches it)"


def _by_class(paths):
    """{class: {method label: [paths]}}"""
    out = {}
    labels = method_labels(paths)
    for p in paths:
        out.setdefault(method_class(p), {}).setdefault(labels[p], []).append(p)
    return out


def _final_acc(runs, key):
    return [q["final"] for q in per_seed(runs, key)]


def _has(runs, key):
    return any(np.isfinite(r[key]).any() for r in runs)


def _strongest(groups, data, key="eval_acc"):
    """The label of the class member with the highest mean final accuracy `key` among those that have it (ties:
    sorted order); None when no member has it."""
    have = [g for g in groups if _has(data[g], key)]
    if not have:
        return None
    return sorted(have, key=lambda g: (-np.nanmean(_final_acc(data[g], key) or [math.nan]), g))[0]


def _measure(what, A, B, key_a, key_b, target):
    """(estimate, lo, hi, unit, note) of one claim quantity between series A and B."""
    if what == "acc_gap":
        est, lo, hi = stats.diff_ci(_final_acc(A, key_a), _final_acc(B, key_b))
        return 100 * est, 100 * lo, 100 * hi, " pp", ""
    if what == "rounds_ratio":
        bests = [np.nanmean([q["best"] for q in per_seed(X, k)]) for X, k in ((A, key_a), (B, key_b))]
        tgt = target if target is not None else 0.9 * min(bests)
        ra = [q["rounds_to"] for q in per_seed(A, key_a, tgt)]
        rb = [q["rounds_to"] for q in per_seed(B, key_b, tgt)]
        note = "target %.1f%%; reached by %d/%d and %d/%d seeds" % (100 * tgt, np.isfinite(ra).sum(), len(ra),
                                                                     np.isfinite(rb).sum(), len(rb))
        if not np.isfinite(rb).any():
            return math.nan, math.nan, math.nan, "x", note + " (Spry never reached it)"
        if not np.isfinite(ra).any():
            return math.inf, math.inf, math.inf, "x", note + " (the baseline never reached it)"
        est, lo, hi = stats.ratio_ci(ra, rb)
        return est, lo, hi, "x", note
    est, lo, hi = stats.ratio_ci([q["peak"] for q in per_seed(A, "eval_acc")],
                                 [q["peak"] for q in per_seed(B, "eval_acc")])
    return est, lo, hi, "x", ""


def paper_claims(paths, target=None):
    """[(claim, measured text, verdict)] for the seed paper's four claims, on the global model's accuracy. The
    backprop and zeroth-order classes are represented by their STRONGEST member (highest mean final global
    accuracy): "within x% of backprop" and "x% above zeroth order" are then judged against the hardest baseline of
    each class (claims_detail gives every baseline). The measured text names the methods."""
    return [(r["claim"], r["measured"], r["verdict"]) for r in claims_detail(paths, target)
            if r["protocol"] == "global" and r["representative"]]


def claims_detail(paths, target=None):
    """Every claim against every baseline of its class, under each accuracy protocol the runs allow:
    `global` (Spry's global model vs the baselines' global models) and, for the accuracy and convergence claims
    when Spry's runs have personalised accuracy, `paper` (Spry's personalised accuracy vs the baselines' global
    accuracy: the seed paper's headline protocol, PAPER-SETTINGS.md) and `personalised` (Spry personalised vs the
    baselines personalised the same way, eval.personalize_epochs: the like-for-like version of the paper's protocol;
    only baselines whose runs have personalised accuracy). Rows: dicts {claim, protocol, spry, baseline,
    representative, estimate, lo, hi, measured, verdict}; `representative` marks the strongest baseline of the class
    under the protocol's baseline accuracy (paper_claims)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _claims_detail(paths, target)


def _claims_detail(paths, target):
    by_class = _by_class(paths)
    data = {g: series(ps) for groups in by_class.values() for g, ps in groups.items()}
    rows = []
    for text, ca, cb, what, lo_c, hi_c in CLAIMS:
        miss = [c for c in (ca, cb) if c not in by_class]
        if miss:
            rows.append(dict(claim=text, protocol="global", spry="-", baseline="-", representative=True,
                             estimate=math.nan, lo=math.nan, hi=math.nan, measured="-",
                             verdict="not measurable from these runs: no %s run" % " and no ".join(miss)))
            continue
        base_cls = ca if cb == "spry" else cb
        spry_label = sorted(by_class["spry"], key=lambda g: (-len(by_class["spry"][g]), g))[0]
        protocols = [("global", "eval_acc", "eval_acc")]
        if what in ("acc_gap", "rounds_ratio") and _has(data[spry_label], "personal_acc"):
            protocols.append(("paper", "personal_acc", "eval_acc"))
            protocols.append(("personalised", "personal_acc", "personal_acc"))
        for proto, spry_key, base_key in protocols:
            strongest = _strongest(by_class[base_cls], data, base_key)
            for base in sorted(by_class[base_cls]):
                if not _has(data[base], base_key):
                    continue
                # A is the first class of the claim, B the second (the order of the CLAIMS row)
                if ca == "spry":
                    A, B, ka, kb, na, nb = data[spry_label], data[base], spry_key, base_key, spry_label, base
                else:
                    A, B, ka, kb, na, nb = data[base], data[spry_label], base_key, spry_key, base, spry_label
                est, lo, hi, unit, note = _measure(what, A, B, ka, kb, target)
                measured = "%.3g%s, 95%% CI [%.3g, %.3g] (%s: %d runs vs %s: %d runs%s)" % (
                    est, unit, lo, hi, na, len(A), nb, len(B), "; " + note if note else "")
                if math.isinf(est) and est > 0:
                    verdict = "reproduced in direction: the baseline never reached the target"
                else:
                    verdict = claim_verdict(est, lo, hi, lo_c, hi_c)
                rows.append(dict(claim=text, protocol=proto, spry=spry_label, baseline=base,
                                 representative=base == strongest, estimate=est, lo=lo, hi=hi,
                                 measured=measured, verdict=verdict))
    return rows


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
