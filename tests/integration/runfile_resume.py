"""Crash safety and resume at P = 1.

1. kill -9 at a random moment after a random round (several trials): the killed file opens in h5dump and in the
   project's reader (analysis/spry_analysis/runfile.py), holds every finished round (rounds_done >= the round we
   waited for) with exactly the rows of an uninterrupted run; `spry run --resume` then finishes the run and the
   final file equals the uninterrupted one item by item, bitwise (docs/runfile.md "Determinism"), and prints the
   same fingerprint.
2. SIGTERM mid-run: exit status 4 within seconds, status "stopped", checkpoint at the last finished round;
   resume: identical again. SIGUSR1 does the same.
3. A finished run extended by raising run.rounds (not hashed) equals a run made that long from the start.

usage: runfile_resume.py SPRY MPIEXEC NUMPROC_FLAG [TRIALS]
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L

ROUNDS = 24
CONFIG = L.TINY + L.sets(run__rounds=ROUNDS, run__checkpoint_every=3, log__gradients="dense",
                         log__sample_indices="true")


def check_killed_file(path, reference, at_least):
    """The file of a killed run opens everywhere and holds every finished round, equal to the reference's."""
    h = subprocess.run(["h5dump", "-H", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert h.returncode == 0, "h5dump cannot open the killed file %s:\n%s" % (path, h.stderr[-2000:])
    done = L.rounds_done(path)
    assert done >= at_least, "killed file has rounds_done = %d, but round %d had been finished" % (done, at_least)
    a, b = L.contents(path), L.contents(reference)
    for k, v in a.items():
        if k.startswith("/rounds/") or k.startswith("/slots/") or k == "/axes/round":
            assert L.same_value(v, b[k][:done]), "killed file: %s differs from the uninterrupted run's first %d rows" % (k, done)
    return done


def main():
    spry = L.Spry(sys.argv)
    trials = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    rng = random.Random(int(os.environ.get("SPRY_TEST_SEED", "12345")))
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "ref.h5")
        ref_out, _ = spry.run(CONFIG + ["-o", ref])
        ref_fp = L.fingerprint(ref_out)

        # 1. kill -9 at random rounds
        for trial in range(trials):
            path = os.path.join(tmp, "kill%d.h5" % trial)
            k = rng.randint(4, ROUNDS - 3)
            proc = spry.start(CONFIG + ["-o", path])
            L.wait_for_rounds(path, k, proc)
            time.sleep(rng.uniform(0, 0.02))  # anywhere inside the next round(s), writes and flushes included
            L.kill9(proc)
            done = check_killed_file(path, ref, k)
            out, _ = spry.run(CONFIG + ["-o", path, "--resume"])
            assert "# resuming %s at round" % path in out
            assert L.fingerprint(out) == ref_fp, "trial %d: resumed run prints %s, uninterrupted %s" % (
                trial, L.fingerprint(out), ref_fp)
            n = L.assert_same_contents(ref, path)
            with L.RunFile(path) as rf:
                resumed_at = rf.attrs["resume_log"]
            print("  kill -9 trial %d: waited for round %d, file held %d, %s; %d items identical" % (
                trial, k, done, resumed_at.split(" resumed ")[1].split(" on ")[0], n))

        # 2. SIGTERM and SIGUSR1: checkpoint and a clean exit at the round boundary
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            path = os.path.join(tmp, "sig%d.h5" % sig)
            long_run = CONFIG + L.sets(run__rounds=400)
            proc = spry.start(long_run + ["-o", path])
            L.wait_for_rounds(path, 5, proc)
            t0 = time.time()
            os.kill(proc.pid, sig)
            out, err = proc.communicate(timeout=30)
            waited = time.time() - t0
            assert proc.returncode == 4, "signal %d: exit %d, expected 4 (stopped)\n%s" % (sig, proc.returncode, err)
            assert waited < 10, "signal %d: took %.1f s to stop" % (sig, waited)
            with L.RunFile(path) as rf:
                assert rf.status == "stopped", rf.status
                done = rf.rounds_done
            from_ckpt = L.checkpoint_attrs(path + ".ckpt")["rounds_done"]
            assert from_ckpt == done and 5 <= done < 400, "checkpoint at %d, file at %d" % (from_ckpt, done)
            assert "stopped by a signal after round %d/400" % done in out
            # resume with the 24-round configuration (run.rounds is not hashed) and compare with the reference
            if done < ROUNDS:
                out, _ = spry.run(CONFIG + ["-o", path, "--resume"])
                assert L.fingerprint(out) == ref_fp
                L.assert_same_contents(ref, path)
            print("  signal %d: exit 4 after %.2f s at round %d, checkpoint %d%s" % (
                sig, waited, done, from_ckpt, "; resumed: identical" if done < ROUNDS else ""))

        # 3. extending a finished run
        short = os.path.join(tmp, "short.h5")
        spry.run(CONFIG + L.sets(run__rounds=12) + ["-o", short])
        out, _ = spry.run(CONFIG + ["-o", short, "--resume"])
        assert L.fingerprint(out) == ref_fp
        L.assert_same_contents(ref, short)
        print("  a finished 12-round run extended to %d rounds equals the %d-round run" % (ROUNDS, ROUNDS))
    print("runfile_resume: %d kill -9 trials, SIGTERM, SIGUSR1 and an extension: resumed files identical" % trials)


if __name__ == "__main__":
    main()
