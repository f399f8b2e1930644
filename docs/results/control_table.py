#!/usr/bin/python3
"""The personalisation control's table (docs/results/claims-TASK/README.md, finding 3): for each method and alpha,
the personalised accuracy of the UNTRAINED base model (the control sweep, jobs/sweeps/personalise-control-TASK.toml:
one round whose server step is 1e-30, then the claims sweep's 5 personalisation epochs at the method's chosen client
rate) beside the personalised accuracy after the claims sweep's federated training (when its sweep is given) and
the difference (Welch interval: the two sweeps personalise different rounds' participants, so seeds are not paired).
Mean and 95% CI over seeds. A control run whose global model moved (held-out accuracy or loss after its round not
exactly the initial ones) is an error: the control would not be one.

  docs/results/control_table.py CONTROL_SWEEPDIR [CLAIMS_SWEEPDIR] > control.md     (from the repository root)
"""
import collections
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "analysis"))
from claims_headline import files  # noqa: E402
from spry_analysis import stats, table  # noqa: E402
from spry_analysis.report import pct_ci  # noqa: E402
from spry_analysis.runfile import RunFile  # noqa: E402


def by_method_alpha(paths, control):
    """{(preset, alpha): {seed: personal_acc}}; for control runs, checks the global model stayed the base model."""
    out = collections.defaultdict(dict)
    for p in paths:
        s = table.summarize(p)
        with RunFile(p) as rf:
            key = (rf.cfg("method.preset"), rf.cfg("fl.alpha"))
            a0, l0 = rf.attrs["initial_eval_acc"], rf.attrs["initial_eval_loss"]
        if control and not (s.get("eval_round") == s["rounds_done"] and s["eval_acc"] == a0 and s["eval_loss"] == l0):
            sys.exit("control_table.py: %s: the global model moved (held-out acc/loss after round %d: %s / %s, initial "
                     "%s / %s): not a control run"
                     % (p, s["rounds_done"], s.get("eval_acc"), s.get("eval_loss"), a0, l0))
        out[key][s["seed"]] = s["personal_acc"]
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    ctl = by_method_alpha(files(sys.argv[1]), True)
    if not ctl:
        sys.exit("control_table.py: no complete run in %s" % sys.argv[1])
    fed = by_method_alpha(files(sys.argv[2]), False) if len(sys.argv) == 3 else {}
    head = ["method", "alpha", "personalised, untrained base model (control)", "seeds"]
    if fed:
        head += ["personalised after federated training", "training's gain (pp)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (preset, alpha), c in sorted(ctl.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cv = [c[s] for s in sorted(c)]
        f = fed.get((preset, alpha), {})
        fv = [f[s] for s in sorted(f)]
        cells = [preset, alpha, pct_ci(stats.mean_ci(cv)), " / ".join("%.1f" % (100 * x) for x in cv)]
        if fed:
            cells += [pct_ci(stats.mean_ci(fv)), pct_ci(stats.diff_ci(fv, cv))] if fv else ["-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    src = ("federated training from the sweep %s" % os.path.basename(os.path.normpath(sys.argv[2])) if fed
           else "no claims sweep given")
    print("%d control run(s) (global model unchanged in every one: held-out accuracy and loss after the round equal the"
          " initial ones); %s. Accuracy %%, mean [95%% CI] over seeds.\n" % (sum(len(c) for c in ctl.values()), src))
    print("\n".join(rows))


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: end quietly, as spry-analyze does
    main()
