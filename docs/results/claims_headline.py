#!/usr/bin/python3
"""The headline tables of docs/results/claims-TASK/README.md, from a claims sweep's run files, both alphas side
by side: (1) every claim under every accuracy protocol against the strongest baseline of its class (mean and 95% CI
over seeds, verdict); (2) each method's final global and personalised accuracy (mean and 95% CI over seeds).
The same functions as `analysis/spry-analyze report` (compare.claims_detail, report.method_stats); this only lays
the two alphas out together.
  docs/results/claims_headline.py SWEEPDIR > headline.md     (from the repository root; make-claims.sh calls it)
"""
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "analysis"))
from spry_analysis import compare as cmp, table  # noqa: E402
from spry_analysis.plots import group_runs  # noqa: E402
from spry_analysis.report import claim_range, method_stats  # noqa: E402

ALPHAS = ("0.1", "1.0")


def files(sweep, *filters):
    """The complete run files of a jobs/ sweep, optionally those with the given axis values (KEY=VALUE), as
    `spry-sweep files` lists them; a sweep it cannot read ends the script with its message."""
    q = subprocess.run([os.path.join(HERE, "..", "..", "jobs", "spry-sweep"), "files", sweep] + list(filters)
                       + ["--complete"], capture_output=True, text=True)
    if q.returncode != 0:
        sys.exit("%s: %s: %s" % (os.path.basename(sys.argv[0]), sweep, q.stderr.strip()))
    return q.stdout.split()


def main():
    sweep = sys.argv[1]
    runs = {a: files(sweep, "fl.alpha=" + a) for a in ALPHAS}
    runs = {a: r for a, r in runs.items() if r}
    if not runs:
        sys.exit("claims_headline.py: no complete run in %s" % sweep)
    detail = {a: cmp.claims_detail(r) for a, r in runs.items()}
    groups = {a: group_runs(r) for a, r in runs.items()}
    out = ["| claim | paper | protocol | " + " | ".join("alpha = %s: Spry vs | measured (95%% CI) | verdict" % a
                                                      for a in runs) + " |",
           "|---|---|---|" + "---|---|---|" * len(runs)]
    keys = []
    for a in runs:
        for r in detail[a]:
            k = (r["claim"], r["protocol"])
            if r["representative"] and k not in keys:
                keys.append(k)
    for claim, proto in keys:
        cells = []
        for a in runs:
            r = [x for x in detail[a] if x["representative"] and (x["claim"], x["protocol"]) == (claim, proto)]
            if r:
                m = r[0]["measured"].split(" (")[0]
                cells += [r[0]["baseline"], m, r[0]["verdict"].split(" (")[0]]
            else:
                cells += ["-", "-", "-"]
        out.append("| %s | %s | %s | %s |" % (claim.split(" (")[0], claim_range(claim), proto, " | ".join(cells)))
    out += ["", "| method | " + " | ".join("alpha = %s: runs | global acc %% | personalised acc %%" % a for a in runs)
            + " |", "|---|" + "---|---|---|" * len(runs)]
    labels = sorted({g for a in runs for g in groups[a]})
    for g in labels:
        cells = []
        for a in runs:
            ps = groups[a].get(g, [])
            if not ps:      # an unfinished sweep: this method has no complete run at this alpha yet
                cells += ["0", "-", "-"]
                continue
            m = method_stats([table.summarize(p) for p in ps])
            cells += [str(len(ps)), m["global"], m["personal"]]
        out.append("| %s | %s |" % (g, " | ".join(cells)))
    print("\n".join(out))


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: end quietly, as spry-analyze does
    main()
