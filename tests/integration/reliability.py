"""Reliability (issue 12): faults and damaged inputs end with a message, never a crash, a hang or a silent misread.

  --part fault     a full filesystem (a small tmpfs) at P = 1 and P = 2: the run ends (no hang: 90 s timeout) with
                   exit != 0 and a message naming the file and "No space left on device"; the last checkpoint that
                   was written is still verified by `spry info`, no .tmp file is left, and after the filesystem is
                   enlarged `--resume` finishes the run. Mounting needs root: not root -> exit 77 (CTest: skipped,
                   with the reason printed); root but the mount fails -> the test fails.
  --part fuzz      fixed seeds, 50 cases per kind: random bit flips (1 to 8 bits) and truncations of a checkpoint, a
                   run file, a dataset and a base model, given to `spry run --resume`, `spry info` and `spry run`:
                   never a signal exit (crash) or a hang (30 s timeout per call); a changed checkpoint is never
                   accepted (every flip or cut outside the digest block's zero padding must be refused, naming the
                   checkpoint); a changed base model is never accepted (its checksum covers every byte of weights).
  --part config    configuration text that inih misread in silence: CR-only line ends are read as line ends,
                   `[run] rounds = 5` on one line, `[]`, `key value`, `= 3` are errors naming the file and line.
  --part output    --output resolving to an input (config, dataset, base model; by name, symlink, hard link; the
                   derived checkpoint path too) is refused even with --force, and the input is unchanged; the same
                   for spry pretrain; --output '' is refused with a message.
  --part messages  fl.test_fraction = 0, a memory request beyond the machine, spry info with two files, spry info on
                   damaged run files (no status, rounds_done = -1 / 1e9, changed w_final).
Tolerances: none (messages are matched by fragments; exit codes exactly).
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from spry_testing import TINY, Checks, Spry, mpi_env, sets  # noqa: E402

# argv: --part PART BINARY [MPIEXEC [NUMPROC_FLAG]] (by hand: argparse would take "-n" for an option)
PARTS = ["fault", "fuzz", "config", "output", "messages"]
if len(sys.argv) < 4 or sys.argv[1] != "--part" or sys.argv[2] not in PARTS:
    sys.exit("usage: reliability.py --part {%s} BINARY [MPIEXEC [NUMPROC_FLAG]]" % ",".join(PARTS))
args = argparse.Namespace(part=sys.argv[2], binary=sys.argv[3], mpiexec=sys.argv[4] if len(sys.argv) > 4 else None,
                          numproc_flag=sys.argv[5] if len(sys.argv) > 5 else "-n")
spry = Spry(args.binary, args.mpiexec, args.numproc_flag)
checks = Checks("reliability." + args.part)
tmp = tempfile.mkdtemp(prefix="spry-rel-")


def out_of(r):
    return r.stdout + r.stderr


def direct(argv, timeout=30, cwd=None):
    """spry without mpirun (singleton MPI): returncode < 0 means a signal (crash)."""
    try:
        return subprocess.run([args.binary] + argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                              env=mpi_env(),
                              cwd=cwd)
    except subprocess.TimeoutExpired:
        return None


def tiny_run(path, extra=(), P=None, flags=("--force",), timeout=90):
    return spry.run(P, ["run"] + sets(TINY + ["run.quiet=true"] + list(extra)) + ["--output", path] + list(flags),
                    timeout=timeout)


# ---- fault: a full filesystem ------------------------------------------------------------------------------------
def part_fault():
    if os.geteuid() != 0:
        print("reliability.fault: not root, so no tmpfs can be mounted: SKIPPED (CI runs as root)")
        sys.exit(77)
    mnt = os.path.join(tmp, "full")
    os.makedirs(mnt)
    extra = ["run.rounds=120", "run.checkpoint_every=1", "run.eval_every=1000"]
    try:
        for P in (1, 2):
            for every in ("1", "0"):  # with checkpoints (either file may fail first), and the run file alone
                m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", mnt], capture_output=True,
                                   text=True)
                if m.returncode != 0:
                    checks.check(False, "mount -t tmpfs failed as root: %s" % m.stderr)
                    return
                try:
                    run = os.path.join(mnt, "run.h5")
                    ex = extra[:1] + ["run.checkpoint_every=" + every] + extra[2:]
                    r = tiny_run(run, ex, P=P, flags=())
                    out = out_of(r)
                    what = "P=%d checkpoint_every=%s" % (P, every)
                    checks.check(r.returncode != 0, "%s: a full filesystem ended with exit 0" % what)
                    checks.check("No space left on device" in out and run in out,
                                 "%s: the message lacks the file or the cause: %s" % (what, out[-600:]))
                    left = sorted(os.listdir(mnt))
                    checks.check(not any(f.endswith(".tmp") for f in left), "%s: a temporary file is left: %s" % (what, left))
                    print("%s: %s" % (what, next((l for l in out.splitlines() if "No space" in l), "?")))
                    if every == "1":
                        checks.check("run.h5.ckpt" in left, "%s: no checkpoint survived: %s" % (what, left))
                        i = direct(["info", run])
                        io = out_of(i) if i else ""
                        checks.check(i is not None and "rounds done; spry run --resume continues" in io,
                                     "%s: the previous checkpoint is not usable: %s" % (what, io[-500:]))
                        subprocess.run(["mount", "-o", "remount,size=16m", mnt], check=True)
                        r2 = tiny_run(run, ex, P=P, flags=("--resume",))
                        checks.check(r2.returncode == 0, "%s: --resume after freeing space failed: %s" % (what, out_of(r2)[-600:]))
                finally:
                    subprocess.run(["umount", mnt])
    finally:
        subprocess.run(["umount", mnt], capture_output=True)


# ---- fuzz ---------------------------------------------------------------------------------------------------------
def damaged(src, dst, rng, protect=0):
    """A copy of src with 1..8 flipped bits (positions >= protect), or cut to a random length."""
    data = bytearray(open(src, "rb").read())
    if rng.random() < 0.3:
        cut = rng.randrange(0, len(data))
        data = data[:cut]
        how = "cut to %d of %d bytes" % (cut, len(open(src, "rb").read()))
    else:
        pos = []
        for _ in range(rng.randint(1, 8)):
            p = rng.randrange(protect, len(data))
            data[p] ^= 1 << rng.randrange(8)
            pos.append(p)
        how = "bits flipped at %s" % pos
    open(dst, "wb").write(bytes(data))
    return how


def crashed(r):
    return r is None or r.returncode < 0 or r.returncode in (128 + signal.SIGSEGV, 128 + signal.SIGABRT, 128 + signal.SIGBUS)


def make_dataset(path, n=200, vocab=64, n_class=4, seed=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 17, n).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    labels = (np.arange(n) % n_class).astype(np.int32)
    tokens = rng.integers(0, vocab, int(offsets[-1])).astype(np.int32)
    split = (rng.random(n) < 0.2).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "labelled"
        f.attrs["n_class"] = n_class
        f.attrs["vocab_size"] = vocab
        for k, v in (("tokens", tokens), ("offsets", offsets), ("lengths", lengths), ("labels", labels), ("split", split)):
            f.create_dataset(k, data=v)


def part_fuzz():
    N = 50
    rng = random.Random(12)
    # the originals: a finished run with its checkpoint, a dataset, a base model from a 2-step pretraining
    run = os.path.join(tmp, "run.h5")
    r = tiny_run(run, ["run.rounds=4", "run.checkpoint_every=2"], flags=())
    checks.check(r.returncode == 0, "the original run failed: %s" % out_of(r)[-400:])
    ds = os.path.join(tmp, "data.h5")
    make_dataset(ds)
    V, EOT = 64, 63
    corpus = os.path.join(tmp, "corpus.h5")
    toks = np.random.default_rng(0).integers(0, V, 4000).astype(np.int32)
    with h5py.File(corpus, "w") as f:
        f.create_dataset("train_tokens", data=toks)
        f.create_dataset("val_tokens", data=toks[:800])
        f.attrs["kind"], f.attrs["vocab_size"], f.attrs["eot_id"], f.attrs["tokenizer"] = "corpus", V, EOT, "synthetic"
    base = os.path.join(tmp, "base.h5")
    model = ["model.n_layer=2", "model.n_embd=32", "model.n_head=2", "model.vocab_size=64", "model.n_ctx=16",
             "data.seq_len=16"]
    r = direct(["pretrain"] + sets(model + ["pretrain.corpus=" + corpus, "pretrain.steps=2", "pretrain.batch_size=4",
                                            "pretrain.micro_batch=2", "pretrain.warmup=0", "pretrain.val_windows=4", "pretrain.val_every=2",
                                            "pretrain.checkpoint_every=0", "run.quiet=true"]) + ["--output", base],
               timeout=60)
    checks.check(r is not None and r.returncode == 0, "pretraining the base model failed: %s" % (out_of(r)[-400:] if r else "hang"))
    base_ok = direct(["run"] + sets(TINY + ["model.base=" + base, "run.rounds=1", "run.quiet=true"]))
    checks.check(base_ok is not None and base_ok.returncode == 0, "the original base model is refused: %s" % out_of(base_ok)[-400:])

    ckpt = run + ".ckpt"
    head = open(ckpt, "rb").read(512)
    protect = head.index(b"\0")  # the digest text; the zero padding after it is read by nobody
    work = os.path.join(tmp, "fz")
    os.makedirs(work)
    counts = {"accepted": 0}
    for i in range(N):  # checkpoints: --resume and info
        wr = os.path.join(work, "r.h5")
        shutil.copy(run, wr)
        how = damaged(ckpt, wr + ".ckpt", rng, 0)
        # flips inside the padding change nothing anyone reads: allowed to pass; anything else must be refused
        data, orig = open(wr + ".ckpt", "rb").read(), open(ckpt, "rb").read()
        changed = len(data) != len(orig) or any(a != b for k, (a, b) in enumerate(zip(data, orig)) if not protect <= k < 512)
        r = direct(["run"] + sets(TINY + ["run.rounds=6", "run.checkpoint_every=2", "run.quiet=true"]) +
                   ["--output", wr, "--resume"])
        checks.check(not crashed(r), "checkpoint %d (%s): --resume crashed or hung (%s)" % (i, how, r and r.returncode))
        if r is not None and changed:
            checks.check(r.returncode != 0 and "r.h5.ckpt" in r.stderr,
                         "checkpoint %d (%s): a changed checkpoint was accepted: exit %d %s" % (i, how, r.returncode, r.stderr[-300:]))
        i2 = direct(["info", wr])
        checks.check(not crashed(i2), "checkpoint %d (%s): spry info crashed or hung" % (i, how))
    for i in range(N):  # run files: info
        wr = os.path.join(work, "i.h5")
        how = damaged(run, wr, rng)
        r = direct(["info", wr])
        checks.check(not crashed(r), "run file %d (%s): spry info crashed or hung (%s)" % (i, how, r and r.returncode))
    for i in range(N):  # datasets: run
        wd = os.path.join(work, "d.h5")
        how = damaged(ds, wd, rng)
        r = direct(["run"] + sets(TINY + ["data.dataset=" + wd, "run.rounds=1", "run.quiet=true"]))
        checks.check(not crashed(r), "dataset %d (%s): spry run crashed or hung (%s)" % (i, how, r and r.returncode))
    for i in range(N):  # base models: run; a change must never be accepted
        wb = os.path.join(work, "b.h5")
        how = damaged(base, wb, rng)
        r = direct(["run"] + sets(TINY + ["model.base=" + wb, "run.rounds=1", "run.quiet=true"]))
        checks.check(not crashed(r), "base model %d (%s): spry run crashed or hung (%s)" % (i, how, r and r.returncode))
        if r is not None and r.returncode == 0:
            counts["accepted"] += 1
            # accepted: only if the weights and architecture are bitwise the original's (a flip in unused bytes)
            with h5py.File(base, "r") as a, h5py.File(wb, "r") as b:
                same = all(np.array_equal(a["params"][k][()], b["params"][k][()]) for k in a["params"])
            checks.check(same, "base model %d (%s): changed weights were accepted" % (i, how))
    print("fuzz: %d cases per kind; base models accepted (flips in bytes nobody reads): %d" % (N, counts["accepted"]))


# ---- config text -------------------------------------------------------------------------------------------------
def part_config():
    cases = [  # (name, bytes, fragments of the message or None for "accepted", then the expected rounds)
        ("cr-only", b"[run]\rrounds = 5\r[fl]\rclients = 80\r", None, "5"),
        ("crlf", b"[run]\r\nrounds = 5\r\n", None, "5"),
        ("one-line", b"[run] rounds = 5\n", ["one-line.ini:1:", "text after a section header"], None),
        ("empty-section", b"[run]\nrounds = 5\n[]\nclients = 8\n", ["empty-section.ini:3:", "empty section name"], None),
        ("colon", b"[run]\nrounds: 5\n", None, "5"),  # ':' is inih's other separator (docs/configuration.md)
        ("no-separator", b"[run]\nrounds 5\n", ["no-separator.ini:2:", "rounds 5"], None),
        ("no-key", b"[run]\n= 5\n", ["no-key.ini:2:", "no key before the"], None),
        ("unclosed", b"[run\nrounds = 5\n", ["unclosed.ini:1:", "closing ']'"], None),
    ]
    for name, text, frags, rounds in cases:
        p = os.path.join(tmp, name + ".ini")
        open(p, "wb").write(text)
        r = direct(["config", p])
        out = out_of(r)
        if frags is None:
            line = next((l for l in r.stdout.splitlines() if l.startswith("rounds ")), "")
            checks.check(r.returncode == 0 and line.split("=")[1].split()[0] == rounds,
                         "%s: expected run.rounds = %s from the file: %s" % (name, rounds, out[-300:]))
        else:
            checks.check(r.returncode == 2 and all(f in out for f in frags),
                         "%s: expected exit 2 and %s: exit %d %s" % (name, frags, r.returncode, out[-300:]))
            print("%s: %s" % (name, next((l for l in out.splitlines() if frags[0] in l), "?")))


# ---- outputs that are inputs -------------------------------------------------------------------------------------
def part_output():
    ini = os.path.join(tmp, "in.ini")
    open(ini, "w").write("[run]\nrounds = 2\n")
    os.symlink(ini, os.path.join(tmp, "link.ini"))
    os.link(ini, os.path.join(tmp, "hard.ini"))
    ds = os.path.join(tmp, "data.h5")
    make_dataset(ds)
    good = os.path.join(tmp, "good.h5")
    checks.check(tiny_run(good, ["run.rounds=1"], flags=()).returncode == 0, "the plain run failed")
    cases = [
        ("config by name", ["--config", ini], ini, ini),
        ("config by symlink", ["--config", ini], os.path.join(tmp, "link.ini"), ini),
        ("config by hard link", ["--config", ini], os.path.join(tmp, "hard.ini"), ini),
        ("dataset", ["--set", "data.dataset=" + ds], ds, ds),
        ("checkpoint path = dataset", ["--set", "data.dataset=" + ds], ds[:-len(".ckpt")] if ds.endswith(".ckpt") else None, ds),
    ]
    # a dataset named X.ckpt: --output X would write its checkpoint over it
    ds2 = os.path.join(tmp, "other.h5.ckpt")
    shutil.copy(ds, ds2)
    cases[-1] = ("checkpoint path = dataset", ["--set", "data.dataset=" + ds2], os.path.join(tmp, "other.h5"), ds2)
    base = os.path.join(tmp, "base-copy.h5")  # refused before it is read, so any file stands for a base model
    shutil.copy(ds, base)
    cases.append(("base model", ["--set", "model.base=" + base], base, base))
    for what, extra, output, victim in cases:
        before = open(victim, "rb").read()
        r = spry.run(None, ["run"] + sets(TINY + ["run.rounds=1"]) + extra + ["--output", output, "--force"], timeout=60)
        out = out_of(r)
        checks.check(r.returncode == 2 and "an input is never overwritten" in out,
                     "%s: expected exit 2 and the refusal: exit %d %s" % (what, r.returncode, out[-300:]))
        checks.check(open(victim, "rb").read() == before, "%s: the input %s changed" % (what, victim))
        print("%s: %s" % (what, out.strip().splitlines()[-1] if out.strip() else "?"))
    r = spry.run(None, ["run"] + sets(TINY) + ["--output", ""], timeout=60)
    checks.check(r.returncode == 2 and "--output is empty" in out_of(r), "--output '': %s" % out_of(r)[-300:])
    print("empty output: %s" % out_of(r).strip().splitlines()[-1])
    # pretrain: output = its corpus
    corpus = os.path.join(tmp, "corpus.h5")
    shutil.copy(ds, corpus)
    before = open(corpus, "rb").read()
    r = spry.run(None, ["pretrain", "--set", "pretrain.corpus=" + corpus, "--output", corpus, "--force"], timeout=60)
    checks.check(r.returncode == 2 and "pretraining corpus" in out_of(r) and open(corpus, "rb").read() == before,
                 "pretrain output = corpus: exit %d %s" % (r.returncode, out_of(r)[-300:]))


# ---- messages ----------------------------------------------------------------------------------------------------
def part_messages():
    def expect(what, argv, code, frags):
        r = direct(argv, timeout=60)
        out = out_of(r) if r else ""
        checks.check(r is not None and r.returncode == code and all(f in out for f in frags),
                     "%s: expected exit %d and %s: %s %s" % (what, code, frags, r and r.returncode, out[-400:]))
        print("%s: %s" % (what, next((l for l in out.splitlines() if frags[0] in l), "?")))

    expect("test_fraction = 0", ["config"] + sets(TINY + ["fl.test_fraction=0"]), 2, ["fl.test_fraction = 0"])
    expect("out of memory", ["run"] + sets(TINY + ["model.n_embd=16384", "model.n_head=1", "run.rounds=1"]), 1,
           ["out of memory", "model.n_embd = 16384", "GB"])
    run = os.path.join(tmp, "m.h5")
    r = tiny_run(run, ["run.rounds=3"], flags=())
    checks.check(r.returncode == 0, "the plain run failed: %s" % out_of(r)[-300:])
    shutil.copy(run, os.path.join(tmp, "m2.h5"))
    r = direct(["info", run, os.path.join(tmp, "m2.h5")])
    checks.check(r.returncode == 0 and r.stdout.count("run file     ") == 2 and "m2.h5" in r.stdout,
                 "spry info with two files does not summarise both: %s" % r.stdout[-300:])
    checks.check("checksum" in r.stdout and "verified" in r.stdout, "spry info does not verify w_final: %s" % r.stdout[-300:])

    def edited(name, fn):
        p = os.path.join(tmp, name + ".h5")
        shutil.copy(run, p)
        with h5py.File(p, "r+") as f:
            fn(f)
        return p

    def no_status(f):
        del f.attrs["status"]

    def done(v):
        return lambda f: f.attrs.__setitem__("rounds_done", v)

    def w_changed(f):
        f["model/w_final"][3] = 1.5

    # A run file whose flipped bits make HDF5 1.10's H5Aread loop forever (found by the fuzz part after schema v2):
    # spry info must report it as damaged within its watchdog (SPRY_READ_TIMEOUT, 3 s here), never hang.
    loop = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "runfile-hdf5-loop.h5")
    os.environ["SPRY_READ_TIMEOUT"] = "3"
    expect("info: HDF5 loops on a corrupt file", ["info", loop], 2, ["damaged run file", "did not finish within 3 s"])
    del os.environ["SPRY_READ_TIMEOUT"]
    expect("info: no status", ["info", edited("nostatus", no_status)], 2, ["damaged", "status"])
    expect("info: rounds_done = -1", ["info", edited("minus", done(-1))], 2, ["rounds_done is -1"])
    expect("info: rounds_done = 1e9", ["info", edited("huge", done(1000000000))], 2, ["rounds_done is 1000000000"])
    expect("info: w_final changed", ["info", edited("wfinal", w_changed)], 2, ["w_final is corrupt"])
    # a checkpoint attribute changed in place (rounds_done 3 -> 1) is refused on --resume
    r = tiny_run(run, ["run.rounds=3", "run.checkpoint_every=1"])
    with h5py.File(run + ".ckpt", "r+") as f:
        f.attrs["rounds_done"] = 1
    expect("resume: rounds_done edited", ["run"] + sets(TINY + ["run.rounds=3", "run.checkpoint_every=1", "run.quiet=true"])
           + ["--output", run, "--resume"], 2, ["corrupt checkpoint", "m.h5.ckpt"])


{"fault": part_fault, "fuzz": part_fuzz, "config": part_config, "output": part_output, "messages": part_messages}[args.part]()
shutil.rmtree(tmp, ignore_errors=True)
checks.finish()
