#!/usr/bin/python3
"""The gap study's tables and figure (docs/results/gap-wordnet/), from the run files of the sweep of
jobs/sweeps/gap-wordnet.toml: one row per factor (Spry with one setting changed from its base configuration, and the
backprop references), its held-out (global) accuracy after 40, 80 and the final round, its personalised accuracy, and
its gap to the strongest backprop reference, paired by seed (a seed fixes the partition and the client sample, so
spry and the reference of one seed see the same clients). Runs of other presets are rows too, named with their class.

  docs/results/gap-wordnet/gap.py SWEEPDIR... [--png FILE] > gap.md      (from the repository root)

Several sweeps enter as one table (the gap study and its K rows at rates re-selected per K); a run present in two
of them counts once.

Factors are named by the method.*/lora.* keys in which a spry run differs from the base configuration, the most
common value of each such key among the spry runs unless --base names it (so "base" is the spry row no factor
changes). Only complete runs
enter; a factor with one seed has no interval ("1 run").
"""
import argparse
import collections
import math
import os
import re
import signal
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "analysis"))
from spry_analysis import compare as cmp, stats, table  # noqa: E402
from spry_analysis.plots import band, series  # noqa: E402
from spry_analysis.report import method_stats, pct_ci  # noqa: E402
from spry_analysis.runfile import RunFile, find_runs  # noqa: E402

CHECKPOINTS = (40, 80)   # rounds at which the accuracy is also shown (the claims sweep's budget is 40)


def load(paths):
    """The complete runs among `paths`: plots.series' columns of each (read once, for the table and the plot), plus
    its configuration, its held-out accuracy by evaluated round, and its summary (table.summarize). A run given
    twice (the same configuration hash and rounds, e.g. a point copied into a second sweep, as the K rows of
    jobs/sweeps/gap-k-TASK.toml are from the gap study) counts once."""
    runs, seen = [], set()
    for p in find_runs(paths):
        with RunFile(p) as rf:
            if rf.status != "complete":
                continue
            key = (rf.attrs.get("config_hash"), rf.rounds_done)
            if key in seen:
                continue
            seen.add(key)
            cfg = dict(rf.config)
        r = series([p])[0]
        r.update(cfg=cfg, sum=table.summarize(p),
                 acc={t + 1: float(r["eval_acc"][t]) for t in np.nonzero(r["evaluated"])[0]})
        runs.append(r)
    return runs


def factor_names(runs, given=None):
    """{path: factor} (see the module's doc); `given` {key: value} fixes the base's value of those keys."""
    spry = [r for r in runs if r["cfg"].get("method.preset") == "spry"]
    keys = sorted({k for r in spry for k in r["cfg"] if k.startswith(("method.", "lora.")) and k != "method.preset"})
    base = {k: collections.Counter(r["cfg"].get(k) for r in spry).most_common(1)[0][0] for k in keys}
    for k, v in (given or {}).items():
        if k not in base:
            sys.exit("gap.py: --base %s=%s: %s is not a key of these spry runs (they have %s)"
                     % (k, v, k, ", ".join(keys)))
        base[k] = v
    out = {}
    for r in runs:
        preset = r["cfg"].get("method.preset", "custom")
        if preset != "spry":
            cls = cmp.method_class(r["path"])
            out[r["path"]] = preset if cls == preset else "%s (%s)" % (preset, cls)
            continue
        diff = ["%s=%s" % (k[len("method."):] if k.startswith("method.") else k, r["cfg"][k])
                for k in keys if r["cfg"].get(k) != base[k]]
        out[r["path"]] = "spry " + (", ".join(diff) if diff else "base")
    return out


def natural(text):
    """Sort key that orders numbers by value: "K=4" before "K=16"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="the sweep directory (or run files, directories)")
    ap.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the base configuration's value of these keys (default: the most common value among the "
                         "spry runs, which an unfinished sweep can get wrong)")
    ap.add_argument("--png", help="also write the learning curves (global accuracy, mean over seeds) to FILE")
    a = ap.parse_args()
    runs = load(a.runs)
    if not runs:
        sys.exit("gap.py: no complete run in %s" % ' '.join(a.runs))
    given = {}
    for kv in a.base:
        k, eq, v = kv.partition("=")
        if not eq or not k.startswith(("method.", "lora.")):
            sys.exit("gap.py: --base takes method.*/lora.* KEY=VALUE pairs, got '%s'" % kv)
        given[k] = v
    names = factor_names(runs, given)
    groups = collections.OrderedDict()
    for r in sorted(runs, key=lambda r: (names[r["path"]] != "spry base", not names[r["path"]].startswith("spry"),
                                         natural(names[r["path"]]), r["seed"])):
        groups.setdefault(names[r["path"]], []).append(r)
    for g, rs in groups.items():
        seeds = [r["seed"] for r in rs]
        if len(seeds) != len(set(seeds)):
            dup = [r for r in rs if seeds.count(r["seed"]) > 1]
            keys = sorted(k for k in dup[0]["cfg"] if k != "run.seed" and len({d["cfg"].get(k) for d in dup}) > 1)
            sys.exit("gap.py: %d runs of '%s' share a seed in %s; they differ in %s, which is not a method.*/lora.* "
                     "factor (a gap study varies one factor at a time at one alpha)"
                     % (len(dup), g, ' '.join(a.runs), ", ".join(keys) or "nothing"))
    final = {g: {r["seed"]: r["sum"]["eval_acc"] for r in rs} for g, rs in groups.items()}
    refs = [g for g in groups if g.endswith("(backprop)")]
    best = max(refs, key=lambda g: np.mean(list(final[g].values()))) if refs else None
    rounds = sorted({r["R"] for r in runs})
    print("%d complete run(s); final round %s; seeds %s. Accuracy: held-out (global) accuracy, %%, mean and 95%% CI "
          "over seeds; gap: %s."
          % (len(runs), "/".join(map(str, rounds)), ",".join(map(str, sorted({r["seed"] for r in runs}))),
             "%s's final accuracy minus the row's, paired by seed, percentage points" % best if best
             else "none (no backprop reference run is complete yet)"))
    print()
    hdr = ["factor", "seeds"] + ["acc @%d" % c for c in CHECKPOINTS] + \
          ["final acc", "per seed", "gap to %s (pp)" % (best or "backprop"), "personalised acc", "median s/round",
           "peak client MiB"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for g, rs in groups.items():
        at = [pct_ci(stats.mean_ci([r["acc"].get(c, math.nan) for r in rs])) for c in CHECKPOINTS]
        m = method_stats([r["sum"] for r in rs])
        per = " / ".join("%.1f" % (100 * final[g][s]) for s in sorted(final[g]))
        if best and g != best:
            common = sorted(set(final[g]) & set(final[best]))
            d = stats.mean_ci([100 * (final[best][s] - final[g][s]) for s in common])
            gap = "-" if not common else ("%.1f (1 seed)" % d[0] if not math.isfinite(d[1])
                                          else "%.1f [%.1f, %.1f]" % d)
        else:
            gap = "-"
        print("| " + " | ".join([g, str(len(rs))] + at + [m["global"], per, gap, m["personal"], "%.2f" % m["seconds"],
                                                         "%.1f" % m["mib"]]) + " |")
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(10.5, 5))
        for gi, (g, rs) in enumerate(groups.items()):
            x, _, mean, _, _ = band(rs, "eval_acc", "evaluated")
            ax.plot(x, 100 * mean, "--" if not g.startswith("spry") else "-", color="C%d" % (gi % 10), marker="o",
                    ms=3, label="%s (%d seed%s)" % (g, len(rs), "s" if len(rs) > 1 else ""))
        ax.set_xlabel("round")
        ax.set_ylabel("held-out accuracy (%), mean over seeds")
        ax.set_title("Spry's gap to backprop on WordNet, alpha 0.1: one factor per curve")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no curve hidden
        fig.tight_layout()
        fig.savefig(a.png, dpi=110, metadata={"Software": None})
        plt.close(fig)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: end quietly, as spry-analyze does
    main()
