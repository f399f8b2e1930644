"""Learning curves: held-out accuracy and loss against rounds and against wall seconds, one line per method
(or per --by configuration keys), the mean over seeds with a 95% Student-t band (docs/analysis.md).

Series per run: accuracy = metrics eval_acc at the evaluated rounds (and personal_acc, dashed, when the file has
it); loss = metrics train_loss every round. x = rounds completed (t + 1) or the wall seconds spent up to the end
of round t (cumulative /rounds/resources seconds; the mean over the group's seeds at that round). Runs of one
group are aligned on their common rounds.
"""
import numpy as np

from . import stats
from .runfile import RunFile, method_labels


def group_runs(paths, by=None):
    """{label: [path, ...]}: runs grouped by method (and the values of the `by` configuration keys)."""
    groups = {}
    labels = method_labels(paths)
    for p in paths:
        with RunFile(p) as rf:
            label = labels[p]
            if by:
                label += " " + ",".join("%s=%s" % (k, rf.config.get(k, "")) for k in by)
            groups.setdefault(label, []).append(p)
    return groups


def series(paths):
    """Per group: the columns needed by curves and compare, one dict per run."""
    out = []
    for p in paths:
        with RunFile(p) as rf:
            m, res = rf.metrics(), rf.resources()
            out.append({"path": p, "seed": rf.seed, "evaluated": m["evaluated"] == 1, "eval_acc": m["eval_acc"],
                        "eval_loss": m["eval_loss"], "personal_acc": m["personal_acc"], "train_loss": m["train_loss"],
                        "wall": np.cumsum(res["seconds"]), "peak": res["peak_bytes"],
                        "bytes": m["bytes_up"].astype(float) + m["bytes_down"].astype(float), "R": rf.rounds_done})
    return out


def band(runs, key, mask_key=None):
    """(rounds, wall, mean, lo, hi) over the runs at their common rounds (mask_key: only rows where it is True)."""
    R = min(r["R"] for r in runs)
    mask = np.ones(R, bool)
    for r in runs:
        if mask_key:
            mask &= r[mask_key][:R]
        mask &= np.isfinite(r[key][:R])
    idx = np.nonzero(mask)[0]
    Y = np.array([r[key][:R][idx] for r in runs], float)
    W = np.array([r["wall"][:R][idx] for r in runs], float)
    mean, lo, hi = (np.empty(idx.size) for _ in range(3))
    for i in range(idx.size):
        mean[i], lo[i], hi[i] = stats.mean_ci(Y[:, i])
    lo = np.where(np.isfinite(lo), lo, mean)
    hi = np.where(np.isfinite(hi), hi, mean)
    return idx + 1, W.mean(axis=0) if idx.size else W, mean, lo, hi


def curves(paths, out_prefix, by=None):
    """Write OUT_PREFIX.png and OUT_PREFIX.svg (2 x 2 panels); returns (files, figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = group_runs(paths, by)
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    for gi, (label, ps) in enumerate(sorted(groups.items())):
        runs = series(ps)
        color = "C%d" % (gi % 10)
        n = len(runs)
        for key, row, style, suffix in (("eval_acc", 0, "-", ""), ("personal_acc", 0, "--", " (personalised)"),
                                        ("train_loss", 1, "-", "")):
            rounds, wall, mean, lo, hi = band(runs, key, "evaluated" if row == 0 else None)
            if rounds.size == 0:
                continue
            scale = 100.0 if row == 0 else 1.0
            for col, x in ((0, rounds), (1, wall)):
                a = ax[row][col]
                a.plot(x, scale * mean, style, color=color, marker="o" if row == 0 and x.size < 30 else None,
                       ms=3, label="%s%s (%d seed%s)" % (label, suffix, n, "s" if n > 1 else ""))
                if n > 1:
                    a.fill_between(x, scale * lo, scale * hi, color=color, alpha=0.2)
    for col, xl in ((0, "round (rounds completed, t + 1)"),
                    (1, "wall time (s, cumulative round seconds; mean over seeds)")):
        ax[0][col].set_xlabel(xl)
        ax[1][col].set_xlabel(xl)
        ax[0][col].set_ylabel("held-out accuracy (%)")
        ax[1][col].set_ylabel("training loss (nats)")
        ax[0][col].legend(fontsize=7)
        ax[1][col].legend(fontsize=7)
    ax[0][0].set_title("accuracy vs rounds (mean, 95% CI band over seeds)")
    ax[0][1].set_title("accuracy vs wall seconds")
    ax[1][0].set_title("training loss vs rounds")
    ax[1][1].set_title("training loss vs wall seconds")
    fig.tight_layout()
    files = [out_prefix + ".png", out_prefix + ".svg"]
    fig.savefig(files[0], dpi=90)
    fig.savefig(files[1])
    plt.close(fig)
    return files, fig
