"""Bad inputs of run files and checkpoints: each is refused with a non-zero status on every rank (no hang: each
command has a timeout) and a message that names the file or key and what is wrong; nothing is overwritten.

usage: runfile_bad_inputs.py SPRY MPIEXEC NUMPROC_FLAG
"""
import os
import shutil
import sys
import tempfile

import h5py  # only to damage checkpoints on purpose; run files are read through L.RunFile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runfile_lib as L


def main():
    spry = L.Spry(sys.argv)
    cfg = L.TINY + L.sets(run__checkpoint_every=2)
    cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "good.h5")
        spry.run(cfg + ["-o", good])
        good_bytes = open(good, "rb").read()
        ckpt = good + ".ckpt"

        def refused(args, *needles, ranks=1, status=2):
            nonlocal cases
            out, err = spry.run(args, ranks=ranks, expect=status, timeout=120)
            for n in needles:
                assert n in err, "expected %r in the message of %s:\n%s" % (n, " ".join(args), err)
            cases += 1

        # the output
        refused(cfg + ["-o", "/nonexistent-dir/run.h5"], "/nonexistent-dir", "not writable")
        os.mkdir(os.path.join(tmp, "ro"))
        os.chmod(os.path.join(tmp, "ro"), 0o500)
        if os.geteuid() != 0:  # root writes anywhere
            refused(cfg + ["-o", os.path.join(tmp, "ro", "run.h5")], "not writable")
        refused(cfg + ["-o", good], good, "exists", "--force")
        refused(cfg + ["-o", good], good, "exists", ranks=2)
        assert open(good, "rb").read() == good_bytes, "a refused run changed the existing file"
        refused(cfg + ["--resume"], "--resume needs --output")
        refused(cfg + ["-o", os.path.join(tmp, "absent.h5"), "--resume"], "absent.h5", "does not exist")

        # the checkpoint
        def variant(name, mutate):
            d = os.path.join(tmp, name)
            os.mkdir(d)
            p = os.path.join(d, "run.h5")
            shutil.copy(good, p)
            shutil.copy(ckpt, p + ".ckpt")
            mutate(p + ".ckpt")
            return p

        p = variant("nockpt", os.remove)
        refused(cfg + ["-o", p, "--resume"], p + ".ckpt", "no such file")

        def truncate(c):
            data = open(c, "rb").read()
            open(c, "wb").write(data[: len(data) // 2])
        p = variant("truncated", truncate)
        refused(cfg + ["-o", p, "--resume"], p + ".ckpt")
        refused(cfg + ["-o", p, "--resume"], p + ".ckpt", ranks=2)

        def flip(c):  # corrupt w's values, keep the HDF5 structure intact
            with h5py.File(c, "r+") as f:
                w = f["w"][()]
                w[7] += 1.0
                f["w"][...] = w
        p = variant("corrupt", flip)
        # the whole-file digest (checked before HDF5 opens the file) catches it before w's own checksum
        refused(cfg + ["-o", p, "--resume"], p + ".ckpt", "corrupt checkpoint", "checksum")

        def garbage(c):
            open(c, "wb").write(b"not an HDF5 file at all\n" * 10)
        p = variant("garbage", garbage)
        refused(cfg + ["-o", p, "--resume"], p + ".ckpt", "not an HDF5 file")

        def edited(c):  # an attribute changed in place: the whole-file digest no longer matches
            with h5py.File(c, "r+") as f:
                f.attrs["format"] = "something-else"
        p = variant("edited", edited)
        refused(cfg + ["-o", p, "--resume"], p + ".ckpt", "corrupt checkpoint")

        def foreign(c):  # another HDF5 file in its place
            os.remove(c)
            with h5py.File(c, "w") as f:
                f.attrs["format"] = "something-else"
        p = variant("foreign", foreign)
        refused(cfg + ["-o", p, "--resume"], "not a spry checkpoint")

        # a different configuration: refused with the differing keys; --force resumes and records it
        p = variant("mismatch", lambda c: None)
        other = cfg + L.sets(fl__alpha=0.5, method__K=3)
        refused(other + ["-o", p, "--resume"], "differs from the checkpoint", "fl.alpha: 0.1 -> 0.5",
                "method.K: 1 -> 3", "--force")
        # forced, but K changes the shape of /slots/scalars: the run file cannot take it
        refused(other + ["-o", p, "--resume", "--force"], p, "/slots/scalars", "does not match")
        other = cfg + L.sets(fl__alpha=0.5, method__client_lr=0.002)
        out, _ = spry.run(other + ["-o", p, "--resume", "--force"])
        with L.RunFile(p) as rf:
            assert "fl.alpha: 0.1 -> 0.5" in rf.attrs["resume_log"] and rf.status == "complete", (
                rf.attrs["resume_log"], rf.status)
        cases += 1

        # a run file that is not this checkpoint's run
        def other_run(c):
            pass
        p = variant("otherrun", other_run)
        spry.run(L.TINY + L.sets(fl__alpha=0.5) + ["-o", p, "--force"])  # replaces run.h5, keeps the old .ckpt
        refused(cfg + ["-o", p, "--resume"], p, "different runs")

        # spry info
        refused(["info", os.path.join(tmp, "absent.h5")], "absent.h5", "no such file")
        refused(["info", ckpt], "not a spry run file")
        out, _ = spry.run(["info", good])
        assert "status       complete; 6 of 6 rounds done" in out and "checkpoint   %s: 6 rounds done" % ckpt in out, out
        cases += 1
    print("runfile_bad_inputs: %d bad inputs refused with a message naming the file or key" % cases)


if __name__ == "__main__":
    main()
