"""Collective writes: the run file holds the same data at P = 1, 2 and 3 ranks (every item bitwise, apart from the
items the file lists as nondeterministic), for Spry at log.gradients = oracle with sample indices, weights and
personalisation (v2: full local gradients, residuals, secants, personal accuracy), for FwdLLM at scalars, and for a
sampled partition (fl.partition = sampled) at alpha 0.01. The stop/crash runs log /weights every 3 rounds, so the
resume also checks their truncation. Then SIGTERM to `mpirun -n 2`: every rank stops at the round boundary after a checkpoint, and the run
resumed at P = 3 ends bitwise equal to the P = 1 run; kill -9 of the whole `mpirun -n 2` job: the file opens and
the run resumed at P = 2 ends equal too.

usage: runfile_mpi.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import runfile_lib as L


def main():
    spry = L.Spry(sys.argv)
    configs = {
        "spry-oracle": L.TINY + L.sets(log__gradients="oracle", log__sample_indices="true", log__weights_every=2,
                                       eval__personalize_epochs=1),
        "fwdllm-scalars": L.TINY + L.sets(method__preset="fwdllm", method__fwdllm_max_K=4),
        "sampled-partition": L.TINY + L.sets(fl__partition="sampled", fl__examples_per_client=40, fl__alpha=0.01),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in configs.items():
            ref = os.path.join(tmp, "%s-p1.h5" % name)
            spry.run(cfg + ["-o", ref])
            for P in (2, 3):
                path = os.path.join(tmp, "%s-p%d.h5" % (name, P))
                spry.run(cfg + ["-o", path], ranks=P)
                n = L.assert_same_contents(ref, path)
                with L.RunFile(path) as rf:
                    ranks = set(rf.read("/slots/rank").ravel())
                    assert ranks == set(range(P)), "P = %d: slots ran on ranks %s" % (P, ranks)
                print("  %s: P = %d equals P = 1 (%d items)" % (name, P, n))

        # Enough rounds (~10 ms each) that the signal or the kill surely lands before the run ends by itself.
        rounds = 200
        cfg = L.TINY + L.sets(run__rounds=rounds, log__gradients="dense", run__checkpoint_every=4, log__weights_every=3)
        ref = os.path.join(tmp, "ref.h5")
        spry.run(cfg + ["-o", ref])

        # SIGTERM to mpirun (it forwards the signal to the ranks)
        path = os.path.join(tmp, "term.h5")
        proc = spry.start(cfg + ["-o", path], ranks=2)
        L.wait_for_rounds(path, 4, proc)
        t0 = time.time()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        waited = time.time() - t0
        assert proc.returncode != 0, "mpirun exited 0 after SIGTERM"
        with L.RunFile(path) as rf:
            status, done = rf.status, rf.rounds_done
        assert status == "stopped" and done < rounds, "after SIGTERM: status %s, %d rounds" % (status, done)
        ckpt = L.checkpoint_attrs(path + ".ckpt")["rounds_done"]
        assert ckpt == done, "after SIGTERM: checkpoint at round %d, run file at %d" % (ckpt, done)
        spry.run(cfg + ["-o", path, "--resume"], ranks=3)
        L.assert_same_contents(ref, path)
        print("  SIGTERM to mpirun -n 2: stopped after %.2f s at round %d (mpirun exit %d); resumed at P = 3: identical"
              % (waited, done, proc.returncode))

        # kill -9 of the whole job
        path = os.path.join(tmp, "kill.h5")
        proc = spry.start(cfg + ["-o", path], ranks=2)
        L.wait_for_rounds(path, 9, proc)
        L.kill9(proc)
        done = L.rounds_done(path)
        spry.run(cfg + ["-o", path, "--resume"], ranks=2)
        L.assert_same_contents(ref, path)
        print("  kill -9 of mpirun -n 2 at round >= 9 (file held %d): resumed at P = 2: identical" % done)
    print("runfile_mpi: collective writes at P = 1, 2, 3 give the same data; stop and crash at P = 2 resume exactly")


if __name__ == "__main__":
    main()
