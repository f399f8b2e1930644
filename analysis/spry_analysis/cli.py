"""spry-analyze VERB ...: summary, table, curves, compare, theory, report, select (docs/analysis.md).

Exit status: 0 success (theory: the statement holds), 1 theory: the statement does not hold (or the theorem's
preconditions fail), 2 bad input, data the check needs is missing, or a damaged file (the message names the file and
item). A damaged file on which HDF5 loops is reported after SPRY_READ_TIMEOUT seconds (default 20) of one read.
"""
import argparse
import os
import select
import signal
import sys
import time

from . import compare as cmp
from . import plots, report, runfile, table, theory
from . import select as sel
from .runfile import RunFileError, find_runs, method_labels


def _summary(a):
    runs = find_runs(a.runs)
    labels = method_labels(runs) if len(runs) > 1 else {}
    for p in runs:
        s = table.summarize(p, labels.get(p))
        print("run %s" % p)
        for k, v in s.items():
            if k != "run":
                print("  %-16s %s" % (k, "%.6g" % v if isinstance(v, float) else v))
    return 0


def _table(a):
    n, rows, cols = table.write_csv(a.runs, a.output, clients=a.clients)
    print("%s: %d rows from %d runs, %d columns" % (a.output, rows, n, len(cols)))
    return 0


def _curves(a):
    files, _ = plots.curves(find_runs(a.runs), a.output, a.by.split(",") if a.by else None)
    print("wrote %s" % " ".join(files))
    return 0


def _compare(a):
    rows, targets, groups = cmp.compare(find_runs(a.runs), a.target, a.by.split(",") if a.by else None)
    print("methods: %s" % ", ".join("%s (%d runs)" % (g, len(p)) for g, p in sorted(groups.items())))
    print(cmp.format_rows(rows, targets))
    if a.claims:
        for c in cmp.paper_claims(find_runs(a.runs), a.target):
            print("claim: %s\n  measured: %s\n  verdict: %s" % c)
        print("every baseline, by accuracy protocol:")
        for k, v in cmp.PROTOCOLS.items():
            print("  %s = %s" % (k, v))
        for r in cmp.claims_detail(find_runs(a.runs), a.target):
            print("  [%s] %s vs %s: %s -> %s" % (r["protocol"], r["claim"].split(" (")[0], r["baseline"],
                                                 r["measured"], r["verdict"]))
    return 0


def _theory(a):
    kw = {"law": a.law} if a.check == "E2" else {}
    plot = a.plot or "theory-%s.png" % a.check
    v = theory.run(a.check, find_runs(a.runs), plot, **kw)
    print(v.text())
    if v.plot:
        print("plot: %s" % v.plot)
    return v.exit_code


def _report(a):
    secs = report.report(a.runs, a.output, a.target, a.by.split(",") if a.by else None, a.markdown, a.title)
    print("wrote %s (sections: %s)%s" % (a.output, ", ".join(secs),
                                         "; %s and its plots" % a.markdown if a.markdown else ""))
    return 0


def _select(a):
    keys = a.keys.split(",")
    winners, rows, skipped = sel.select(find_runs(a.runs), a.by, keys, a.skip_unfinished)
    print(sel.format_rows(rows, keys))
    warn = sel.format_edges(winners)
    if warn:
        print(warn)
    if skipped:
        print("left out %d unfinished run(s): the selection is interim" % len(skipped))
    if a.output:
        sel.write_json(winners, keys, a.output)
        print("wrote %s (%d groups)" % (a.output, len(winners)))
    return 0


def parser():
    p = argparse.ArgumentParser(prog="spry-analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    runs_help = "run files (.h5) or directories searched recursively for run files (e.g. a jobs/ sweep)"

    s = sub.add_parser("summary", help="headline numbers of each run (what spry info prints)")
    s.add_argument("runs", nargs="+", help=runs_help)
    s.set_defaults(fn=_summary)

    s = sub.add_parser("table", help="tidy long CSV: one row per (run, round), or per (run, round, slot)",
                       description=table.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("-o", "--output", required=True, help="CSV file to write")
    s.add_argument("--clients", action="store_true", help="one row per (run, round, slot) from /slots/info")
    s.set_defaults(fn=_table)

    s = sub.add_parser("curves", help="accuracy and loss vs rounds and vs wall seconds (PNG + SVG)",
                       description=plots.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("-o", "--output", default="curves", help="output prefix: writes PREFIX.png and PREFIX.svg")
    s.add_argument("--by", help="comma list of configuration keys that split the methods into lines (fl.alpha,...)")
    s.set_defaults(fn=_curves)

    s = sub.add_parser("compare", help="every pair of methods with CIs over seeds",
                       description=cmp.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("--target", type=float, help="target accuracy (fraction, e.g. 0.5)")
    s.add_argument("--by", help="comma list of configuration keys that split the methods")
    s.add_argument("--claims", action="store_true", help="also the seed paper's claims")
    s.set_defaults(fn=_compare)

    crit = "\n\n".join("%s: %s" % kv for kv in theory.CRITERIA.items())
    s = sub.add_parser("theory", help="check a statement of THEORY.md section 7 (exit 0 holds, 1 not, 2 no data)",
                       description="Criteria:\n\n" + crit + "\n\nExit status: 0 the statement holds, 1 it does not "
                       "(or the theorem does not apply), 2 the files lack what the check needs.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("check", choices=sorted(theory.VERBS))
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("--plot", help="plot file (default theory-CHECK.png)")
    s.add_argument("--law", choices=["auto", "gaussian", "rademacher"], default="auto",
                   help="E2: the law to judge against (auto = the file's method.tangent)")
    s.set_defaults(fn=_theory)

    s = sub.add_parser("report", help="one self-contained HTML page of everything")
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("-o", "--output", default="report.html")
    s.add_argument("--target", type=float, help="target accuracy (fraction)")
    s.add_argument("--by", help="comma list of configuration keys that split the methods")
    s.add_argument("--markdown", metavar="FILE.md",
                   help="also a markdown summary (headline claims table, per-method table) and its plots as PNG "
                        "files beside it (FILE-curves.png)")
    s.add_argument("--title", help="title of the HTML report and the markdown summary")
    s.set_defaults(fn=_report)

    s = sub.add_parser("select", help="hyper-parameters chosen on a validation split, the same rule for every method",
                       description=sel.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("runs", nargs="+", help=runs_help)
    s.add_argument("--by", default="method.preset", help="configuration key that names a group (default the preset)")
    s.add_argument("--keys", default="method.client_lr,method.server_lr",
                   help="comma list of the tuned configuration keys (reported and written)")
    s.add_argument("-o", "--output", help="JSON file of the winners")
    s.add_argument("--skip-unfinished", action="store_true", help="leave out unfinished runs (interim look)")
    s.set_defaults(fn=_select)
    return p


def _work(a):
    try:
        return a.fn(a)
    except (RunFileError, KeyError, OSError, ValueError) as e:
        print("spry-analyze %s: %s" % (a.verb, e.args[0] if e.args else e), file=sys.stderr)
        return 2


def _watched(a, timeout):
    """Run the verb in a child process; the parent ends it and reports the file as damaged when one HDF5 access
    (bracketed by runfile._watch) has not returned within `timeout` seconds (HDF5 1.10 can loop forever on some
    corrupted metadata, inside a C call that Python cannot interrupt)."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        runfile.set_watch_fd(w)
        rc = 2
        try:
            rc = _work(a)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc if isinstance(rc, int) else 0)
    os.close(w)
    buf, current, since = b"", None, None
    while True:
        left = None if current is None else max(0.0, since + timeout - time.monotonic())
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("spry-analyze %s: %s: damaged run file: reading it did not finish within %g s (HDF5 loops on some "
                  "corrupted metadata; SPRY_READ_TIMEOUT sets the limit)" % (a.verb, current, timeout),
                  file=sys.stderr)
            return 2
        chunk = os.read(r, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line[:1] == b"b":
                current, since = line[1:].decode(errors="replace"), time.monotonic()
            elif line[:1] == b"e":
                current = None
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 2


def main(argv=None):
    a = parser().parse_args(argv)
    timeout = float(os.environ.get("SPRY_READ_TIMEOUT", "20"))
    if timeout > 0 and hasattr(os, "fork"):
        return _watched(a, timeout)
    return _work(a)
