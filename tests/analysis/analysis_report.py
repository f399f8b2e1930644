"""curves, compare and report on a small sweep of real runs (Spry, FedAvg, FedMeZO, 2 seeds each, plus one oracle
run for the theory section), then the report in headless Chromium.

Checks:
1. `curves` writes a non-empty PNG and SVG; every panel has an x and y label with a unit in parentheses (read from
   the matplotlib figure) and the SVG carries the label text.
2. Every theory plot (E1-E8 on the runs they apply to) has labelled axes (matplotlib objects, recorded when saved).
3. `compare` prints every pair of the 3 methods with final and best accuracy gaps, rounds and seconds to target,
   memory and bytes ratios, and the paper claims with a verdict each (and every baseline); the verdict rule on
   hand-made intervals.
   Protocols: paper (Spry personalised vs the baselines' global model) for every baseline, personalised (like for
   like) only for baselines that were personalised.
4. `report` writes one self-contained HTML page (no external src/href) with every section: runs, curves,
   comparison, theory, claims; images embedded as base64 PNG; with --markdown, the markdown summary (title,
   provenance, the headline claims table with one row per claim and protocol, the methods table) and its curves PNG.
5. Headless Chromium opens it and its screenshot is not blank: more than 2% of the pixels are not white and the
   pixel values vary (standard deviation > 0.02 on a 0-1 scale). Chromium is the Debian package `chromium`
   (scripts/setup.sh --browser, included in --all).

usage: analysis_report.py SPRY
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alib  # noqa: E402
from spry_analysis import plots, report, theory  # noqa: E402

UNIT = re.compile(r"\(.+\)")


def check_axes(fig, what):
    n = 0
    for ax in fig.get_axes():
        xl, yl = ax.get_xlabel(), ax.get_ylabel()
        assert xl and yl, "%s: a panel without axis labels (x %r, y %r)" % (what, xl, yl)
        assert UNIT.search(xl) and UNIT.search(yl), "%s: labels without a unit in parentheses: %r, %r" % (what, xl, yl)
        n += 1
    assert n > 0, "%s: no axes" % what
    return n


def main():
    spry = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        sweep = os.path.join(tmp, "sweep")
        base = ["run.rounds=8", "run.eval_every=2", "fl.clients_per_round=4"]
        for preset in ("spry", "fedavg", "fedmezo"):
            for seed in (1, 2):
                d = os.path.join(sweep, "%s-s%d" % (preset, seed))
                os.makedirs(d)
                # Spry and FedAvg personalise, FedMeZO does not: the like-for-like protocol must skip FedMeZO
                alib.spry(spry, os.path.join(d, "run.h5"), *base, "method.preset=" + preset, "run.seed=%d" % seed,
                          "log.gradients=none", "eval.personalize_epochs=%d" % (preset != "fedmezo"))
        orc = os.path.join(sweep, "oracle")
        os.makedirs(orc)
        alib.spry(spry, os.path.join(orc, "run.h5"), *alib.ITER, "run.rounds=8", "run.eval_every=2",
                  "fl.clients_per_round=4", "log.gradients=oracle", "method.K=4")
        runs = sorted(os.path.join(r, f) for r, _, fs in os.walk(sweep) for f in fs if f.endswith(".h5"))
        # 1. curves
        files, fig = plots.curves(runs, os.path.join(tmp, "curves"))
        for f in files:
            assert os.path.getsize(f) > 1000, "%s is (nearly) empty" % f
        n_ax = check_axes(fig, "curves")
        svg = open(files[1]).read()
        for label in ("held-out accuracy (%)", "training loss (nats)", "round (rounds completed, t + 1)"):
            assert label in svg, "the SVG lacks the axis label %r" % label
        out = alib.analyze("curves", sweep, "-o", os.path.join(tmp, "cli-curves"))
        assert os.path.getsize(os.path.join(tmp, "cli-curves.png")) > 1000, out
        # 2. theory plots: record each figure when it is saved
        saved = []
        orig = theory._save

        def recording(fig_, path):
            saved.append((path, check_axes(fig_, path)))
            return orig(fig_, path)
        theory._save = recording
        sel = report.applicable(runs)
        for name, ps in sel.items():
            if ps:
                theory.run(name, ps, os.path.join(tmp, "%s.png" % name))
        theory._save = orig
        assert saved, "no theory plot was made"
        for path, _ in saved:
            assert os.path.getsize(path) > 1000, "%s is (nearly) empty" % path
        # 3. compare
        out = alib.analyze("compare", sweep, "--claims")
        for q in ("final accuracy gap A-B", "best accuracy gap A-B", "rounds to target A/B", "seconds to target A/B",
                  "peak client memory A/B", "bytes communicated A/B"):
            assert out.count(q) >= 3, "compare: %r for fewer than 3 pairs:\n%s" % (q, out)
        assert out.count("verdict:") == 4, out
        assert "every baseline" in out and out.count("[global]") >= 4, out
        # protocols: paper (Spry personalised vs global) for the three accuracy and convergence claims; personalised
        # (like for like) only where the baseline has personalised accuracy: the backprop claim against FedAvg,
        # none against FedMeZO (the zeroth-order accuracy and convergence claims)
        assert out.count("[paper]") == 3, out
        pers = [ln for ln in out.splitlines() if ln.strip().startswith("[personalised]")]
        assert len(pers) == 1 and "of backprop vs fedavg:" in pers[0], out
        # the claim verdicts from a CI against a claimed range [0.6, 6.2] (compare.claim_verdict; exact rule)
        from spry_analysis.compare import claim_verdict
        for (est, lo, hi), word in (((3, 1, 5), "reproduced"), ((-8, -10, -6), "below"), ((9, 7, 11), "above"),
                                    ((3, -1, 7), "consistent, not conclusive"), ((-1, -3, 1), "at this precision"),
                                    ((3, float("-inf"), float("inf")), "no CI")):
            v = claim_verdict(est, lo, hi, 0.6, 6.2)
            assert word in v, "claim_verdict(%s, %s, %s) = %r, expected %r" % (est, lo, hi, v, word)
        # 4. report
        html_path = os.path.join(tmp, "report.html")
        md_path = os.path.join(tmp, "summary.md")
        out = alib.analyze("report", sweep, "-o", html_path, "--markdown", md_path, "--title", "test sweep")
        page = open(html_path).read()
        md = open(md_path).read()
        assert md.startswith("# test sweep\n") and "commit " in md, md[:300]
        head = md.split("## The seed paper's claims")[1].split("## Methods")[0]
        rows = [ln for ln in head.splitlines() if ln.startswith("| accuracy") or ln.startswith("| 1.")]
        # backprop claim: global, paper, personalised (fedavg); zeroth: global, paper (fedmezo not personalised);
        # convergence: global, paper; memory: global
        assert len(rows) == 8 and sum("| personalised |" in ln for ln in rows) == 1, head
        assert "| 0.6-6.2 pp |" in head and "| 1.4-7.1x |" in head, head
        methods = md.split("## Methods")[1].split("##")[0]
        # labels are relative to the set: the two Spry runs differ from the oracle Spry run in K, comm, local_steps
        spry_label = "spry[K=1,comm=epoch,local_steps=0]"
        assert all(("| %s | 2 |" % m) in methods for m in (spry_label, "fedavg", "fedmezo")), methods
        from spry_analysis.runfile import method_labels
        labels = method_labels(runs)
        assert sorted(set(labels.values())) == ["fedavg", "fedmezo", spry_label,
                                                "spry[K=4,comm=iteration,local_steps=1]"], labels
        spry_only = [p for p in runs if "spry-s" in p]
        assert set(method_labels(spry_only).values()) == {"spry"}, method_labels(spry_only)
        png = os.path.join(tmp, "summary-curves.png")
        assert "](summary-curves.png)" in md and os.path.getsize(png) > 1000, md[-300:]
        for s in ("<h2>Runs</h2>", "<h2>Learning curves</h2>", "<h2>Method comparison</h2>",
                  "<h2>Theory checks", "<h2>The seed paper's claims"):
            assert s in page, "report lacks section %s" % s
        assert page.count("data:image/png;base64,") >= 2, "report: plots not embedded"
        ext = re.findall(r"(?:src|href)=[\"'](?!data:)([^\"']+)", page)
        assert not ext, "report refers to external files: %s" % ext[:5]
        # 5. headless chromium
        chrome = shutil.which("chromium")
        assert chrome, "chromium is not installed: run scripts/setup.sh --browser (Debian package chromium)"
        shot, prof = os.path.join(tmp, "shot.png"), os.path.join(tmp, "chrome-profile")
        cmd = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--user-data-dir=" + prof, "--window-size=1200,2400", "--screenshot=" + shot, "file://" + html_path]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0 and os.path.exists(shot), "chromium failed (%d):\n%s" % (p.returncode, p.stderr[-3000:])
        import matplotlib.image as mpimg
        img = mpimg.imread(shot)[..., :3]
        nonwhite = float((img.min(axis=2) < 0.95).mean())
        assert nonwhite > 0.02 and float(img.std()) > 0.02, "blank screenshot: %.4f non-white, std %.4f" % (
            nonwhite, img.std())
        keep = os.environ.get("SPRY_KEEP_REPORT")
        if keep:
            shutil.copy(html_path, keep + ".html")
            shutil.copy(shot, keep + ".png")
    print("analysis_report: curves (%d panels), %d theory plots with labelled axes, compare, report with 5 sections; "
          "screenshot %.1f%% non-white" % (n_ax, len(saved), 100 * nonwhite))


if __name__ == "__main__":
    main()
