"""The theory checks' premise selection on a mixed sweep like jobs/sweeps/theorem1.toml and theorem2.toml (issue 13):
the report must judge each check only on the runs its theorem is about, and say which it left out and why.

Checks (small real runs of tests/analysis/alib.py SMALL, 10-20 rounds each, log.gradients = oracle):
1. E4 on a homogeneous partition: THEORY 5.6's prediction assumes independent client samples; with identical
   client data the measured bias is ~0 while the finite-sample term predicts > 0. The verb says the premise fails
   (exit 1, the reason names fl.partition = homogeneous) instead of reporting a measured/predicted ratio of 0; the
   report leaves the run out of E4 (with that reason) and judges it under E5.
2. E4 groups runs that differ only in alpha: three alphas at M = 4 and one run at M = 8 give exactly one
   'bias vs alpha' Spearman line, over the 3 runs at M = 4 (never a correlation across M or s_l), and every run's
   line names M and s_l.
3. E8: the report judges only runs whose server step meets Theorem 2's eta <= 1/(4 L (1+rho)) (L from the run's
   own secants): a run at server_lr 0.001 is judged, one at server_lr 50 is left out with 'step is too large'.
   The HTML page lists the left-out runs under the check with their reasons.
4. Plot labels name sweep points by their folder (points/RUN_ID/run.h5 -> 'RUN_ID[:8]/run.h5'), not 'run.h5'.
No tolerances: each check is on the selection and the printed text, and the runs are deterministic.

usage: analysis_premises.py SPRY
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alib  # noqa: E402
from spry_analysis import report, theory  # noqa: E402


def main():
    spry = sys.argv[1]
    assert theory.short_name("/s/points/0123456789abcdef/run.h5") == "01234567/run.h5"
    assert theory.short_name("/s/al0.01.h5") == "al0.01.h5"
    with tempfile.TemporaryDirectory() as tmp:
        sweep = os.path.join(tmp, "sweep")
        os.makedirs(sweep)
        P = lambda name: os.path.join(sweep, name)  # noqa: E731
        o = ["log.gradients=oracle", "run.eval_every=0", "fl.weighting=uniform"] + alib.ITER
        # 1. homogeneous partition
        alib.spry(spry, P("homog.h5"), *o, "fl.clients_per_round=4", "fl.partition=homogeneous", "run.rounds=10")
        out = alib.analyze("theory", "E4", P("homog.h5"), "--plot", os.path.join(tmp, "e4h.png"), expect=1)
        assert "premise of Theorem 1.4 fails: fl.partition = homogeneous" in out, out
        assert "measured/predicted" not in out, "E4 judged a homogeneous run:\n" + out
        # 2. three alphas at M = 4, one run at M = 8
        for a in ("0.01", "1", "inf"):
            alib.spry(spry, P("al%s.h5" % a), *o, "fl.clients_per_round=4", "fl.alpha=" + a, "run.rounds=20")
        alib.spry(spry, P("m8.h5"), *o, "fl.clients_per_round=8", "fl.alpha=0.01", "run.rounds=20")
        out = alib.analyze("theory", "E4", P("al0.01.h5"), P("al1.h5"), P("alinf.h5"), P("m8.h5"), "--plot",
                           os.path.join(tmp, "e4.png"), expect=None)
        sp = [ln for ln in out.splitlines() if ln.startswith("  ") and "bias vs alpha" in ln]
        assert len(sp) == 1 and "over 3 runs" in sp[0] and "M = 4" in sp[0], "E4 Spearman lines:\n" + out
        assert out.count("M = 4, s_l = ") >= 3 and out.count("M = 8, s_l = ") == 1, out
        # 3. E8 step condition
        sgd = ["method.server_opt=fedavg", "method.K=16", "fl.clients_per_round=4", "run.rounds=20"]
        alib.spry(spry, P("small.h5"), *o, *sgd, "method.server_lr=0.001")
        alib.spry(spry, P("big.h5"), *o, *sgd, "method.server_lr=50")
        runs = sorted(P(f) for f in os.listdir(sweep))
        sel, left = report.premises(runs)
        assert sel["E4"] == [P("al0.01.h5"), P("al1.h5"), P("alinf.h5"), P("big.h5"), P("m8.h5"), P("small.h5")], sel
        assert [p for p, _ in left["E4"]] == [P("homog.h5")], left["E4"]
        assert "homogeneous" in left["E4"][0][1]
        assert P("homog.h5") in sel["E5"], sel["E5"]
        assert sel["E8"] == [P("small.h5")], sel["E8"]
        assert [p for p, _ in left["E8"]] == [P("big.h5")] and "step is too large" in left["E8"][0][1], left["E8"]
        html_path = os.path.join(tmp, "report.html")
        alib.analyze("report", sweep, "-o", html_path)
        page = open(html_path).read()
        assert page.count("left out (premise not met") == 2, "report: left-out lists missing"
        assert "big.h5: eta = 50 &gt; 1/(4 L (1+rho))" in page and "homog.h5: fl.partition = homogeneous" in page
    print("analysis_premises: E4 leaves out homogeneous partitions and groups by configuration; the report judges "
          "E8 only at steps within Theorem 2's condition and lists what it left out")


if __name__ == "__main__":
    main()
