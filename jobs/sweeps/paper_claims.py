#!/usr/bin/python3
"""Write the paper-claims sweep spec of one task from the learning rates `spry-analyze select` chose.

  analysis/spry-analyze select SWEEPS/paper-lrsel-TASK -o jobs/sweeps/chosen-TASK.json
  jobs/sweeps/paper_claims.py TASK jobs/sweeps/chosen-TASK.json --size machine > jobs/sweeps/paper-claims-TASK.toml
  jobs/sweeps/paper_claims.py TASK jobs/sweeps/chosen-TASK.json --size cluster > jobs/sweeps/paper-claims-TASK-cluster.toml
  jobs/sweeps/paper_claims.py TASK jobs/sweeps/chosen-TASK.json --size gap > jobs/sweeps/gap-TASK.toml
  jobs/sweeps/paper_claims.py TASK jobs/sweeps/chosen-TASK.json --size control > jobs/sweeps/personalise-control-TASK.toml
  jobs/sweeps/paper_claims.py TASK jobs/sweeps/chosen-TASK.json --size k-select > jobs/sweeps/gap-kselect-TASK.toml
  analysis/spry-analyze select SWEEPS/gap-kselect-TASK --by method.K -o jobs/sweeps/chosen-k-TASK.json
  jobs/sweeps/paper_claims.py TASK jobs/sweeps/chosen-k-TASK.json --size gap-k > jobs/sweeps/gap-k-TASK.toml

Every preset runs with ITS chosen (client_lr, server_lr) at alpha in {0.1, 1.0} x seeds {1, 2, 3}, evaluated on the
test split (data.validation_fraction = 0: the selection used a validation split carved from the training data),
with the paper's personalised accuracy beside the global one (eval.personalize_epochs = 5, PAPER-SETTINGS.md) for
every method that can afford it: personalising is F local epochs of the method's OWN client training, so the
baselines' personalised accuracy is the control the paper's protocol (Spry personalised vs baselines global) lacks.
Sizes: `machine` = the budget the rates were chosen at (40 rounds, evaluated every 5 so that rounds-to-target has
8 steps, 1 rank per point); BAFFLE and FwdLLM are not personalised at this size: measured on this machine, one
personalisation of their 10 participants costs 190 s (BAFFLE) and 300 s (FwdLLM, K up to 50 per step) per evaluated
round, 15-25x their training round, against ~8 s for the others. `cluster` = the paper's 1,500 rounds (3,000 for
FwdLLM is not reproduced: every method gets the same rounds), evaluated every 100, every method personalised,
4 ranks per point, its cost estimated in the header from the machine-size runs' measured seconds per round.
`gap` = the study of Spry's gap to backprop (issue 13): Spry at its chosen rates, alpha 0.1, 160 rounds (the
accuracy every 20 rounds is the rounds axis; run.rounds is not hashed, so it cannot be a point axis), one factor
changed per row: K 4 and 16, 3 local epochs, LoRA rank 4 (alpha scaled to keep alpha/r), the head not shared (the
paper's default), a client rate one step up; plus fedavg-split (backprop on Spry's split: separates the split from
the estimator) and the strongest backprop method at their chosen rates, 2 seeds; personalised accuracy on.
`control` = the control of the paper's personalised protocol: personalised accuracy with NO federated training
(one round whose server step is 1e-30, then the claims sweep's 5 personalisation epochs at each method's chosen
client rate), for Spry, FedFGD, FedAvg, FedYogi and FedMeZO, both alphas, seeds 1-3.
"""
import argparse
import json
import os
import sys

TASKS = {"wordnet": "configs/wordnet-spry.ini", "fortunes": "configs/fortunes-spry.ini"}
ORDER = ["spry", "fedfgd", "fedavg", "fedyogi", "fedsgd", "fedavg-split", "fedmezo", "baffle", "fwdllm"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("chosen", help="JSON written by spry-analyze select -o")
    ap.add_argument("--size", choices=["machine", "cluster", "gap", "control", "k-select", "gap-k"], default="machine")
    ap.add_argument("--seconds-per-round", type=float, default=None,
                    help="cluster size: mean seconds per round at 1 rank for the cost line (default: measured, the "
                         "mean of round_seconds_total / rounds_done over the chosen runs' files named in CHOSEN)")
    ap.add_argument("--seconds-from", choices=["selection", "verify"], default="selection",
                    help="cluster size: where the measured seconds per round come from: the chosen selection runs' "
                         "files (default), or their reruns by `jobs/spry-sweep verify SWEEP RUN_ID --ranks 1` "
                         "(SWEEP/verify/RUN_ID-p1/run.h5: timed anew, e.g. on a quiet machine; the rerun also "
                         "checks the chosen run is reproduced bit for bit)")
    ap.add_argument("--allow-edges", action="store_true",
                    help="write the spec even when a chosen rate sits on the edge of its selection grid (the "
                         "header then says so); by default that is refused, as the grid should be extended first")
    a = ap.parse_args()
    chosen = json.load(open(a.chosen))
    edges = ["%s %s = %s (the %s value tried)" % (p, k, c.get(k), side)
             for p, c in sorted(chosen.items()) for k, side in sorted(c.get("edges", {}).items())]
    if edges and not a.allow_edges:
        sys.exit("paper_claims.py: %s: chosen rate(s) on the edge of the selection grid, the optimum may lie beyond "
                 "it:\n  %s\nextend the grid (jobs/sweeps/%s-%s.toml) and select again, or pass "
                 "--allow-edges to use them anyway" % (a.chosen, "\n  ".join(edges),
                                                       "gap-kselect" if a.size == "gap-k" else "paper-lrsel", a.task))
    if a.size == "gap":
        need = ["spry", "fedavg", "fedyogi", "fedsgd", "fedavg-split"]
        if any(p not in chosen for p in need):
            sys.exit("paper_claims.py: %s lacks chosen rates for %s" % (a.chosen, [p for p in need if p not in chosen]))
        return gap(a, chosen, edges)
    if a.size == "control":
        return control(a, chosen, edges)
    if a.size == "gap-k":
        return gap_k(a, chosen, edges)
    if a.size == "k-select":
        if "spry" not in chosen:
            sys.exit("paper_claims.py: %s has no chosen rates for spry" % a.chosen)
        return k_select(a, chosen["spry"], edges)
    missing = [p for p in ORDER if p not in chosen]
    if missing:
        sys.exit("paper_claims.py: %s has no chosen rates for %s (finish the selection sweep)" % (a.chosen, missing))
    rounds, ranks, evaluate = (40, 1, 5) if a.size == "machine" else (1500, 4, 100)
    no_personal = ("baffle", "fwdllm") if a.size == "machine" else ()
    points = len(ORDER) * 2 * 3
    if a.size == "machine":
        cost = ("%d points x %d rounds at 1 rank; measured on this 2-core machine: see docs/results/README.md"
                % (points, rounds))
    else:
        spr = (a.seconds_per_round if a.seconds_per_round is not None
               else measured_seconds_per_round(chosen, a.seconds_from == "verify"))
        source = ("given with --seconds-per-round" if a.seconds_per_round is not None
                  else "the mean over the methods' chosen points of the selection sweep" + (
                      ", rerun by spry-sweep verify" if a.seconds_from == "verify" else ""))
        # personalising the 10 participants once, measured on this machine (seconds): BAFFLE 190, FwdLLM 300, the
        # per-epoch methods about 8 (jobs/sweeps/paper_claims.py's docstring)
        pers = 6 * (rounds // evaluate) * (190 + 300 + 7 * 8)
        cost = ("%d points x %d rounds; at %s s/round (%s, 1 rank, no personalisation), about %s core-hours of "
                "training, plus about %.0f core-hours of personalisation (%d evaluations per point%s)"
                % (points, rounds, "%.2f" % spr if spr else "(not given)",
                   source,
                   "%.0f" % (points * rounds * spr / 3600) if spr else "?", pers / 3600, rounds // evaluate,
                   "" if a.task == "wordnet" else "; at WordNet's measured cost per evaluation, a lower bound "
                   "for %s's longer sequences" % a.task))
    print("# The seed paper's claims, reproduced on the same footing (issue 13): task %s, size %s." % (a.task, a.size))
    timing = (" --seconds-per-round %g" % a.seconds_per_round if a.seconds_per_round is not None
              else " --seconds-from verify" if a.seconds_from == "verify" else "")
    print("# Generated by: jobs/sweeps/paper_claims.py %s %s --size %s%s" % (a.task, a.chosen, a.size, timing))
    print("# Rates: chosen per method on a validation split by `spry-analyze select` (jobs/sweeps/paper-lrsel-%s.toml)."
          % a.task)
    for p in ORDER:
        c = chosen[p]
        print("#   %-13s client_lr %-8s server_lr %-8s (validation accuracy %.2f%%)"
              % (p, c.get("method.client_lr"), c.get("method.server_lr"), 100 * c["val_acc"]))
    spec_head(a.task, edges, cost, "paper-claims-%s%s" % (a.task, "" if a.size == "machine" else "-cluster"), ranks,
              [1, 2, 3])
    if no_personal:
        print("# Not personalised at this size (cost, see jobs/sweeps/paper_claims.py): %s." % ", ".join(no_personal))
    print('set = ["run.rounds=%d", "run.eval_every=%d", "data.validation_fraction=0",' % (rounds, evaluate))
    print('       "log.gradients=none", "run.checkpoint_every=10"]')
    print()
    print("[zip]")
    print('"method.preset" = [%s]' % ", ".join('"%s"' % p for p in ORDER))
    print('"method.client_lr" = [%s]' % ", ".join(str(chosen[p]["method.client_lr"]) for p in ORDER))
    print('"method.server_lr" = [%s]' % ", ".join(str(chosen[p]["method.server_lr"]) for p in ORDER))
    print('"eval.personalize_epochs" = [%s]' % ", ".join("0" if p in no_personal else "5" for p in ORDER))
    print()
    print("[grid]")
    print('"fl.alpha" = [0.1, 1.0]')
    print()
    spec_slurm("00:30:00" if a.size == "machine" else "12:00:00", "2G" if a.size == "machine" else "8G")


def spec_head(task, edges, cost, name, ranks, seeds):
    """The lines every generated spec shares: the edge warnings, the cost, the command that runs it, and the spec's
    name, base configuration, ranks and seeds."""
    for e in edges:
        print("# ON THE GRID'S EDGE (--allow-edges): %s" % e)
    print("# Cost: %s." % cost)
    print("#   jobs/spry-sweep run-local jobs/sweeps/%s.toml -d sweeps/%s" % (name, name))
    print('name = "%s"' % name)
    print('base = "%s"' % TASKS[task])
    print("ranks = %d" % ranks)
    print("seeds = [%s]" % ", ".join(str(x) for x in seeds))


def spec_slurm(time, mem="2G"):
    """The [slurm] table every generated spec ends with."""
    print("[slurm]")
    print('time = "%s"' % time)
    print('mem = "%s"' % mem)
    print("throttle = 16")


def measured_seconds_per_round(chosen, verify=False):
    """Mean over the presets of the seconds per training round their chosen selection run took (the run files'
    /@round_seconds_total / /@rounds_done; wall time on the machine that ran them, 1 rank), or with `verify` its
    rerun's (SWEEP/verify/RUN_ID-p1/run.h5, written by `spry-sweep verify SWEEP RUN_ID --ranks 1`; a missing rerun is
    an error naming that command); None when a selection file is not readable here (then the cost line says so)."""
    paths = {p: chosen[p]["run"] for p in ORDER}
    if verify:
        for p, run in paths.items():
            point = os.path.dirname(os.path.abspath(run))
            sweep = os.path.dirname(os.path.dirname(point))
            paths[p] = os.path.join(sweep, "verify", os.path.basename(point) + "-p1", "run.h5")
            if not os.path.exists(paths[p]):
                sys.exit("paper_claims.py: --seconds-from verify: %s (%s's chosen run) has no rerun %s; make it "
                         "with\n  jobs/spry-sweep verify %s %s --ranks 1"
                         % (run, p, paths[p], sweep, os.path.basename(point)))
    try:
        import h5py
        per = []
        for p in ORDER:
            with h5py.File(paths[p], "r") as f:
                per.append(float(f.attrs["round_seconds_total"]) / int(f.attrs["rounds_done"]))
        return sum(per) / len(per)
    except (ImportError, OSError, KeyError, ZeroDivisionError) as e:
        print("paper_claims.py: seconds per round not measured (%s); pass --seconds-per-round" % e, file=sys.stderr)
        return None


CONTROL = ["spry", "fedfgd", "fedavg", "fedyogi", "fedmezo"]


def control(a, chosen, edges):
    missing = [p for p in CONTROL if p not in chosen]
    if missing:
        sys.exit("paper_claims.py: %s has no chosen rates for %s (finish the selection sweep)" % (a.chosen, missing))
    print("# Control for the paper's personalised-accuracy protocol (issue 13, docs/results/claims-%s/README.md): how "
          "much" % a.task)
    print("# accuracy does personalising alone give, with no federated training? One round whose server step is "
          "1e-30 (the")
    print("# smallest thing server_lr > 0 allows: the global model stays the base model to float precision; its "
          "held-out")
    print("# accuracy after round 1 must equal the initial one), then eval.personalize_epochs = 5 on the round's 10")
    print("# participants, exactly as the claims sweep personalises: each method's own client training at its chosen "
          "client")
    print("# rate (%s), alpha 0.1 and 1.0, seeds 1-3." % a.chosen)
    print("# Generated by: jobs/sweeps/paper_claims.py %s %s --size control" % (a.task, a.chosen))
    spec_head(a.task, edges, "%d points x 1 round (10-20 minutes on one core)" % (len(CONTROL) * 6),
              "personalise-control-%s" % a.task, 1, [1, 2, 3])
    print('set = ["run.rounds=1", "run.eval_every=1", "eval.personalize_epochs=5", "method.server_lr=1e-30",')
    print('       "data.validation_fraction=0", "log.gradients=none"]')
    print()
    print("[zip]")
    print('"method.preset" = [%s]' % ", ".join('"%s"' % p for p in CONTROL))
    print('"method.client_lr" = [%s]' % ", ".join(str(chosen[p]["method.client_lr"]) for p in CONTROL))
    print()
    print("[grid]")
    print('"fl.alpha" = [0.1, 1.0]')


def gap(a, chosen, edges):
    sp, fs = chosen["spry"], chosen["fedavg-split"]
    backprop = ["fedavg", "fedyogi", "fedsgd", "fedavg-split"]
    best = max(backprop, key=lambda p: chosen[p]["val_acc"])
    clr, slr = float(sp["method.client_lr"]), float(sp["method.server_lr"])
    rows = [  # (label, preset, client_lr, server_lr, K, local_epochs, lora rank, lora alpha, head_shared)
        ("spry base", "spry", clr, slr, 1, 1, 1, 2, "true"),
        ("spry K=4", "spry", clr, slr, 4, 1, 1, 2, "true"),
        ("spry K=16", "spry", clr, slr, 16, 1, 1, 2, "true"),
        ("spry 3 local epochs", "spry", clr, slr, 1, 3, 1, 2, "true"),
        ("spry LoRA rank 4", "spry", clr, slr, 1, 1, 4, 8, "true"),
        ("spry head not shared", "spry", clr, slr, 1, 1, 1, 2, "false"),
        ("spry client rate x3", "spry", 3 * clr, slr, 1, 1, 1, 2, "true"),
        ("fedavg-split", "fedavg-split", float(fs["method.client_lr"]), float(fs["method.server_lr"]), 1, 1, 1, 2,
         "true"),
    ]
    if best != "fedavg-split":
        b = chosen[best]
        rows.append((best, best, float(b["method.client_lr"]), float(b["method.server_lr"]), 1, 1, 1, 2, "true"))
    print("# Spry's gap to backprop on %s, by experiment (issue 13): one factor per row, 160 rounds, alpha 0.1." % a.task)
    print("# Generated by: jobs/sweeps/paper_claims.py %s %s --size gap" % (a.task, a.chosen))
    for r in rows:
        print("#   %-22s %s client_lr %g server_lr %g K %d local_epochs %d lora r %d" % r[:7])
    spec_head(a.task, edges, "%d points x 160 rounds at 1 rank (K = 16 and 3 epochs cost ~3-8x a base round)"
              % (2 * len(rows)), "gap-%s" % a.task, 1, [1, 2])
    print('set = ["run.rounds=160", "run.eval_every=20", "eval.personalize_epochs=5", "fl.alpha=0.1",')
    print('       "log.gradients=none", "run.checkpoint_every=10"]')
    print()
    print("[zip]")
    for i, key in enumerate(["method.preset", "method.client_lr", "method.server_lr", "method.K", "method.local_epochs",
                             "lora.rank", "lora.alpha", "method.head_shared"], start=1):
        vals = ['"%s"' % r[i] if isinstance(r[i], str) else "%g" % r[i] for r in rows]
        print('"%s" = [%s]' % (key, ", ".join(vals)))
    print()
    spec_slurm("02:00:00")


KS = [1, 4, 16]


def half_decade(x):
    """x's neighbours on the 1-3-10 series (1e-2 -> 3e-3, 1e-2, 3e-2; 3e-2 -> 1e-2, 3e-2, 1e-1)."""
    s = "%.0e" % x
    m, e = int(s[0]), int(s.split("e")[1])
    if m not in (1, 3) or abs(float(s) - x) > 1e-9 * x:
        sys.exit("paper_claims.py: rate %g is not on the 1-3-10 series the selection grids use" % x)
    lo, hi = (3 * 10.0 ** (e - 1), 3 * 10.0 ** e) if m == 1 else (10.0 ** e, 10.0 ** (e + 1))
    return [float("%.0e" % v) for v in (lo, x, hi)]


def k_select(a, sp, edges):
    clr, slr = half_decade(float(sp["method.client_lr"])), half_decade(float(sp["method.server_lr"]))
    print("# Spry's rates re-selected for each number of tangents K (issue 13's gap study: its K rows ran at K = 1's "
          "rates).")
    print("# The claims' selection rule: validation split (data.validation_fraction = 0.1; the test split is never "
          "read),")
    print("# alpha 0.1, seed 1, 40 rounds; a half-decade grid around K = 1's chosen rates (client %g, server %g, from"
          % (clr[1], slr[1]))
    print("# %s). Choose per K, then write the 160-round rows at the chosen rates:" % a.chosen)
    print("#   analysis/spry-analyze select sweeps/gap-kselect-%s --by method.K -o jobs/sweeps/chosen-k-%s.json"
          % (a.task, a.task))
    print("#   jobs/sweeps/paper_claims.py %s jobs/sweeps/chosen-k-%s.json --size gap-k > jobs/sweeps/gap-k-%s.toml"
          % (a.task, a.task, a.task))
    print("# Generated by: jobs/sweeps/paper_claims.py %s %s --size k-select" % (a.task, a.chosen))
    spec_head(a.task, edges, "%d points x 40 rounds at 1 rank (a K = 16 round costs ~7.5x a K = 1 round)"
              % (len(KS) * len(clr) * len(slr)), "gap-kselect-%s" % a.task, 1, [1])
    print('set = ["method.preset=spry", "data.validation_fraction=0.1", "run.rounds=40", "run.eval_every=20",')
    print('       "fl.alpha=0.1", "log.gradients=none", "run.checkpoint_every=10"]')
    print()
    print("[grid]")
    print('"method.K" = [%s]' % ", ".join(str(k) for k in KS))
    print('"method.client_lr" = [%s]' % ", ".join("%g" % v for v in clr))
    print('"method.server_lr" = [%s]' % ", ".join("%g" % v for v in slr))
    print()
    spec_slurm("01:00:00")


def gap_k(a, chosen, edges):
    missing = [str(k) for k in KS if str(k) not in chosen]
    if missing:
        sys.exit("paper_claims.py: %s has no chosen rates for K = %s (select the k-select sweep with --by method.K)"
                 % (a.chosen, ", ".join(missing)))
    rows = [(k, float(chosen[str(k)]["method.client_lr"]), float(chosen[str(k)]["method.server_lr"])) for k in KS]
    print("# Spry's gap to backprop on %s: the gap study's K rows (160 rounds, alpha 0.1, seeds 1-2) at the rates "
          "chosen" % a.task)
    print("# for each K (%s, from the gap-kselect sweep); a row whose rates equal the gap study's is" % a.chosen)
    print("# the same run id (copy its point folder from the gap study's sweep instead of running it again).")
    print("# Generated by: jobs/sweeps/paper_claims.py %s %s --size gap-k" % (a.task, a.chosen))
    for r in rows:
        print("#   spry K=%-3d client_lr %g server_lr %g" % r)
    spec_head(a.task, edges, "%d points x 160 rounds at 1 rank (a K = 16 round costs ~7.5x a K = 1 round)"
              % (2 * len(rows)), "gap-k-%s" % a.task, 1, [1, 2])
    print('set = ["method.preset=spry", "run.rounds=160", "run.eval_every=20", "eval.personalize_epochs=5", '
          '"fl.alpha=0.1",')
    print('       "log.gradients=none", "run.checkpoint_every=10"]')
    print()
    print("[zip]")
    for i, key in enumerate(["method.K", "method.client_lr", "method.server_lr"]):
        print('"%s" = [%s]' % (key, ", ".join("%g" % r[i] for r in rows)))
    print()
    spec_slurm("02:00:00")


if __name__ == "__main__":
    main()
