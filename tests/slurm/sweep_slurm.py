"""jobs/spry-sweep against a real single-node Slurm 22.05 cluster (started and stopped here; slurm_cluster.py).

Checks (each fails the test through the exit code; Checks collects them):
  A. a 6-point sweep (synthetic tiny, 2 ranks each, grid alpha x preset) goes through `submit` and completes; the
     test cluster's MaxArraySize is 4, so the manifest (indices 0-5) must go in two chunks (offsets 0 and 4);
     `status` shows 6 done; `verify 0 --ranks 1` finds the rerun identical; `compare` of two different points
     reports a difference (so the comparison can fail), with the project's reader and with the h5diff fallback
     (python3 -S: no h5py), which names a subset of the reader's items; `collect` writes one row per point x round.
  B. a 2-point sweep: point 0 (30 rounds) is preempted while running (scancel --signal=USR1 --batch): it
     checkpoints (exit 4), requeues itself, resumes (--resume) and completes, and its run file equals, item by
     item after dropping the `nondeterministic` items, the same point run with `run-local` (no tolerance: the
     design promises bitwise identical data across kill + resume; the h5diff fallback agrees). Point 1 names a base model file that does not
     exist yet: `status` reports it failed with spry's error; after the file appears, `resubmit` queues exactly
     index 1, and point 0's run file is not touched (same bytes, no new attempt).
  C. a spec with an unknown key, and one with an impossible partition, fail in `submit` before anything is queued
     (no submission record, empty queue); a launcher that does not make one MPI job of the asked size (a
     wrapper that starts a singleton) is caught by the world-size check and reported as a failure.
  D. `run-local` in the background: `status` shows the point `running` (job `local`, from the lock run-local holds,
     read in /proc/locks), not `failed: killed`, and `done` after. (A also checks that status's accuracy is the
     held-out accuracy of the last evaluated round.)
  E. `run-local` leaves its ranks unbound: a 1-rank point's process may run on every CPU this test may use (Open
     MPI binds the rank of `mpirun -n 1` to core 0, so points run side by side would share one core); the caller's
     environment carries no binding setting, so only spry-sweep can be what unbinds it.

usage: sweep_slurm.py SPRY REPO WORKDIR
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from slurm_cluster import SlurmCluster  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "analysis"))
from spry_testing import TINY, Checks  # noqa: E402

SPRY, REPO, WORK = (os.path.abspath(a) for a in sys.argv[1:4])
TOOL = os.path.join(REPO, "jobs", "spry-sweep")
checks = Checks("slurm.sweep")


def toml_list(items):
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def write_spec(name, body, ranks=2, extra_set=()):
    path = os.path.join(WORK, name + ".toml")
    with open(path, "w") as f:
        f.write('name = "%s"\nspry = "%s"\nworkdir = "%s"\nranks = %d\nset = %s\n%s\n' % (
            name, SPRY, REPO, ranks, toml_list(TINY + list(extra_set)), body))
    return path


def tool(env, *args, expect=0, timeout=300, no_reader=False):
    """jobs/spry-sweep ARGS; no_reader: under `python3 -S` (no dist-packages: no h5py, so no run-file reader), the
    standard-library-only path (h5diff / spry info)."""
    t0 = time.time()
    q = subprocess.run(["/usr/bin/python3"] + (["-S"] if no_reader else []) + [TOOL] + list(args), capture_output=True,
                       text=True, env=env, timeout=timeout)
    print("$ spry-sweep %s   (exit %d, %.1f s)\n%s%s" % (" ".join(args), q.returncode, time.time() - t0, q.stdout,
                                                          q.stderr), flush=True)
    if expect is not None:
        checks.check(q.returncode == expect, "spry-sweep %s exited %d, expected %d" % (args[0], q.returncode, expect))
    return q


def status(env, sweep):
    q = tool(env, "status", sweep, "--json")
    return json.loads(q.stdout) if q.returncode == 0 else {"points": [], "submissions": []}


def wait_done(cluster, timeout, what):
    t0 = time.time()
    ok = cluster.wait_empty(timeout)
    checks.check(ok, "%s: jobs still in the queue after %d s: %s" % (what, timeout, cluster.queue()))
    print("%s: queue empty after %.1f s" % (what, time.time() - t0), flush=True)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def events(sweep, run_id):
    with open(os.path.join(sweep, "points", run_id, "state.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def part_a(cluster, env):
    spec = write_spec("a", '[grid]\n"fl.alpha" = [0.1, "inf"]\n"method.preset" = ["spry", "fedavg", "fedsgd"]\n'
                      '[slurm]\nthrottle = 2\n', extra_set=["run.rounds=6", "run.eval_every=3"])
    sweep = os.path.join(WORK, "A")
    tool(env, "submit", spec, "-d", sweep)
    wait_done(cluster, 180, "A")
    st = status(env, sweep)
    subs = st["submissions"]
    checks.check([(s["offset"], s["indices"]) for s in subs] == [(0, [0, 1, 2, 3]), (4, [4, 5])],
                 "A: chunks under MaxArraySize 4 should be offsets 0 (0-3) and 4 (4-5), got %s" % (
                     [(s["offset"], s["indices"], s["array"]) for s in subs]))
    checks.check(all(s["array"].endswith("%2") for s in subs), "A: throttle %2 missing from the array specs")
    pts = st["points"]
    checks.check(len(pts) == 6 and all(p["state"] == "done" and p["rounds_done"] == 6 for p in pts),
                 "A: every point should be done with 6 rounds: %s" % [(p["index"], p["state"], p["rounds_done"])
                                                                      for p in pts])
    checks.check(len({p["run_id"] for p in pts}) == 6, "A: run ids should be distinct")
    # status's accuracy is the held-out accuracy of the last evaluated round (the reader's), not the clients'
    # local accuracy printed after it on spry info's line
    from spry_analysis.runfile import RunFile
    for p in pts:
        with RunFile(os.path.join(sweep, "points", p["run_id"], "run.h5")) as rf:
            m = rf.metrics()
            want = float(m["eval_acc"][m["evaluated"] == 1][-1])
        checks.check(p["acc"] is not None and abs(p["acc"] - want) < 6e-5, "A: point %d: status acc %s, the held-out "
                     "accuracy is %.6f" % (p["index"], p["acc"], want))
    text = tool(env, "status", sweep).stdout
    checks.check("done 6" in text, "A: status text should count 6 done")
    q = tool(env, "verify", sweep, "0", "--ranks", "1")
    checks.check("IDENTICAL" in q.stdout, "A: verify at 1 rank should find the files identical")
    a, b = (os.path.join(sweep, "points", pts[i]["run_id"], "run.h5") for i in (0, 1))
    q = tool(env, "compare", a, b, expect=1)
    checks.check("DIFFERENT" in q.stdout, "A: compare of two different points must report a difference")
    items = sorted(ln.split(":")[0] for ln in q.stdout.splitlines() if ln.startswith("differs: /"))
    q = tool(env, "compare", a, b, expect=1, no_reader=True)
    checks.check("DIFFERENT" in q.stdout and "(h5diff" in q.stdout, "A: the h5diff fallback must find the difference")
    fb = sorted(ln.split(":")[0] for ln in q.stdout.splitlines() if ln.startswith("differs: /"))
    checks.check(set(fb) <= set(items) and fb, "A: the h5diff fallback names %s, the reader %s" % (fb, items))
    csv_path = os.path.join(WORK, "a.csv")
    tool(env, "collect", sweep, "-o", csv_path, "--builtin")
    with open(csv_path) as f:
        rows = f.read().splitlines()
    checks.check(len(rows) == 1 + 6 * 6, "A: collect should write a header + 36 rows (6 points x 6 rounds), got %d"
                 % len(rows))
    # files: the run files of a subset by axis values (the 2 points of spry = one per alpha; exact paths)
    q = tool(env, "files", sweep, "method.preset=spry", "--complete")
    want = sorted(os.path.join(sweep, "points", p["run_id"], "run.h5") for p in pts
                  if p["axes"]["method.preset"] == "spry")
    checks.check(sorted(q.stdout.split()) == want and len(want) == 2, "A: files method.preset=spry gave %s, "
                 "expected %s" % (q.stdout.split(), want))
    q = tool(env, "files", sweep, "fl.bogus=1", expect=2)
    checks.check("not an axis" in q.stderr, "A: files with an unknown axis should say so: %r" % q.stderr)


def part_b(cluster, env):
    missing = os.path.join(WORK, "base-later.h5")
    if os.path.exists(missing):
        os.remove(missing)
    big = ["model.n_layer=4", "model.n_embd=128", "model.n_head=4", "model.vocab_size=8257", "run.eval_every=10"]
    spec = write_spec("b", '[zip]\n"model.base" = ["random", "%s"]\n"run.rounds" = [30, 3]\n' % missing,
                      extra_set=big)
    sweep = os.path.join(WORK, "B")
    tool(env, "submit", spec, "-d", sweep)
    st = status(env, sweep)
    job = st["submissions"][0]["job_id"]
    rid0, rid1 = st["points"][0]["run_id"], st["points"][1]["run_id"]
    log0 = os.path.join(sweep, "points", rid0, "log")
    deadline, rounds = time.time() + 120, 0
    while time.time() < deadline:
        try:
            with open(log0) as f:
                rounds = sum(1 for ln in f if ln.startswith("round ") and "/30" in ln and not ln.startswith("round    0"))
        except OSError:
            rounds = 0
        if rounds >= 3:
            break
        time.sleep(0.2)
    checks.check(rounds >= 3, "B: point 0 never reached round 3 under Slurm")
    q = subprocess.run(["scancel", "--signal=USR1", "--batch", "%d_0" % job], capture_output=True, text=True, env=env)
    print("preempted %d_0 at round %d: scancel exit %d %s" % (job, rounds, q.returncode, q.stderr), flush=True)
    wait_done(cluster, 200, "B")
    ev = events(sweep, rid0)
    print("B point 0 events: %s" % ev)
    rcs = [e.get("rc") for e in ev if e["event"] == "end"]
    actions = [e.get("action") for e in ev if e["event"] == "start"]
    checks.check(rcs == [4, 0] and actions == ["fresh", "resume"],
                 "B: point 0 should stop with 4 then resume and finish 0, got ends %s starts %s" % (rcs, actions))
    checks.check([e.get("restart") for e in ev if e["event"] == "start"] == [0, 1],
                 "B: the resume should be Slurm's requeue of the same task (SLURM_RESTART_COUNT 0 then 1)")
    with open(log0) as f:
        text = f.read()
    checks.check("--resume" in text and "stopped by a signal" in text, "B: point 0's log should show the stop and "
                 "the --resume")
    st = status(env, sweep)
    p0, p1 = st["points"]
    checks.check(p0["state"] == "done" and p0["rounds_done"] == 30, "B: point 0 should be done with 30 rounds: %s" % p0)
    checks.check(p1["state"] == "failed" and "model.base" in p1["error"] and "no such file" in p1["error"],
                 "B: point 1 should be failed with spry's missing-file error, got %s: %r" % (p1["state"], p1["error"]))
    text = tool(env, "status", sweep).stdout
    checks.check("no such file" in text and "failed 1" in text, "B: status text should show the failure and error")
    # The same point without Slurm, uninterrupted: identical item by item.
    tool(env, "run-local", spec, "-d", os.path.join(WORK, "B-local"), "--indices", "0")
    q = tool(env, "compare", os.path.join(sweep, "points", rid0, "run.h5"),
             os.path.join(WORK, "B-local", "points", rid0, "run.h5"))
    checks.check("IDENTICAL" in q.stdout, "B: the preempted + resumed run file should equal the run-local one")
    q = tool(env, "compare", os.path.join(sweep, "points", rid0, "run.h5"),
             os.path.join(WORK, "B-local", "points", rid0, "run.h5"), no_reader=True)
    checks.check("IDENTICAL" in q.stdout and "(h5diff" in q.stdout, "B: the h5diff fallback should agree: identical")
    # Fix the cause, resubmit: exactly index 1 is queued; point 0 is not touched.
    shutil.copyfile(os.path.join(REPO, "data", "base-m8000.h5"), missing)
    before = sha(os.path.join(sweep, "points", rid0, "run.h5"))
    tool(env, "resubmit", sweep)
    wait_done(cluster, 120, "B resubmit")
    st = status(env, sweep)
    checks.check(st["submissions"][-1]["indices"] == [1] and st["submissions"][-1]["kind"] == "resubmit",
                 "B: resubmit should queue exactly index 1, got %s" % st["submissions"][-1])
    checks.check([p["state"] for p in st["points"]] == ["done", "done"], "B: both points should be done after "
                 "resubmit: %s" % [(p["state"], p["error"]) for p in st["points"]])
    checks.check(sha(os.path.join(sweep, "points", rid0, "run.h5")) == before and len(events(sweep, rid0)) == 4,
                 "B: the done point 0 must not be run again")
    tool(env, "status", sweep)


def part_c(cluster, env):
    bad = write_spec("bad-key", '[grid]\n"fl.alpha" = [0.1, 1.0]\n', extra_set=["fl.bogus=3"])
    q = tool(env, "submit", bad, "-d", os.path.join(WORK, "bad-key"), expect=2)
    checks.check("fl.bogus" in q.stderr, "C: the unknown key should be named")
    checks.check(not os.path.exists(os.path.join(WORK, "bad-key", "submissions.jsonl")) and not cluster.queue(),
                 "C: nothing may be queued for a bad key")
    part = write_spec("bad-part", '[slurm]\npartition = "nosuchpartition"\n', extra_set=["run.rounds=2"])
    q = tool(env, "submit", part, "-d", os.path.join(WORK, "bad-part"), expect=2)
    checks.check("test-only" in q.stderr and "nothing was queued" in q.stderr, "C: the partition should be "
                 "refused by sbatch --test-only")
    checks.check(not os.path.exists(os.path.join(WORK, "bad-part", "submissions.jsonl")) and not cluster.queue(),
                 "C: nothing may be queued for an impossible partition")
    # The world-size check (shared by Slurm and local runs): a launcher that drops the rank count starts a
    # singleton, which spry reports as "1 rank(s)"; the runner must kill it and fail the point.
    fake = os.path.join(WORK, "fake-mpiexec")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\n# drops '-n N' and runs the program alone: a launcher that makes no MPI job of N\n"
                "shift 2\nexec \"$@\"\n")
    os.chmod(fake, 0o755)
    world = write_spec("world", '[local]\nmpiexec = "%s"\n' % fake, extra_set=["run.rounds=2"])
    q = tool(env, "run-local", world, "-d", os.path.join(WORK, "world"), expect=1)
    st = status(env, os.path.join(WORK, "world"))
    p = st["points"][0]
    checks.check(p["state"] == "failed" and "MPI world size 1, asked for 2" in p["error"],
                 "C: a launcher that starts a singleton should fail the world-size check, got %s: %r" % (
                     p["state"], p["error"]))


def part_d(cluster, env):
    """run-local in the background: while it runs, status says `running` (job `local`, from the point's lock), not
    `failed: killed`; when it ends, `done`."""
    spec = write_spec("d", "", ranks=1, extra_set=["run.rounds=1500", "run.eval_every=0", "log.gradients=none"])
    sweep = os.path.join(WORK, "D")
    tool(env, "plan", spec, "-d", sweep)
    runner = subprocess.Popen(["/usr/bin/python3", TOOL, "run-local", sweep], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen, t0 = None, time.time()
    while runner.poll() is None and time.time() - t0 < 120:
        q = subprocess.run(["/usr/bin/python3", TOOL, "status", sweep, "--json"], capture_output=True, text=True,
                           env=env)
        st = json.loads(q.stdout)["points"][0] if q.returncode == 0 else None
        if st and st["rounds_done"] > 0 and st["state"] != "missing":
            seen = st
            break
        time.sleep(0.2)
    out = runner.communicate(timeout=300)[0]
    print(out, flush=True)
    checks.check(seen is not None and seen["state"] == "running" and seen["job"] == "local",
                 "D: a point run-local is running should be `running` (job local), got %r" % (
                     (seen["state"], seen["job"], seen["error"]) if seen else None,))
    p = status(env, sweep)["points"][0]
    checks.check(runner.returncode == 0 and p["state"] == "done" and p["rounds_done"] == 1500,
                 "D: after run-local the point should be done: %s" % p)


def part_e(cluster, env):
    """run-local's ranks are not bound to a core (a wrapper records the rank's CPU affinity, then runs spry)."""
    record = os.path.join(WORK, "affinity.txt")
    wrapper = os.path.join(WORK, "spry-affinity")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n# under mpirun (OMPI_COMM_WORLD_RANK set): record this rank's CPU affinity, then run spry\n"
                "[ -n \"$OMPI_COMM_WORLD_RANK\" ] && /usr/bin/python3 -c "
                "'import os; print(sorted(os.sched_getaffinity(0)))' >> %s\nexec %s \"$@\"\n" % (record, SPRY))
    os.chmod(wrapper, 0o755)
    spec = os.path.join(WORK, "e.toml")
    with open(spec, "w") as f:
        f.write('name = "e"\nspry = "%s"\nworkdir = "%s"\nranks = 1\nset = %s\n' % (
            wrapper, REPO, toml_list(TINY + ["run.rounds=1", "log.gradients=none"])))
    bare = {k: v for k, v in env.items() if k != "OMPI_MCA_hwloc_base_binding_policy"}
    tool(bare, "run-local", spec, "-d", os.path.join(WORK, "E"))
    want = sorted(os.sched_getaffinity(0))
    with open(record) as f:
        got = f.read().split("\n")[0]
    checks.check(got == str(want), "E: a run-local rank should be free to run on CPUs %s, it was bound to %s%s" % (
        want, got, "" if len(want) > 1 else " (one CPU here: this check cannot fail on this machine)"))


def main():
    if os.path.exists(WORK):
        shutil.rmtree(WORK)
    os.makedirs(WORK)
    cluster = SlurmCluster(os.path.join(WORK, "cluster"), max_array_size=4)
    cluster.ensure_installed(REPO)
    t0 = time.time()
    with cluster:
        env = dict(cluster.env, OPENBLAS_NUM_THREADS="1")
        print("test cluster up in %.1f s (%s)" % (time.time() - t0, cluster.conf), flush=True)
        for part in (part_a, part_b, part_c, part_d, part_e):
            t = time.time()
            part(cluster, env)
            print("== %s: %.1f s" % (part.__name__, time.time() - t), flush=True)
    checks.finish()


if __name__ == "__main__":
    main()
