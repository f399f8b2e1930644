"""One self-contained HTML report of a set of runs: run table, curves, method comparison, every applicable theory
verdict, and the seed paper's claims against the runs. Plots are embedded as base64 PNG (no external files)."""
import base64
import html
import math
import os
import shutil
import tempfile
import time

import numpy as np

from . import compare as cmp
from . import plots, stats, table, theory
from .runfile import RunFile, method_labels


def _img(path):
    with open(path, "rb") as f:
        return '<img alt="%s" src="data:image/png;base64,%s">' % (html.escape(os.path.basename(path)),
                                                                 base64.b64encode(f.read()).decode())


def _table(header, rows):
    h = "".join("<th>%s</th>" % html.escape(str(x)) for x in header)
    b = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(str(x)) for x in r) for r in rows)
    return "<table><tr>%s</tr>%s</table>" % (h, b)


def _fmt(x):
    if isinstance(x, float):
        return "%.4g" % x
    return x


def applicable(paths):
    """{verb: [paths]}: the runs that meet each theory check's premise (premises() without the reasons)."""
    return premises(paths)[0]


def premises(paths):
    """({verb: [paths]}, {verb: [(path, reason)]}): the runs that meet each theory check's premise (by their
    configuration and logged items), and the runs of the check's kind left out with the reason. The CLI judges any
    run it is given (that is how a failing case is shown); the report judges only the first list:
    E1, E2 forward per-iteration oracle runs; E3 zeroth-order per-iteration oracle runs; E4 Spry-split oracle
    runs, except homogeneous partitions (theory.e4_premise: excluded, judged by E5); E5 Spry-split runs of a
    homogeneous partition with full local gradients; E6 Spry-split oracle runs with random assignment; E8 v2
    per-iteration forward runs with server SGD (fedavg) and Gaussian tangents whose step meets Theorem 2's
    eta <= 1/(4 L (1+rho)) with the run's own L (theory.e8_step; larger steps excluded: the theorem does not apply)."""
    sel = {k: [] for k in theory.VERBS}
    out = {k: [] for k in theory.VERBS}
    for p in paths:
        with RunFile(p) as rf:
            oracle = rf.has("/slots/batch_gradient")
            est, comm, split = rf.cfg("method.estimator"), rf.cfg("method.comm"), rf.cfg("method.split")
            part = rf.partition_kind()
            if oracle and comm == "iteration" and est == "forward":
                sel["E1"].append(p)
                sel["E2"].append(p)
            if oracle and comm == "iteration" and est == "zeroth":
                sel["E3"].append(p)
            if oracle and split == "spry" and rf.has("/rounds/class_gradients"):
                why = theory.e4_premise(rf)
                if why:
                    out["E4"].append((p, why))
                else:
                    sel["E4"].append(p)
                if rf.cfg("method.assignment") == "random":
                    sel["E6"].append(p)
            if split == "spry" and part == "homogeneous" and rf.has("/slots/local_gradient"):
                sel["E5"].append(p)
            if (rf.version >= 2 and comm == "iteration" and est == "forward" and rf.has("/slots/minibatch_variance")
                    and rf.cfg("method.server_opt") == "fedavg" and rf.cfg("method.tangent", "gaussian") == "gaussian"):
                _, _, _, L, rho, eta, eta_star = theory.e8_step(rf)
                if eta <= eta_star:
                    sel["E8"].append(p)
                else:
                    out["E8"].append((p, "eta = %g > 1/(4 L (1+rho)) = %.4g (L = %.4g, rho = %.4g): the step is too "
                                      "large for Theorem 2, which does not apply" % (eta, eta_star, L, rho)))
    return sel, out


CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}table{border-collapse:collapse;margin:1em 0;
font-size:12px}td,th{border:1px solid #bbb;padding:3px 6px}th{background:#e8eef6}img{max-width:100%}
pre{background:#f6f6f6;padding:8px;font-size:11px;white-space:pre-wrap}.ok{color:#070}.bad{color:#a00}
.na{color:#777}h1{color:#1b3b6f}"""


def report(paths, out, target=None, by=None, markdown=None, title=None):
    """Write the HTML report to `out` (and the markdown summary to `markdown`, see markdown_summary); returns the
    sections written (names)."""
    runs = table.find_runs(paths)
    tmp = tempfile.mkdtemp(prefix="spry-report-")
    title = title or "spry analysis report"
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>%s</title><style>%s</style></head>"
             "<body><h1>%s</h1><p>%d run files (%s); generated %s by analysis/spry-analyze report.</p>"
             % (html.escape(title), CSS, html.escape(title), len(runs), html.escape(_provenance(runs)),
                time.strftime("%Y-%m-%d %H:%M:%S"))]
    sections = []
    # runs
    labels = method_labels(runs)
    sums = [table.summarize(p, labels[p]) for p in runs]
    keys = table.differing_keys(runs)
    cols = ["run", "method", "seed", "status", "rounds_done", "eval_acc", "best_eval_acc", "personal_acc",
            "final_train_loss", "median_seconds", "peak_bytes", "bytes_up", "bytes_down"]
    rows = []
    common = os.path.commonpath([os.path.abspath(s["run"]) for s in sums])
    if len(sums) == 1:
        common = os.path.dirname(common)
    for s in sums:
        with RunFile(s["run"]) as rf:
            extra = [rf.config.get(k, "") for k in keys]
        rows.append([os.path.relpath(os.path.abspath(s["run"]), common)] + [_fmt(s.get(c, "")) for c in cols[1:]] + extra)
    parts.append("<h2>Runs</h2>" + _table(cols + keys, rows))
    sections.append("runs")
    # curves
    files, _ = plots.curves(runs, os.path.join(tmp, "curves"), by)
    parts.append("<h2>Learning curves</h2><p>Mean over seeds with a 95%% Student-t band; one line per method.</p>%s"
                 % _img(files[0]))
    sections.append("curves")
    # comparison
    crow, targets, groups = cmp.compare(runs, target, by)
    if crow:
        parts.append("<h2>Method comparison</h2><p>%s</p>" % "; ".join(
            "target accuracy (%s): %.2f%%" % (k, 100 * t) for k, t in targets.items()) + _table(
            ["A", "B", "accuracy", "quantity", "estimate [95% CI over seeds]", "unit", "note"],
            [[r["a"], r["b"], r["kind"], r["quantity"], stats.fmt_ci((r["estimate"], r["lo"], r["hi"])), r["unit"],
              r["note"]] for r in crow]))
    else:
        parts.append("<h2>Method comparison</h2><p class='na'>one method only (%s): no pairs to compare.</p>"
                     % html.escape(", ".join(groups)))
    sections.append("comparison")
    # theory
    parts.append("<h2>Theory checks (THEORY.md section 7)</h2>")
    sel, left_out = premises(runs)
    for name in theory.VERBS:
        ps = sel[name]
        lo = ""
        if left_out[name]:
            lo = ("<p class='na'>left out (premise not met; `spry-analyze theory %s RUN` judges them anyway):</p>"
                  "<pre>%s</pre>" % (name, html.escape("\n".join("%s: %s" % (os.path.relpath(os.path.abspath(p), common), why)
                                                          for p, why in left_out[name]))))
        if not ps:
            parts.append("<h3>%s</h3><p class='na'>not applicable: no run of these files meets the premise of %s "
                         "(%s)</p>%s" % (name, name, html.escape(theory.CRITERIA[name][:200] + "..."), lo))
            continue
        v = theory.run(name, ps, os.path.join(tmp, "%s.png" % name))
        cls = {True: "ok", False: "bad", None: "na"}[v.holds]
        word = {True: "HOLDS", False: "DOES NOT HOLD", None: "CANNOT BE EVALUATED"}[v.holds]
        parts.append("<h3>%s: <span class='%s'>%s</span> (on %d run%s)</h3>%s<pre>%s</pre>%s" % (
            name, cls, word, len(ps), "" if len(ps) == 1 else "s", lo, html.escape(v.text()),
            _img(v.plot) if v.plot else ""))
    sections.append("theory")
    # paper claims
    claims = cmp.paper_claims(runs, target)
    parts.append("<h2>The seed paper's claims against these runs</h2>"
                 "<p>Global model's accuracy; each class of baselines is represented by its strongest member.</p>" +
                 _table(["claim (Panchal et al., NeurIPS 2024)", "measured", "verdict"], claims))
    detail = cmp.claims_detail(runs, target)
    proto = cmp.PROTOCOLS
    parts.append("<h3>Every baseline, every accuracy protocol</h3>" +
                 _table(["claim", "accuracy protocol", "Spry", "baseline", "measured", "verdict"],
                        [[r["claim"], proto.get(r["protocol"], r["protocol"]), r["spry"],
                          r["baseline"] + (" (strongest)" if r["representative"] else ""), r["measured"],
                          r["verdict"]] for r in detail]))
    sections.append("claims")
    parts.append("</body></html>")
    with open(out, "w") as f:
        f.write("\n".join(parts))
    if markdown:
        markdown_summary(runs, markdown, by, title, detail, files[0], dict(zip(runs, sums)))
    shutil.rmtree(tmp, ignore_errors=True)  # the plots are embedded (and copied beside the markdown)
    return sections


def _provenance(runs):
    """'spry VERSION, commit C' of the runs (every distinct pair, so a mixed set says so)."""
    seen = []
    for p in runs:
        with RunFile(p) as rf:
            v = "spry %s, commit %s" % (rf.attrs.get("spry_version", "?"), rf.attrs.get("git_commit", "?"))
        if v not in seen:
            seen.append(v)
    return "; ".join(seen)


def pct_ci(t):
    """A fraction's (mean, lo, hi) as percent text: 'm [lo, hi]', 'm (1 run)', or '-'."""
    m, lo, hi = t
    if not math.isfinite(m):
        return "-"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "%.2f (1 run)" % (100 * m)
    return "%.2f [%.2f, %.2f]" % (100 * m, 100 * lo, 100 * hi)


def claim_range(claim):
    """The claimed range of a CLAIMS row, as printed."""
    for text, _, _, what, lo, hi in cmp.CLAIMS:
        if text == claim:
            return "%g-%g%s" % (lo, hi, " pp" if what == "acc_gap" else "x")
    return "?"


def method_stats(sums):
    """Per-method cells from the summaries of its runs (table.summarize): final global and personalised accuracy
    (pct_ci of the mean over runs), best global accuracy, median seconds per round, peak client MiB."""
    def col(k):
        return [s.get(k, math.nan) for s in sums]
    return {"global": pct_ci(stats.mean_ci(col("eval_acc"))), "personal": pct_ci(stats.mean_ci(col("personal_acc"))),
            "best": pct_ci(stats.mean_ci(col("best_eval_acc"))).split(" [")[0],
            "seconds": float(np.nanmedian(col("median_seconds"))), "mib": float(np.nanmax(col("peak_bytes"))) / 2 ** 20}


def markdown_summary(runs, out, by, title, detail, curves_png, sums):
    """The markdown page of a report: the headline table of the seed paper's claims (claim, the paper's range, the
    accuracy protocol, Spry vs the strongest baseline of the class, measured mean and 95% CI over seeds, verdict), a
    per-method table (runs, final global and personalised accuracy with 95% CIs, best global accuracy, median
    seconds per round, peak client memory), every baseline's row, and the learning curves (OUT-curves.png).
    `sums`: {path: table.summarize(path)} of the runs (the report's run table already has them)."""
    stem = os.path.splitext(out)[0]
    png = stem + "-curves.png"
    shutil.copyfile(curves_png, png)
    groups = plots.group_runs(runs, by)
    L = ["# %s" % title, "",
         "%d run files (%s); written %s by `analysis/spry-analyze report` (the HTML report beside it has every "
         "comparison and theory check)." % (len(runs), _provenance(runs), time.strftime("%Y-%m-%d")), "",
         "## The seed paper's claims", "",
         "Accuracy protocols: " + "; ".join("**%s** = %s" % kv for kv in cmp.PROTOCOLS.items()) + ". Each class of "
         "baselines is represented by its strongest member under the protocol (highest mean final accuracy); "
         "accuracy gaps are in percentage points of final accuracy, 95% CIs over seeds (Welch; ratios by the delta "
         "method).", "",
         "| claim | paper | protocol | Spry vs | measured (95% CI) | verdict |", "|---|---|---|---|---|---|"]
    for r in detail:
        if r["representative"]:
            L.append("| %s | %s | %s | %s | %s | %s |" % (r["claim"].split(" (")[0], claim_range(r["claim"]),
                                                          r["protocol"], r["baseline"], r["measured"], r["verdict"]))
    L += ["", "## Methods", "",
          "| method | runs | final global acc % (95% CI) | final personalised acc % (95% CI) | best global acc % | "
          "median s/round | peak client MiB |", "|---|---|---|---|---|---|---|"]
    for label, ps in sorted(groups.items()):
        m = method_stats([sums[p] for p in ps])
        L.append("| %s | %d | %s | %s | %s | %.2f | %.1f |" % (label, len(ps), m["global"], m["personal"], m["best"],
                                                                m["seconds"], m["mib"]))
    L += ["", "## Every baseline, every protocol", "", "| claim | protocol | baseline | measured | verdict |",
          "|---|---|---|---|---|"]
    for r in detail:
        L.append("| %s | %s | %s%s | %s | %s |" % (r["claim"].split(" (")[0], r["protocol"], r["baseline"],
                                                   " (strongest)" if r["representative"] and r["baseline"] != "-" else "",
                                                   r["measured"],
                                                   r["verdict"]))
    L += ["", "## Learning curves", "", "Mean over seeds with a 95% band; dashed: personalised accuracy.", "",
          "![learning curves](%s)" % os.path.basename(png), ""]
    with open(out, "w") as f:
        f.write("\n".join(L))
    return out
