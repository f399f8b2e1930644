"""THEORY.md section 7's experiments E1-E6 and E8, each judged from run files alone.

Every check returns a Verdict: the numbers it printed, the plot it wrote, and `holds` = True (the statement
holds on these runs: exit 0), False (it does not, or the theorem's preconditions fail: exit 1) or None (the files
do not carry what the check needs: exit 2, the message names the missing item). The criteria are stated in
CRITERIA (the CLI help and docs/analysis.md print the same text).

Per-slot samples (E1, E2, E3): in a per-iteration run (one local step) slot j of round t gives one draw
g_hat = /slots/estimate[t, j] (or rebuilt from /slots/scalars by tangents.py) of the estimator of
g = the client's batch gradient on its blocks (/slots/batch_gradient, v1: /slots/true_gradient), both restricted
to the blocks the slot trained (/slots/assigned); d = the number of those coordinates.
"""
import math
import os

import numpy as np
from scipy import stats as st

from . import stats, tangents
from .runfile import RunFile

CRITERIA = {
    "E1": "Unbiasedness of the forward gradient (THEORY 4). Per-slot draws of a per-iteration run: "
          "s = <g_hat - g, g>/||g||^2 and, for 3 fixed random unit directions u (numpy seed 0), "
          "y = <g_hat - g, u>/||g||. HOLDS when every statistic's mean has a Student-t CI at level "
          "1 - 0.01/4 (99%, Bonferroni over the 4) that contains 0. Needs >= 20 draws.",
    "E2": "Variance law (THEORY 4): r = ||g_hat - g||^2 K/||g||^2 has mean d+1 (Gaussian tangents) or d-1 "
          "(Rademacher). Draws grouped by (K, d); the law is the file's method.tangent unless --law says otherwise. "
          "HOLDS when, in every group with >= 30 draws, the expected value lies in the Student-t CI of mean r at "
          "level 1 - 0.01/groups (99%, Bonferroni).",
    "E3": "Zeroth-order bias vs eps (THEORY 4): per run (its method.zo_eps) the relative bias along g, "
          "beta = mean <g_hat - g, g>/||g||^2 with a 99% t-CI. HOLDS when (a) at the smallest eps the CI contains 0 "
          "or |beta| <= 0.02, and (b) |beta| does not decrease significantly as eps grows "
          "(for consecutive eps: |beta_hi| + h_hi >= |beta_lo| - h_lo, h = CI half-widths).",
    "E4": "Spry bias vs alpha (Theorem 1.4 with realised proportions, THEORY 5.6). Per round: measured "
          "B = sum_l ||b^l||^2 with b^l = sum_{m in M_l} q_ml G_m^l - g^l, G_m the full local gradients "
          "(v2 /slots/local_gradient; v1 files: the batch-path gradients, labelled as such); predicted "
          "P = sum_l (1/s_l - 1/M) (S_pop,l^2 + E||eps^l||^2), S_pop^2 the sample variance over the round's clients "
          "of sum_c pihat_mc G_c^l (realised proportions, class gradients), E||eps^l||^2 the mean over clients "
          "of ||G_m^l - sum_c pihat_mc G_c^l||^2 (finite-sample part). HOLDS when, for every run, the 95% CI of "
          "mean(B)/mean(P) over rounds meets [0.5, 2] (the theorem is an expectation over clients and "
          "assignments; a run has few rounds), and, given >= 3 alphas, the measured bias falls with alpha "
          "(Spearman rank correlation < 0). The Dirichlet-draw prediction sum_l (1/s_l - 1/M) V_l/(C alpha + 1) is "
          "printed beside it."
          " Runs are grouped by configuration apart from alpha and the seed (M, s_l, assignment, ...): the "
          "Spearman test is per group with >= 3 alphas, never across groups; each run's line names M and its s_l "
          "(mean clients per block). A homogeneous partition is not judged (the premise fails: exit 1, said so): "
          "identical clients have identical finite-sample parts, so the E||eps||^2 term does not apply (the bias "
          "is 0 there; E5 judges it).",
    "E5": "Homogeneous data => unbiased (Theorem 1.1): HOLDS when the mean over rounds of "
          "sum_l ||b^l||^2 / ||g||^2 from the full local gradients is <= 1e-6 (float32 rounding of gradients "
          "summed in different batch orders). Needs v2 /slots/local_gradient and /rounds/bias_sq.",
    "E6": "Random assignment turns bias into variance (Theorem 1.5): per-round bias vectors b_t (from the "
          "full local gradients, or v1's batch-path gradients) average out over rounds: "
          "P = T ||mean_t b_t||^2 / mean_t ||b_t||^2 is ~1 for zero-mean independent b_t and ~T for a "
          "systematic bias. HOLDS when P <= 3.",
    "E8": "Theorem 2 (THEORY 6): for a per-iteration forward-gradient run with server SGD and Gaussian tangents, "
          "the average over rounds of ||grad f(w_t)||^2 (metrics grad_sq) is at most "
          "4 Delta_0/(eta T) + 3 B^2 + rho Z^2/(1+rho) + S^2/(2(1+rho)) with L = max secant (metrics secant, "
          "pool gradients), rho = max over rounds of max_l (d_l+1)/(K s_l), "
          "S^2 = max over rounds of sum_l (1/s_l)(1 + (d_l+1)/K) sigma_l^2 (sigma_l^2: the round's mean over "
          "clients of /slots/minibatch_variance), B^2 = max over rounds of sum_l /rounds/bias_sq, Z^2 = max over "
          "rounds of metrics z2, Delta_0 = objective(w_0) - f*, f* = 0 (cross-entropy >= 0; the min objective seen "
          "is printed too). 4 Delta_0/(eta T) equals THEORY's 16 L (1+rho) Delta_0/T at eta = 1/(4 L (1+rho)). "
          "HOLDS when eta <= 1/(4 L (1+rho)) (else the theorem does not apply: exit 1, said so) and "
          "the measured average <= the bound; the dominant term is named.",
}


class Verdict:
    def __init__(self, name):
        self.name, self.lines, self.holds, self.plot = name, [], None, None

    def say(self, fmt, *a):
        self.lines.append(fmt % a if a else fmt)

    def text(self):
        v = {True: "HOLDS", False: "DOES NOT HOLD", None: "CANNOT BE EVALUATED"}[self.holds]
        return "\n".join(["%s: %s" % (self.name, CRITERIA[self.name])] + self.lines + ["%s verdict: %s" % (self.name, v)])

    @property
    def exit_code(self):
        return {True: 0, False: 1, None: 2}[self.holds]


class Missing(Exception):
    """The files lack what a check needs (message: the item)."""


def _need(rf, name, why=""):
    if not rf.has(name):
        raise Missing("%s: no %s (format v%d, log.gradients = %s)%s" % (rf.path, name, rf.version, rf.level,
                                                                         ": " + why if why else ""))


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def short_name(path):
    """A run's name in plot labels: the file name, with its folder's first 8 characters when the file is a sweep
    point's generic run.h5 (jobs/spry-sweep: points/RUN_ID/run.h5), so the runs of one plot stay distinguishable."""
    base = os.path.basename(path)
    if base == "run.h5":
        return "%s/%s" % (os.path.basename(os.path.dirname(os.path.abspath(path)))[:8], base)
    return base


def _block_index(blocks, active):
    return np.concatenate([np.arange(o, o + s) for (_, o, s), a in zip(blocks, active) if a] or [np.zeros(0, int)])


def slot_draws(rf):
    """Per-slot draws of a per-iteration run: list of (t, j, K, g_hat[idx], g[idx]) in float64 restricted to the
    slot's blocks. Needs a non-backprop per-iteration run with the oracle's batch gradients."""
    if rf.cfg("method.comm") != "iteration":
        raise Missing("%s: method.comm = %s: per-slot draws need a per-iteration run (the per-epoch estimate is a "
                      "weight difference)" % (rf.path, rf.cfg("method.comm")))
    if rf.cfg("method.estimator") == "backprop":
        raise Missing("%s: method.estimator = backprop has no random estimate" % rf.path)
    _need(rf, "/slots/batch_gradient", "run with log.gradients = oracle")
    blocks = rf.blocks()
    G = rf.read("/slots/batch_gradient")
    assigned = rf.read("/slots/assigned").astype(bool)
    dense = rf.has("/slots/estimate")
    est = rf.read("/slots/estimate") if dense else None
    stepK = rf.read("/slots/step_K") if rf.has("/slots/step_K") else None
    out = []
    for t in range(rf.rounds_done):
        e_t = est[t] if dense else tangents.client_estimates(rf, t)
        for j in range(G.shape[1]):
            idx = _block_index(blocks, assigned[t, j])
            K = int(stepK[t, j, 0]) if stepK is not None else rf.K
            out.append((t, j, K, e_t[j, idx].astype(np.float64), G[t, j, idx].astype(np.float64)))
    return out


# ---------------------------------------------------------------------------------------------------- E1
def e1(paths, plot):
    v = Verdict("E1")
    rng = np.random.default_rng(0)
    stats_, names = {"s": []}, ["s = <g_hat-g, g>/|g|^2"]
    U = None
    for p in paths:
        with RunFile(p) as rf:
            draws = slot_draws(rf)
            if U is None or U.shape[1] != rf.d:
                U = rng.standard_normal((3, rf.d))
                U /= np.linalg.norm(U, axis=1, keepdims=True)
            blocks = rf.blocks()
            assigned = rf.read("/slots/assigned").astype(bool)
            for t, j, K, gh, g in draws:
                n2 = g @ g
                if n2 <= 0:
                    continue
                e = gh - g
                stats_["s"].append(e @ g / n2)
                idx = _block_index(blocks, assigned[t, j])
                for r in range(3):
                    stats_.setdefault("u%d" % r, []).append(e @ U[r, idx] / math.sqrt(n2))
            v.say("%s: %s, %d draws", p, rf.method, len(draws))
    names += ["y_%d = <g_hat-g, u_%d>/|g|" % (r, r) for r in range(3)]
    keys = ["s", "u0", "u1", "u2"]
    n = len(stats_["s"])
    if n < 20:
        raise Missing("E1 needs >= 20 draws, the files give %d" % n)
    level = 1 - 0.01 / len(keys)
    ok = True
    cis = []
    for k, name in zip(keys, names):
        ci = stats.mean_ci(stats_[k], level)
        cis.append(ci)
        inside = ci[1] <= 0 <= ci[2]
        ok &= inside
        v.say("  %-28s mean %+.4g, CI(%.4f) [%.4g, %.4g] over %d draws: %s", name, ci[0], level, ci[1], ci[2],
              len(stats_[k]), "contains 0" if inside else "EXCLUDES 0")
    v.holds = ok
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(range(4), [c[0] for c in cis], yerr=[[c[0] - c[1] for c in cis], [c[2] - c[0] for c in cis]], fmt="o",
                capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(4))
    ax.set_xticklabels(["s", "y_0", "y_1", "y_2"])
    ax.set_xlabel("statistic (relative error projection)")
    ax.set_ylabel("mean with %.2f%% CI (1, relative to |g|)" % (100 * level))
    ax.set_title("E1 unbiasedness: %d draws" % n)
    v.plot = _save(fig, plot)
    return v


# ---------------------------------------------------------------------------------------------------- E2
def e2(paths, plot, law="auto"):
    v = Verdict("E2")
    groups = {}
    for p in paths:
        with RunFile(p) as rf:
            kind = rf.cfg("method.tangent", "gaussian") if law == "auto" else law
            if rf.cfg("method.estimator") != "forward":
                v.say("%s: method.estimator = %s: the law is the forward estimator's; judged anyway", p,
                      rf.cfg("method.estimator"))
            draws = slot_draws(rf)
            for t, j, K, gh, g in draws:
                n2 = g @ g
                if n2 > 0:
                    groups.setdefault((kind, K, g.size), []).append(((gh - g) @ (gh - g)) * K / n2)
            v.say("%s: %s, tangents %s judged against the %s law, %d draws", p, rf.method,
                  rf.cfg("method.tangent", "gaussian"), kind, len(draws))
    judged = {k: x for k, x in groups.items() if len(x) >= 30}
    if not judged:
        raise Missing("E2 needs >= 30 draws in some (K, d) group; groups: %s" % {k: len(x) for k, x in groups.items()})
    level = 1 - 0.01 / len(judged)
    ok, rows = True, []
    for (kind, K, d), x in sorted(groups.items()):
        exp = d + 1 if kind == "gaussian" else d - 1
        m, lo, hi = stats.mean_ci(x, level)
        if len(x) < 30:
            v.say("  %s K=%d d=%d: %d draws (< 30): not judged; mean r = %.4g vs %d", kind, K, d, len(x), m, exp)
            continue
        inside = lo <= exp <= hi
        ok &= inside
        rows.append((K, d, m / exp, lo / exp, hi / exp, kind))
        v.say("  %s K=%d d=%d: mean r = %.5g, CI(%.4f) [%.5g, %.5g], expected %s = %d (ratio %.4f): %s", kind, K, d,
              m, level, lo, hi, "d+1" if kind == "gaussian" else "d-1", exp, m / exp,
              "consistent" if inside else "REJECTED")
    v.holds = ok
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (K, d, r, lo, hi, kind) in enumerate(rows):
        ax.errorbar([i], [r], yerr=[[r - lo], [hi - r]], fmt="o", capsize=4, label="K=%d d=%d" % (K, d))
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xlabel("(K, d) group")
    ax.set_ylabel("E||g_hat-g||^2 K / (||g||^2 (d%s1)) (1)" % ("+" if law != "rademacher" else "-"))
    ax.set_title("E2 variance law (%s)" % law)
    ax.legend(fontsize=7)
    v.plot = _save(fig, plot)
    return v


# ---------------------------------------------------------------------------------------------------- E3
def e3(paths, plot):
    v = Verdict("E3")
    by_eps = {}
    for p in paths:
        with RunFile(p) as rf:
            if rf.cfg("method.estimator") != "zeroth":
                raise Missing("%s: method.estimator = %s (E3 needs zeroth-order runs)" % (p, rf.cfg("method.estimator")))
            eps = rf.cfg("method.zo_eps", cast=float)
            draws = slot_draws(rf)
            for t, j, K, gh, g in draws:
                n2 = g @ g
                if n2 > 0:
                    by_eps.setdefault(eps, []).append((gh - g) @ g / n2)
            v.say("%s: eps = %g, %d draws", p, eps, len(draws))
    if not by_eps:
        raise Missing("E3: no draws")
    rows = []
    for eps in sorted(by_eps):
        m, lo, hi = stats.mean_ci(by_eps[eps], 0.99)
        rows.append((eps, m, (hi - lo) / 2))
        v.say("  eps %-8g relative bias along g: beta = %+.4g, 99%% CI [%.4g, %.4g] (%d draws)", eps, m, lo, hi,
              len(by_eps[eps]))
    e0, m0, h0 = rows[0]
    ok = abs(m0) <= h0 or abs(m0) <= 0.02
    v.say("  (a) smallest eps %g: |beta| = %.4g, half-width %.4g: %s", e0, abs(m0), h0,
          "unbiased within the CI" if ok else "BIASED")
    for (ea, ma, ha), (eb, mb, hb) in zip(rows, rows[1:]):
        mono = abs(mb) + hb >= abs(ma) - ha
        ok &= mono
        v.say("  (b) eps %g -> %g: |beta| %.4g -> %.4g: %s", ea, eb, abs(ma), abs(mb),
              "does not decrease significantly" if mono else "DECREASES")
    v.holds = ok
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar([r[0] for r in rows], [abs(r[1]) for r in rows], yerr=[r[2] for r in rows], fmt="o-", capsize=4)
    ax.set_xscale("log")
    ax.set_xlabel("zeroth-order perturbation eps (method.zo_eps, weight units)")
    ax.set_ylabel("|relative bias along g| (1), 99% CI")
    ax.set_title("E3 zeroth-order bias vs eps")
    v.plot = _save(fig, plot)
    return v


# ---------------------------------------------------------------------------------------------------- E4-E6
def client_gradients(rf):
    """(G [R, M, d] float32, label): full local gradients (v2) or the batch-path gradients (v1)."""
    if rf.has("/slots/local_gradient"):
        return rf.read("/slots/local_gradient"), "full local gradients (/slots/local_gradient)"
    _need(rf, "/slots/batch_gradient", "run with log.gradients = oracle")
    return rf.read("/slots/batch_gradient"), "batch-path gradients (v1 /slots/true_gradient: include batch noise)"


def round_bias(rf, G, t, blocks, assigned, w):
    """(b [d], g [d], per-block ||b^l||^2) of round t from per-slot gradients G[t] (docs/runfile.md Oracle)."""
    Gt = G[t].astype(np.float64)
    p = w / w.sum()
    g = p @ Gt
    b = np.zeros_like(g)
    bl = []
    for l, (_, o, s) in enumerate(blocks):
        Ml = np.nonzero(assigned[t, :, l])[0]
        if Ml.size == 0:
            bl.append(0.0)
            continue
        q = w[Ml] / w[Ml].sum()
        b[o:o + s] = q @ Gt[Ml, o:o + s] - g[o:o + s]
        bl.append(float(b[o:o + s] @ b[o:o + s]))
    return b, g, bl


def e4_premise(rf):
    """None when Theorem 1.4's finite-sample form (THEORY 5.6) applies to the run, else the reason. It needs
    clients whose finite-sample parts eps_m are independent draws: on a homogeneous partition every client holds
    the same examples, so the eps_m are identical, S_l^2 = 0 and the bias is 0 (Theorem 1.1, judged by E5), while
    P's E||eps^l||^2 term would predict a positive bias."""
    if rf.partition_kind() == "homogeneous":
        return ("fl.partition = homogeneous: every client holds the same examples, so the clients' finite-sample "
                "parts are identical, not independent, and THEORY 5.6's prediction does not apply (the bias is 0 "
                "by Theorem 1.1: judge it with E5)")
    return None


# configuration keys that do not change what E4 compares across alphas (seed, bookkeeping, logging, pretraining)
_E4_SAME = ("run.", "log.", "pretrain.", "eval.")


def e4_group(rf):
    """The run's configuration apart from fl.alpha and the keys of _E4_SAME: runs of one group differ only in alpha
    (and seed), so E4's 'bias falls with alpha' is judged within a group, never across M, s_l or assignment."""
    return tuple(sorted((k, x) for k, x in rf.config.items()
                        if k != "fl.alpha" and k != "method.preset" and not k.startswith(_E4_SAME)))


def _e4_shares(assigned):
    """'M = 4, s_l = 2, 1, 1' (mean over rounds of the clients per block, 2 decimals when not whole)."""
    s = assigned.sum(axis=1).mean(axis=0)
    return "M = %d, s_l = %s" % (assigned.shape[1], ", ".join("%d" % x if x == int(x) else "%.2f" % x for x in s))


def e4(paths, plot):
    v = Verdict("E4")
    runs = []
    premise_ok = True
    groups = {}
    for p in paths:
        with RunFile(p) as rf:
            if rf.cfg("method.split") != "spry":
                raise Missing("%s: method.split = %s (E4 is about Spry's split)" % (p, rf.cfg("method.split")))
            why = e4_premise(rf)
            if why:
                v.say("%s: not judged, the premise of Theorem 1.4 fails: %s", p, why)
                premise_ok = False
                continue
            gid = groups.setdefault(e4_group(rf), len(groups))
            G, label = client_gradients(rf)
            _need(rf, "/rounds/class_gradients")
            blocks = rf.blocks()
            info = rf.slot_info()
            assigned = rf.read("/slots/assigned").astype(bool)
            Gc = rf.read("/rounds/class_gradients")
            V = rf.read("/rounds/class_variance") if rf.has("/rounds/class_variance") else None
            pihat = rf.realised_proportions()
            alpha = rf.cfg("fl.alpha", cast=float)
            C, M = rf.C, G.shape[1]
            if rf.cfg("fl.weighting") != "uniform":
                v.say("%s: fl.weighting = %s: Theorem 1.4 assumes q = 1/s_l, p = 1/M (uniform); approximate", p,
                      rf.cfg("fl.weighting"))
            res = rf.read("/slots/residual_sq") if rf.has("/slots/residual_sq") and label.startswith("full") else None
            res_diff = 0.0
            B, P, Ppop, Pfin, D = [], [], [], [], []
            for t in range(rf.rounds_done):
                w = info["weight"][t].astype(float)
                _, _, bl = round_bias(rf, G, t, blocks, assigned, w)
                clients = info["client"][t]
                Gt = G[t].astype(np.float64)
                mix = pihat[clients] @ Gc[t].astype(np.float64)  # [M, d]
                pred = pop = fin = dir_ = 0.0
                for l, (_, o, s) in enumerate(blocks):
                    sl = int(assigned[t, :, l].sum())
                    if sl == 0:
                        continue
                    f = 1.0 / sl - 1.0 / M
                    mu = mix[:, o:o + s]
                    spop = ((mu - mu.mean(axis=0)) ** 2).sum() / (M - 1) if M > 1 else 0.0
                    e_m = ((Gt[:, o:o + s] - mu) ** 2).sum(axis=1)
                    efin = e_m.mean()
                    if res is not None:  # the writer's own residuals (v2): same quantity
                        res_diff = max(res_diff, float(np.abs(e_m - res[t, :, l]).max() / max(res[t, :, l].max(), 1e-300)))
                    pop += f * spop
                    fin += f * efin
                    if V is not None:
                        dir_ += f * V[t, l] / (C * alpha + 1) if math.isfinite(alpha) else 0.0
                B.append(sum(bl))
                Ppop.append(pop)
                Pfin.append(fin)
                P.append(pop + fin)
                D.append(dir_)
            B, P = np.array(B), np.array(P)
            T = len(B)
            rho = B.mean() / P.mean() if P.mean() > 0 else math.nan
            z = B - rho * P
            h = stats._t(0.95, T - 1) * z.std(ddof=1) / math.sqrt(T) / P.mean() if T > 1 and P.mean() > 0 else math.inf
            if res is not None:
                label += "; finite-sample residuals match /slots/residual_sq to %.1e relative" % res_diff
            runs.append((alpha, B.mean(), P.mean(), np.mean(Ppop), np.mean(Pfin), np.mean(D), rho, rho - h, rho + h, p,
                         label, gid, _e4_shares(assigned), rf.cfg("method.assignment")))
    ok = premise_ok
    if not runs:
        v.holds = False
        return v
    ngroups = len(set(r[11] for r in runs))
    for alpha, b, pr, pop, fin, dr, rho, lo, hi, p, label, gid, shares, assign in sorted(runs):
        meets = hi >= 0.5 and lo <= 2.0
        ok &= meets
        v.say("%s: alpha %g, %s, %s assignment%s (%s)", p, alpha, shares, assign,
              ", group %d" % (gid + 1) if ngroups > 1 else "", label)
        v.say("  measured E||b||^2 = %.4g; predicted %.4g = population %.4g + finite-sample %.4g; Dirichlet-draw "
              "formula %.4g", b, pr, pop, fin, dr)
        v.say("  measured/predicted = %.3f, 95%% CI [%.3f, %.3f]: %s", rho, lo, hi,
              "meets [0.5, 2]" if meets else "OUTSIDE [0.5, 2]")
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for g in range(len(groups)):
        rg = sorted(r for r in runs if r[11] == g)
        if not rg:
            continue
        alphas = [r[0] for r in rg]
        tag = "group %d: " % (g + 1) if ngroups > 1 else ""
        if len(set(alphas)) >= 3:
            rs = st.spearmanr([a if math.isfinite(a) else 1e300 for a in alphas], [r[1] for r in rg]).correlation
            falls = rs < 0
            ok &= falls
            v.say("  %sbias vs alpha over %d runs (%s, %s assignment): Spearman %.3f: %s", tag, len(rg), rg[0][12],
                  rg[0][13], rs, "falls with alpha" if falls else "DOES NOT FALL")
        # mean over seeds at each alpha
        ua = sorted(set(alphas))
        xs = [a if math.isfinite(a) else 1e3 for a in ua]
        mean = lambda i: [np.mean([r[i] for r in rg if r[0] == a]) for a in ua]  # noqa: E731
        lab = "%s%s, %s" % (tag, rg[0][12], rg[0][13])
        line, = ax.plot(xs, mean(1), "o-", label="measured, " + lab)
        ax.plot(xs, mean(2), "s--", color=line.get_color(),
                label="predicted (realised + finite sample), dashed" if g == 0 else None)
        if g == 0:
            dx = [(x, y) for x, y in zip(xs, mean(5)) if y > 0]  # 0 at alpha = inf: not drawable on a log axis
            ax.plot([x for x, _ in dx], [y for _, y in dx], "^:", color="k", label="Dirichlet-draw formula (0 at inf)")
        ax2.plot([r[2] for r in rg], [r[1] for r in rg], "o", color=line.get_color(), label=lab)
    v.holds = ok
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Dirichlet alpha (1; inf plotted at 1e3)")
    ax.set_ylabel("squared bias ||b||^2, mean over seeds (gradient^2)")
    ax.set_title("E4 Spry bias vs alpha")
    ax.legend(fontsize=6)
    allp = [r[2] for r in runs] + [r[1] for r in runs]
    lo_, hi_ = max(min(allp), 1e-12), max(allp)
    xx = np.geomspace(lo_, hi_, 20)
    ax2.plot(xx, xx, "k-", lw=0.8, label="measured = predicted")
    ax2.fill_between(xx, 0.5 * xx, 2 * xx, color="0.85", label="[0.5, 2] x predicted")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("predicted mean ||b||^2 per run (gradient^2)")
    ax2.set_ylabel("measured mean ||b||^2 per run (gradient^2)")
    ax2.set_title("E4 per run")
    ax2.legend(fontsize=6)
    v.plot = _save(fig, plot)
    return v


def e5(paths, plot):
    v = Verdict("E5")
    ok, rows = True, []
    for p in paths:
        with RunFile(p) as rf:
            _need(rf, "/slots/local_gradient", "E5 needs the full local gradients (v2, log.gradients = oracle)")
            _need(rf, "/rounds/bias_sq")
            part = rf.partition_kind()
            bias = rf.read("/rounds/bias_sq").sum(axis=1)
            g = rf.read("/rounds/true_gradient").astype(np.float64)
            g2 = (g * g).sum(axis=1)
            rel = float(np.mean(bias / np.maximum(g2, 1e-300)))
            holds = rel <= 1e-6
            ok &= holds
            rows.append((p, rel))
            v.say("%s: fl.partition = %s, alpha %s, %s: mean ||b||^2/||g||^2 = %.3g: %s", p, part,
                  rf.cfg("fl.alpha"), rf.method, rel, "unbiased (<= 1e-6)" if holds else "BIASED (> 1e-6)")
    v.holds = ok
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(rows)), [max(r[1], 1e-20) for r in rows])
    ax.axhline(1e-6, color="r", lw=0.8, label="criterion 1e-6")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([short_name(r[0]) for r in rows], fontsize=7, rotation=90)
    ax.set_xlabel("run (file name)")
    ax.set_ylabel("mean ||b||^2 / ||g||^2 (1)")
    ax.set_title("E5 homogeneous => unbiased")
    ax.legend(fontsize=7)
    v.plot = _save(fig, plot)
    return v


def e6(paths, plot):
    v = Verdict("E6")
    ok, rows = True, []
    for p in paths:
        with RunFile(p) as rf:
            if rf.cfg("method.split") != "spry":
                raise Missing("%s: method.split = %s (E6 is about Spry's assignment)" % (p, rf.cfg("method.split")))
            G, label = client_gradients(rf)
            blocks = rf.blocks()
            info = rf.slot_info()
            assigned = rf.read("/slots/assigned").astype(bool)
            bs = np.array([round_bias(rf, G, t, blocks, assigned, info["weight"][t].astype(float))[0]
                           for t in range(rf.rounds_done)])
            T = len(bs)
            mean_sq = float((bs ** 2).sum(axis=1).mean())
            persist = T * float((bs.mean(axis=0) ** 2).sum()) / mean_sq if mean_sq > 0 else 0.0
            holds = persist <= 3
            ok &= holds
            rows.append((p, rf.cfg("method.assignment"), persist))
            v.say("%s: assignment %s, M = %d of N = %d, %d rounds (%s): mean ||b_t||^2 = %.4g, persistence "
                  "T||mean b||^2/mean||b||^2 = %.3f: %s", p, rf.cfg("method.assignment"), rf.M, rf.N, T, label,
                  mean_sq, persist, "bias averages out (<= 3)" if holds else "SYSTEMATIC BIAS (> 3)")
    v.holds = ok
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(rows)), [r[2] for r in rows])
    ax.axhline(3, color="r", lw=0.8, label="criterion 3")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(["%s %s" % (short_name(r[0]), r[1]) for r in rows], fontsize=7, rotation=90)
    ax.set_xlabel("run (file name, assignment)")
    ax.set_ylabel("bias persistence T|mean b|^2/mean|b|^2 (1)")
    ax.set_title("E6 random assignment: bias -> variance")
    ax.legend(fontsize=7)
    v.plot = _save(fig, plot)
    return v


# ---------------------------------------------------------------------------------------------------- E8
def e8_step(rf, m=None):
    """Theorem 2's step condition from a run file: (d_l, s_l [R, L], finite secants, L = max secant,
    rho = max over rounds of max_l (d_l+1)/(K s_l), eta = method.server_lr, eta* = 1/(4 L (1+rho))).
    The theorem applies only when eta <= eta*; L comes from the run's own secants, so this is known after the run."""
    m = rf.metrics() if m is None else m
    dl = np.array([s for _, _, s in rf.blocks()], float)
    s_l = rf.read("/rounds/block_count").astype(float)  # [R, L]
    sec = m["secant"][np.isfinite(m["secant"])]
    L = float(sec.max()) if sec.size else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = float(np.where(s_l > 0, (dl + 1) / (rf.K * s_l), 0).max(axis=1).max())
    eta = rf.cfg("method.server_lr", cast=float)
    return dl, s_l, sec, L, rho, eta, 1 / (4 * L * (1 + rho))


def e8(paths, plot):
    v = Verdict("E8")
    ok = True
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ip, p in enumerate(paths):
        with RunFile(p) as rf:
            m = rf.metrics()
            for k in ("grad_sq", "objective", "secant", "z2"):
                if not np.isfinite(m[k]).any():
                    raise Missing("%s: metrics field %s is absent or NaN (needs v2, log.gradients = oracle)" % (p, k))
            _need(rf, "/slots/minibatch_variance")
            _need(rf, "/rounds/bias_sq")
            why = []
            if rf.cfg("method.comm") != "iteration":
                why.append("method.comm = %s (needs iteration)" % rf.cfg("method.comm"))
            if rf.cfg("method.server_opt") != "fedavg":
                why.append("method.server_opt = %s (needs fedavg = server SGD)" % rf.cfg("method.server_opt"))
            if rf.cfg("method.estimator") != "forward":
                why.append("method.estimator = %s (needs forward)" % rf.cfg("method.estimator"))
            if rf.cfg("method.tangent", "gaussian") != "gaussian":
                why.append("method.tangent = %s (needs gaussian)" % rf.cfg("method.tangent"))
            T = rf.rounds_done
            dl, s_l, sec, L, rho, eta, eta_star = e8_step(rf, m)
            K = rf.K
            with np.errstate(divide="ignore", invalid="ignore"):
                sig = rf.read("/slots/minibatch_variance").mean(axis=1)  # [R, L]: mean over clients
                S2_t = np.where(s_l > 0, (1 / s_l) * (1 + (dl + 1) / K) * sig, 0).sum(axis=1)
            S2 = float(np.nanmax(S2_t))
            B2 = float(rf.read("/rounds/bias_sq").sum(axis=1).max())
            Z2 = float(np.nanmax(m["z2"]))
            f0 = float(m["objective"][0])
            fmin = float(np.nanmin(np.concatenate([m["objective"], m["pool_objective"]])))
            delta0 = f0 - 0.0
            terms = {"4 Delta_0/(eta T)": 4 * delta0 / (eta * T), "3 B^2": 3 * B2, "rho Z^2/(1+rho)": rho * Z2 / (1 + rho),
                     "S^2/(2(1+rho))": S2 / (2 * (1 + rho))}
            bound = sum(terms.values())
            measured = float(np.nanmean(m["grad_sq"][:T]))
            dom = max(terms, key=terms.get)
            v.say("%s: %s, T = %d rounds, K = %d, d_l = %s", p, rf.method, T, K, dl.astype(int).tolist())
            v.say("  L = %.4g (max secant over %d rounds; median %.4g), rho = %.4g, eta = %g, 1/(4L(1+rho)) = %.4g",
                  L, sec.size, float(np.median(sec)) if sec.size else math.nan, rho, eta, eta_star)
            v.say("  Delta_0 = f(w_0) - f* = %.5g - 0 = %.5g (f* = 0: cross-entropy >= 0; min objective seen %.5g "
                  "would give %.5g)", f0, delta0, fmin, f0 - fmin)
            v.say("  sigma^2 -> S^2 = %.4g, B^2 = %.4g, Z^2 = %.4g", S2, B2, Z2)
            for k, x in terms.items():
                v.say("  term %-20s = %.5g (%.1f%% of the bound)", k, x, 100 * x / bound if bound > 0 else math.nan)
            v.say("  measured (1/T) sum ||grad f(w_t)||^2 = %.5g; bound = %.5g; dominant term: %s", measured, bound, dom)
            if eta > eta_star:
                why.append("eta = %g > 1/(4 L (1+rho)) = %.4g: the step is too large for the theorem" % (eta, eta_star))
            if why:
                v.say("  the theorem does not apply: %s", "; ".join(why))
                ok = False
            elif measured > bound:
                v.say("  BOUND VIOLATED: measured %.5g > bound %.5g", measured, bound)
                ok = False
            else:
                v.say("  bound holds (measured/bound = %.3g)", measured / bound)
            run_avg = np.cumsum(m["grad_sq"][:T]) / np.arange(1, T + 1)
            axes[0].plot(np.arange(1, T + 1), run_avg, label="%s K=%d eta=%g measured" % (short_name(p), K, eta))
            tt = np.arange(1, T + 1)
            rhs = 4 * delta0 / (eta * tt) + bound - terms["4 Delta_0/(eta T)"]
            axes[0].plot(tt, rhs, "--", color=axes[0].lines[-1].get_color(),
                         label="its bound (dashed, same colour)" if len(axes[0].lines) == 1 else None)
            wbar = 0.8 / len(paths)  # one bar group per term, one bar per run (the colour of its curve)
            axes[1].bar(np.arange(len(terms) + 1) + (ip - (len(paths) - 1) / 2) * wbar,
                        [x if x > 0 else np.nan for x in terms.values()] + [measured], wbar,  # 0: no bar (log axis)
                        color=axes[0].lines[-1].get_color())
    axes[0].set_yscale("log")
    axes[0].set_xlabel("rounds T (rounds)")
    axes[0].set_ylabel("(1/T) sum ||grad f(w_t)||^2 (gradient^2)")
    axes[0].legend(fontsize=6)
    axes[1].set_yscale("log")
    axes[1].set_xticks(np.arange(5))
    axes[1].set_xticklabels(["4 Delta_0/(eta T)", "3 B^2", "rho Z^2/(1+rho)", "S^2/(2(1+rho))", "measured"])
    axes[1].set_xlabel("term of the bound (name)")
    axes[1].set_ylabel("value (gradient^2)")
    axes[1].tick_params(axis="x", labelsize=6)
    fig.suptitle("E8 Theorem 2")
    v.plot = _save(fig, plot)
    v.holds = ok
    return v


VERBS = {"E1": e1, "E2": e2, "E3": e3, "E4": e4, "E5": e5, "E6": e6, "E8": e8}


def run(name, paths, plot, **kw):
    """Run check `name` on `paths`; returns a Verdict (holds None with the reason when data is missing)."""
    try:
        return VERBS[name](paths, plot, **kw)
    except Missing as e:
        v = Verdict(name)
        v.say("cannot evaluate: %s", e)
        return v
